"""`GET /v1/models`: the tenant's aliases, their trusted context windows, and the shapes both
SDKs parse (tenantgw.gateway.models)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic.types
import openai.types
import pytest
from tests.unit.test_gateway_errors import Upstream, anthropic_shaped, call, openai_shaped

from tenantgw.gateway import files, models
from tenantgw.gateway.app import GatewayMiddleware
from tenantgw.gateway.errors import InvalidRequestError

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent.parent / "golden" / "engineering-team" / "tenantgw.json"
KEY = "sk-tgw-unit-models-alice"

LITELLM_MAP = {
    "openai/gpt-4o-mini": 128_000,
    "bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0": 200_000,
    "azure/o4-mini": 200_000,
    "openrouter/anthropic/claude-sonnet-4.5": 1_000_000,
}


def lookup(model: str) -> int | None:
    return LITELLM_MAP.get(model)


def target(model: str, window: int | None = None, provider: str = "p") -> files.AliasTarget:
    return files.AliasTarget(
        id=f"{model}-0",
        provider=provider,
        model=model,
        litellm_model=f"openai/{model}",
        context_window=window,
    )


def alias(*targets: files.AliasTarget, fallbacks: tuple[str, ...] = ()) -> files.AliasRules:
    return files.AliasRules(targets=targets, fallbacks=fallbacks)


# --------------------------------------------------------------------------- windows


def test_alias_window_is_the_smallest_of_its_targets() -> None:
    windows = models.alias_windows(
        {"fast-code": alias(target("qwen", 262_144), target("gpt-4o-mini"))}, lookup
    )
    assert windows["fast-code"] == models.AliasWindow(128_000, "litellm")


def test_fallbacks_count_transitively_and_cycles_end() -> None:
    aliases = {
        "a": alias(target("big", 1_000_000), fallbacks=("b",)),
        "b": alias(target("mid", 300_000), fallbacks=("c", "a")),
        "c": alias(target("small", 150_000), fallbacks=("b",)),
        "lonely": alias(target("big", 1_000_000), fallbacks=("not-served",)),
    }
    windows = models.alias_windows(aliases, lookup)
    assert {name: w.window for name, w in windows.items()} == {
        "a": 150_000,
        "b": 150_000,
        "c": 150_000,
        "lonely": 1_000_000,
    }
    assert windows["a"].source == "catalog"


def test_the_platforms_catalog_window_beats_litellms() -> None:
    aliases = {"mini": alias(target("gpt-4o-mini", 64_000))}
    assert models.alias_windows(aliases, lookup)["mini"] == models.AliasWindow(64_000, "catalog")


def test_an_unknown_window_is_the_conservative_default_and_named() -> None:
    aliases = {
        "local": alias(target("llama-local", provider="ollama")),
        "mixed": alias(target("big", 1_000_000), fallbacks=("local",)),
        "small": alias(target("tiny", 32_768), target("llama-local", provider="ollama")),
    }
    windows = models.alias_windows(aliases, lookup)
    assert windows["local"] == models.AliasWindow(
        models.DEFAULT_CONTEXT_WINDOW, "default", ("ollama/llama-local",)
    )
    assert windows["mixed"].window == models.DEFAULT_CONTEXT_WINDOW
    assert windows["mixed"].unknown == ("ollama/llama-local",)
    # a known smaller window still wins over the default
    assert windows["small"].window == 32_768
    assert windows["small"].source == "default"


def test_litellms_own_map_knows_current_models() -> None:
    """The lookup reads LiteLLM's bundled map (no network: LITELLM_LOCAL_MODEL_COST_MAP)."""
    assert models.litellm_window("openai/gpt-4o-mini") == 128_000
    assert models.litellm_window("openai/no-such-model-anywhere") is None


# --------------------------------------------------------------------------- the body


def engineering_rules() -> files.Rules:
    return files.parse_rules(GOLDEN.read_text())


def test_list_has_every_alias_once_and_nothing_internal() -> None:
    rules = engineering_rules()
    body = models.list_body(rules.aliases, models.alias_windows(rules.aliases, lookup), {})
    ids = [entry["id"] for entry in body["data"]]
    assert ids == sorted(rules.aliases)
    text = json.dumps(body)
    for alias_rules in rules.aliases.values():
        for t in alias_rules.targets:
            assert f'"{t.id}"' not in text  # deployment ids never leak
            assert t.model not in ids
        for client_name in alias_rules.client_names:
            assert client_name not in ids  # Claude names are synonyms, not models


def test_entry_carries_display_name_description_and_window() -> None:
    rules = engineering_rules()
    windows = models.alias_windows(rules.aliases, lookup)
    body = models.list_body(rules.aliases, windows, {})
    fast = next(e for e in body["data"] if e["id"] == "fast-code")
    assert fast["display_name"] == "Fast code"
    assert fast["description"] == "Everyday coding, Qwen3-Coder and GPT-4o-mini"
    assert fast["created_at"] == "2025-06-01T09:30:00Z"
    # qwen3-coder 262144 (catalog), gpt-4o-mini 128000, fallback reasoning 200000
    assert fast["max_input_tokens"] == fast["context_window"] == 128_000
    refactoring = next(e for e in body["data"] if e["id"] == "refactoring")
    assert refactoring["display_name"] == "refactoring"  # no displayName: the alias's name


