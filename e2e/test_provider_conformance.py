"""Every provider type of the Tenant, driven by real clients: the provider matrix's cells.

Story: a platform team may give a tenant any provider type the Tenant accepts, and a
developer's anthropic SDK, openai SDK and Claude Code work through it, metered. One Tenant
with one alias per provider type (`via-<type>`) is rendered by the operator's renderer
(`render_tenant`) and its gateway runs from exactly those files (`e2e/rendered_gateway.py`);
every provider's apiBase is the provider simulator, which speaks that provider's own wire
protocol and checks its credential as the provider would (`e2e/provider_sim`).

Each test is one cell (provider type x capability) of the matrix in docs/providers.md; the
`e2e.conformance` plugin records its outcome, and the session fails when the committed table
differs from what ran (regenerate: `.venv/bin/pytest e2e/test_provider_conformance.py
--update-matrix`). The Claude Code CLI cells carry the `claude_cli` marker so CI can budget
them (`-m "not claude_cli"` runs the rest).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml

from e2e.claude import ClaudeCodeError
from e2e.conformance import PROVIDER_TYPES, note, record_text
from e2e.fixtures import Services
from e2e.helpers import alias_body, eventually
from e2e.provider_sim import SimulatorHandle
from e2e.provider_sim.gemini import service_account_info
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

TENANT = "conf-" + secrets.token_hex(3)
NAMESPACE = f"tenant-{TENANT}"
PROVIDER_KEY = "sim-provider-" + secrets.token_hex(8)
VERTEX_PROJECT = "tgw-conformance"


@dataclass(frozen=True)
class Kind:
    """How the tenant's provider of one type is declared, and what the simulator must see."""

    model: str
    base: Callable[[SimulatorHandle], str]
    protocols: frozenset[str]  # what the simulator records for the upstream calls
    needs: str  # the LiteLLM setting or tenantgw repair it needs (the matrix's last column)
    spec: dict[str, Any] = field(default_factory=dict)
    keyed: bool = True  # carries PROVIDER_KEY (ollama: no key; vertex: an OAuth token)
    path: str = "/"  # what the upstream path starts with
    price: tuple[float, float] = (1.0, 4.0)


def _root(sim: SimulatorHandle) -> str:
    return sim.root_url


def _v1(sim: SimulatorHandle) -> str:
    return sim.url


def _compat(needs: str, model: str) -> Kind:
    return Kind(model, _v1, frozenset({"openai"}), needs)


