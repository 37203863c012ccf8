"""LiteLLM's known Claude Code bugs, each reproduced by its trigger through a rendered gateway.

The gateway runs from exactly what the operator renders (`render_tenant`, mounted as the
kubelet would) for the Tenant of e2e/test_anthropic_provider.py, with its own tenant role in
PostgreSQL and a throwaway redis-server; the providers are the simulator's Anthropic Messages
API (`claude-native`) and its OpenAI chat completions (`other-model`, openai-compatible: the
"non-Anthropic model" of the bug reports).
Every streamed answer is read raw and held to `e2e.anthropic_stream.check_stream`, which
rejects what Claude Code rejects (its unit tests, tests/unit/test_anthropic_stream.py, feed it
the bad sequences the bug reports recorded). docs/litellm-notes.md "(l)" has one section per
bug: its trigger, what LiteLLM 1.106.12 does, the repair where one was needed, and the test.

User story: a developer whose tenant routes Claude Code to a non-Anthropic model gets tool
calls with their arguments, thinking and text in the right blocks, usage Claude Code can read,
a history with signed thinking accepted on the next turn, and token counts that count
everything it sends.
"""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e.anthropic_stream import check_stream, tool_inputs
from e2e.claude import ClaudeCodeError, ClaudeRun, check_tool_turn, run_claude, seed_home
from e2e.recording_proxy import RecordingProxy
from e2e.rendered_gateway import READ_TOOL, Gateway
from e2e.test_anthropic_provider import BASH_TOOL, NATIVE, OTHER, provider_gateway

pytestmark = pytest.mark.e2e

TOOLS: list[dict[str, Any]] = [READ_TOOL, BASH_TOOL]
CALLS: list[dict[str, Any]] = [
    {"name": "Read", "arguments": {"file_path": "/srv/app/main.py"}},
    {"name": "Bash", "arguments": {"command": "grep -rn 'def handler' src/ | head -20"}},
    {"name": "Read", "arguments": {"file_path": "/srv/app/config/settings.toml"}},
]


gateway = provider_gateway("litellm-bugs", "tg_llmbugs")


@pytest.fixture(autouse=True)
def _fresh_simulator(gateway: Gateway) -> None:
    gateway.sim.reset()


def stream(gateway: Gateway, body: dict[str, Any]) -> dict[str, Any]:
    """POST a streamed /v1/messages, read the raw SSE, hold it to `check_stream`."""
    headers = {"x-api-key": gateway.key, "anthropic-version": "2023-06-01"}
    with httpx.stream(
        "POST",
        gateway.url + "/v1/messages",
        json={**body, "stream": True},
        headers=headers,
        timeout=60,
    ) as resp:
        raw = resp.read()
    assert resp.status_code == 200, raw[:500]
    return check_stream(raw)


def scripted(**answer: Any) -> str:
    """A user turn the simulator's chat completions answer with exactly `answer`
    (e2e/provider_sim/scripted.py)."""
    return f"{secrets.token_hex(4)} [[sim:answer {json.dumps(answer)}]]"


def tool_turn(gateway: Gateway, **answer: Any) -> dict[str, Any]:
    """The streamed answer of `other-model`, offered TOOLS, whose upstream answers `answer`."""
    return stream(
        gateway,
        {
            "model": OTHER,
            "max_tokens": 1024,
            "tools": TOOLS,
            "messages": [{"role": "user", "content": scripted(**answer)}],
        },
    )


def expected_inputs() -> list[tuple[str, Any]]:
    return [(str(c["name"]), c["arguments"]) for c in CALLS]


# ----------------------------------------------------------- #25321: tool_use input lost


@pytest.mark.parametrize("whole", [False, True], ids=["fragments", "whole-arguments"])
def test_parallel_tool_calls_of_a_non_anthropic_model_keep_their_inputs(
    gateway: Gateway, whole: bool
) -> None:
    """LiteLLM #25321: three tool calls streamed in one answer by an OpenAI-shaped upstream
    (arguments in fragments, or whole in each call's opening chunk as vLLM sends them) reach
    the client as three tool_use blocks with their full inputs, never `{}`."""
    msg = tool_turn(gateway, tool_calls=CALLS, whole_arguments=whole)
    assert tool_inputs(msg) == expected_inputs()
    assert msg["stop_reason"] == "tool_use"


# ----------------------------------------------- #13373 and #33224: blocks and their deltas


def test_text_then_tool_calls_stream_in_well_formed_blocks(gateway: Gateway) -> None:
    """LiteLLM #13373 ("Content block not found"): text, then tool calls, from an
    OpenAI-shaped upstream; every delta goes to a block whose start was sent."""
    msg = tool_turn(gateway, text="Let me look at that.", tool_calls=CALLS)
    assert [b["type"] for b in msg["content"]] == ["text", "tool_use", "tool_use", "tool_use"]
    assert msg["content"][0]["text"] == "Let me look at that."
    assert tool_inputs(msg) == expected_inputs()


