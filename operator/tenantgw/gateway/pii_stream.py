"""PII in a streamed answer: the state machines that redact text and tool input as they arrive.

An entity can straddle chunks: "jane.doe@exam" in one text delta, "ple.com" in the next; a tool
call's JSON input arrives as `input_json_delta` fragments that may cut a value, or an escape
(`\\u0040`), anywhere. Pure: no I/O, no LiteLLM.

* Text (`TextRedactor`): the last `LOOKBEHIND` characters of a block are held back; only text
  further from the end than that is scanned and sent, so an entity of up to `LOOKBEHIND`
  characters (every e-mail address, card, IBAN, phone, SSN, IP address and token the scanner
  knows; PEM private keys are the exception) is always seen whole before any of it leaves. A
  finding that straddles the point where sending stops holds everything from its start. The
  scan also sees the `LOOKBEHIND` characters already sent before the held text, so a match
  never begins at an artificial start of text; when a match begins in text already sent (an
  entity longer than the window), what remains of it is replaced by the placeholder. At the
  end of the block the held text is scanned and sent.
* Tool input (`JsonRedactor`): the fragments of one `tool_use` block (one OpenAI tool call) are
  buffered until the block ends, then parsed, every string value redacted like a request's tool
  input (`pii.walk`), and sent as one fragment: JSON escapes cannot hide an entity, and the
  client still receives valid JSON. Input that does not parse is redacted as text.
* Anthropic SSE events (`AnthropicEvents`) and OpenAI chunks (`ChatChunks`) route each delta to
  the state of its block (by `index`, and tool-call `index`), and emit the held text just before
  the block's `content_block_stop` (OpenAI: before the chunk with `finish_reason`).

`thinking` blocks pass unchanged: their `signature` covers the text, and Anthropic refuses a
changed thinking block when the client sends it back on the next turn (docs/compliance.md).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tenantgw.gateway.pii import Finding, Scanner, placeholder

LOOKBEHIND = 256
"""Characters of a text block held back before they are sent (the look-behind window)."""

Counts = dict[str, int]


def _add(counts: Counts, entity: str, n: int = 1) -> None:
    counts[entity] = counts.get(entity, 0) + n


class TextRedactor:
    """One text block's stream: `feed` each delta, send what it returns, `flush` at the end."""

    def __init__(self, scanner: Scanner, counts: Counts, window: int = LOOKBEHIND) -> None:
        self.scanner = scanner
        self.counts = counts
        self.window = window
        self._sent_tail = ""  # the last `window` original characters already sent
        self._held = ""
        self.original: list[str] = []
        self.redacted: list[str] = []

    def feed(self, delta: str) -> str:
        """The redacted text that may be sent now (often "": it is held)."""
        self.original.append(delta)
        self._held += delta
        if len(self._held) <= self.window:
            return ""
        return self._emit(final=False)

    def flush(self) -> str:
        """The rest of the block, redacted."""
        if not self._held:
            return ""
        return self._emit(final=True)

    def _emit(self, *, final: bool) -> str:
        base = len(self._sent_tail)
        text = self._sent_tail + self._held
        findings = self.scanner.find(text)
        cut = len(text) if final else len(text) - self.window
        for finding in findings:
            if finding.end > base and finding.start < cut < finding.end:
                cut = max(base, finding.start)  # hold an entity that may still grow
        out = self._redact(text, base, cut, findings)
        self._sent_tail = text[max(0, cut - self.window) : cut]
        self._held = text[cut:]
        self.redacted.append(out)
        return out

    def _redact(self, text: str, base: int, cut: int, findings: Iterable[Finding]) -> str:
        parts: list[str] = []
        position = base
        for finding in findings:
            if finding.end <= base or finding.start >= cut:
                continue
            parts.append(text[position : max(position, finding.start)])
            parts.append(placeholder(finding.entity))
            _add(self.counts, finding.entity)
            position = min(finding.end, cut)
        parts.append(text[position:cut])
        return "".join(parts)

    def pairs(self) -> tuple[str, str]:
        """(the block as received, the block as sent) once it is flushed."""
        return "".join(self.original), "".join(self.redacted)


def _walk_strings(value: Any, edit: Callable[[str], str]) -> Any:
    """`value` with every string in it (keys excepted) run through `edit`, without recursion."""
    if isinstance(value, str):
        return edit(value)
    pending: list[Any] = [value]
    while pending:
        container = pending.pop()
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, item in items:
            if isinstance(item, str):
                container[key] = edit(item)
            elif isinstance(item, dict | list):
                pending.append(item)
    return value