KINDS: dict[str, Kind] = {
    "openai": _compat("none", "gpt-4o-mini"),
    "azure": Kind(
        "gpt-4o",
        _root,
        frozenset({"azure"}),
        "`api_version` from `apiVersion`; the target's model is the deployment",
        spec={"apiVersion": "2024-10-21"},
    ),
    "openrouter": _compat("none", "qwen/qwen3-coder"),
    "bedrock": Kind(
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        _root,
        frozenset({"bedrock"}),
        "`aws_region_name` from `region`; the key is a Bedrock API key (bearer)",
        price=(3.0, 15.0),
    ),
    "ollama": Kind(
        "qwen2.5-coder:14b",
        _root,
        frozenset({"ollama"}),
        "`ollama_chat/` (native `/api/chat`, tools), not `ollama/`",
        keyed=False,
        price=(0.1, 0.1),
    ),
    "anthropic": Kind(
        "claude-sonnet-4-5",
        _root,
        frozenset({"anthropic"}),
        "repair: Claude Code's `system` turns become user reminders (litellm-notes (m))",
        price=(3.0, 15.0),
    ),
    "gemini": Kind(
        "gemini-2.5-flash",
        lambda sim: sim.root_url + "/v1beta",
        frozenset({"gemini"}),
        "`disable_anthropic_gemini_context_caching_transform` (litellm-notes (k), repair 2)",
        price=(0.3, 2.5),
        path="/v1beta/models/gemini-2.5-flash:",
    ),
    "vertex": Kind(
        "gemini-2.5-flash",
        _root,
        frozenset({"gemini"}),  # the simulator's Google module serves both APIs
        "`vertex_credentials` (service-account JSON), `vertex_location` from `region`; "
        "`google-auth` in the gateway image",
        spec={"region": "us-central1"},
        keyed=False,
        path=f"/v1/projects/{VERTEX_PROJECT}/locations/us-central1/publishers/google/models/",
        price=(0.3, 2.5),
    ),
    "mistral": _compat("none", "mistral-large-latest"),
    "groq": _compat("none", "llama-3.3-70b-versatile"),
    "deepseek": Kind(
        "deepseek-chat",
        _v1,
        frozenset({"openai", "anthropic"}),
        "LiteLLM sends `/v1/messages` to DeepSeek's Anthropic API; repair: Claude Code's "
        "`system` turns become user reminders (litellm-notes (m))",
    ),
    "openai-compatible": _compat("none", "sim-fast"),
    "together": _compat("none", "Qwen/Qwen2.5-Coder-32B-Instruct"),
    "fireworks": _compat("none", "accounts/fireworks/models/qwen3-coder-480b-a35b-instruct"),
    "cohere": Kind(
        "command-a-03-2025",
        _root,
        frozenset({"cohere-compat"}),
        "repair: `openai/` on Cohere's Compatibility API (litellm-notes (k), repair 1)",
        price=(2.5, 10.0),
    ),
}
PROVIDERS = [pytest.param(t, id=t) for t in PROVIDER_TYPES]


KNOWN_FAILURES: dict[tuple[str, str], str] = {}
"""(provider type, column) -> why that cell fails today: an expected failure, strict (a cell
that passes while declared failing fails the run), recorded as `fail` in the matrix. Empty:
every cell of every provider type passes."""


def alias(provider: str) -> str:
    return f"via-{provider}"


def provider_spec(sim: SimulatorHandle, provider: str) -> dict[str, Any]:
    kind = KINDS[provider]
    spec: dict[str, Any] = {
        "name": provider,
        "type": provider,
        "apiBase": kind.base(sim),
        "region": "us-east-1",
        **kind.spec,
    }
    if provider != "ollama":
        spec["credentialsSecretRef"] = {"name": provider, "key": "apiKey"}
    return spec


def tenant_inputs(sim: SimulatorHandle, storage: StorageEndpoints, key: str) -> RenderInputs:
    tenant = Tenant.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": TENANT, "uid": "00000000-0000-4000-8000-0000000c0f01"},
            "spec": {
                "providers": [provider_spec(sim, p) for p in PROVIDER_TYPES],
                "catalog": [
                    {
                        "provider": p,
                        "model": k.model,
                        "costTier": "medium",
                        "pricing": {"inputPerMillion": k.price[0], "outputPerMillion": k.price[1]},
                        "contextWindow": 131072,
                    }
                    for p, k in KINDS.items()
                ],
                "keys": [{"name": "alice"}],
                "routing": {"defaultAlias": alias("anthropic")},
                "compliance": {"piiRedaction": {"mode": "off"}},
                "gateway": {"replicas": 1},
            },
        }
    )
    aliases = [
        ModelAlias.model_validate(
            alias_body(NAMESPACE, alias(p), targets=[{"provider": p, "model": KINDS[p].model}])
        )
        for p in PROVIDER_TYPES
    ]
    return alice_inputs(tenant, aliases, storage, key)


def provider_secrets(token_uri: str) -> dict[str, dict[str, str]]:
    secrets_ = {p: {"apiKey": PROVIDER_KEY} for p in PROVIDER_TYPES if KINDS[p].keyed}
    info = service_account_info(VERTEX_PROJECT, token_uri)
    secrets_["vertex"] = {"apiKey": json.dumps(info)}
    return secrets_


