"""The strict stream reader of e2e/test_litellm_bugs.py fails on each LiteLLM bug's stream.

Each bad sequence is the shape its bug report recorded (LiteLLM issues #25321, #13373, #33224,
#24176), written as SSE; the good one is what Anthropic streams for thinking, text and two
tool calls. So the end-to-end tests that pass through the gateway would fail on the bug.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from e2e.anthropic_stream import BadStreamError, check_stream, tool_inputs

pytestmark = pytest.mark.unit

USAGE = {"input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 0}


def sse(*events: dict[str, Any]) -> str:
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)


def start(**usage: Any) -> dict[str, Any]:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}
    return {"type": "message_start", "message": {**message, "usage": {**USAGE, **usage}}}


def block(index: int, kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "content_block_start",
        "index": index,
        "content_block": {"type": kind, **fields},
    }


def delta(index: int, kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": {"type": kind, **fields}}


def stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def end(reason: str = "tool_use", **usage: Any) -> list[dict[str, Any]]:
    return [
        {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": None},
            "usage": {"output_tokens": 40, **usage},
        },
        {"type": "message_stop"},
    ]


def tool(index: int, name: str, *parts: str) -> list[dict[str, Any]]:
    return [
        block(index, "tool_use", id=f"toolu_{index}", name=name, input={}),
        *(delta(index, "input_json_delta", partial_json=p) for p in parts),
        stop(index),
    ]


GOOD = [
    start(),
    {"type": "ping"},
    block(0, "thinking", thinking="", signature=""),
    delta(0, "thinking_delta", thinking="read it"),
    delta(0, "signature_delta", signature="sig"),
    stop(0),
    block(1, "text", text=""),
    delta(1, "text_delta", text="Looking."),
    stop(1),
    *tool(2, "Read", '{"file_', 'path":"/a"}'),
    *tool(3, "Bash", '{"command":"ls"}'),
    *end(),
]


def test_a_well_formed_stream_builds_its_message() -> None:
    msg = check_stream(sse(*GOOD))
    assert [b["type"] for b in msg["content"]] == ["thinking", "text", "tool_use", "tool_use"]
    assert msg["content"][0]["signature"] == "sig"
    assert tool_inputs(msg) == [("Read", {"file_path": "/a"}), ("Bash", {"command": "ls"})]
    assert msg["usage"]["output_tokens"] == 40


def test_25321_a_tool_call_whose_input_was_lost_shows_as_empty() -> None:
    """#25321: the second call's input_json_delta never came; its input stays `{}`, which
    the end-to-end test compares with the arguments the upstream sent."""
    lost = [start(), *tool(0, "Read", '{"file_path":"/a"}'), *tool(1, "Bash"), *end()]
    assert tool_inputs(check_stream(sse(*lost))) == [
        ("Read", {"file_path": "/a"}),
        ("Bash", {}),
    ]


def test_13373_a_delta_without_its_block_start_is_rejected() -> None:
    """#13373 "Content block not found": the tool call's deltas at an index never started."""
    bad = [
        start(),
        block(0, "text", text=""),
        delta(0, "text_delta", text="Hi"),
        stop(0),
        delta(1, "input_json_delta", partial_json='{"a":1}'),
        *end(),
    ]
    with pytest.raises(BadStreamError, match="Content block not found"):
        check_stream(sse(*bad))


def test_13373_a_delta_after_its_block_stopped_is_rejected() -> None:
    bad = [start(), block(0, "text", text=""), stop(0), delta(0, "text_delta", text="x"), *end()]
    with pytest.raises(BadStreamError, match="Content block not found"):
        check_stream(sse(*bad))


def test_33224_a_thinking_delta_in_a_text_block_is_rejected() -> None:
    """#33224: LiteLLM opened a text block, then streamed the reasoning into it."""
    bad = [
        start(),
        block(0, "text", text=""),
        delta(0, "thinking_delta", thinking="Let me think"),
        stop(0),
        *end("end_turn"),
    ]
    with pytest.raises(BadStreamError, match="thinking_delta in a text block"):
        check_stream(sse(*bad))


@pytest.mark.parametrize(
    ("where", "events"),
    [
        ("message_start", [start(input_tokens=None), block(0, "text", text=""), stop(0), *end()]),
        ("message_start", [start(cache_creation_input_tokens="0"), *end()]),
        ("message_delta", [start(), *end(cache_read_input_tokens=None)]),
        ("message_delta", [start(), *end(output_tokens=None)]),
    ],
)
def test_24176_usage_that_is_not_integer_counts_is_rejected(
    where: str, events: list[dict[str, Any]]
) -> None:
    """#24176: Claude Code could not read the usage LiteLLM sent for other models."""
    with pytest.raises(BadStreamError, match=where):
        check_stream(sse(*events))


@pytest.mark.parametrize(
    "events",
    [
        [block(0, "text", text=""), stop(0), *end()],  # no message_start
        [start(), block(1, "text", text=""), stop(1), *end()],  # index skips 0
        [start(), block(0, "text", text=""), block(1, "text", text=""), stop(1), *end()],
        [start(), block(0, "text", text=""), *end()],  # never stopped
        [
            start(),
            block(0, "tool_use", id="t", name="R", input={}),
            delta(0, "text_delta", text="x"),
        ],
        [start(), *tool(0, "Read", '{"file_path":'), *end()],  # input cut short
        [start(), {"type": "error", "error": {"type": "api_error", "message": "boom"}}],
        [start(), *end()[:1]],  # no message_stop
    ],
)
def test_other_broken_flows_are_rejected(events: list[dict[str, Any]]) -> None:
    with pytest.raises(BadStreamError):
        check_stream(sse(*events))