@dataclass
class Redaction:
    """What one response's redaction found, and the texts it rewrote (original -> as sent)."""

    counts: Counts = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)

    def text(self, scanner: Scanner, value: str) -> str:
        """One whole text, redacted, counted and remembered."""
        redacted, counts = scanner.redact(value)
        for entity, n in counts.items():
            _add(self.counts, entity, n)
        self.texts[value] = redacted
        return redacted

    def json_text(self, scanner: Scanner, raw: str) -> str:
        """A JSON document (tool input or arguments) with every string value redacted; text
        that is not JSON is redacted as text. Unchanged input comes back as it was."""
        try:
            value = json.loads(raw) if raw.strip() else None
        except ValueError:
            return self.text(scanner, raw)
        if value is None:
            return raw
        before = dict(self.counts)
        value = _walk_strings(value, lambda s: self.text(scanner, s))
        if self.counts == before:
            return raw
        return json.dumps(value, ensure_ascii=False)

    def value(self, scanner: Scanner, value: Any) -> Any:
        """A parsed JSON value (tool input) with every string redacted, in place."""
        return _walk_strings(value, lambda s: self.text(scanner, s))


class JsonRedactor:
    """One tool call's input: fragments are buffered, `finish` returns the redacted JSON."""

    def __init__(self, scanner: Scanner, redaction: Redaction) -> None:
        self.scanner = scanner
        self.redaction = redaction
        self._parts: list[str] = []

    def feed(self, fragment: str) -> None:
        self._parts.append(fragment)

    @property
    def pending(self) -> bool:
        return bool(self._parts)

    def finish(self) -> str:
        raw, self._parts = "".join(self._parts), []
        return self.redaction.json_text(self.scanner, raw)


# --------------------------------------------------------------------------- Anthropic events


