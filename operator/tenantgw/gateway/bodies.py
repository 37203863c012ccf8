"""Checks of a model request's JSON body, before LiteLLM or any tenantgw step walks it.

A body that fails gets a 400 naming the problem: not JSON, not an object, a missing or
mistyped `model` / `messages`, or a shape the gateway will not walk: nested deeper than
`MAX_JSON_DEPTH` or holding more than `MAX_JSON_VALUES` values. orjson accepts JSON nested
1,000 deep; the PII scan, the routing rules and LiteLLM walk bodies recursively, and
would answer such a body with a `RecursionError` (a 500). The byte size is capped before
the body is read (`TENANTGW_MAX_BODY_BYTES`, see `app`).
"""

from __future__ import annotations

import json
from typing import Any

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects accepted. Claude Code's deepest (a tool's JSON
schema inside `tools`) stays under 20."""
MAX_JSON_VALUES = 1_000_000
"""Most values (scalars, arrays and objects) in one body; a 10 MiB prompt of text has far
fewer, a body of a million tiny values costs the gateway more to walk than to forward."""

try:  # LiteLLM parses bodies with orjson: the same parser gives the same verdicts
    import orjson

    def loads(body: bytes) -> Any:
        """Parse a request body as LiteLLM does."""
        return orjson.loads(body)

except ImportError:  # pragma: no cover - orjson comes with LiteLLM

    def loads(body: bytes) -> Any:
        """Parse a request body as LiteLLM does."""
        return json.loads(body)


def type_name(value: Any) -> str:
    """A JSON type name with its article, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def shape_problem(
    payload: Any, *, max_depth: int = MAX_JSON_DEPTH, max_values: int = MAX_JSON_VALUES
) -> str | None:
    """What makes a parsed body too deep or too large to walk, None when it is fine.

    Iterative, so that it cannot itself run out of stack; stops at the first excess.
    """
    if not isinstance(payload, dict | list):
        return None
    values = 1
    pending: list[tuple[Any, int]] = [(payload, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > max_depth:
            return (
                f"request body is nested more than {max_depth} levels deep: "
                "the gateway does not accept deeper JSON"
            )
        children = value.values() if isinstance(value, dict) else value
        values += len(children)
        if values > max_values:
            return (
                f"request body holds more than {max_values} JSON values: "
                "the gateway does not accept more in one request"
            )
        for child in children:
            if isinstance(child, dict | list) and child:
                pending.append((child, depth + 1))
    return None


def body_problem(payload: Any, fields: tuple[str, ...]) -> tuple[str, str | None] | None:
    """(message, param) of what is wrong with a parsed request body, None when it is fine."""
    if not isinstance(payload, dict):
        return f"request body must be a JSON object, not {type_name(payload)}", None
    shape = shape_problem(payload)
    if shape is not None:
        return shape, None
    for field in fields:
        if field not in payload or payload[field] is None:
            return f"{field}: required field is missing", field
        value = payload[field]
        if field == "model" and (not isinstance(value, str) or not value.strip()):
            return f"model: must be a non-empty string, not {type_name(value)}", "model"
        if field == "messages":
            if not isinstance(value, list):
                return f"messages: must be an array of messages, not {type_name(value)}", field
            if not value:
                return "messages: must contain at least one message", field
            for index, message in enumerate(value):
                if not isinstance(message, dict):
                    kind = type_name(message)
                    return f"messages[{index}]: must be an object, not {kind}", field
                if not isinstance(message.get("role"), str):
                    return f"messages[{index}].role: required field is missing", field
    return None
