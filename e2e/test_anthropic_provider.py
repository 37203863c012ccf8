"""A Tenant provider of type `anthropic`: Claude Code and the anthropic SDK through the gateway.

The gateway process runs from exactly what the operator renders for a Tenant (render_tenant,
mounted as the kubelet would) with its own tenant role in the shared PostgreSQL and a
throwaway redis-server. Its two aliases: `claude-native` (provider type anthropic, apiBase the
provider simulator's Anthropic Messages API) and `other-model` (openai-compatible, the
simulator's chat completions). Each test names the user story it proves.

Headers and betas (docs/onboarding.md, "Claude Code features by provider type"):
- to an anthropic target, the client's `anthropic-version` and every `anthropic-beta` value
  arrive as sent (LiteLLM 1.106.12 filters betas only for non-Anthropic providers);
- to any other target, neither header arrives and the request succeeds;
- the upstream always gets the platform's provider key, never a key the client sent.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import anthropic
import pytest

from e2e.claude import ClaudeCodeError, ClaudeRun, run_claude, seed_home
from e2e.helpers import alias_body, eventually
from e2e.provider_sim import SimulatorHandle
from e2e.rendered_gateway import READ_TOOL, Gateway, alice_inputs, gateway_fixture
from tenantgw.api import ModelAlias, Tenant
from tenantgw.render import RenderInputs, StorageEndpoints

pytestmark = pytest.mark.e2e

TENANT = "anthro-" + secrets.token_hex(3)
NAMESPACE = f"tenant-{TENANT}"
NATIVE = "claude-native"
OTHER = "other-model"
NATIVE_MODEL = "claude-sonnet-4-5"  # what the anthropic target asks the upstream for
PROVIDER_KEY = "sk-ant-sim-provider-" + secrets.token_hex(6)
DANGER_BETA = "dangerous-tool-use-2026-09-03"
SAFEGUARDS = [{"type": "dangerous_tool_use", "classifier_context": {"permission_mode": "auto"}}]
BASH_TOOL: dict[str, Any] = {
    "name": "Bash",
    "description": "Run a shell command",
    "input_schema": {
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
    },
}


def tenant_inputs(sim: SimulatorHandle, storage: StorageEndpoints, key: str) -> RenderInputs:
    tenant = Tenant.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": TENANT, "uid": "00000000-0000-4000-8000-0000000a0001"},
            "spec": {
                "providers": [
                    {
                        "name": "anthropic",
                        "type": "anthropic",
                        "apiBase": sim.root_url,
                        "region": "us-east-1",
                        "credentialsSecretRef": {"name": "anthropic", "key": "apiKey"},
                    },
                    {
                        "name": "compat",
                        "type": "openai-compatible",
                        "apiBase": sim.url,
                        "region": "us-east-1",
                        "credentialsSecretRef": {"name": "compat", "key": "apiKey"},
                    },
                ],
                "catalog": [
                    {
                        "provider": "anthropic",
                        "model": NATIVE_MODEL,
                        "costTier": "high",
                        "pricing": {"inputPerMillion": 3.0, "outputPerMillion": 15.0},
                    },
                    {
                        "provider": "compat",
                        "model": "sim-fast",
                        "costTier": "low",
                        "pricing": {"inputPerMillion": 0.3, "outputPerMillion": 1.2},
                    },
                ],
                "keys": [{"name": "alice"}],
                "routing": {"defaultAlias": NATIVE},
                "compliance": {"piiRedaction": {"mode": "off"}},
                "gateway": {"replicas": 1},
            },
        }
    )
    aliases = [
        ModelAlias.model_validate(
            alias_body(NAMESPACE, name, aliases=client_names, targets=[{"provider": p, "model": m}])
        )
        for name, client_names, p, m in (
            (NATIVE, [NATIVE_MODEL], "anthropic", NATIVE_MODEL),
            (OTHER, ["gpt-sim"], "compat", "sim-fast"),
        )
    ]
    return alice_inputs(tenant, aliases, storage, key)


def provider_gateway(name: str, role_prefix: str) -> Any:
    """A module's `gateway` fixture: this Tenant's rendered gateway (e2e/test_litellm_bugs.py
    runs on it too), its provider Secrets holding the simulator's key."""
    return gateway_fixture(
        name,
        role_prefix=role_prefix,
        inputs=tenant_inputs,
        provider_secrets={
            "anthropic": {"apiKey": PROVIDER_KEY},
            "compat": {"apiKey": PROVIDER_KEY},
        },
        simulator_kwargs={"api_key": PROVIDER_KEY},
    )


