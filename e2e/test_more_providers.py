"""What the provider conformance suite does not prove for gemini and openai: the example
tenant's Responses-only models, the Gemini prompt cache and DeepSeek's Anthropic path.

The gateway process runs from exactly what the operator renders for a Tenant (render_tenant,
mounted as the kubelet would) with its own tenant role in the shared PostgreSQL and a
throwaway redis-server; every provider's apiBase is the provider simulator, which speaks each
provider's own protocol (e2e/provider_sim: gemini.py, responses.py, anthropic.py) and refuses
what the real provider refuses.

The aliases `reasoning` (o3-pro) and `codex` (gpt-5-codex) are the example tenant's: OpenAI
serves those models on /v1/responses only (the simulator answers chat completions for them
with OpenAI's 404), so they prove that LiteLLM's Responses bridge carries both client
protocols (issue 12, item 5): each is driven with the anthropic SDK (plain, streamed, a tool
round trip), the openai SDK (plain, streamed, tools) and one real Claude Code turn, and each
request must leave one correct ledger row. Gemini, Ollama, Cohere and the OpenAI-compatible
types with the same clients are the conformance suite's rows
(e2e/test_provider_conformance.py).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e.fixtures import Services
from e2e.helpers import eventually
from e2e.provider_checks import (
    alice_tenant,
    check_anthropic_message,
    check_anthropic_tool_round_trip,
    check_ledger_row,
    check_openai_chat,
    check_openai_tool_round_trip,
    priced,
)
from e2e.provider_sim import SimulatorHandle
from e2e.rendered_gateway import Gateway, alice_inputs, run_rendered_gateway
from tenantgw.render import RenderInputs, StorageEndpoints

pytestmark = pytest.mark.e2e

TENANT = "provb-" + secrets.token_hex(3)
NAMESPACE = f"tenant-{TENANT}"
PROVIDER_KEY = "sim-provider-" + secrets.token_hex(6)


@dataclass(frozen=True)
class Case:
    alias: str
    provider: str  # provider name = provider type here
    model: str
    protocol: str  # what the simulator records for the upstream call
    path: str  # the upstream path LiteLLM calls (a prefix for gemini)
    price: tuple[float, float]  # USD per million tokens, in / out


GEMINI = Case(
    "gem", "gemini", "gemini-2.5-flash", "gemini", "/v1beta/models/gemini-2.5-flash:", (0.3, 2.5)
)
CASES = [
    Case("reasoning", "openai", "o3-pro", "openai-responses", "/v1/responses", (20.0, 80.0)),
    Case("codex", "openai", "gpt-5-codex", "openai-responses", "/v1/responses", (1.25, 10.0)),
]
DEEPSEEK = Case(
    "via-deepseek", "deepseek", "sim-fast", "anthropic", "/anthropic/v1/messages", (1.0, 2.0)
)


def cases() -> list[Any]:
    return [pytest.param(c, id=c.alias) for c in CASES]


def both() -> list[Any]:
    """(case, stream) for every case, plain and streamed."""
    return [
        pytest.param(c, stream, id=f"{c.alias}-{'stream' if stream else 'plain'}")
        for c in CASES
        for stream in (False, True)
    ]


def tenant_inputs(sim: SimulatorHandle, storage: StorageEndpoints, key: str) -> RenderInputs:
    keyed = {"credentialsSecretRef": {"name": "provider", "key": "apiKey"}, "region": "us-east-1"}
    tenant, aliases = alice_tenant(
        TENANT,
        "00000000-0000-4000-8000-0000000b0002",
        providers=[
            {"name": "gemini", "type": "gemini", "apiBase": sim.root_url + "/v1beta", **keyed},
            {"name": "openai", "type": "openai", "apiBase": sim.url, **keyed},
            {"name": "deepseek", "type": "deepseek", "apiBase": sim.url, **keyed},
        ],
        catalog=[
            priced(c.provider, c.model, c.price, contextWindow=131072)
            for c in (GEMINI, *CASES, DEEPSEEK)
        ],
        aliases=[(c.alias, c.provider, c.model) for c in (GEMINI, *CASES, DEEPSEEK)],
        default_alias=GEMINI.alias,
    )
    return alice_inputs(tenant, aliases, storage, key)


@pytest.fixture(scope="module")
def gateway(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with run_rendered_gateway(
        services,
        tmp_path_factory.mktemp("more-providers"),
        role_prefix="tg_provb",
        inputs=tenant_inputs,
        provider_secrets={"provider": {"apiKey": PROVIDER_KEY}},
        simulator_kwargs={"api_key": PROVIDER_KEY, "models": [GEMINI.model, DEEPSEEK.model]},
    ) as gateway:
        yield gateway


@pytest.fixture(autouse=True)
def _fresh_simulator(gateway: Gateway) -> None:
    gateway.sim.reset()


def check_upstream(gateway: Gateway, case: Case, marker: str) -> dict[str, Any]:
    """The call reached the case's provider on its own protocol, with the platform's key."""
    upstream = gateway.upstream(marker)
    assert upstream["protocol"] == case.protocol, upstream["path"]
    assert upstream["path"].startswith(case.path), upstream["path"]
    assert upstream["model"] == case.model
    seen = json.dumps(upstream["headers"]) + json.dumps(upstream["body"])
    assert gateway.key not in seen, "the tenant key reached the provider"
    if case.provider != "ollama":
        assert PROVIDER_KEY in json.dumps(upstream["headers"]) + json.dumps(upstream["query"])
    return upstream


# --------------------------------------------------------------------------- anthropic SDK


@pytest.mark.parametrize(("case", "stream"), both())
def test_anthropic_sdk_message(gateway: Gateway, case: Case, stream: bool) -> None:
    """A developer's anthropic SDK call is answered by the provider on its protocol, metered."""
    since = time.time()
    marker = f"hello-{case.alias}-{secrets.token_hex(4)}"
    usage = check_anthropic_message(gateway, case.alias, marker, model=case.model, stream=stream)
    check_upstream(gateway, case, marker)
    check_ledger_row(gateway, since, case, stream=stream, usage=usage)