SIMULATOR: dict[str, Any] = {
    "api_key": PROVIDER_KEY,
    "bedrock_api_keys": [PROVIDER_KEY],
    "azure_deployments": [KINDS["azure"].model],
    "models": sorted({k.model for k in KINDS.values()}),
}


@pytest.fixture(scope="module")
def gateway(
    services: Services, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("conformance")
    with run_rendered_gateway(
        services,
        workdir,
        role_prefix="tg_conf",
        inputs=tenant_inputs,
        # Vertex's service-account key names the simulator's token endpoint.
        provider_secrets=lambda sim: provider_secrets(sim.root_url + "/token"),
        simulator_kwargs=SIMULATOR,
    ) as gateway:
        config = yaml.safe_load(next(workdir.glob("pod/*/config.yaml")).read_text())
        for deployment in config["model_list"]:
            provider = deployment["model_info"]["tenantgw"]["provider"]
            record_text(
                pytestconfig, provider, "litellm", f"`{deployment['litellm_params']['model']}`"
            )
        for provider, kind in KINDS.items():
            record_text(pytestconfig, provider, "needs", kind.needs)
        yield gateway


@pytest.fixture(autouse=True)
def _fresh_simulator(gateway: Gateway, request: pytest.FixtureRequest) -> None:
    gateway.sim.reset()
    callspec = getattr(request.node, "callspec", None)
    column = request.node.get_closest_marker("conformance_cell")
    if callspec is None or column is None:
        return
    why = KNOWN_FAILURES.get((callspec.params["provider"], column.args[0]))
    if why is not None:
        raises = (anthropic.APIStatusError, openai.APIStatusError, ClaudeCodeError, AssertionError)
        request.applymarker(pytest.mark.xfail(reason=why, strict=True, raises=raises))


def check_upstream(gateway: Gateway, provider: str, marker: str) -> dict[str, Any]:
    """The call reached the provider on its own protocol, with the platform's credential."""
    kind = KINDS[provider]
    upstream = gateway.upstream(marker)
    assert upstream["protocol"] in kind.protocols, (upstream["protocol"], upstream["path"])
    assert upstream["path"].startswith(kind.path), upstream["path"]
    assert upstream["model"] == kind.model, upstream["model"]
    headers = json.dumps(upstream["headers"])
    assert gateway.key not in headers + json.dumps(upstream["body"]), "tenant key went upstream"
    if kind.keyed:
        assert PROVIDER_KEY in headers + json.dumps(upstream["query"]), "no provider key"
    return upstream


def message(provider: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": alias(provider),
        "max_tokens": 2048,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def hello(provider: str) -> str:
    return f"Hello from {KINDS[provider].model}"


READ_PLAN = {"tool": "Read", "arguments": {"file_path": "/tmp/notes.txt"}}


# --------------------------------------------------------------------------- anthropic SDK


@pytest.mark.conformance_cell("anthropic_plain")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_anthropic_sdk_plain(gateway: Gateway, provider: str) -> None:
    marker = f"plain-{provider}-{secrets.token_hex(4)}"
    msg = gateway.anthropic().messages.create(**message(provider, marker))
    assert [b.type for b in msg.content] == ["text"]
    assert [b.text for b in msg.content if b.type == "text"] == [hello(provider)]
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0
    assert msg.usage.output_tokens > 0
    check_upstream(gateway, provider, marker)


@pytest.mark.conformance_cell("anthropic_stream")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_anthropic_sdk_streamed(gateway: Gateway, provider: str) -> None:
    marker = f"stream-{provider}-{secrets.token_hex(4)}"
    with gateway.anthropic().messages.stream(**message(provider, marker)) as events:
        kinds = [event.type for event in events]
        msg = events.get_final_message()
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert "text" in kinds
    assert "error" not in kinds
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == hello(provider)  # type: ignore[union-attr]
    assert msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens > 0
    check_upstream(gateway, provider, marker)


@pytest.mark.conformance_cell("anthropic_tools")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_anthropic_sdk_tool_round_trip(gateway: Gateway, provider: str) -> None:
    """The model asks for Read (streamed input_json_delta), the tool result goes back."""
    gateway.sim.configure(tool_plan=READ_PLAN)
    client = gateway.anthropic()
    prompt = f"read-{provider}-{secrets.token_hex(4)}"
    with client.messages.stream(**message(provider, prompt, tools=[READ_TOOL])) as events:
        kinds = [event.type for event in events]
        first = events.get_final_message()
    assert "input_json" in kinds
    (use,) = [block for block in first.content if block.type == "tool_use"]
    assert (use.name, use.input) == ("Read", READ_PLAN["arguments"])
    assert first.stop_reason == "tool_use"
    marker = "contents-" + secrets.token_hex(4)
    answer = client.messages.create(
        model=alias(provider),
        max_tokens=2048,
        tools=[READ_TOOL],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": marker}],
            },
        ],
    )
    texts = [b.text for b in answer.content if b.type == "text"]
    assert texts == [f"Tool said: {marker}"]
    check_upstream(gateway, provider, marker)