gateway = provider_gateway("anthropic-provider", "tg_anthro")


@pytest.fixture(autouse=True)
def _fresh_simulator(gateway: Gateway) -> None:
    gateway.sim.reset()
    gateway.sim.configure(api_key=PROVIDER_KEY)


VERSION = {"anthropic-version": "2023-06-01"}


def message(model: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 2048,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def no_secret_upstream(gateway: Gateway, request: dict[str, Any], *secrets_: str) -> None:
    """The upstream saw the platform's provider key and none of the client's secrets."""
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers.get("x-api-key") == PROVIDER_KEY or headers.get("authorization") == (
        f"Bearer {PROVIDER_KEY}"
    ), headers
    seen = json.dumps(request["headers"]) + json.dumps(request["body"])
    for secret in (gateway.key, *secrets_):
        assert secret not in seen, f"{secret[:12]}... reached the provider"


# --------------------------------------------------------------------------- anthropic SDK


@pytest.mark.parametrize("stream", [False, True])
def test_sdk_messages_reach_the_anthropic_provider_and_land_in_the_ledger(
    gateway: Gateway, stream: bool
) -> None:
    """A developer's anthropic SDK call, plain and streamed, is served natively and metered."""
    since = time.time()
    marker = f"native-{stream}-{secrets.token_hex(4)}"
    client = gateway.anthropic()
    if stream:
        with client.messages.stream(**message(NATIVE, marker)) as events:
            kinds = [event.type for event in events]
            msg = events.get_final_message()
        assert kinds[0] == "message_start"
        assert "text" in kinds
    else:
        msg = client.messages.create(**message(NATIVE, marker))
    assert msg.content[0].type == "text"
    assert msg.content[0].text == f"Hello from {NATIVE_MODEL}"
    assert msg.stop_reason == "end_turn"
    upstream = gateway.upstream(marker)
    assert upstream["protocol"] == "anthropic"
    assert upstream["path"] == "/v1/messages"
    assert upstream["model"] == NATIVE_MODEL
    no_secret_upstream(gateway, upstream)
    (row,) = eventually(lambda: gateway.rows(since), what="the ledger row")
    assert row["key_name"] == "alice"
    assert row["alias"] == NATIVE
    assert row["provider"] == "anthropic"
    assert row["status"] == "success"
    assert row["stream"] is stream
    assert row["input_tokens"] == msg.usage.input_tokens
    assert row["output_tokens"] == msg.usage.output_tokens
    expected = (row["input_tokens"] * 3.0 + row["output_tokens"] * 15.0) / 1e6
    assert float(row["cost_usd"]) == pytest.approx(expected, rel=1e-6)


def test_tool_use_round_trip_through_the_anthropic_provider(gateway: Gateway) -> None:
    """Claude asks for a tool (streamed input_json_delta), the tool result goes back, it answers."""
    gateway.sim.configure(tool_plan={"tool": "Read", "arguments": {"file_path": "/tmp/x.txt"}})
    client = gateway.anthropic()
    with client.messages.stream(**message(NATIVE, "read it", tools=[READ_TOOL])) as events:
        kinds = [event.type for event in events]
        first = events.get_final_message()
    assert "input_json" in kinds
    (use,) = [block for block in first.content if block.type == "tool_use"]
    assert use.name == "Read"
    assert use.input == {"file_path": "/tmp/x.txt"}
    assert first.stop_reason == "tool_use"
    marker = "contents-" + secrets.token_hex(4)
    answer = client.messages.create(
        model=NATIVE,
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
    assert answer.content[0].type == "text"
    assert answer.content[0].text == f"Tool said: {marker}"
    sent = gateway.upstream(marker)["body"]["messages"]
    assert sent[1]["content"][0]["id"] == use.id
    assert sent[2]["content"][0]["tool_use_id"] == use.id


def test_thinking_blocks_survive_the_round_trip(gateway: Gateway) -> None:
    """Thinking streams through with its signature, and goes back upstream unaltered."""
    client = gateway.anthropic()
    thinking: anthropic.types.ThinkingConfigEnabledParam = {
        "type": "enabled",
        "budget_tokens": 1024,
    }
    with client.messages.stream(**message(NATIVE, "think", thinking=thinking)) as events:
        deltas = [event.delta.type for event in events if event.type == "content_block_delta"]
        msg = events.get_final_message()
    assert deltas[0] == "thinking_delta"
    assert "signature_delta" in deltas
    block = msg.content[0]
    assert block.type == "thinking"
    assert block.signature
    assert gateway.upstream("think")["body"]["thinking"] == thinking
    marker = "again-" + secrets.token_hex(4)
    history: list[Any] = [
        {"role": "user", "content": "think"},
        {"role": "assistant", "content": [b.model_dump() for b in msg.content]},
        {"role": "user", "content": marker},
    ]
    # The simulator refuses a thinking block whose signature is not the one it issued.
    again = client.messages.create(
        model=NATIVE,
        max_tokens=2048,
        thinking=thinking,
        messages=history,
    )
    assert again.content[0].type == "thinking"
    sent = gateway.upstream(marker)["body"]["messages"][1]["content"][0]
    assert sent["thinking"] == block.thinking
    assert sent["signature"] == block.signature


def test_prompt_caching_usage_reaches_client_and_ledger(gateway: Gateway) -> None:
    """cache_control is forwarded; cache writes and reads come back and are recorded."""
    since = time.time()
    system = [{"type": "text", "text": "Be terse. " * 600, "cache_control": {"type": "ephemeral"}}]
    client = gateway.anthropic()
    first = client.messages.create(**message(NATIVE, "cache 1", system=system))
    second = client.messages.create(**message(NATIVE, "cache 2", system=system))
    assert first.usage.cache_creation_input_tokens
    assert first.usage.cache_creation_input_tokens > 1000
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    rows = eventually(lambda: [r for r in [gateway.rows(since)] if len(r) >= 2], what="two rows")[0]
    assert rows[0]["cache_write_tokens"] == first.usage.cache_creation_input_tokens
    assert rows[1]["cache_read_tokens"] == second.usage.cache_read_input_tokens


# --------------------------------------------------------------------------- headers and betas

CLIENT_BETAS = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27"


def test_anthropic_headers_reach_an_anthropic_target_as_sent(gateway: Gateway) -> None:
    """anthropic-version and every anthropic-beta value arrive unchanged at an anthropic target."""
    marker = "betas-" + secrets.token_hex(4)
    resp = gateway.post(
        message(NATIVE, marker),
        {"x-api-key": gateway.key, **VERSION, "anthropic-beta": CLIENT_BETAS},
    )
    assert resp.status_code == 200, resp.text
    upstream = gateway.upstream(marker)
    assert upstream["headers"]["anthropic-version"] == "2023-06-01"
    # LiteLLM merges the values it adds itself into a set: the order is not kept, the values are.
    assert sorted(upstream["betas"]) == sorted(CLIENT_BETAS.split(","))


def test_anthropic_headers_are_dropped_for_other_targets(gateway: Gateway) -> None:
    """The same headers to an OpenAI-compatible target: no 400, and neither header arrives."""
    marker = "other-" + secrets.token_hex(4)
    resp = gateway.post(
        message(OTHER, marker),
        {"x-api-key": gateway.key, **VERSION, "anthropic-beta": CLIENT_BETAS + ",made-up-2099"},
    )
    assert resp.status_code == 200, resp.text
    upstream = gateway.upstream(marker)
    assert upstream["path"] == "/v1/chat/completions"
    names = {name.lower() for name in upstream["headers"]}
    assert "anthropic-beta" not in names
    assert "anthropic-version" not in names
    no_secret_upstream(gateway, upstream)


def test_a_beta_the_upstream_rejects_is_a_clean_400_that_harms_no_one_else(
    gateway: Gateway,
) -> None:
    """An unknown beta comes back as Anthropic's own 400; the next request is served."""
    resp = gateway.post(
        message(NATIVE, "bad beta"),
        {"x-api-key": gateway.key, **VERSION, "anthropic-beta": "made-up-2099-01-01"},
    )
    assert resp.status_code == 400
    body = resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "made-up-2099-01-01" in body["error"]["message"]
    # A client's 400 must not put the tenant's deployment into cooldown.
    ok = gateway.post(message(NATIVE, "after bad beta"), {"x-api-key": gateway.key, **VERSION})
    assert ok.status_code == 200, ok.text


SMUGGLED = "sk-ant-oat01-" + secrets.token_hex(12)
SMUGGLED_KEY = "sk-ant-api03-" + secrets.token_hex(12)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(
            {"x-api-key": "{key}", "authorization": f"Bearer {SMUGGLED}"}, id="x-api-key+oauth"
        ),
        pytest.param(
            {"authorization": "Bearer {key}", "x-api-key": SMUGGLED_KEY}, id="bearer+x-api-key"
        ),
        pytest.param(
            {"x-litellm-api-key": "{key}", "authorization": f"Bearer {SMUGGLED}"},
            id="litellm-key+oauth",
        ),
        pytest.param(
            {"x-litellm-api-key": "{key}", "x-api-key": SMUGGLED_KEY}, id="litellm-key+x-api-key"
        ),
        pytest.param({"x-api-key": "{key}", "anthropic-beta": "oauth-2025-04-20"}, id="oauth-beta"),
    ],
)
def test_no_client_header_puts_a_credential_of_its_own_upstream(
    gateway: Gateway, headers: dict[str, str]
) -> None:
    """Attacker inside the tenant: whatever credential headers it adds, the upstream gets the
    platform's provider key, never the tenant key nor the client's own credential."""
    marker = "smuggle-" + secrets.token_hex(4)
    sent = {name: value.replace("{key}", gateway.key) for name, value in headers.items()}
    resp = gateway.post(message(NATIVE, marker), {**sent, **VERSION})
    assert resp.status_code in (200, 401), resp.text
    for request in gateway.sim.requests():
        no_secret_upstream(gateway, request, SMUGGLED, SMUGGLED_KEY)
    # And the tenant's deployment still serves (no cooldown from a provider 401).
    ok = gateway.post(message(NATIVE, "after " + marker), {"x-api-key": gateway.key, **VERSION})
    assert ok.status_code == 200, ok.text


