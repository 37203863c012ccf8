"""Scripted answers of the OpenAI chat-completions protocol: the shapes translation bugs need.

A request whose latest user turn holds ``[[sim:answer {json}]]`` is answered with exactly that
script instead of the engine's plan (``server.plan_reply``), in OpenAI's wire shapes:

* ``reasoning``: the model's reasoning, as ``reasoning_content`` deltas (DeepSeek, vLLM,
  NVIDIA NIM, Groq and OpenRouter stream it so), before anything else;
* ``text``: answer text, as ``content`` deltas;
* ``tool_calls``: ``[{"name": ..., "arguments": {...}}, ...]``, several calls in one answer
  (parallel tool calls), each opened by a delta with its ``index``, ``id`` and name, its
  arguments then streamed in fragments;
* ``whole_arguments``: true to send each call's whole arguments in its opening delta, as
  some OpenAI-compatible servers (vLLM, SGLang) do.

The first chunk is ``{"role": "assistant", "content": ""}``, as OpenAI and most compatible
servers send it. Non-streamed, the same answer is one message (``reasoning_content``,
``content``, ``tool_calls``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

ANSWER_DIRECTIVE = re.compile(r"\[\[sim:answer (\{.*\})\]\]", re.DOTALL)


@dataclass
class Script:
    reasoning: str = ""
    text: str = ""
    tool_calls: list[tuple[str, str, str]] = field(default_factory=list)
    """(id, name, arguments JSON) of each call, in order."""
    whole_arguments: bool = False

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"


def script_of(turn: str) -> Script | None:
    """The script in a user turn, or None when it has none (ValueError: a malformed one)."""
    found = ANSWER_DIRECTIVE.search(turn)
    if found is None:
        return None
    spec = json.loads(found.group(1))
    if not isinstance(spec, Mapping):
        raise ValueError("[[sim:answer]] takes a JSON object")
    calls = []
    for call in spec.get("tool_calls") or []:
        arguments = json.dumps(call.get("arguments") or {}, separators=(",", ":"))
        calls.append(("call_" + uuid.uuid4().hex[:24], str(call["name"]), arguments))
    return Script(
        reasoning=str(spec.get("reasoning") or ""),
        text=str(spec.get("text") or ""),
        tool_calls=calls,
        whole_arguments=bool(spec.get("whole_arguments")),
    )


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def message(script: Script) -> dict[str, Any]:
    """The non-streamed assistant message of a script."""
    out: dict[str, Any] = {"role": "assistant", "content": script.text or None, "refusal": None}
    if script.reasoning:
        out["reasoning_content"] = script.reasoning
    if script.tool_calls:
        out["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
            for cid, name, args in script.tool_calls
        ]
    return out


def deltas(script: Script) -> Iterator[dict[str, Any]]:
    """The ``delta`` of each streamed chunk of a script, in order (the finish chunk apart)."""
    yield {"role": "assistant", "content": ""}
    for piece in _pieces(script.reasoning, 12) if script.reasoning else []:
        yield {"reasoning_content": piece}
    for piece in _pieces(script.text, 12) if script.text else []:
        yield {"content": piece}
    for index, (cid, name, args) in enumerate(script.tool_calls):
        opening = {
            "index": index,
            "id": cid,
            "type": "function",
            "function": {"name": name, "arguments": args if script.whole_arguments else ""},
        }
        yield {"tool_calls": [opening]}
        if not script.whole_arguments:
            for piece in _pieces(args, 7):
                yield {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}


def completion_tokens(script: Script) -> int:
    size = len(script.reasoning) + len(script.text)
    size += sum(len(name) + len(args) for _, name, args in script.tool_calls)
    return max(1, size // 4)
