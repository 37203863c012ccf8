"""The provider simulator speaks Anthropic Messages the way the API does, for the official SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from e2e.provider_sim import SimulatorHandle, start_simulator

pytestmark = pytest.mark.unit

KEY = "sk-ant-sim-unit"
VERSION = {"anthropic-version": "2023-06-01"}
BASH_TOOL: dict[str, Any] = {
    "name": "Bash",
    "description": "Run a command",
    "input_schema": {
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
    },
}
SAFEGUARDS = [{"type": "dangerous_tool_use", "classifier_context": {"permission_mode": "auto"}}]
DANGER_BETA = "dangerous-tool-use-2026-09-03"


@pytest.fixture(scope="module")
def running() -> Iterator[SimulatorHandle]:
    _, handle = start_simulator(api_key=KEY)
    with handle:
        yield handle


@pytest.fixture
def sim(running: SimulatorHandle) -> SimulatorHandle:
    running.reset()
    running.configure(api_key=KEY)
    return running


@pytest.fixture
def client(sim: SimulatorHandle) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.root_url, api_key=KEY, max_retries=0, timeout=10)


def post(sim: SimulatorHandle, body: dict[str, Any], **headers: str) -> httpx.Response:
    head = {"x-api-key": KEY, **VERSION, **{k.replace("_", "-"): v for k, v in headers.items()}}
    return httpx.post(sim.root_url + "/v1/messages", json=body, headers=head, timeout=10)


def events(resp: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of an SSE body; each data's type must equal its event name."""
    out = []
    for chunk in resp.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"]
        out.append((lines["event"], data))
    return out


def hello(**extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }


def test_plain_message_and_usage(client: anthropic.Anthropic, sim: SimulatorHandle) -> None:
    msg = client.messages.create(**hello())
    assert msg.type == "message"
    assert msg.role == "assistant"
    assert msg.content[0].type == "text"
    assert msg.content[0].text == "Hello from claude-sonnet-4-5"
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0
    assert msg.usage.output_tokens > 0
    assert msg.usage.cache_creation_input_tokens == 0
    assert msg.usage.cache_read_input_tokens == 0
    (recorded,) = sim.requests()
    assert recorded["protocol"] == "anthropic"
    assert recorded["path"] == "/v1/messages"
    assert recorded["headers"]["anthropic-version"] == "2023-06-01"
    assert sim.last_authorization == KEY


def test_stream_is_the_exact_event_sequence(sim: SimulatorHandle) -> None:
    resp = post(sim, hello(stream=True))
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    seen = events(resp)
    names = [name for name, _ in seen]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-4:] == [
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = seen[0][1]["message"]
    assert start["content"] == []
    assert start["stop_reason"] is None
    assert "cache_read_input_tokens" in start["usage"]
    assert seen[2][1]["content_block"] == {"type": "text", "text": ""}
    text = "".join(d["delta"]["text"] for n, d in seen if n == "content_block_delta")
    assert text == "Hello from claude-sonnet-4-5"
    delta = seen[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] > 0


def test_tool_use_streamed_with_input_json_delta_and_round_trip(
    client: anthropic.Anthropic, sim: SimulatorHandle
) -> None:
    sim.configure(tool_plan={"tool": "Bash", "arguments": {"command": "ls -la"}})
    with client.messages.stream(**hello(tools=[BASH_TOOL])) as stream:
        raw = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in raw  # the SDK's name for an input_json_delta it accumulated
    (use,) = [b for b in final.content if b.type == "tool_use"]
    assert use.name == "Bash"
    assert use.input == {"command": "ls -la"}
    assert use.id.startswith("toolu_")
    assert final.stop_reason == "tool_use"
    answer = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=256,
        tools=[BASH_TOOL],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "list"},
            {"role": "assistant", "content": final.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "a.txt"}],
            },
        ],
    )
    assert answer.content[0].type == "text"
    assert answer.content[0].text == "Tool said: a.txt"