# --------------------------------------------------------------------------- safeguards


@pytest.mark.parametrize("stream", [False, True])
def test_safeguards_reach_a_claude_target_and_its_verdicts_come_back(
    gateway: Gateway, stream: bool
) -> None:
    """Auto mode's server review on a Claude-native target: `safeguards` goes upstream untouched
    with the dangerous-tool-use beta, and `safeguard_results` reaches the client."""
    gateway.sim.configure(tool_plan={"tool": "Bash", "arguments": {"command": "rm -rf ~"}})
    marker = f"guard-{stream}-" + secrets.token_hex(4)
    body = message(NATIVE, marker, tools=[BASH_TOOL], safeguards=SAFEGUARDS, stream=stream)
    resp = gateway.post(body, {"x-api-key": gateway.key, **VERSION, "anthropic-beta": DANGER_BETA})
    assert resp.status_code == 200, resp.text
    if stream:
        frames = [
            json.loads(line.removeprefix("data: "))
            for line in resp.text.splitlines()
            if line.startswith("data: ")
        ]
        use_id = next(
            f["content_block"]["id"]
            for f in frames
            if f["type"] == "content_block_start" and f["content_block"]["type"] == "tool_use"
        )
        (final,) = [f for f in frames if f["type"] == "message_delta"]
        results = final["delta"]["safeguard_results"]
    else:
        msg = resp.json()
        use_id = next(b["id"] for b in msg["content"] if b["type"] == "tool_use")
        results = msg["safeguard_results"]
    assert results[0]["type"] == "dangerous_tool_use"
    verdict = results[0]["status"]["tool_uses"][use_id]
    assert verdict["type"] == "evaluated"
    assert verdict["outcome"] == "flagged"
    upstream = gateway.upstream(marker)
    assert upstream["body"]["safeguards"] == SAFEGUARDS
    assert DANGER_BETA in upstream["betas"]