@pytest.mark.parametrize("case", cases())
def test_anthropic_sdk_tool_round_trip(gateway: Gateway, case: Case) -> None:
    """The model asks for Read (streamed), the tool result goes back on the provider's wire."""
    check_upstream(gateway, case, check_anthropic_tool_round_trip(gateway, case.alias))


def test_a_cached_prompt_reaches_gemini_without_context_caching(gateway: Gateway) -> None:
    """Claude Code's `cache_control` on a long system prompt: LiteLLM 1.106.12 would first list
    Gemini context caches with a GET on `{apiBase}/models/<m>:cachedContents` (405, the
    request fails); the rendered `disable_anthropic_gemini_context_caching_transform` sends
    the prompt as it is, and Gemini caches implicitly."""
    case = GEMINI
    marker = "cached-" + secrets.token_hex(4)
    system = " ".join(f"rule-{i}: keep the answer short." for i in range(600))  # > 1,024 tokens
    msg = gateway.anthropic().messages.create(
        model=case.alias,
        max_tokens=256,
        system=[{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": marker, "cache_control": {"type": "ephemeral"}}
                ],
            }
        ],
    )
    (block,) = [b for b in msg.content if b.type == "text"]
    assert block.text == f"Hello from {case.model}"
    upstream = check_upstream(gateway, case, marker)
    assert "cachedContent" not in upstream["body"]
    assert system[:200] in json.dumps(upstream["body"])
    assert not [r for r in gateway.sim.requests() if "cachedContents" in r["path"]]


# --------------------------------------------------------------------------- openai SDK


@pytest.mark.parametrize(("case", "stream"), both())
def test_openai_sdk_chat(gateway: Gateway, case: Case, stream: bool) -> None:
    since = time.time()
    marker = f"chat-{case.alias}-{secrets.token_hex(4)}"
    usage = check_openai_chat(gateway, case.alias, marker, model=case.model, stream=stream)
    check_upstream(gateway, case, marker)
    check_ledger_row(gateway, since, case, stream=stream, usage=usage)


@pytest.mark.parametrize(("case", "stream"), both())
def test_openai_sdk_tools(gateway: Gateway, case: Case, stream: bool) -> None:
    check_upstream(gateway, case, check_openai_tool_round_trip(gateway, case.alias, stream=stream))


# --------------------------------------------------------------------------- DeepSeek


def test_deepseek_takes_anthropic_requests_on_its_anthropic_api(gateway: Gateway) -> None:
    """LiteLLM sends /v1/messages for a `deepseek` provider to DeepSeek's Anthropic API
    (`{apiBase}/anthropic/v1/messages`) with the platform's key, and chat completions to its
    OpenAI API; both are metered under `deepseek`. (The conformance suite's `deepseek` row
    takes either protocol; this pins which one each client route uses.)"""
    since = time.time()
    marker = f"deepseek-{secrets.token_hex(4)}"
    check_anthropic_message(gateway, DEEPSEEK.alias, marker, model=DEEPSEEK.model, stream=False)
    upstream = check_upstream(gateway, DEEPSEEK, marker)
    assert upstream["path"] == "/anthropic/v1/messages"
    headers = upstream["headers"]
    assert PROVIDER_KEY in (headers.get("x-api-key"), headers.get("Authorization"))
    chat = marker + "-chat"
    check_openai_chat(gateway, DEEPSEEK.alias, chat, model=DEEPSEEK.model, stream=False)
    upstream = gateway.upstream(chat)
    assert upstream["protocol"] == "openai"
    assert upstream["path"].endswith("/chat/completions")
    assert upstream["headers"].get("Authorization") == f"Bearer {PROVIDER_KEY}"
    rows = eventually(lambda: [r for r in [gateway.rows(since)] if len(r) >= 2], what="two rows")[0]
    assert {r["provider"] for r in rows} == {"deepseek"}
    assert all(r["status"] == "success" and float(r["cost_usd"]) > 0 for r in rows)


# --------------------------------------------------------------------------- Claude Code


@pytest.mark.parametrize("case", cases())
def test_claude_code_runs_a_tool_through_the_provider(
    gateway: Gateway, case: Case, tmp_path: Path
) -> None:
    """`claude -p` runs Read through the alias and answers from the file; every call is metered."""
    since = gateway.claude_read_turn(case.alias, tmp_path).started
    upstream = [r for r in gateway.sim.requests() if r["protocol"] == case.protocol]
    assert upstream, "no call reached the provider"
    assert all(r["model"] == case.model for r in upstream)
    rows = eventually(
        lambda: [r for r in [gateway.rows(since)] if len(r) >= len(upstream)],
        what="a ledger row per upstream call",
    )[0]
    assert all(r["alias"] == case.alias and r["provider"] == case.provider for r in rows)
    assert all(r["status"] == "success" for r in rows)