def test_thinking_blocks_streamed_signed_and_checked_when_sent_back(
    client: anthropic.Anthropic, sim: SimulatorHandle
) -> None:
    body = hello(max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 2048})
    seen = events(post(sim, {**body, "stream": True}))
    kinds = [d["delta"]["type"] for n, d in seen if n == "content_block_delta"]
    assert kinds[0] == "thinking_delta"
    assert "signature_delta" in kinds
    assert seen[2][1]["content_block"]["type"] == "thinking"
    msg = client.messages.create(**body)
    thinking = msg.content[0]
    assert thinking.type == "thinking"
    assert thinking.signature
    history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [thinking.model_dump(), msg.content[1].model_dump()]},
        {"role": "user", "content": "again"},
    ]
    assert post(sim, {**body, "messages": history}).status_code == 200
    history[1]["content"][0]["thinking"] += " (edited)"  # type: ignore[index]
    bad = post(sim, {**body, "messages": history})
    assert bad.status_code == 400
    assert "Invalid `signature`" in bad.json()["error"]["message"]
    assert post(sim, hello(thinking={"type": "enabled", "budget_tokens": 512})).status_code == 400
    too_big = post(sim, hello(max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 2048}))
    assert too_big.json()["error"]["type"] == "invalid_request_error"


def test_prompt_caching_creates_then_reads(
    client: anthropic.Anthropic, sim: SimulatorHandle
) -> None:
    system = [
        {"type": "text", "text": "You are terse. " * 400, "cache_control": {"type": "ephemeral"}}
    ]
    first = client.messages.create(**hello(system=system))
    second = client.messages.create(**hello(system=system))
    assert first.usage.cache_creation_input_tokens
    assert first.usage.cache_creation_input_tokens > 1000
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.input_tokens < 100
    short = [{"type": "text", "text": "short", "cache_control": {"type": "ephemeral"}}]
    assert client.messages.create(**hello(system=short)).usage.cache_creation_input_tokens == 0


@pytest.mark.parametrize("stream", [False, True])
def test_safeguards_get_a_verdict_per_tool_use(sim: SimulatorHandle, stream: bool) -> None:
    body = hello(tools=[BASH_TOOL], safeguards=SAFEGUARDS, stream=stream)
    results = []
    for command in ("ls", "rm -rf ~"):
        sim.configure(tool_plan={"tool": "Bash", "arguments": {"command": command}})
        resp = post(sim, body, anthropic_beta=f"claude-code-20250219,{DANGER_BETA}")
        assert resp.status_code == 200, resp.text
        if stream:
            seen = events(resp)
            (delta,) = [d for n, d in seen if n == "message_delta"]
            starts = [d["content_block"] for n, d in seen if n == "content_block_start"]
            use_id = next(b["id"] for b in starts if b["type"] == "tool_use")
            results.append((use_id, delta["delta"]["safeguard_results"]))
        else:
            msg = resp.json()
            use_id = next(b["id"] for b in msg["content"] if b["type"] == "tool_use")
            results.append((use_id, msg["safeguard_results"]))
    (safe_id, safe), (danger_id, danger) = results
    assert safe == [
        {
            "type": "dangerous_tool_use",
            "status": {
                "type": "available",
                "tool_uses": {safe_id: {"type": "evaluated", "outcome": "not_flagged"}},
            },
        }
    ]
    verdict = danger[0]["status"]["tool_uses"][danger_id]
    assert verdict["outcome"] == "flagged"
    assert verdict["explanation"]


def test_safeguards_without_their_beta_are_refused(sim: SimulatorHandle) -> None:
    resp = post(sim, hello(safeguards=SAFEGUARDS))
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "safeguards: Extra inputs are not permitted"
    assert "safeguard_results" not in post(sim, hello()).json()