# --------------------------------------------------------------------------- Claude Code


@dataclass
class ClaudeTurns:
    """One Read-tool turn of the real CLI, straight at the provider and through the gateway."""

    direct: ClaudeRun
    direct_requests: list[dict[str, Any]]
    gateway: ClaudeRun
    gateway_requests: list[dict[str, Any]]
    token: str
    started: float


def _messages_requests(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in requests if r["path"] == "/v1/messages"]


@pytest.fixture(scope="module")
def claude_turns(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> ClaudeTurns:
    project = tmp_path_factory.mktemp("project")
    token = "tgw-" + secrets.token_hex(6)
    notes = project / "notes.txt"
    notes.write_text(f"The release codename is {token}.\n")
    runs: list[tuple[ClaudeRun, list[dict[str, Any]]]] = []
    started = 0.0
    for base_url, secret in ((gateway.sim.root_url, PROVIDER_KEY), (gateway.url, gateway.key)):
        home = tmp_path_factory.mktemp("home")
        seed_home(home, [project])
        gateway.sim.reset()
        gateway.sim.configure(
            api_key=PROVIDER_KEY, tool_plan={"tool": "Read", "arguments": {"file_path": str(notes)}}
        )
        started = time.time()
        env = {
            "ANTHROPIC_BASE_URL": base_url,
            "ANTHROPIC_AUTH_TOKEN": secret,
            "ANTHROPIC_MODEL": NATIVE_MODEL,
            "ANTHROPIC_SMALL_FAST_MODEL": NATIVE_MODEL,
        }
        try:
            run = run_claude(
                "What is the release codename in notes.txt?",
                project=project,
                home=home,
                gateway_env=env,
                model=NATIVE_MODEL,
                max_retries=0,
            )
        except ClaudeCodeError as exc:
            pytest.fail(str(exc), pytrace=False)
        runs.append((run, gateway.sim.requests()))
    gateway.sim.reset()
    gateway.sim.configure(api_key=PROVIDER_KEY)
    (direct, direct_requests), (through, through_requests) = runs
    return ClaudeTurns(direct, direct_requests, through, through_requests, token, started)


def test_claude_code_runs_a_tool_through_an_anthropic_provider(claude_turns: ClaudeTurns) -> None:
    """US-001 on a Claude-native provider: `claude -p` runs Read and answers from its output."""
    for run in (claude_turns.direct, claude_turns.gateway):
        assert run.returncode == 0, run.describe()
        result = run.result
        assert result["is_error"] is False, run.describe()
        assert result["num_turns"] >= 2, "no tool turn happened"
        assert claude_turns.token in result["result"], run.describe()


def test_claude_codes_betas_and_version_reach_the_anthropic_provider_as_sent(
    claude_turns: ClaudeTurns,
) -> None:
    """Every beta Claude Code 2.1.332 sends straight to Anthropic arrives through the gateway."""
    direct = _messages_requests(claude_turns.direct_requests)
    through = _messages_requests(claude_turns.gateway_requests)
    assert direct
    assert through
    sent = {beta for r in direct for beta in r["betas"]}
    arrived = {beta for r in through for beta in r["betas"]}
    assert "claude-code-20250219" in sent
    assert sent <= arrived, f"dropped by the gateway: {sorted(sent - arrived)}"
    assert {r["headers"]["anthropic-version"] for r in through} == {"2023-06-01"}
    print("betas sent by Claude Code:", ",".join(sorted(sent)))


def test_claude_codes_turns_are_metered_with_cache_usage(
    claude_turns: ClaudeTurns, gateway: Gateway
) -> None:
    """Claude Code's calls land in the ledger with tokens, prompt-cache usage and cost."""
    assert claude_turns.gateway.returncode == 0, claude_turns.gateway.describe()
    upstream = _messages_requests(claude_turns.gateway_requests)
    rows = eventually(
        lambda: [r for r in [gateway.rows(claude_turns.started)] if len(r) >= len(upstream)],
        what="a ledger row per upstream call",
    )[0]
    assert all(r["key_name"] == "alice" for r in rows)
    assert all(r["provider"] == "anthropic" for r in rows)
    assert all(r["status"] == "success" for r in rows)
    assert all(r["cost_usd"] > 0 for r in rows)
    assert any(r["stream"] for r in rows)
    assert any(r["cache_write_tokens"] > 0 for r in rows)
    assert any(r["cache_read_tokens"] > 0 for r in rows)
    for request in upstream:
        no_secret_upstream(gateway, request)
