"""Error bodies in the shape the client expects: Anthropic's on Anthropic routes, else OpenAI's.

Anthropic: `{"type": "error", "error": {"type": "not_found_error", "message": "..."}}`.
OpenAI:    `{"error": {"message": "...", "type": "...", "param": null, "code": "404"}}`.

LiteLLM renders authentication errors OpenAI-shaped on every route and some failures as plain
text; `reshape_error` turns any error body into the client's shape, keeping its message.
The `GatewayError` exceptions are what tenantgw's own checks raise; `proxy_exception` turns one
into the `ProxyException` LiteLLM renders (with `retry-after` when set).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

Family = Literal["anthropic", "openai"]

ANTHROPIC_ERROR_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "timeout_error",
        "api_error",
        "overloaded_error",
    }
)

_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# /v1/messages, /v1/messages/count_tokens (also under LiteLLM's /claude_code_gateway prefix) and
# Anthropic pass-through routes (/anthropic/...).
_ANTHROPIC_ROUTE = re.compile(r"^/anthropic(/|$)|(^|/)v1/messages(/|$)")


def is_anthropic_route(path: str) -> bool:
    """Whether clients of `path` expect Anthropic's error shape."""
    return bool(_ANTHROPIC_ROUTE.search(path))


def route_family(path: str) -> Family:
    """The error shape of a route: "anthropic" or "openai"."""
    return "anthropic" if is_anthropic_route(path) else "openai"


def error_type_for_status(status: int) -> str:
    """The error type name of an HTTP status (Anthropic's names; OpenAI's SDK only reads status)."""
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def anthropic_error(status: int, message: str, type_: str | None = None) -> dict[str, Any]:
    """Anthropic's error body; `type_` is kept only if it is one of Anthropic's types."""
    kind = type_ if type_ in ANTHROPIC_ERROR_TYPES else error_type_for_status(status)
    return {"type": "error", "error": {"type": kind, "message": message}}