class AnthropicEvents:
    """Redacts an Anthropic Messages event stream, event by event (`feed` -> events to send)."""

    def __init__(self, scanner: Scanner, window: int = LOOKBEHIND) -> None:
        self.scanner = scanner
        self.window = window
        self.redaction = Redaction()
        self._text: dict[Any, TextRedactor] = {}
        self._json: dict[Any, JsonRedactor] = {}

    @property
    def counts(self) -> Counts:
        return self.redaction.counts

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        index = event.get("index")
        if kind == "message_start":
            return [self._message_start(event)]
        if kind == "content_block_start":
            return [self._block_start(event)]
        if kind == "content_block_delta":
            return self._delta(event, index)
        if kind == "content_block_stop":
            return [*self._close(index, event), dict(event)]
        return [dict(event)]

    def _message_start(self, event: Mapping[str, Any]) -> dict[str, Any]:
        # A message_start normally has no content; redact any it has, whole.
        out = copy.deepcopy(dict(event))
        message = out.get("message")
        if isinstance(message, dict) and message.get("content"):
            redact_message_content(message, self.scanner, self.redaction)
        return out

    def _block_start(self, event: Mapping[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(dict(event))
        block = out.get("content_block")
        if not isinstance(block, dict):
            return out
        index = out.get("index")
        kind = block.get("type")
        if kind == "text":
            self._text[index] = TextRedactor(self.scanner, self.counts, self.window)
            if block.get("text"):  # text in the start event itself: through the window too
                block["text"] = self._text[index].feed(block["text"])
        elif kind in ("tool_use", "server_tool_use"):
            self._json[index] = JsonRedactor(self.scanner, self.redaction)
            if block.get("input"):  # input given whole in the start event (rare)
                block["input"] = self.redaction.value(self.scanner, block["input"])
        return out

    def _delta(self, event: Mapping[str, Any], index: Any) -> list[dict[str, Any]]:
        delta = event.get("delta")
        if not isinstance(delta, Mapping):
            return [dict(event)]
        kind = delta.get("type")
        if kind == "text_delta" and isinstance(delta.get("text"), str):
            text = self._text.get(index)
            if text is None:
                text = self._text[index] = TextRedactor(self.scanner, self.counts, self.window)
            out = text.feed(delta["text"])
            return [_with_delta(event, text=out)] if out else []
        if kind == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            buffer = self._json.get(index)
            if buffer is None:
                buffer = self._json[index] = JsonRedactor(self.scanner, self.redaction)
            buffer.feed(delta["partial_json"])
            return []
        return [dict(event)]  # thinking, signature, citations: unchanged

    def _close(self, index: Any, stop: Mapping[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        text = self._text.pop(index, None)
        if text is not None:
            rest = text.flush()
            original, redacted = text.pairs()
            self.redaction.texts[original] = redacted
            if rest:
                out.append(_delta_event(index, {"type": "text_delta", "text": rest}))
        buffer = self._json.pop(index, None)
        if buffer is not None and buffer.pending:
            partial = buffer.finish()
            out.append(_delta_event(index, {"type": "input_json_delta", "partial_json": partial}))
        return out

    def close(self) -> list[dict[str, Any]]:
        """Blocks the stream left open (it ended early): their held text, redacted."""
        out: list[dict[str, Any]] = []
        for index in [*self._text, *self._json]:
            out.extend(self._close(index, {}))
        return out


def _with_delta(event: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(event)
    out["delta"] = {**event["delta"], **changes}
    return out


def _delta_event(index: Any, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def redact_message_content(message: dict[str, Any], scanner: Scanner, redaction: Redaction) -> None:
    """A non-streamed Anthropic message's text and tool_use blocks, redacted in place."""
    content = message.get("content")
    if not isinstance(content, list):
        if isinstance(content, str):
            message["content"] = redaction.text(scanner, content)
        return
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            block["text"] = redaction.text(scanner, block["text"])
        elif kind in ("tool_use", "server_tool_use") and "input" in block:
            block["input"] = redaction.value(scanner, block["input"])
        # thinking / redacted_thinking: signed, unchanged


# --------------------------------------------------------------------------- OpenAI chunks


def field_of(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def set_field(obj: Any, name: str, value: Any) -> None:
    if isinstance(obj, dict):
        obj[name] = value
    else:
        setattr(obj, name, value)


class ChatChunks:
    """Redacts an OpenAI chat-completion stream (dicts, or LiteLLM's chunk objects): each
    choice's `content` through a `TextRedactor`; a chunk that carries tool-call `arguments` is
    held, with every chunk after it, until the choice's `finish_reason`, when the first fragment
    of each call gets the whole redacted JSON and the others none."""

    def __init__(self, scanner: Scanner, window: int = LOOKBEHIND) -> None:
        self.scanner = scanner
        self.window = window
        self.redaction = Redaction()
        self._text: dict[int, TextRedactor] = {}
        self._args: dict[tuple[int, int], tuple[JsonRedactor, Any]] = {}
        self._held: list[Any] = []

    @property
    def counts(self) -> Counts:
        return self.redaction.counts

    def feed(self, chunk: Any) -> list[Any]:
        """The chunks to send now (this one changed in place, or none while held)."""
        finished: list[int] = []
        holds = False
        for position, choice in enumerate(field_of(chunk, "choices") or ()):
            index = field_of(choice, "index")
            index = index if isinstance(index, int) else position
            delta = field_of(choice, "delta")
            if delta is not None:
                holds = self._delta(index, delta) or holds
            if field_of(choice, "finish_reason"):
                if delta is None:
                    delta = {}
                    set_field(choice, "delta", delta)
                self._finish(index, delta)
                finished.append(index)
        if self._held or holds:
            self._held.append(chunk)
            if not finished or self._args:
                return []
            out, self._held = self._held, []
            return out
        return [chunk]

    def _delta(self, index: int, delta: Any) -> bool:
        """Redact one choice's delta; True when it carries tool-call arguments (held)."""
        content = field_of(delta, "content")
        if isinstance(content, str) and content:
            text = self._text.get(index)
            if text is None:
                text = self._text[index] = TextRedactor(self.scanner, self.counts, self.window)
            set_field(delta, "content", text.feed(content))
        holds = False
        for position, call in enumerate(field_of(delta, "tool_calls") or ()):
            function = field_of(call, "function")
            arguments = field_of(function, "arguments") if function is not None else None
            if not isinstance(arguments, str):
                continue
            number = field_of(call, "index")
            key = (index, number if isinstance(number, int) else position)
            if key not in self._args:
                self._args[key] = (JsonRedactor(self.scanner, self.redaction), function)
            self._args[key][0].feed(arguments)
            set_field(function, "arguments", "")
            holds = True
        return holds

    def _finish(self, index: int, delta: Any) -> None:
        text = self._text.pop(index, None)
        if text is not None:
            rest = text.flush()
            original, redacted = text.pairs()
            self.redaction.texts[original] = redacted
            if rest:
                set_field(delta, "content", (field_of(delta, "content") or "") + rest)
        for key in [key for key in self._args if key[0] == index]:
            buffer, first = self._args.pop(key)
            set_field(first, "arguments", buffer.finish())

    def close(self) -> list[Any]:
        """What is still held when the stream ends without a finish: sent as it is, with the
        held text in a last chunk (a dict) of its own."""
        for key in list(self._args):
            buffer, first = self._args.pop(key)
            set_field(first, "arguments", buffer.finish())
        out, self._held = self._held, []
        choices = []
        for index in sorted(self._text):
            delta: dict[str, Any] = {}
            self._finish(index, delta)
            if delta:
                choices.append({"index": index, "delta": delta, "finish_reason": None})
        if choices:
            out.append({"choices": choices})
        return out


def redact_chat_message(message: dict[str, Any], scanner: Scanner, redaction: Redaction) -> None:
    """A non-streamed chat completion message's content and tool-call arguments, in place."""
    content = message.get("content")
    if isinstance(content, str):
        message["content"] = redaction.text(scanner, content)
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            function["arguments"] = redaction.json_text(scanner, function["arguments"])