@pytest.mark.conformance_cell("count_tokens")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_count_tokens(gateway: Gateway, provider: str) -> None:
    """Counted in the gateway for every provider: a longer prompt counts more, none goes out."""
    marker = f"count-{provider}-{secrets.token_hex(4)}"
    client = gateway.anthropic()
    short = client.messages.count_tokens(
        model=alias(provider), messages=[{"role": "user", "content": marker}]
    )
    long = client.messages.count_tokens(
        model=alias(provider),
        messages=[{"role": "user", "content": marker + " and a longer question" * 50}],
        tools=[READ_TOOL],  # type: ignore[list-item]
    )
    assert 0 < short.input_tokens < long.input_tokens
    assert not gateway.calls(marker), "count_tokens sent the prompt to the provider"


@pytest.mark.conformance_cell("thinking")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_thinking_requested(
    gateway: Gateway, provider: str, request: pytest.FixtureRequest
) -> None:
    """Claude Code asks for thinking: answered, with thinking blocks where the provider thinks."""
    marker = f"think-{provider}-{secrets.token_hex(4)}"
    body = message(provider, marker, thinking={"type": "enabled", "budget_tokens": 1024})
    with gateway.anthropic().messages.stream(**body) as events:
        kinds = [event.type for event in events]
        msg = events.get_final_message()
    assert "error" not in kinds
    assert kinds[-1] == "message_stop"
    texts = [b.text for b in msg.content if b.type == "text"]
    assert texts == [hello(provider)]
    thoughts = [b for b in msg.content if b.type == "thinking"]
    assert all(b.thinking and b.signature for b in thoughts)
    check_upstream(gateway, provider, marker)
    note(request, "thinking blocks returned" if thoughts else "answered without thinking blocks")


# --------------------------------------------------------------------------- openai SDK


@pytest.mark.conformance_cell("openai_plain")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_openai_sdk_plain(gateway: Gateway, provider: str) -> None:
    marker = f"chat-{provider}-{secrets.token_hex(4)}"
    done = gateway.openai().chat.completions.create(
        model=alias(provider), messages=[{"role": "user", "content": marker}]
    )
    assert done.choices[0].message.content == hello(provider)
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None
    assert done.usage.prompt_tokens > 0
    assert done.usage.completion_tokens > 0
    check_upstream(gateway, provider, marker)