def openai_error(
    status: int, message: str, type_: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error body, `code` the status as a string (what LiteLLM sends too)."""
    return {
        "error": {
            "message": message,
            "type": type_ or error_type_for_status(status),
            "param": param,
            "code": str(status),
        }
    }


def error_body(
    family: Family,
    status: int,
    message: str,
    type_: str | None = None,
    param: str | None = None,
) -> bytes:
    """A JSON error body of `family`'s shape."""
    body = (
        anthropic_error(status, message, type_)
        if family == "anthropic"
        else openai_error(status, message, type_, param)
    )
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        for key in ("message", "error", "detail", "msg"):
            text = _as_text(value.get(key))
            if text:
                return text
    if isinstance(value, list) and value:
        parts = [_as_text(item) for item in value]
        return "; ".join(part for part in parts if part)
    return json.dumps(value, ensure_ascii=False, default=str)


def parse_error(payload: Any) -> tuple[str | None, str | None, str | None]:
    """(message, type, param) of an error body of any known shape; Nones when unknown."""
    if not isinstance(payload, Mapping):
        return _as_text(payload), None, None
    error = payload.get("error")
    if isinstance(error, Mapping):
        param = error.get("param")
        return (
            _as_text(error.get("message")) or _as_text(error),
            str(error["type"]) if error.get("type") else None,
            str(param) if param not in (None, "None") else None,
        )
    if isinstance(error, str):
        return error, None, None
    if "detail" in payload:  # FastAPI's HTTPException / validation errors
        return _as_text(payload["detail"]), None, None
    if "message" in payload:
        return _as_text(payload["message"]), None, None
    return None, None, None


def is_shaped(family: Family, payload: Any) -> bool:
    """Whether `payload` already has `family`'s error shape."""
    if not isinstance(payload, Mapping):
        return False
    error = payload.get("error")
    if not isinstance(error, Mapping) or not isinstance(error.get("message"), str):
        return False
    if family == "anthropic":
        return payload.get("type") == "error" and error.get("type") in ANTHROPIC_ERROR_TYPES
    return payload.get("type") != "error" and "type" in error and "code" in error


def reshape_error(family: Family, status: int, body: bytes, content_type: str) -> bytes | None:
    """`body` of an error response in `family`'s shape; None when it already has it.

    A JSON error of the other shape keeps its message (and its type where the family knows
    it); a text body becomes the message; an empty or HTML body gets a message from the status.
    """
    payload: Any = None
    text = body.decode("utf-8", errors="replace").strip()
    if "json" in content_type.lower() or text.startswith(("{", "[")):
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            payload = None
    if payload is not None and is_shaped(family, payload):
        return _retyped(family, status, payload)
    if payload is not None:
        message, type_, param = parse_error(payload)
    elif text and "html" not in content_type.lower() and not text.startswith("<"):
        message, type_, param = text, None, None
    else:
        message, type_, param = None, None, None
    return error_body(family, status, message or default_message(status), type_, param)


def _retyped(family: Family, status: int, payload: Mapping[str, Any]) -> bytes | None:
    """An Anthropic body whose type is LiteLLM's fallback `api_error` for a 4xx status (it maps
    402 `billing_error`, 408, 413, 422 so) with the type of its status; None when it fits."""
    error = payload["error"]
    if family != "anthropic" or status >= 500 or error.get("type") != "api_error":
        return None
    fixed = {**payload, "error": {**error, "type": error_type_for_status(status)}}
    return json.dumps(fixed, ensure_ascii=False, separators=(",", ":")).encode()


def default_message(status: int) -> str:
    """A message for an error response that came without one."""
    from http import HTTPStatus

    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    return f"{phrase} (HTTP {status})"


# --------------------------------------------------------------------------- our own errors


class GatewayError(Exception):
    """An error tenantgw's checks report to the client, with the status and type to use."""

    status = 400
    type_ = "invalid_request_error"

    def __init__(
        self, message: str, *, param: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after


class InvalidRequestError(GatewayError):
    status = 400
    type_ = "invalid_request_error"


class AuthenticationError(GatewayError):
    status = 401
    type_ = "authentication_error"


class PermissionDeniedError(GatewayError):
    status = 403
    type_ = "permission_error"


class ModelNotFoundError(GatewayError):
    status = 404
    type_ = "not_found_error"


class RequestTooLargeError(GatewayError):
    status = 413
    type_ = "request_too_large"


class RateLimitError(GatewayError):
    status = 429
    type_ = "rate_limit_error"


class BudgetExceededError(GatewayError):
    """A BudgetPolicy's limit is spent: final until the policy's period resets.

    402 `billing_error`, Anthropic's type for "no more spending" (OpenAI-shaped on the OpenAI
    routes): no client retries a 402 by status, and the response also says `x-should-retry:
    false`; `retry_after` is set to the policy's reset, so a client that reads it knows when
    to come back. docs/operations.md, "Budget refusals", says why not a 429.
    """

    status = 402
    type_ = "billing_error"
    final = True


class InternalError(GatewayError):
    status = 500
    type_ = "api_error"


class ServiceUnavailableError(GatewayError):
    status = 503
    type_ = "overloaded_error"


def retry_after_value(seconds: float) -> str:
    """A `retry-after` header value: whole seconds, at least 1."""
    return str(max(1, int(-(-seconds // 1))))


def proxy_exception(error: GatewayError) -> Exception:
    """The LiteLLM ProxyException for `error` (rendered by LiteLLM in the client's shape)."""
    from litellm.proxy._types import ProxyException

    headers = None
    if error.retry_after is not None:
        headers = {"retry-after": retry_after_value(error.retry_after)}
    if getattr(error, "final", False):
        headers = {**(headers or {}), "x-should-retry": "false"}
    exc: Exception = ProxyException(
        message=error.message,
        type=error.type_,
        param=error.param,
        code=error.status,
        headers=headers,
    )
    exc.tenantgw_refusal = error.status < 500  # type: ignore[attr-defined]
    return exc


def is_refusal(exc: object) -> bool:
    """Whether `exc` is a tenantgw check's 4xx refusal (a policy working, not a fault)."""
    return getattr(exc, "tenantgw_refusal", False) is True