def test_reasoning_then_text_then_tools_put_thinking_in_a_thinking_block(
    gateway: Gateway,
) -> None:
    """LiteLLM #33224 ("Content block is not a thinking block"): an OpenAI-shaped upstream
    that streams `reasoning_content` after an opening `content: ""` chunk (NVIDIA NIM, vLLM),
    then text, then tool calls; no thinking_delta may land in a text block."""
    msg = tool_turn(
        gateway,
        reasoning="The user wants the handler; read main.py first.",
        text="Reading it now.",
        tool_calls=CALLS[:1],
    )
    kinds = [b["type"] for b in msg["content"]]
    assert "text" in kinds, kinds
    assert "tool_use" in kinds, kinds
    texts = [b["text"] for b in msg["content"] if b["type"] == "text"]
    assert texts == ["Reading it now."], texts
    thinking = [b["thinking"] for b in msg["content"] if b["type"] == "thinking"]
    assert thinking in ([], ["The user wants the handler; read main.py first."]), thinking
    assert tool_inputs(msg) == expected_inputs()[:1]


def test_interleaved_thinking_and_tool_use_of_a_claude_provider(gateway: Gateway) -> None:
    """The same strict reading of a native Claude stream: thinking (with its signature),
    then a tool call."""
    msg = stream(
        gateway,
        {
            "model": NATIVE,
            "max_tokens": 4096,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "tools": TOOLS[:1],
            "messages": [{"role": "user", "content": "read main.py " + secrets.token_hex(4)}],
        },
    )
    assert [b["type"] for b in msg["content"]] == ["thinking", "tool_use"]
    assert msg["content"][0]["signature"]
    assert msg["content"][1]["input"]


# -------------------------------------------------------------- #24176: usage fields


@pytest.mark.parametrize("alias", [OTHER, NATIVE])
def test_usage_is_integer_counts_claude_code_can_read(gateway: Gateway, alias: str) -> None:
    """LiteLLM #24176: message_start and message_delta carry integer usage counts (cache
    counts included, with a cached system prompt), never null, for both kinds of provider."""
    system = [{"type": "text", "text": "Be terse. " * 600, "cache_control": {"type": "ephemeral"}}]
    for turn in range(2):  # a cache write, then a cache read
        msg = stream(
            gateway,
            {
                "model": alias,
                "max_tokens": 256,
                "system": system,
                "messages": [{"role": "user", "content": f"usage {turn}"}],
            },
        )
        usage = msg["usage"]
        assert usage["output_tokens"] > 0
        assert usage["input_tokens"] + usage.get("cache_read_input_tokens", 0) > 0


# ------------------------------------------------ #32188: signed thinking sent back upstream


def test_signed_thinking_in_the_history_is_accepted_by_a_non_anthropic_upstream(
    gateway: Gateway,
) -> None:
    """LiteLLM #32188: Claude Code sends the previous turn back with its thinking block and
    signature; an OpenAI-shaped upstream gets a request it accepts (no Anthropic signature in
    it), and the turn is answered, streamed and not."""
    first = stream(
        gateway,
        {
            "model": NATIVE,
            "max_tokens": 4096,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "think first"}],
        },
    )
    thinking = first["content"][0]
    assert thinking["type"] == "thinking"
    assert thinking["signature"]
    for streamed in (True, False):
        marker = "next-" + secrets.token_hex(4)
        body = {
            "model": OTHER,
            "max_tokens": 1024,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [
                {"role": "user", "content": "think first"},
                {"role": "assistant", "content": first["content"]},
                {"role": "user", "content": marker},
            ],
        }
        if streamed:
            answer = stream(gateway, body)
        else:
            resp = gateway.post(body, {"x-api-key": gateway.key, "anthropic-version": "2023-06-01"})
            assert resp.status_code == 200, resp.text
            answer = resp.json()
        assert answer["content"][-1]["type"] == "text"
        sent = json.dumps(gateway.upstream(marker)["body"])
        assert thinking["signature"] not in sent
        assert "thinking_blocks" not in sent


# ------------------------------------------------- #13252, #37102: count_tokens


def count(gateway: Gateway, body: dict[str, Any]) -> int:
    resp = gateway.post(
        body,
        {"x-api-key": gateway.key, "anthropic-version": "2023-06-01"},
        path="/v1/messages/count_tokens",
    )
    assert resp.status_code == 200, resp.text
    tokens = resp.json()["input_tokens"]
    assert isinstance(tokens, int)
    return tokens


PNG_1PX = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2217bc2"
        "0000000049454e44ae426082"
    )
).decode()


