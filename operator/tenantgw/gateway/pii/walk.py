"""Which texts of a request body a model reads: the ones the PII policy scans and edits.

System prompt, message text, tool results and tool-call arguments, in Anthropic and OpenAI
shapes, Responses API items included. Thinking blocks are left alone (their signature covers
the text); images carry no text. Walks are bounded: tool inputs are walked without recursion,
nested tool results stop at `MAX_CONTENT_DEPTH` (the gateway's body check refuses deeper
JSON before this runs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tenantgw.gateway.errors import InvalidRequestError

TextEdit = Callable[[str], str]
MAX_CONTENT_DEPTH = 32
"""Tool results inside tool results, at most."""


def _edit_content(content: Any, edit: TextEdit, depth: int = 0) -> Any:
    """Message content (string or blocks/parts) with every text run through `edit`."""
    if isinstance(content, str):
        return edit(content)
    if not isinstance(content, list):
        return content
    if depth > MAX_CONTENT_DEPTH:
        raise InvalidRequestError(
            f"message content nests tool results more than {MAX_CONTENT_DEPTH} levels deep"
        )
    for index, part in enumerate(content):
        if isinstance(part, str):
            content[index] = edit(part)
        elif isinstance(part, dict):
            _edit_block(part, edit, depth + 1)
    return content


def _edit_value(value: Any, edit: TextEdit) -> Any:
    """Every string inside a JSON value (tool inputs), walked without recursion."""
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


def _edit_block(block: dict[str, Any], edit: TextEdit, depth: int = 0) -> None:
    kind = block.get("type")
    if kind in ("text", "input_text", "output_text") and isinstance(block.get("text"), str):
        block["text"] = edit(block["text"])
    elif kind in ("tool_result", "function_call_output"):
        key = "content" if kind == "tool_result" else "output"
        if key in block:
            block[key] = _edit_content(block[key], edit, depth)
    elif kind == "tool_use" and "input" in block:
        block["input"] = _edit_value(block["input"], edit)
    elif kind == "function_call" and isinstance(block.get("arguments"), str):
        block["arguments"] = edit(block["arguments"])
    elif kind == "document":
        source = block.get("source")
        if (
            isinstance(source, dict)
            and source.get("type") == "text"
            and isinstance(source.get("data"), str)
        ):
            source["data"] = edit(source["data"])
    elif kind == "message" and "content" in block:  # Responses API input items
        block["content"] = _edit_content(block["content"], edit, depth)
    # thinking / redacted_thinking: signed by the provider, left untouched; images: no text


def _edit_message(message: dict[str, Any], edit: TextEdit) -> None:
    if "content" in message:
        message["content"] = _edit_content(message["content"], edit)
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                function["arguments"] = edit(function["arguments"])


def edit_request_texts(data: dict[str, Any], edit: TextEdit) -> None:
    """Run `edit` on every text of a request body a model would read, in place."""
    if "system" in data:
        data["system"] = _edit_content(data["system"], edit)
    messages = data.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                _edit_message(message, edit)
    for field in ("prompt", "input", "instructions"):
        value = data.get(field)
        if isinstance(value, str):
            data[field] = edit(value)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, str):
                    value[index] = edit(item)
                elif isinstance(item, dict):
                    if "role" in item:
                        _edit_message(item, edit)
                    else:
                        _edit_block(item, edit)


def request_texts(data: dict[str, Any]) -> list[str]:
    """Every text `edit_request_texts` would visit, in its order (nothing is changed)."""
    texts: list[str] = []

    def collect(text: str) -> str:
        texts.append(text)
        return text

    edit_request_texts(data, collect)
    return texts
