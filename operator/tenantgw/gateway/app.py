"""The gateway's ASGI app: LiteLLM's proxy app inside tenantgw's request and error middleware.

`GatewayMiddleware` is pure ASGI (no body buffering of successful responses, streams pass
through untouched) and does three things LiteLLM does not:

* refuses request bodies over `TENANTGW_MAX_BODY_BYTES` (default 10 MiB) with 413, from the
  Content-Length header before reading anything, or as soon as a chunked body passes the limit;
* checks the JSON body of the model endpoints before LiteLLM sees it: malformed JSON, a body
  that is not an object, a missing or mistyped `model` / `messages` get a 400 naming the
  problem (LiteLLM answers some of these with a 500, or retries them upstream);
* rewrites every 4xx/5xx error body into the client's shape: Anthropic's on `/v1/messages`,
  `/v1/messages/count_tokens` and `/anthropic/...`, OpenAI's elsewhere. LiteLLM renders
  authentication errors OpenAI-shaped even on `/v1/messages`. Headers such as `retry-after`
  are kept.

`create_app()` builds the real app (importing LiteLLM's proxy, which takes seconds); uvicorn
loads it as a factory, `tenantgw.gateway.app:create_app`, in every worker.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tenantgw.gateway.errors import Family, error_body, reshape_error, route_family
from tenantgw.gateway.lifespan import LedgerLifespan

log = logging.getLogger("tenantgw.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONFIG_ENV = "TENANTGW_LITELLM_CONFIG"
"""Absolute path of LiteLLM's config.yaml, handed by `python -m tenantgw.gateway` to workers."""
MAX_BODY_ENV = "TENANTGW_MAX_BODY_BYTES"
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_ERROR_BODY_BYTES = 1024 * 1024
"""Error bodies larger than this pass through unchanged rather than being held in memory."""

# Model endpoints whose JSON body is checked, and the fields each requires. The model of the
# Azure-style and engine routes is in the path.
_MESSAGES_FIELDS = ("model", "messages")
_CHECKED_ROUTES: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (re.compile(r"^(?:/claude_code_gateway)?/v1/messages/?$"), _MESSAGES_FIELDS),
    (re.compile(r"^(?:/claude_code_gateway)?/v1/messages/count_tokens/?$"), _MESSAGES_FIELDS),
    (re.compile(r"^(?:/v1)?/chat/completions/?$"), _MESSAGES_FIELDS),
    (re.compile(r"^/(?:openai/deployments|engines)/.+/chat/completions/?$"), ("messages",)),
    (re.compile(r"^(?:/v1)?/completions/?$"), ("model", "prompt")),
    (re.compile(r"^(?:/v1)?/embeddings/?$"), ("model", "input")),
    (re.compile(r"^(?:/v1)?/responses/?$"), ("model",)),
)
_NOT_JSON_MEDIA = ("multipart/", "application/x-www-form-urlencoded", "application/octet-stream")

try:  # LiteLLM parses bodies with orjson: the same parser gives the same verdicts
    import orjson

    def _loads(body: bytes) -> Any:
        return orjson.loads(body)

except ImportError:  # pragma: no cover - orjson comes with LiteLLM

    def _loads(body: bytes) -> Any:
        return json.loads(body)


def max_body_bytes_from_env() -> int:
    """$TENANTGW_MAX_BODY_BYTES, else 10 MiB; a bad value is reported and ignored."""
    raw = os.environ.get(MAX_BODY_ENV)
    if not raw:
        return DEFAULT_MAX_BODY_BYTES
    try:
        value = int(raw)
    except ValueError:
        log.error(
            "%s=%r is not a number of bytes; using %d", MAX_BODY_ENV, raw, DEFAULT_MAX_BODY_BYTES
        )
        return DEFAULT_MAX_BODY_BYTES
    return value if value > 0 else DEFAULT_MAX_BODY_BYTES


def required_fields(path: str) -> tuple[str, ...] | None:
    """The fields the JSON body of `path` must have; None for routes that are not checked."""
    for pattern, fields in _CHECKED_ROUTES:
        if pattern.match(path):
            return fields
    return None


def _type_name(value: Any) -> str:
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


