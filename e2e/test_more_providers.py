"""Provider types gemini, ollama, cohere and openai's Responses-only models, end to end.

The gateway process runs from exactly what the operator renders for a Tenant (render_tenant,
mounted as the kubelet would) with its own tenant role in the shared PostgreSQL and a
throwaway redis-server; every provider's apiBase is the provider simulator, which speaks each
provider's own protocol (e2e/provider_sim: gemini.py, ollama.py, cohere.py, responses.py) and
refuses what the real provider refuses. Each alias is driven with the anthropic SDK (plain,
streamed, a tool round trip), the openai SDK (plain, streamed, tools) and one real Claude
Code turn; each request must leave one correct ledger row.

The aliases `reasoning` (o3-pro) and `codex` (gpt-5-codex) are the example tenant's: OpenAI
serves those models on /v1/responses only (the simulator answers chat completions for them
with OpenAI's 404), so they prove that LiteLLM's Responses bridge carries both client
protocols (issue 12, item 5).
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
from e2e.provider_sim import SimulatorHandle
from e2e.rendered_gateway import (
    READ_FUNCTION,
    READ_TOOL,
    Gateway,
    alice_inputs,
    run_rendered_gateway,
)
from tenantgw.api import ModelAlias, Tenant
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


CASES = [
    Case(
        "gem",
        "gemini",
        "gemini-2.5-flash",
        "gemini",
        "/v1beta/models/gemini-2.5-flash:",
        (0.3, 2.5),
    ),
    Case("olla", "ollama", "qwen2.5-coder:14b", "ollama", "/api/chat", (0.0, 0.0)),
    # Cohere is called on its Compatibility API: LiteLLM 1.106.12 cannot parse the streams of
    # the native /v2/chat (docs/litellm-notes.md (k)).
    Case(
        "coh",
        "cohere",
        "command-a-03-2025",
        "cohere-compat",
        "/compatibility/v1/chat/completions",
        (2.5, 10.0),
    ),
    Case("reasoning", "openai", "o3-pro", "openai-responses", "/v1/responses", (20.0, 80.0)),
    Case("codex", "openai", "gpt-5-codex", "openai-responses", "/v1/responses", (1.25, 10.0)),
]


def claude_cases() -> list[Any]:
    return [pytest.param(c, id=c.alias) for c in CASES]


def streamed() -> list[Any]:
    return [pytest.param(c, id=c.alias) for c in CASES]


def both() -> list[Any]:
    """(case, stream) for every case, plain and streamed."""
    return [
        pytest.param(c, stream, id=f"{c.alias}-{'stream' if stream else 'plain'}")
        for c in CASES
        for stream in (False, True)
    ]


# The OpenAI-compatible family: LiteLLM's own prefix per type, all on chat completions.
COMPAT_TYPES = ["openrouter", "mistral", "groq", "deepseek", "together", "fireworks"]
SIM_MODELS = ["gemini-2.5-flash", "qwen2.5-coder:14b", "command-a-03-2025", "sim-fast"]


def provider_spec(sim: SimulatorHandle, name: str) -> dict[str, Any]:
    if name in COMPAT_TYPES:
        return {
            "name": name,
            "type": name,
            "apiBase": sim.url,
            "region": "us-east-1",
            "credentialsSecretRef": {"name": name, "key": "apiKey"},
        }
    base = {
        "gemini": sim.root_url + "/v1beta",
        "ollama": sim.root_url,
        "cohere": sim.root_url,
        "openai": sim.url,
    }[name]
    spec: dict[str, Any] = {"name": name, "type": name, "apiBase": base, "region": "us-east-1"}
    if name != "ollama":
        spec["credentialsSecretRef"] = {"name": name, "key": "apiKey"}
    return spec


def tenant_inputs(sim: SimulatorHandle, storage: StorageEndpoints, key: str) -> RenderInputs:
    providers = ["gemini", "ollama", "cohere", "openai", *COMPAT_TYPES]
    tenant = Tenant.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": TENANT, "uid": "00000000-0000-4000-8000-0000000b0002"},
            "spec": {
                "providers": [provider_spec(sim, p) for p in providers],
                "catalog": [
                    {
                        "provider": c.provider,
                        "model": c.model,
                        "costTier": "medium",
                        "pricing": {"inputPerMillion": c.price[0], "outputPerMillion": c.price[1]},
                        "contextWindow": 131072,
                    }
                    for c in CASES
                ]
                + [
                    {
                        "provider": t,
                        "model": "sim-fast",
                        "costTier": "low",
                        "pricing": {"inputPerMillion": 1.0, "outputPerMillion": 2.0},
                    }
                    for t in COMPAT_TYPES
                ],
                "keys": [{"name": "alice"}],
                "routing": {"defaultAlias": "gem"},
                "compliance": {"piiRedaction": {"mode": "off"}},
                "gateway": {"replicas": 1},
            },
        }
    )
    aliases = [
        ModelAlias.model_validate(
            {
                "apiVersion": "tenantgw.io/v1alpha1",
                "kind": "ModelAlias",
                "metadata": {"name": c.alias, "namespace": NAMESPACE},
                "spec": {"targets": [{"provider": c.provider, "model": c.model}]},
            }
        )
        for c in CASES
    ] + [
        ModelAlias.model_validate(
            {
                "apiVersion": "tenantgw.io/v1alpha1",
                "kind": "ModelAlias",
                "metadata": {"name": f"via-{t}", "namespace": NAMESPACE},
                "spec": {"targets": [{"provider": t, "model": "sim-fast"}]},
            }
        )
        for t in COMPAT_TYPES
    ]
    return alice_inputs(tenant, aliases, storage, key)


@pytest.fixture(scope="module")
def gateway(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with run_rendered_gateway(
        services,
        tmp_path_factory.mktemp("more-providers"),
        role_prefix="tg_provb",
        inputs=tenant_inputs,
        provider_secrets={
            p: {"apiKey": PROVIDER_KEY} for p in ("gemini", "cohere", "openai", *COMPAT_TYPES)
        },
        simulator_kwargs={"api_key": PROVIDER_KEY, "models": SIM_MODELS},
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


def check_row(gateway: Gateway, case: Case, since: float, *, stream: bool) -> dict[str, Any]:
    (row,) = eventually(lambda: gateway.rows(since), what="the ledger row")
    assert row["key_name"] == "alice"
    assert row["alias"] == case.alias
    assert row["provider"] == case.provider
    assert row["status"] == "success"
    assert row["stream"] is stream
    assert row["input_tokens"] > 0
    assert row["output_tokens"] > 0
    expected = (row["input_tokens"] * case.price[0] + row["output_tokens"] * case.price[1]) / 1e6
    assert float(row["cost_usd"]) == pytest.approx(expected, rel=1e-6, abs=1e-12)
    return dict(row)


def message(alias: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": alias,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


# --------------------------------------------------------------------------- anthropic SDK


@pytest.mark.parametrize(("case", "stream"), both())
def test_anthropic_sdk_message(gateway: Gateway, case: Case, stream: bool) -> None:
    """A developer's anthropic SDK call is answered by the provider on its protocol, metered."""
    since = time.time()
    marker = f"hello-{case.alias}-{secrets.token_hex(4)}"
    client = gateway.anthropic()
    if stream:
        with client.messages.stream(**message(case.alias, marker)) as events:
            kinds = [event.type for event in events]
            msg = events.get_final_message()
        assert kinds[0] == "message_start"
        assert "text" in kinds
    else:
        msg = client.messages.create(**message(case.alias, marker))
    (block,) = [b for b in msg.content if b.type == "text"]
    assert block.text == f"Hello from {case.model}"
    assert msg.stop_reason == "end_turn"
    check_upstream(gateway, case, marker)
    row = check_row(gateway, case, since, stream=stream)
    assert row["input_tokens"] == msg.usage.input_tokens
    assert row["output_tokens"] == msg.usage.output_tokens