def test_both_sdks_parse_the_list() -> None:
    rules = engineering_rules()
    body = models.list_body(rules.aliases, models.alias_windows(rules.aliases, lookup), {})
    for entry in body["data"]:
        info = anthropic.types.ModelInfo.model_validate(entry)
        assert info.type == "model"
        assert info.id == entry["id"]
        assert info.created_at.year >= 1970
        model = openai.types.Model.model_validate(entry)
        assert model.object == "model"
        assert model.owned_by == "tenantgw"
    assert body["object"] == "list"
    assert body["first_id"] == body["data"][0]["id"]
    assert body["last_id"] == body["data"][-1]["id"]
    assert body["has_more"] is False


def test_pagination_follows_anthropics_parameters() -> None:
    rules = engineering_rules()
    windows = models.alias_windows(rules.aliases, lookup)
    names = sorted(rules.aliases)
    first = models.list_body(rules.aliases, windows, {"limit": "2"})
    assert [e["id"] for e in first["data"]] == names[:2]
    assert first["has_more"] is True
    rest = models.list_body(rules.aliases, windows, {"after_id": first["last_id"]})
    assert [e["id"] for e in rest["data"]] == names[2:]
    assert rest["has_more"] is False
    back = models.list_body(rules.aliases, windows, {"before_id": names[-1], "limit": "1"})
    assert [e["id"] for e in back["data"]] == [names[-2]]
    assert back["has_more"] is True


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"limit": "lots"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "100000"}, "limit"),
        ({"after_id": "fast-code-0"}, "after_id"),
        ({"after_id": "fast-code", "before_id": "reasoning"}, "before_id"),
    ],
)
def test_bad_pagination_is_a_400_naming_the_parameter(query: dict[str, str], param: str) -> None:
    rules = engineering_rules()
    with pytest.raises(InvalidRequestError) as caught:
        models.list_body(rules.aliases, models.alias_windows(rules.aliases, lookup), query)
    assert caught.value.param == param
    assert param in caught.value.message


# --------------------------------------------------------------------------- the route


@pytest.fixture
def tenant_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    rules = tmp_path / "tenantgw.json"
    rules.write_text(GOLDEN.read_text())
    keys = tmp_path / "keys.json"
    keys.write_text(
        json.dumps([{"name": "alice", "sha256": hashlib.sha256(KEY.encode()).hexdigest()}])
    )
    monkeypatch.setenv(files.RULES_FILE_ENV, str(rules))
    monkeypatch.setenv(files.KEYS_FILE_ENV, str(keys))
    monkeypatch.setenv(files.TENANT_ENV, "engineering-team")
    monkeypatch.delenv("LITELLM_MASTER_KEY", raising=False)
    monkeypatch.setattr(models, "_windows", models._Windows(lookup))
    files.reset()
    yield rules
    files.reset()


async def get(path: str, headers: dict[str, str] | None = None) -> tuple[Any, Upstream]:
    upstream = Upstream()
    response = await call(GatewayMiddleware(upstream), path, method="GET", headers=headers)
    return response, upstream


async def test_the_gateway_answers_with_the_tenants_aliases(tenant_files: Path) -> None:
    response, upstream = await get("/v1/models?limit=1000", {"x-api-key": KEY})
    assert response.status == 200
    assert upstream.scope is None  # LiteLLM's own list is never asked
    ids = [entry["id"] for entry in response.json()["data"]]
    assert ids == sorted(engineering_rules().aliases)
    response, _ = await get("/models", {"authorization": f"Bearer {KEY}"})
    assert [entry["id"] for entry in response.json()["data"]] == ids


async def test_one_model_by_id(tenant_files: Path) -> None:
    response, _ = await get("/v1/models/fast-code", {"x-api-key": KEY})
    assert response.status == 200
    assert anthropic.types.ModelInfo.model_validate(response.json()).display_name == "Fast code"
    response, _ = await get("/v1/models/fast-code-0", {"x-api-key": KEY})
    assert response.status == 404
    assert "fast-code" in openai_shaped(response.json(), 404)


@pytest.mark.parametrize("key", [None, "sk-not-a-tenant-key"])
async def test_without_a_tenant_key_it_is_a_401_in_the_clients_shape(
    tenant_files: Path, key: str | None
) -> None:
    headers = {"x-api-key": key} if key else {}
    response, upstream = await get("/v1/models", headers)
    assert response.status == 401
    assert "engineering-team" in openai_shaped(response.json(), 401)
    assert upstream.scope is None
    # Anthropic's SDK and Claude Code send anthropic-version: they get Anthropic's shape
    response, _ = await get("/v1/models", {**headers, "anthropic-version": "2023-06-01"})
    assert response.status == 401
    anthropic_shaped(response.json(), "authentication_error")


async def test_a_bad_limit_is_a_400(tenant_files: Path) -> None:
    response, _ = await get("/v1/models?limit=-3", {"x-api-key": KEY})
    assert response.status == 400
    assert "limit" in openai_shaped(response.json(), 400)


def shrink_fast_code_and_drop_refactoring(path: Path) -> None:
    raw = json.loads(path.read_text())
    raw["aliases"]["fast-code"]["targets"][0]["context_window"] = 64_000
    del raw["aliases"]["refactoring"]
    path.write_text(json.dumps(raw))
    files.reset()


async def test_edited_rules_change_the_list(tenant_files: Path) -> None:
    shrink_fast_code_and_drop_refactoring(tenant_files)
    response, _ = await get("/v1/models", {"x-api-key": KEY})
    data = {entry["id"]: entry for entry in response.json()["data"]}
    assert "refactoring" not in data
    assert data["fast-code"]["context_window"] == 64_000