def body_problem(payload: Any, fields: tuple[str, ...]) -> tuple[str, str | None] | None:
    """(message, param) of what is wrong with a parsed request body, None when it is fine."""
    if not isinstance(payload, dict):
        return f"request body must be a JSON object, not {_type_name(payload)}", None
    for field in fields:
        if field not in payload or payload[field] is None:
            return f"{field}: required field is missing", field
        value = payload[field]
        if field == "model" and (not isinstance(value, str) or not value.strip()):
            return f"model: must be a non-empty string, not {_type_name(value)}", "model"
        if field == "messages":
            if not isinstance(value, list):
                return f"messages: must be an array of messages, not {_type_name(value)}", field
            if not value:
                return "messages: must contain at least one message", field
            for index, message in enumerate(value):
                if not isinstance(message, dict):
                    kind = _type_name(message)
                    return f"messages[{index}]: must be an object, not {kind}", field
                if not isinstance(message.get("role"), str):
                    return f"messages[{index}].role: required field is missing", field
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class _ClientGoneError(Exception):
    """The client disconnected while its request body was being read."""


class GatewayMiddleware:
    """Body limits, JSON checks and client-shaped errors around an ASGI app (see module doc)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes or max_body_bytes_from_env()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path") or "/"
        family = route_family(path)
        declared = _header(scope, b"content-length")
        size = int(declared) if declared is not None and declared.strip().isdigit() else None
        if size is not None and size > self.max_body_bytes:
            await self._too_large(send, family, size)
            return
        fields = required_fields(path) if scope.get("method") == "POST" else None
        if fields is not None and not self._is_form(scope):
            await self._checked(scope, receive, send, family, fields)
            return
        await self._guarded(scope, receive, send, family)

    # ---- requests

    @staticmethod
    def _is_form(scope: Scope) -> bool:
        media = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
        return media.startswith(_NOT_JSON_MEDIA)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole request body, or None as soon as it passes the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGoneError("client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _checked(
        self, scope: Scope, receive: Receive, send: Send, family: Family, fields: tuple[str, ...]
    ) -> None:
        try:
            body = await self._read_body(receive)
        except _ClientGoneError:
            return  # the client is gone: nobody to answer
        if body is None:
            await self._too_large(send, family, None)
            return
        problem: tuple[str, str | None] | None
        payload: Any = None
        if not body.strip():
            problem = (f"request body is empty: send a JSON object with {', '.join(fields)}", None)
        else:
            try:
                payload = _loads(body)
            except ValueError as exc:
                problem = (f"request body is not valid JSON: {exc}", None)
            else:
                problem = body_problem(payload, fields)
        if problem is not None:
            message, param = problem
            await _send_error(send, family, 400, message, "invalid_request_error", param)
            return
        # LiteLLM reuses a body parsed before it (its key is "parsed_body"): no second parse.
        scope["parsed_body"] = (tuple(payload.keys()), payload)
        await self._guarded(scope, _replay(body, receive), send, family, body_read=True)

    async def _guarded(
        self, scope: Scope, receive: Receive, send: Send, family: Family, body_read: bool = False
    ) -> None:
        """Run the app with the body limit on `receive` and client-shaped errors on `send`."""
        limit = self.max_body_bytes
        state = {"received": 0, "too_large": False}

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and not body_read:
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["too_large"] = True
                    return {"type": "http.disconnect"}
            return message

        shaper = _ErrorShaper(send, family)

        async def guarded_send(message: Message) -> None:
            if state["too_large"]:
                return  # the app's answer to a cut-off body is replaced by the 413 below
            await shaper(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if shaper.sent_start:
                raise  # the server logs it; the client already has a status line
            if not state["too_large"]:
                log.exception("unhandled error in the gateway on %s", scope.get("path"))
                await _send_error(send, family, 500, "internal error in the gateway", "api_error")
                return
        if state["too_large"] and not shaper.sent_start:
            await self._too_large(send, family, None)

    async def _too_large(self, send: Send, family: Family, declared: int | None) -> None:
        size = f" ({declared} bytes)" if declared is not None else ""
        message = (
            f"request body is too large{size}: the gateway accepts at most "
            f"{self.max_body_bytes} bytes"
        )
        await _send_error(send, family, 413, message, "request_too_large")


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that hands out an already read body once, then defers to the server."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_error(
    send: Send,
    family: Family,
    status: int,
    message: str,
    type_: str | None = None,
    param: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = error_body(family, status, message, type_, param)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _ErrorShaper:
    """A send() that holds back error responses and re-sends them in the client's shape."""

    def __init__(self, send: Send, family: Family) -> None:
        self.send = send
        self.family = family
        self.held: Message | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.sent_start = False

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if int(message.get("status", 200)) >= 400:
                self.held = message
                return
            self.sent_start = True
            await self.send(message)
            return
        if kind != "http.response.body" or self.held is None:
            await self.send(message)
            return
        chunk = bytes(message.get("body", b""))
        self.chunks.append(chunk)
        self.size += len(chunk)
        if message.get("more_body", False):
            if self.size > MAX_ERROR_BODY_BYTES:
                await self._flush_unchanged(more_body=True)
            return
        await self._flush_shaped()

    async def _flush_unchanged(self, *, more_body: bool) -> None:
        held, self.held = self.held, None
        assert held is not None
        self.sent_start = True
        await self.send(held)
        await self.send(
            {"type": "http.response.body", "body": b"".join(self.chunks), "more_body": more_body}
        )
        self.chunks = []

    async def _flush_shaped(self) -> None:
        held = self.held
        assert held is not None
        body = b"".join(self.chunks)
        headers = list(held.get("headers") or [])
        content_type = next(
            (bytes(v).decode("latin-1") for k, v in headers if bytes(k).lower() == b"content-type"),
            "",
        )
        status = int(held["status"])
        try:
            shaped = reshape_error(self.family, status, body, content_type)
        except Exception:  # never lose the original answer over a reshaping bug
            log.exception("could not reshape a %d error body", status)
            shaped = None
        if shaped is None:
            await self._flush_unchanged(more_body=False)
            return
        kept = [
            (k, v)
            for k, v in headers
            if bytes(k).lower() not in (b"content-length", b"content-type")
        ]
        self.held, self.chunks, self.sent_start = None, [], True
        await self.send(
            {
                **held,
                "headers": [
                    *kept,
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(shaped)).encode()),
                ],
            }
        )
        await self.send({"type": "http.response.body", "body": shaped, "more_body": False})