@pytest.mark.conformance_cell("openai_stream")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_openai_sdk_streamed(gateway: Gateway, provider: str) -> None:
    marker = f"chatstream-{provider}-{secrets.token_hex(4)}"
    chunks = list(
        gateway.openai().chat.completions.create(
            model=alias(provider),
            messages=[{"role": "user", "content": marker}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == hello(provider)
    # LiteLLM's usage chunk carries an empty choice ({"delta": {}}), not OpenAI's `[]`; the
    # SDK takes both. One finish, `stop`.
    assert [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ] == ["stop"]
    usage = [c.usage for c in chunks if c.usage]
    assert usage
    assert usage[-1].completion_tokens > 0
    check_upstream(gateway, provider, marker)


@pytest.mark.conformance_cell("openai_tools")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_openai_sdk_tools(gateway: Gateway, provider: str) -> None:
    """A streamed tool call (deltas joined by the client), then the tool's result sent back."""
    gateway.sim.configure(tool_plan=READ_PLAN)
    client = gateway.openai()
    messages: Any = [{"role": "user", "content": f"tools-{provider}-{secrets.token_hex(4)}"}]
    name, args, call_id, finish = "", "", "", None
    for chunk in client.chat.completions.create(
        model=alias(provider), messages=messages, tools=[READ_FUNCTION], stream=True
    ):
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                call_id = call_id or (delta.id or "")
                if delta.function is not None:
                    name += delta.function.name or ""
                    args += delta.function.arguments or ""
    assert (name, json.loads(args or "null")) == ("Read", READ_PLAN["arguments"])
    assert call_id
    assert finish == "tool_calls"
    result = "result-" + secrets.token_hex(4)
    call: Any = {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
    answer = client.chat.completions.create(
        model=alias(provider),
        messages=[
            *messages,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call_id, "content": result},
        ],
        tools=[READ_FUNCTION],
    )
    assert answer.choices[0].message.content == f"Tool said: {result}"
    check_upstream(gateway, provider, result)


# --------------------------------------------------------------------------- the ledger


@pytest.mark.conformance_cell("ledger")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_ledger_row(gateway: Gateway, provider: str) -> None:
    """One row per request (a streamed anthropic one, a plain openai one): the alias, the
    provider, the tokens the client saw and the platform's price."""
    since = time.time()
    marker = f"ledger-{provider}-{secrets.token_hex(4)}"
    with gateway.anthropic().messages.stream(**message(provider, marker)) as events:
        streamed = events.get_final_message()
    plain = gateway.openai().chat.completions.create(
        model=alias(provider), messages=[{"role": "user", "content": marker}]
    )
    assert plain.usage is not None
    seen = [
        (True, streamed.usage.input_tokens, streamed.usage.output_tokens),
        (False, plain.usage.prompt_tokens, plain.usage.completion_tokens),
    ]
    rows = eventually(
        lambda: [r for r in [gateway.rows(since)] if len(r) >= 2], what="two ledger rows"
    )[0]
    price_in, price_out = KINDS[provider].price
    assert [(r["stream"], r["input_tokens"], r["output_tokens"]) for r in rows] == seen
    for row in rows:
        assert (row["key_name"], row["alias"], row["provider"]) == (
            "alice",
            alias(provider),
            provider,
        )
        assert (row["provider_model"], row["status"]) == (KINDS[provider].model, "success")
        expected = (row["input_tokens"] * price_in + row["output_tokens"] * price_out) / 1e6
        assert float(row["cost_usd"]) == pytest.approx(expected, rel=1e-6, abs=1e-12)
        assert float(row["cost_usd"]) > 0


# --------------------------------------------------------------------------- Claude Code


@pytest.mark.claude_cli
@pytest.mark.conformance_cell("claude_code")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_claude_code_tool_turn(gateway: Gateway, provider: str, tmp_path: Path) -> None:
    """`claude -p` runs Read through the provider and answers from the file; each call is
    metered under the provider."""
    turn = gateway.claude_read_turn(alias(provider), tmp_path)
    calls = [r for r in gateway.sim.requests() if r["protocol"] in KINDS[provider].protocols]
    assert calls, "no call reached the provider"
    assert {r["model"] for r in calls} == {KINDS[provider].model}
    rows = eventually(
        lambda: [r for r in [gateway.rows(turn.started)] if len(r) >= len(calls)],
        what="a ledger row per upstream call",
    )[0]
    assert {(r["alias"], r["provider"], r["status"]) for r in rows} == {
        (alias(provider), provider, "success")
    }
