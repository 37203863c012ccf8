"""A strict reader of an Anthropic Messages SSE stream, as Claude Code consumes it.

`check_stream` parses the raw bytes of a streamed `/v1/messages` answer and raises
`BadStreamError` at the first event a strict client would reject; it returns the message the
events build. What it holds a stream to (Anthropic's "Streaming Messages" event flow, and what
LiteLLM's translation has been seen to break, docs/litellm-notes.md "(l)"):

* `message_start` first, with integer `usage` counts (`input_tokens`, `output_tokens`, and the
  cache counts when present): no null, no string (LiteLLM #24176);
* a `content_block_start` opens index 0, 1, 2 ... in order, one block at a time;
* a `content_block_delta` goes to the open block, whose start was seen ("Content block not
  found", LiteLLM #13373), and is of that block's kind: `text_delta` / `citations_delta` in a
  `text` block, `thinking_delta` / `signature_delta` in a `thinking` block ("Content block is
  not a thinking block", LiteLLM #33224), `input_json_delta` in a `tool_use` block;
* every block is stopped, at its own index, before the next starts and before `message_delta`;
* a `tool_use` block's `partial_json` fragments join into a JSON object (its `input`; a block
  without fragments keeps the input of its start, so the caller can see an input that was lost,
  LiteLLM #25321);
* one `message_delta` with a known `stop_reason` and integer `usage.output_tokens`, then
  `message_stop`, last; no `error` event. `ping` may come anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

DELTAS = {
    "text": {"text_delta", "citations_delta"},
    "thinking": {"thinking_delta", "signature_delta"},
    "redacted_thinking": set(),
    "tool_use": {"input_json_delta"},
    "server_tool_use": {"input_json_delta"},
}
"""The delta kinds each content block type may receive."""

STOP_REASONS = {"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"}


class BadStreamError(AssertionError):
    """The stream breaks the event flow; the message says which event and how."""


def parse_sse(raw: bytes | str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each SSE event, in order."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    events: list[tuple[str, dict[str, Any]]] = []
    for frame in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "", []
        for line in frame.split("\n"):
            if line.startswith("event:"):
                name = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:") :].strip())
        if not data:
            continue
        payload = json.loads("\n".join(data))
        events.append((name or str(payload.get("type")), payload))
    return events


def _ints(usage: Any, where: str, required: Iterable[str]) -> None:
    if not isinstance(usage, Mapping):
        raise BadStreamError(f"{where}: usage is {usage!r}, not an object")
    for name in required:
        if name not in usage:
            raise BadStreamError(f"{where}: usage has no {name}")
    for name, value in usage.items():
        if isinstance(value, Mapping):  # cache_creation, server_tool_use: counts inside
            _ints(value, f"{where}.{name}", ())
        elif name in ("service_tier", "inference_geo"):
            continue
        elif value is None or isinstance(value, bool) or not isinstance(value, int):
            raise BadStreamError(f"{where}: usage.{name} is {value!r}, not an integer")


def check_stream(raw: bytes | str) -> dict[str, Any]:
    """The message a strictly valid stream builds; `BadStreamError` at the first fault."""
    events = [(n, d) for n, d in parse_sse(raw) if d.get("type") != "ping"]
    if not events:
        raise BadStreamError("no events")
    for n, (name, data) in enumerate(events):
        if data.get("type") != name:
            raise BadStreamError(f"event {n}: named {name!r}, data type {data.get('type')!r}")
        if name == "error":
            raise BadStreamError(f"event {n}: an error event: {data.get('error')}")
    first, start = events[0]
    if first != "message_start":
        raise BadStreamError(f"event 0 is {first}, not message_start")
    message = dict(start["message"])
    _ints(message.get("usage"), "message_start", ("input_tokens", "output_tokens"))
    content: list[dict[str, Any]] = []
    fragments: dict[int, list[str]] = {}
    open_index: int | None = None
    delta_seen = False
    for n, (name, data) in enumerate(events[1:], start=1):
        where = f"event {n} ({name})"
        if delta_seen and name != "message_stop":
            raise BadStreamError(f"{where}: after message_delta")
        if name == "content_block_start":
            index, block = data.get("index"), data.get("content_block") or {}
            if open_index is not None:
                raise BadStreamError(f"{where}: block {open_index} is still open")
            if index != len(content):
                raise BadStreamError(f"{where}: index {index}, expected {len(content)}")
            if block.get("type") not in DELTAS:
                raise BadStreamError(f"{where}: unknown block type {block.get('type')!r}")
            content.append(dict(block))
            open_index = index
        elif name == "content_block_delta":
            index, delta = data.get("index"), data.get("delta") or {}
            if open_index is None or index != open_index:
                raise BadStreamError(
                    f"{where}: delta for block {index}, whose content_block_start was not "
                    f"seen or which is closed (Content block not found)"
                )
            block = content[open_index]
            if delta.get("type") not in DELTAS[block["type"]]:
                raise BadStreamError(
                    f"{where}: {delta.get('type')} in a {block['type']} block at index {index}"
                )
            kind = delta["type"]
            if kind == "text_delta":
                block["text"] = block.get("text", "") + delta["text"]
            elif kind == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta["thinking"]
            elif kind == "signature_delta":
                block["signature"] = delta["signature"]
            elif kind == "input_json_delta":
                fragments.setdefault(open_index, []).append(delta["partial_json"])
        elif name == "content_block_stop":
            if data.get("index") != open_index or open_index is None:
                raise BadStreamError(f"{where}: stops {data.get('index')}, open: {open_index}")
            open_index = None
        elif name == "message_delta":
            if open_index is not None:
                raise BadStreamError(f"{where}: block {open_index} was never stopped")
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason not in STOP_REASONS:
                raise BadStreamError(f"{where}: stop_reason {reason!r}")
            _ints(data.get("usage"), where, ("output_tokens",))
            message["stop_reason"] = reason
            message["usage"] = {**message["usage"], **data["usage"]}
            delta_seen = True
        elif name == "message_stop":
            if not delta_seen:
                raise BadStreamError(f"{where}: message_stop without message_delta")
            if n != len(events) - 1:
                raise BadStreamError(f"{where}: events after message_stop")
        else:
            raise BadStreamError(f"{where}: unknown event")
    if events[-1][0] != "message_stop":
        raise BadStreamError(f"the stream ends with {events[-1][0]}, not message_stop")
    for index, parts in fragments.items():
        try:
            value = json.loads("".join(parts)) if "".join(parts) else {}
        except ValueError as exc:
            raise BadStreamError(f"block {index}: input_json_delta is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise BadStreamError(f"block {index}: tool input {value!r} is not an object")
        content[index]["input"] = value
    message["content"] = content
    return message


def tool_inputs(message: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(name, input) of each tool_use block of a message, in order."""
    return [(b["name"], b.get("input")) for b in message["content"] if b["type"] == "tool_use"]