@pytest.mark.parametrize(
    ("headers", "status", "kind", "needle"),
    [
        ({"x-api-key": KEY}, 400, "invalid_request_error", "anthropic-version: header is required"),
        ({**VERSION}, 401, "authentication_error", "x-api-key header is required"),
        ({**VERSION, "x-api-key": "sk-wrong"}, 401, "authentication_error", "invalid x-api-key"),
        (
            {
                **VERSION,
                "x-api-key": KEY,
                "anthropic-beta": "claude-code-20250219,made-up-2099-01-01",
            },
            400,
            "invalid_request_error",
            "Unexpected value(s) `made-up-2099-01-01` for the `anthropic-beta` header",
        ),
    ],
)
def test_headers_are_checked_like_the_api(
    sim: SimulatorHandle, headers: dict[str, str], status: int, kind: str, needle: str
) -> None:
    resp = httpx.post(sim.root_url + "/v1/messages", json=hello(), headers=headers, timeout=10)
    assert resp.status_code == status
    body = resp.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    assert needle in body["error"]["message"]
    assert sim.requests()[-1]["headers"].get("anthropic-beta") == headers.get("anthropic-beta")


def test_bearer_key_and_configured_betas(sim: SimulatorHandle) -> None:
    head = {"authorization": f"Bearer {KEY}", **VERSION, "anthropic-beta": "my-beta-1"}
    assert httpx.post(sim.root_url + "/v1/messages", json=hello(), headers=head).status_code == 400
    sim.configure(anthropic_betas=["my-beta-1"])
    resp = httpx.post(sim.root_url + "/v1/messages", json=hello(), headers=head)
    assert resp.status_code == 200
    assert sim.requests()[-1]["betas"] == ["my-beta-1"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            "model: Field required",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}]},
            "max_tokens: Field required",
        ),
        ({"model": "m", "max_tokens": 5}, "messages: Field required"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "role"),
    ],
)
def test_body_validation(sim: SimulatorHandle, body: dict[str, Any], needle: str) -> None:
    resp = post(sim, body)
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert needle in resp.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fault", "status", "kind"),
    [("429", 429, "rate_limit_error"), ("529", 529, "overloaded_error"), ("500", 500, "api_error")],
)
def test_faults_in_anthropic_shape(
    sim: SimulatorHandle, fault: str, status: int, kind: str
) -> None:
    sim.fail_next(fault)
    resp = post(sim, hello())
    assert resp.status_code == status
    assert resp.json()["error"]["type"] == kind
    if status in (429, 529):
        assert resp.headers["retry-after"] == "1"
    assert post(sim, hello()).status_code == 200


def test_disconnect_cuts_the_stream(sim: SimulatorHandle) -> None:
    sim.fail_next("disconnect")
    with pytest.raises(httpx.HTTPError):
        post(sim, hello(stream=True)).raise_for_status()


def test_count_tokens(client: anthropic.Anthropic, sim: SimulatorHandle) -> None:
    small = client.messages.count_tokens(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}]
    )
    large = client.messages.count_tokens(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi " * 500}]
    )
    assert 0 < small.input_tokens < large.input_tokens
    assert sim.requests()[-1]["path"] == "/v1/messages/count_tokens"


def test_prompt_cache_reads_the_longest_cached_breakpoint(client: anthropic.Anthropic) -> None:
    """Claude Code moves its last breakpoint each turn: the system prefix is still read."""
    system: Any = [
        {"type": "text", "text": "Rules. " * 800, "cache_control": {"type": "ephemeral"}}
    ]
    tail: Any = {"type": "text", "text": "turn", "cache_control": {"type": "ephemeral"}}
    first = client.messages.create(
        **hello(system=system, messages=[{"role": "user", "content": [tail]}])
    )
    second = client.messages.create(
        **hello(
            system=system,
            messages=[
                {"role": "user", "content": "turn"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{**tail, "text": "next turn"}]},
            ],
        )
    )
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens
    assert second.usage.cache_read_input_tokens > 1000
    assert second.usage.cache_creation_input_tokens