# --------------------------------------------------------------------------- the real app


def configure_logging() -> None:
    """tenantgw's own log lines on stderr (LiteLLM configures its loggers itself)."""
    logger = logging.getLogger("tenantgw")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def prepare_worker() -> None:
    """In a worker, before LiteLLM's proxy is imported: hand it the config like its CLI does.

    `litellm --config F` stores its options as JSON in $WORKER_CONFIG, which the proxy's
    start-up reads; these are the CLI's defaults with the config path.
    """
    configure_logging()
    config = os.environ.get(CONFIG_ENV)
    if not config or os.environ.get("WORKER_CONFIG"):
        return
    import litellm

    os.environ["WORKER_CONFIG"] = json.dumps(
        {
            "model": None,
            "alias": None,
            "api_base": None,
            "api_version": litellm.AZURE_DEFAULT_API_VERSION,
            "debug": False,
            "detailed_debug": False,
            "temperature": None,
            "max_tokens": None,
            "request_timeout": None,
            "max_budget": None,
            "drop_params": False,
            "add_function_to_prompt": False,
            "headers": None,
            "save": False,
            "config": config,
            "use_queue": False,
        }
    )


def create_app() -> ASGIApp:
    """LiteLLM's proxy app wrapped in GatewayMiddleware (uvicorn factory)."""
    prepare_worker()
    from litellm.proxy.proxy_server import app as proxy_app

    # Outermost: the ledger starts with the worker and, on SIGTERM, writes or spools every
    # usage row before the worker exits.
    wrapped: ASGIApp = LedgerLifespan(GatewayMiddleware(proxy_app))
    return wrapped


def __getattr__(name: str) -> Any:
    # `tenantgw.gateway.app:app` for servers that want an object rather than a factory.
    if name == "app":
        return create_app()
    raise AttributeError(name)
