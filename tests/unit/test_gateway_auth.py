"""Tenant key authentication (LiteLLM custom_auth) and the reloading of the mounted files."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from litellm.proxy._types import ProxyException

from tenantgw.gateway import auth, files

pytestmark = pytest.mark.unit

ALICE = "sk-tgw-ALICE-plain-0001"
CI = "sk-tgw-CI-plain-0002"
MASTER = "sk-tgw-MASTER-0000"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _write_keys(path: Path, entries: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps(entries))


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


@pytest.fixture
def gateway_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Keys alice (valid) and ci (expired), a rules file, and the env pointing at them."""
    keys = tmp_path / "keys.json"
    _write_keys(
        keys,
        [
            {"name": "alice", "sha256": _digest(ALICE)},
            {"name": "ci", "sha256": _digest(CI), "expires_at": "2020-01-01T00:00:00Z"},
        ],
    )
    rules = tmp_path / "tenantgw.json"
    rules.write_text(json.dumps({"tenant": "eng", "namespace": "tenant-eng", "aliases": {}}))
    monkeypatch.setenv(files.KEYS_FILE_ENV, str(keys))
    monkeypatch.setenv(files.RULES_FILE_ENV, str(rules))
    monkeypatch.setenv(files.TENANT_ENV, "eng")
    monkeypatch.setenv(auth.MASTER_KEY_ENV, MASTER)
    files.reset()
    yield keys
    files.reset()


async def _refusal(api_key: str | None) -> ProxyException:
    with pytest.raises(ProxyException) as caught:
        await auth.user_api_key_auth(request=None, api_key=api_key)
    return caught.value


async def test_valid_key_identifies_key_and_tenant(gateway_files: Path) -> None:
    result = await auth.user_api_key_auth(request=None, api_key=ALICE)
    assert result.user_id == "alice"
    assert result.team_id == "eng"
    assert result.metadata == {"tenant": "eng", "key": "alice"}
    # LiteLLM logs api_key: it must carry the hash, never the key
    assert result.api_key == _digest(ALICE)
    assert ALICE not in json.dumps(result.model_dump(), default=str)


async def test_unknown_key_is_a_401_that_says_where_the_key_is(gateway_files: Path) -> None:
    exc = await _refusal("sk-not-a-tenant-key")
    assert exc.code == "401"
    assert exc.type == "authentication_error"
    assert "invalid API key for tenant eng" in exc.message
    assert "gateway-key-" in exc.message
    assert "sk-not-a-tenant-key" not in exc.message


@pytest.mark.parametrize("api_key", [None, "", "   "])
async def test_missing_key_is_a_401_not_a_500(gateway_files: Path, api_key: str | None) -> None:
    exc = await _refusal(api_key)
    assert exc.code == "401"
    assert "missing API key for tenant eng" in exc.message


async def test_expired_key_is_refused_naming_its_secret(gateway_files: Path) -> None:
    exc = await _refusal(CI)
    assert exc.code == "401"
    assert "expired" in exc.message
    assert "gateway-key-ci" in exc.message
    assert CI not in exc.message


async def test_master_key_is_the_tenant_admin(gateway_files: Path) -> None:
    result = await auth.user_api_key_auth(request=None, api_key=MASTER)
    assert result.user_id == "admin"
    assert result.team_id == "eng"
    assert str(result.user_role.value if result.user_role else "") == "proxy_admin"


async def test_rotated_key_works_without_restart(
    gateway_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(files.time, "monotonic", lambda: clock[0])
    files.reset()
    assert (await auth.user_api_key_auth(request=None, api_key=ALICE)).user_id == "alice"

    rotated = "sk-tgw-ALICE-rotated-0003"
    _write_keys(gateway_files, [{"name": "alice", "sha256": _digest(rotated)}])
    os.utime(gateway_files, ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
    clock[0] += 0.5  # looked at no more than once a second
    assert (await auth.user_api_key_auth(request=None, api_key=ALICE)).user_id == "alice"
    clock[0] += 1.0
    assert (await auth.user_api_key_auth(request=None, api_key=rotated)).user_id == "alice"
    assert (await _refusal(ALICE)).code == "401"


async def test_broken_keys_file_keeps_the_previous_keys(
    gateway_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(files.time, "monotonic", lambda: clock[0])
    files.reset()
    assert (await auth.user_api_key_auth(request=None, api_key=ALICE)).user_id == "alice"
    _write_text(gateway_files, "{not json")
    clock[0] += 2
    assert (await auth.user_api_key_auth(request=None, api_key=ALICE)).user_id == "alice"


async def test_no_keys_file_refuses_tenant_keys_but_not_the_master_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(files.KEYS_FILE_ENV, str(tmp_path / "absent.json"))
    monkeypatch.setenv(files.RULES_FILE_ENV, str(tmp_path / "absent-rules.json"))
    monkeypatch.setenv(files.TENANT_ENV, "eng")
    monkeypatch.setenv(auth.MASTER_KEY_ENV, MASTER)
    files.reset()
    try:
        exc = await _refusal(ALICE)
        assert exc.code == "503"
        assert "keys are not loaded" in exc.message
        assert (await auth.user_api_key_auth(request=None, api_key=MASTER)).user_id == "admin"
    finally:
        files.reset()


async def test_unexpected_errors_become_a_json_500_not_a_crash(
    gateway_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(api_key: str | None) -> auth.Identity:
        raise RuntimeError("boom")

    monkeypatch.setattr(auth, "identify", broken)
    exc = await _refusal(ALICE)
    assert exc.code == "500"
    assert "boom" not in exc.message


def test_keys_file_accepts_the_expiry_spellings() -> None:
    entries = files.parse_keys(
        json.dumps(
            [
                {"name": "a", "sha256": "A" * 64, "expires_at": "2030-01-01T00:00:00Z"},
                {"name": "b", "sha256": "b" * 64, "notAfter": "2030-01-01T00:00:00+00:00"},
                {"name": "c", "sha256": "c" * 64},
            ]
        )
    )
    assert [e.name for e in entries] == ["a", "b", "c"]
    assert entries[0].sha256 == "a" * 64
    assert entries[0].expires_at == entries[1].expires_at
    assert entries[2].expires_at is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{}", "JSON list"),
        ('[{"sha256": "' + "a" * 64 + '"}]', "keys[0].name"),
        ('[{"name": "a", "sha256": "abc"}]', "keys[0].sha256"),
        ('[{"name": "a", "sha256": "' + "a" * 64 + '", "expires_at": "soon"}]', "expires_at"),
    ],
)
def test_keys_file_errors_name_the_entry(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        files.parse_keys(text)


def test_rules_file_matches_what_render_writes() -> None:
    golden = Path(__file__).parent.parent / "golden" / "engineering-team" / "tenantgw.json"
    rules = files.parse_rules(golden.read_text())
    assert rules.tenant == "engineering-team"
    assert rules.default_alias == "fast-code"
    assert [rule.alias for rule in rules.rules] == ["documentation", "refactoring", "reasoning"]
    assert rules.rules[1].match.prompt_prefix == "refactor"
    assert rules.aliases["fast-code"].client_names == ("claude-sonnet-4-5", "claude-sonnet-4-5-*")
    assert rules.aliases["reasoning"].targets[0].region == "us-west-2"
    assert rules.compliance.pii_redaction.mode == "redact"
    assert rules.compliance.data_residency is not None
    alice = rules.key("alice")
    assert alice is not None
    assert alice.rpm == 120
    assert rules.budgets[1].on_exceeded.to_cost_tier == "low"
