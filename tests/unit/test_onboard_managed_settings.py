"""`tenantctl onboard --format managed-settings`: what an administrator installs on a fleet."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from tenantgw.cli.onboard import MANAGED_SETTINGS_PATHS, Onboarding, key_helper

pytestmark = pytest.mark.unit

INFO = Onboarding(
    base_url="https://gateway.example.com",
    token="sk-tgw-secret-value",
    model="fast-code",
    sonnet="fast-code",
    opus="reasoning",
    haiku="documentation",
)


def test_the_managed_settings_carry_no_key_and_read_it_with_an_api_key_helper() -> None:
    text = INFO.managed_settings_json("engineering-team")
    assert "sk-tgw-secret-value" not in text
    assert json.loads(text) == {
        "apiKeyHelper": 'cat "$HOME/.config/tenantgw/engineering-team.key"',
        "env": {
            "ANTHROPIC_BASE_URL": "https://gateway.example.com",
            "ANTHROPIC_MODEL": "fast-code",
            "ANTHROPIC_DEFAULT_SONNET_MODEL": "fast-code",
            "ANTHROPIC_DEFAULT_OPUS_MODEL": "reasoning",
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": "documentation",
            "CLAUDE_CODE_SUBAGENT_MODEL": "fast-code",
            # The one place Claude Code reads the window from: settings (no models listed
            # here, so the gateway's conservative default).
            "CLAUDE_CODE_MAX_CONTEXT_TOKENS": "128000",
            # at most what Claude Code reserves for the answer when it compacts
            "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "20000",
            "CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_API_KEY_HELPER_TTL_MS": "3600000",
        },
    }


def test_the_key_goes_inline_only_when_asked() -> None:
    body = INFO.managed_settings("engineering-team", inline_key=True)
    assert "apiKeyHelper" not in body
    env = body["env"]
    assert isinstance(env, dict)
    assert env["ANTHROPIC_AUTH_TOKEN"] == "sk-tgw-secret-value"
    assert "CLAUDE_CODE_API_KEY_HELPER_TTL_MS" not in env


def test_the_api_key_helper_prints_the_key_file_under_sh(tmp_path: Path) -> None:
    home = tmp_path / "home dir"
    (home / ".config/tenantgw").mkdir(parents=True)
    (home / ".config/tenantgw/eng.key").write_text("sk-from-home\n")
    odd = tmp_path / "it's a key; rm -rf x"
    odd.write_text("sk-from-odd-path\n")
    for command, expected in (
        (key_helper("$HOME/.config/tenantgw/eng.key"), "sk-from-home"),
        (key_helper(str(odd)), "sk-from-odd-path"),
    ):
        out = subprocess.run(
            ["/bin/sh", "-c", command],
            env={"HOME": str(home)},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == expected
    # A $HOME path with shell metacharacters is quoted whole (no expansion, no injection).
    assert key_helper("$HOME/$(id).key") == "cat '$HOME/$(id).key'"


def test_the_documented_locations() -> None:
    assert MANAGED_SETTINGS_PATHS == {
        "linux": "/etc/claude-code/managed-settings.json",
        "macos": "/Library/Application Support/ClaudeCode/managed-settings.json",
    }


def test_an_https_gateway_gets_the_ca_hint_and_its_export() -> None:
    """onboard tells how to trust an HTTPS gateway's CA: NODE_EXTRA_CA_CERTS for Claude Code
    (exported when --ca-file names it), SSL_CERT_FILE for the SDKs; nothing for plain HTTP."""
    https = dataclasses.replace(
        INFO, base_url="https://gateway.tenant-eng.svc:4000", ca_file="/etc/ssl/eng-ca.crt"
    )
    hint = https.tls_hint() or ""
    assert "NODE_EXTRA_CA_CERTS=/etc/ssl/eng-ca.crt" in hint
    assert "SSL_CERT_FILE=/etc/ssl/eng-ca.crt" in hint
    assert "export NODE_EXTRA_CA_CERTS=/etc/ssl/eng-ca.crt" in https.shell()
    assert "export ANTHROPIC_BASE_URL=https://gateway.tenant-eng.svc:4000" in https.shell()
    plain = dataclasses.replace(INFO, base_url="http://gateway.tenant-eng.svc:4000")
    assert plain.tls_hint() is None
    assert "NODE_EXTRA_CA_CERTS" not in dataclasses.replace(plain, ca_file="/x").shell()
