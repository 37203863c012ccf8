"""Model discovery and trusted context windows, against a real gateway process and real clients.

Tenant `eng`'s gateway (e2e/gateway_process.py) with display names, descriptions and catalog
windows in its rules file, as the operator renders them from ModelAliases and the Tenant's
catalog. Each test names the user story it proves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from e2e.gateway_process import GatewayProcess, GatewayStartError, run_gateway
from e2e.test_gateway_process import ALIASES, ALICE_KEY, MASTER_KEY
from tenantgw.cli.onboard import Onboarding, gateway_models, model_infos
from tenantgw.gateway.models import DEFAULT_CONTEXT_WINDOW

pytestmark = pytest.mark.e2e

# What the ModelAliases and the catalog say (the operator renders them into the rules file).
DISPLAY = {
    "fast-code": ("Fast code", "Everyday coding on the simulator's fast model"),
    "documentation": ("Documentation", "Docs and Claude Code's background calls"),
}
# Claude Code's own prompt and tools take tens of thousands of tokens: below ~100k it would
# compact on every turn, so the windows here are those of real coding models.
CATALOG_WINDOWS = {"fast-code": 262_144, "documentation": 131_072, "reasoning": 200_000}
# refactoring (sim-refactor) has no catalog window and LiteLLM does not know it: the default.


def _with_metadata(rules_file: Path) -> None:
    rules = json.loads(rules_file.read_text())
    for name, alias in rules["aliases"].items():
        alias["display_name"], alias["description"] = DISPLAY.get(name, (None, None))
        alias["created_at"] = "2025-06-01T09:30:00Z"
        for target in alias["targets"]:
            target["litellm_model"] = f"openai/{target['model']}"
            target["context_window"] = CATALOG_WINDOWS.get(name)
    rules_file.write_text(json.dumps(rules, indent=2, sort_keys=True))


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("models")
    try:
        with run_gateway(workdir) as process:
            _with_metadata(workdir / "config" / "tenantgw.json")  # reloaded within a second
            yield process
    except GatewayStartError as exc:
        pytest.fail(str(exc))


def _listed(gw: GatewayProcess) -> dict[str, dict[str, object]]:
    """The list once the edited rules file is loaded (the gateway looks once a second)."""
    for _ in range(50):
        listed = gateway_models(gw.url, ALICE_KEY)
        if listed["fast-code"].get("display_name") == "Fast code":
            return listed
        httpx.get(gw.url + "/health/liveliness", timeout=5)  # a pause that does something
    pytest.fail(f"the gateway never loaded the edited rules file: {listed}")


def test_developers_see_exactly_the_tenants_aliases_with_both_sdks(gw: GatewayProcess) -> None:
    """A developer listing models with either SDK sees each alias once, by its display name,
    with the window it can trust, and nothing of the deployments behind it."""
    expected = sorted(ALIASES)
    _listed(gw)
    client = anthropic.Anthropic(base_url=gw.url, api_key=ALICE_KEY, max_retries=0)
    page = client.models.list(limit=1000)
    assert [m.id for m in page.data] == expected
    assert {m.type for m in page.data} == {"model"}
    by_id = {m.id: m for m in page.data}
    assert by_id["fast-code"].display_name == "Fast code"
    assert by_id["refactoring"].display_name == "refactoring"
    paged = [m.id for m in client.models.list(limit=1)]  # the SDK follows after_id
    assert paged == expected
    one = client.models.retrieve("fast-code")
    assert one.display_name == "Fast code"
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("fast-code-0")  # a deployment id is not a model

    oai = openai.OpenAI(base_url=gw.url + "/v1", api_key=ALICE_KEY, max_retries=0)
    assert sorted(m.id for m in oai.models.list()) == expected
    assert {m.owned_by for m in oai.models.list()} == {"tenantgw"}

    raw = httpx.get(gw.url + "/v1/models", headers={"x-api-key": ALICE_KEY}).json()
    windows = {m["id"]: m["context_window"] for m in raw["data"]}
    assert windows == {
        "fast-code": 262_144,
        "documentation": 131_072,  # its fallback fast-code is larger: its own window
        "reasoning": 200_000,
        "refactoring": DEFAULT_CONTEXT_WINDOW,  # no catalog window, not in LiteLLM's map
    }
    text = json.dumps(raw)
    for leaked in ("sim-fast", "fast-code-0", "claude-sonnet-4-5", "openai/"):
        assert leaked not in text


@pytest.mark.parametrize("key", ["sk-someone-else", "sk-tgw-e2e-old-11aa22"])
def test_the_list_needs_a_valid_key_of_the_tenant(gw: GatewayProcess, key: str) -> None:
    """Someone without a valid key of the tenant learns nothing of its models (401), in the
    shape of the client that asked."""
    with pytest.raises(anthropic.AuthenticationError) as caught:
        anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0).models.list()
    assert caught.value.response.json()["type"] == "error"
    with pytest.raises(openai.AuthenticationError) as refused:
        openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0).models.list()
    assert set(refused.value.response.json()) == {"error"}
    for path in ("/v1/models", "/v1/models/fast-code", "/models"):
        bare = httpx.get(gw.url + path, headers={"anthropic-version": "2023-06-01"})
        assert bare.status_code == 401, path
        assert bare.json()["error"]["type"] == "authentication_error"
    # the tenant's own master key is its admin: it may list
    assert httpx.get(gw.url + "/v1/models", headers={"x-api-key": MASTER_KEY}).status_code == 200


def _onboarding(gw: GatewayProcess) -> Onboarding:
    """What `tenantctl onboard` prints for these aliases (the ModelAliases from the rules)."""
    from tenantgw.api import ModelAlias

    aliases = [
        ModelAlias.model_validate(
            {
                "metadata": {"name": name},
                "spec": {
                    "displayName": DISPLAY.get(name, (None, None))[0],
                    "description": DISPLAY.get(name, (None, None))[1],
                    "targets": [{"provider": "sim", "model": spec[0]}],
                },
            }
        )
        for name, spec in ALIASES.items()
    ]
    return Onboarding(
        base_url=gw.url,
        token=ALICE_KEY,
        model="fast-code",
        sonnet="fast-code",
        opus="fast-code",
        haiku="documentation",
        models=model_infos(aliases, gateway_models(gw.url, ALICE_KEY)),
    )


def test_onboarding_env_carries_the_smallest_window_and_the_names(gw: GatewayProcess) -> None:
    """The env a developer pastes tells Claude Code the window of the aliases it will use
    (the smallest: documentation's) and the names its picker shows."""
    _listed(gw)
    env = _onboarding(gw).env()
    assert env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "131072"
    assert env["ANTHROPIC_DEFAULT_SONNET_MODEL_NAME"] == "Fast code"
    assert env["ANTHROPIC_DEFAULT_HAIKU_MODEL_NAME"] == "Documentation"
    assert env["ANTHROPIC_DEFAULT_HAIKU_MODEL_DESCRIPTION"] == DISPLAY["documentation"][1]
    assert env["CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY"] == "1"


def test_the_shell_form_hands_the_window_to_claude_through_its_settings(
    gw: GatewayProcess,
) -> None:
    """Claude Code reads CLAUDE_CODE_MAX_CONTEXT_TOKENS from its settings only: the pasted
    shell lines run `claude` with it in `--settings`."""
    _listed(gw)
    shell = _onboarding(gw).shell()
    assert "export CLAUDE_CODE_MAX_CONTEXT_TOKENS=131072" in shell
    assert "alias claude='claude --settings" in shell
    assert (
        '{"env": {"CLAUDE_CODE_MAX_CONTEXT_TOKENS": "131072", '
        '"CLAUDE_CODE_MAX_OUTPUT_TOKENS": "20000"}}' in shell
    )