@pytest.mark.parametrize("alias", [OTHER, NATIVE])
def test_count_tokens_counts_system_tools_and_images(gateway: Gateway, alias: str) -> None:
    """LiteLLM #13252 (no count_tokens for a non-Anthropic model) and #37102 (tools, system
    and images left out of the count): the route answers for both kinds of alias, and each
    part Claude Code sends adds to the count."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What does main.py do?"}]
    base = count(gateway, {"model": alias, "messages": messages})
    system = "You are Claude Code. Follow the repository's conventions. " * 20
    with_system = count(gateway, {"model": alias, "messages": messages, "system": system})
    with_tools = count(
        gateway, {"model": alias, "messages": messages, "system": system, "tools": TOOLS}
    )
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX},
    }
    with_image = count(
        gateway,
        {
            "model": alias,
            "system": system,
            "tools": TOOLS,
            "messages": [
                {"role": "user", "content": [image, {"type": "text", "text": "What is this?"}]}
            ],
        },
    )
    assert base > 0
    assert with_system >= base + 200, (base, with_system)  # 20 x a 10-word sentence
    schema_tokens = len(json.dumps(TOOLS)) // 6
    assert with_tools >= with_system + schema_tokens, (with_system, with_tools)
    assert with_image > with_tools, (with_tools, with_image)


# ------------------------------------------------ 429 with retry-after (OpenAI-shaped upstream)


def test_a_429_with_retry_after_is_retried_after_the_wait_the_provider_asked(
    gateway: Gateway,
) -> None:
    """OpenAI, Azure and Anthropic send `retry-after` with a 429. LiteLLM 1.106.12's router
    (`Router._time_to_sleep_before_retry`, one deployment in the group) sleeps that long (plus
    up to 0.75 s of jitter) when 0 < retry-after <= 60, instead of its 0.5 s x 2^n backoff,
    then retries once (`num_retries: 1`). With `retry-after: 3` the second call cannot come
    before 3 s after the first, where the backoff would retry within 1.25 s."""
    gateway.sim.configure(retry_after_s=3)
    gateway.sim.fail_next("429")
    marker = "throttled-" + secrets.token_hex(4)
    body = {"model": OTHER, "max_tokens": 64, "messages": [{"role": "user", "content": marker}]}
    resp = gateway.post(body, {"x-api-key": gateway.key, "anthropic-version": "2023-06-01"})
    assert resp.status_code == 200, resp.text
    first, second = gateway.calls(marker)
    assert second["time"] - first["time"] >= 3, "retried before the provider's retry-after"


def persistent_429(gateway: Gateway) -> httpx.Response:
    gateway.sim.configure(retry_after_s=2, fail_models={"sim-fast": "429"})
    body = {"model": OTHER, "max_tokens": 64, "messages": [{"role": "user", "content": "x"}]}
    return gateway.post(body, {"x-api-key": gateway.key, "anthropic-version": "2023-06-01"})


def test_a_persistent_429_reaches_the_client_as_a_429_rate_limit_error(gateway: Gateway) -> None:
    """The retry fails too: the client gets Anthropic's 429 `rate_limit_error`, which Claude
    Code and the SDKs retry, never a 500."""
    resp = persistent_429(gateway)
    assert resp.status_code == 429, resp.text
    assert resp.json()["type"] == "error"
    assert resp.json()["error"]["type"] == "rate_limit_error", resp.text


@pytest.mark.xfail(
    strict=True,
    reason="LiteLLM 1.106.12 drops the provider's retry-after from the error it answers "
    "(docs/litellm-notes.md (l)); the client falls back to its own backoff",
)
def test_a_persistent_429_passes_the_providers_retry_after(gateway: Gateway) -> None:
    resp = persistent_429(gateway)
    assert resp.status_code == 429, resp.text
    assert resp.headers.get("retry-after") == "2", dict(resp.headers)


# ------------------------------------------------------- the same bugs as Claude Code sees them


def claude(env: dict[str, str], prompt: str, workdir: Path, *args: str) -> ClaudeRun:
    """`claude -p PROMPT` on `other-model` in `workdir`'s project, as its user, with the
    gateway `env`; the CLI retries nothing."""
    try:
        return run_claude(
            prompt,
            project=workdir / "project",
            home=workdir / "home",
            gateway_env=env,
            model=OTHER,
            max_retries=0,
            args=args,
        )
    except ClaudeCodeError as exc:
        pytest.fail(str(exc), pytrace=False)


def answered(run: ClaudeRun, text: str) -> None:
    """`run` ended well, answering exactly `text`."""
    result = run.result
    assert run.returncode == 0, run.describe()
    assert result["is_error"] is False, run.describe()
    assert result["result"] == text, run.describe()


def cli_workdir(tmp_path: Path) -> Path:
    """A project directory and a seeded HOME under `tmp_path`."""
    (tmp_path / "project").mkdir()
    seed_home(tmp_path / "home", [tmp_path / "project"])
    return tmp_path


def assistant_turns(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] == "assistant"]


@pytest.mark.claude_cli
@pytest.mark.parametrize("reasoning", [False, True], ids=["text-first", "reasoning-first"])
def test_claude_code_runs_parallel_tool_calls_of_a_non_anthropic_model(
    gateway: Gateway, tmp_path: Path, reasoning: bool
) -> None:
    """#25321, #13373 and #33224 as Claude Code itself sees them: an OpenAI-shaped upstream
    streams text (after reasoning, once) and then two Read calls in one answer. `claude -p`
    runs both, on the files the calls name, and its answer holds what only those files hold;
    the answer turn of the upstream carries both calls with their inputs and both results,
    and no reasoning sent back."""
    workdir = cli_workdir(tmp_path)
    files = {}
    for name in ("alpha", "beta"):
        token = f"{name}-{secrets.token_hex(6)}"
        path = workdir / "project" / f"{name}.txt"
        path.write_text(f"The {name} codename is {token}.\n")
        files[str(path)] = token
    answer: dict[str, Any] = {
        "text": "Reading both files.",
        "tool_calls": [{"name": "Read", "arguments": {"file_path": f}} for f in files],
    }
    if reasoning:
        answer["reasoning"] = "Both files hold a codename: read them together."
    run = claude(gateway.claude_env(OTHER), scripted(**answer), workdir)

    alpha, beta = files.values()
    check_tool_turn(run, alpha)
    assert beta in run.result["result"], run.describe()
    # the simulator answers the tool results it receives ("Tool said: ..."): the upstream's
    # answer turn is the one that carries the results
    body = gateway.upstream(beta)["body"]
    (turn,) = assistant_turns(body)
    assert turn["content"] == "Reading both files."
    assert set(turn) <= {"role", "content", "tool_calls"}, turn  # no reasoning sent back
    calls = {c["id"]: c["function"] for c in turn["tool_calls"]}
    assert [(f["name"], json.loads(f["arguments"])) for f in calls.values()] == [
        ("Read", {"file_path": f}) for f in files
    ]
    results = {m["tool_call_id"]: m["content"] for m in body["messages"] if m["role"] == "tool"}
    assert results.keys() == calls.keys()
    for call_id, function in calls.items():
        assert files[json.loads(function["arguments"])["file_path"]] in results[call_id]


@pytest.mark.claude_cli
def test_claude_code_continues_after_a_thinking_turn_of_a_non_anthropic_model(
    gateway: Gateway, tmp_path: Path
) -> None:
    """#32188 as Claude Code itself sees it: the first turn's upstream streams reasoning (a
    thinking block for Claude Code), `claude -p --continue` sends that block back with the
    history; the OpenAI-shaped upstream gets the history without it (no thinking, signature,
    `thinking_blocks` or `reasoning_content`) and the second turn is answered. A recording
    proxy between the CLI and the gateway shows what the CLI sent."""
    workdir = cli_workdir(tmp_path)
    thought = "Think about it before answering " + secrets.token_hex(4)
    first_text, second_text = "first-" + secrets.token_hex(6), "second-" + secrets.token_hex(6)
    with RecordingProxy(gateway.url).running() as proxy:
        env = {**gateway.claude_env(OTHER), "ANTHROPIC_BASE_URL": proxy.url}
        answered(claude(env, scripted(reasoning=thought, text=first_text), workdir), first_text)
        second = scripted(text=second_text)
        answered(claude(env, second, workdir, "--continue"), second_text)
        sent = [r["body"] for r in proxy.requests() if second_text in json.dumps(r["body"])]

    # what Claude Code sent: the first turn with its thinking block, and thinking asked for
    (asked,) = sent
    blocks = [b for m in assistant_turns(asked) for b in m["content"]]
    thinking = [b for b in blocks if b["type"] == "thinking"]
    assert [b["thinking"] for b in thinking] == [thought], blocks
    assert {"type": "text", "text": first_text} in blocks
    assert asked.get("thinking"), "Claude Code asked for no thinking"

    # what reached the provider: the same history, its thinking removed
    upstream = gateway.upstream(second_text)["body"]
    assert "thinking" not in upstream
    assert [m["content"] for m in assistant_turns(upstream)] == [first_text]
    for message in assistant_turns(upstream):
        assert set(message) <= {"role", "content", "tool_calls"}, message
    seen = json.dumps(upstream)
    assert "thinking_blocks" not in seen
    assert "reasoning_content" not in seen
    assert seen.count(thought) == 1  # in the first prompt's directive only
    for block in thinking:
        if block.get("signature"):
            assert block["signature"] not in seen