@pytest.mark.parametrize("case", streamed())
def test_anthropic_sdk_tool_round_trip(gateway: Gateway, case: Case) -> None:
    """The model asks for Read (streamed), the tool result goes back on the provider's wire."""
    gateway.sim.configure(tool_plan={"tool": "Read", "arguments": {"file_path": "/tmp/x.txt"}})
    client = gateway.anthropic()
    with client.messages.stream(**message(case.alias, "read it", tools=[READ_TOOL])) as events:
        kinds = [event.type for event in events]
        first = events.get_final_message()
    assert "input_json" in kinds
    (use,) = [block for block in first.content if block.type == "tool_use"]
    assert use.name == "Read"
    assert use.input == {"file_path": "/tmp/x.txt"}
    assert first.stop_reason == "tool_use"
    marker = "contents-" + secrets.token_hex(4)
    answer = client.messages.create(
        model=case.alias,
        max_tokens=1024,
        tools=[READ_TOOL],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "read it"},
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": marker}],
            },
        ],
    )
    (block,) = [b for b in answer.content if b.type == "text"]
    assert block.text == f"Tool said: {marker}"
    check_upstream(gateway, case, marker)


def test_a_cached_prompt_reaches_gemini_without_context_caching(gateway: Gateway) -> None:
    """Claude Code's `cache_control` on a long system prompt: LiteLLM 1.106.12 would first list
    Gemini context caches with a GET on `{apiBase}/models/<m>:cachedContents` (405, the
    request fails); the rendered `disable_anthropic_gemini_context_caching_transform` sends
    the prompt as it is, and Gemini caches implicitly."""
    case = CASES[0]
    assert case.provider == "gemini"
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
    client = gateway.openai()
    messages: Any = [{"role": "user", "content": marker}]
    if stream:
        chunks = list(
            client.chat.completions.create(
                model=case.alias,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage: Any = next(c.usage for c in reversed(chunks) if c.usage)
    else:
        done = client.chat.completions.create(model=case.alias, messages=messages)
        text = done.choices[0].message.content or ""
        usage = done.usage
    assert text == f"Hello from {case.model}"
    check_upstream(gateway, case, marker)
    row = check_row(gateway, case, since, stream=stream)
    assert usage is not None
    assert row["input_tokens"] == usage.prompt_tokens
    assert row["output_tokens"] == usage.completion_tokens


@pytest.mark.parametrize(("case", "stream"), both())
def test_openai_sdk_tools(gateway: Gateway, case: Case, stream: bool) -> None:
    gateway.sim.configure(tool_plan={"tool": "Read", "arguments": {"file_path": "/etc/hosts"}})
    client = gateway.openai()
    marker = f"tools-{case.alias}-{secrets.token_hex(4)}"
    messages: Any = [{"role": "user", "content": marker}]
    if stream:
        name, args, call_id = "", "", ""
        for chunk in client.chat.completions.create(
            model=case.alias, messages=messages, tools=[READ_FUNCTION], stream=True
        ):
            for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                call_id = call_id or (call.id or "")
                if call.function is not None:
                    name += call.function.name or ""
                    args += call.function.arguments or ""
    else:
        done = client.chat.completions.create(
            model=case.alias, messages=messages, tools=[READ_FUNCTION]
        )
        (made,) = done.choices[0].message.tool_calls or []
        assert made.type == "function"
        name, args, call_id = made.function.name, made.function.arguments, made.id
    assert name == "Read"
    assert json.loads(args) == {"file_path": "/etc/hosts"}
    assert call_id
    check_upstream(gateway, case, marker)
    result = "result-" + secrets.token_hex(4)
    answer = client.chat.completions.create(
        model=case.alias,
        messages=[
            *messages,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": args},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": result},
        ],
        tools=[READ_FUNCTION],
    )
    assert answer.choices[0].message.content == f"Tool said: {result}"


# --------------------------------------------------------------------------- OpenAI-compatible


@pytest.mark.parametrize("kind", COMPAT_TYPES)
def test_openai_compatible_types_render_to_a_working_config(gateway: Gateway, kind: str) -> None:
    """Each OpenAI-compatible provider type's rendered LiteLLM prefix reaches its provider with
    the platform's key, for both client protocols, and is metered under its provider."""
    since = time.time()
    marker = f"compat-{kind}-{secrets.token_hex(4)}"
    msg = gateway.anthropic().messages.create(**message(f"via-{kind}", marker))
    (block,) = [b for b in msg.content if b.type == "text"]
    assert block.text.startswith("Hello from ")
    assert block.text.endswith("sim-fast")
    upstream = gateway.upstream(marker)
    headers = upstream["headers"]
    if kind == "deepseek":  # LiteLLM sends /v1/messages to DeepSeek's Anthropic API
        assert upstream["protocol"] == "anthropic"
        assert upstream["path"] == "/anthropic/v1/messages"
        assert PROVIDER_KEY in (headers.get("x-api-key"), headers.get("Authorization"))
    else:
        assert upstream["protocol"] == "openai"
        assert upstream["path"].endswith("/chat/completions")
        assert headers.get("Authorization") == f"Bearer {PROVIDER_KEY}"
    assert gateway.key not in json.dumps(headers)
    chat = gateway.openai().chat.completions.create(
        model=f"via-{kind}", messages=[{"role": "user", "content": marker + "-chat"}]
    )
    assert (chat.choices[0].message.content or "").endswith("sim-fast")
    rows = eventually(lambda: [r for r in [gateway.rows(since)] if len(r) >= 2], what="two rows")[0]
    assert {r["provider"] for r in rows} == {kind}
    assert all(r["status"] == "success" and float(r["cost_usd"]) > 0 for r in rows)


# --------------------------------------------------------------------------- Claude Code


@pytest.mark.parametrize("case", claude_cases())
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
