"""The gateway's ASGI app: LiteLLM's proxy app inside tenantgw's request and error middleware.

`GatewayMiddleware` is pure ASGI (no body buffering of successful responses, streams pass
through untouched) and does what LiteLLM does not:

* serves only the routes on the allowlist (`routes.DOORS`): every other request, websockets
  included, gets a 404 in the client's shape before LiteLLM sees it, whatever the key;
* refuses request bodies over `TENANTGW_MAX_BODY_BYTES` (default 10 MiB) with 413, from the
  Content-Length header before reading anything, or as soon as a chunked body passes the limit;
* checks the JSON body of the model routes before LiteLLM sees it (`bodies`): malformed JSON,
  a body that is not an object, JSON nested too deep or too large to walk, a missing or
  mistyped `model` / `messages` get a 400 naming the problem;
* keeps provider credentials the platform's: a client that authenticates with
  `x-litellm-api-key` has its `authorization` / `x-api-key` / `api-key` / `x-goog-api-key`
  headers removed, because LiteLLM would forward them (an Anthropic OAuth token in
  `Authorization` replaces the provider key of an anthropic target) — no client credential
  reaches a provider, and a bad one cannot put the tenant's deployment into cooldown;
* answers `/v1/messages/count_tokens` itself (`tokencount`): the prompt never leaves the pod;
* answers `GET /v1/models` (and `/models`, `/v1/models/<id>`) itself (`models`): the tenant's
  aliases, never LiteLLM's deployment list; errors there are Anthropic-shaped when the client
  sends `anthropic-version` (Anthropic's SDK, Claude Code), else OpenAI-shaped;
* on SIGTERM, fails its readiness probe at once and closes keep-alive connections after
  each response, while it drains (`drain`);
* rewrites every 4xx/5xx error body into the client's shape: Anthropic's on `/v1/messages`
  and its sub-paths, OpenAI's elsewhere. LiteLLM renders authentication errors OpenAI-shaped
  even on `/v1/messages`. Headers such as `retry-after` are kept.

`create_app()` builds the real app (importing LiteLLM's proxy, which takes seconds); uvicorn
loads it as a factory, `tenantgw.gateway.app:create_app`, in every worker.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from tenantgw import jsonlog
from tenantgw.gateway import (
    access,
    bodies,
    credfail,
    files,
    heap,
    models,
    modelsync,
    routes,
    tokencount,
    trim,
)
from tenantgw.gateway.drain import READINESS_PATH, Drain
from tenantgw.gateway.errors import (
    Family,
    GatewayError,
    error_body,
    is_refusal,
    reshape_error,
    retry_after_value,
    route_family,
)

log = logging.getLogger("tenantgw.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONFIG_ENV = "TENANTGW_LITELLM_CONFIG"
"""Absolute path of LiteLLM's config.yaml, handed by `python -m tenantgw.gateway` to workers
(as mounted: symlinks are not resolved, the kubelet updates the file by replacing them)."""
MAX_BODY_ENV = "TENANTGW_MAX_BODY_BYTES"
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_ERROR_BODY_BYTES = 1024 * 1024
"""Error bodies larger than this pass through unchanged rather than being held in memory."""


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


LITELLM_KEY_HEADER = b"x-litellm-api-key"
CLIENT_CREDENTIAL_HEADERS = frozenset(
    {b"authorization", b"x-api-key", b"api-key", b"x-goog-api-key"}
)
"""Headers LiteLLM forwards to a provider as its credential when the proxy key came in
`x-litellm-api-key` (LiteLLM 1.106.12: `clean_headers`, `add_provider_specific_headers_to_request`).
"""


def drop_client_credentials(scope: Scope) -> None:
    """With `x-litellm-api-key`, remove every other credential header (see the module doc)."""
    headers = list(scope.get("headers") or ())
    if not any(bytes(key).lower() == LITELLM_KEY_HEADER for key, _ in headers):
        return
    scope["headers"] = [
        (key, value)
        for key, value in headers
        if bytes(key).lower() not in CLIENT_CREDENTIAL_HEADERS
    ]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class _ClientGoneError(Exception):
    """The client disconnected while its request body was being read."""


class GatewayMiddleware:
    """Body limits, JSON checks and client-shaped errors around an ASGI app (see module doc)."""

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int | None = None, drain: Drain | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes or max_body_bytes_from_env()
        self.drain = drain
        self._metrics_app: ASGIApp | None = None

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        # tenantgw's collectors, LiteLLM's exporter not being loaded (gateway.metrics).
        if self._metrics_app is None:
            from tenantgw.gateway.metrics import metrics_app

            self._metrics_app = metrics_app()
        await self._metrics_app(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            await _refuse_websocket(scope, receive, send)
            return
        if kind != "http":
            return  # no other kind of connection reaches LiteLLM
        path: str = scope.get("path") or "/"
        if self.drain is not None and self.drain.draining:
            send = self.drain.closing(send)
            if path == READINESS_PATH:  # out of the Service's endpoints first
                await _send_json(send, {"status": "draining"}, status=503)
                return
        method = str(scope.get("method") or "GET")
        # One access line per request: the meter writes it when the request is metered
        # (the pre-call hook claims the exchange), else this does once the answer is sent.
        exchange = access.Exchange(method, path)
        token = access.CURRENT.set(exchange)

        async def observed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = int(message.get("status", 0))
            await send(message)

        try:
            await self._serve(scope, receive, observed_send, method, path)
        finally:
            access.CURRENT.reset(token)
            if not exchange.metered:
                access.access_log.unmetered(exchange, files.tenant_name())

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, method: str, path: str
    ) -> None:
        family = route_family(path)
        door = routes.door_for(method, path)
        if door is None:
            await _send_error(send, family, 404, _not_served(method, path), "not_found_error")
            return
        drop_client_credentials(scope)
        declared = _header(scope, b"content-length")
        size = int(declared) if declared is not None and declared.strip().isdigit() else None
        if size is not None and size > self.max_body_bytes:
            await self._too_large(send, family, size)
            return
        if door.fields is not None:
            await self._checked(scope, receive, send, family, door)
            return
        if door.purpose == "models":
            await _list_models(scope, send)
            return
        if door.purpose == "metrics":
            await self._metrics(scope, receive, send)
            return
        await self._guarded(scope, receive, send, family)

    # ---- requests

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
        self, scope: Scope, receive: Receive, send: Send, family: Family, door: routes.Door
    ) -> None:
        fields = door.fields or ()
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
                payload = bodies.loads(body)
            except ValueError as exc:
                problem = (f"request body is not valid JSON: {exc}", None)
            else:
                problem = bodies.body_problem(payload, fields)
        if problem is not None:
            message, param = problem
            await _send_error(send, family, 400, message, "invalid_request_error", param)
            return
        if door.purpose == "count_tokens":
            await _count_tokens(scope, send, family, payload)
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


def _not_served(method: str, path: str) -> str:
    return f"{method} {path} is not served by this gateway: it serves {routes.served_summary()}"


def _api_key(scope: Scope) -> str | None:
    """The key a client sent: `x-api-key`, else `Authorization: Bearer` (as LiteLLM reads)."""
    key = _header(scope, b"x-api-key")
    if key and key.strip():
        return key.strip()
    scheme, _, token = (_header(scope, b"authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def _count_tokens(scope: Scope, send: Send, family: Family, payload: Any) -> None:
    """Answer `/v1/messages/count_tokens` in the gateway (see `tokencount`)."""
    try:
        tokens = await tokencount.answer(_api_key(scope), payload)
    except GatewayError as exc:
        headers = None
        if exc.retry_after is not None:
            headers = [(b"retry-after", retry_after_value(exc.retry_after).encode())]
        await _send_error(send, family, exc.status, exc.message, exc.type_, exc.param, headers)
        return
    except Exception:
        log.exception("count_tokens failed in the gateway")
        await _send_error(send, family, 500, "internal error while counting tokens", "api_error")
        return
    await _send_json(send, {"input_tokens": tokens})


async def _list_models(scope: Scope, send: Send) -> None:
    """Answer `GET /v1/models[/<id>]` in the gateway (see `models`)."""
    family: Family = "anthropic" if _header(scope, b"anthropic-version") else "openai"
    raw_query = bytes(scope.get("query_string") or b"").decode("latin-1")
    query = dict(parse_qsl(raw_query, keep_blank_values=True))
    try:
        payload = models.answer(_api_key(scope), str(scope.get("path") or ""), query)
    except GatewayError as exc:
        headers = None
        if exc.retry_after is not None:
            headers = [(b"retry-after", retry_after_value(exc.retry_after).encode())]
        await _send_error(send, family, exc.status, exc.message, exc.type_, exc.param, headers)
        return
    except Exception:
        log.exception("listing models failed in the gateway")
        await _send_error(send, family, 500, "internal error while listing models", "api_error")
        return
    await _send_json(send, payload)


async def _send_json(send: Send, payload: Any, status: int = 200) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """No websocket route is on the allowlist: refuse the handshake (a 404 where the server
    can send one, else the close that servers answer with 403)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    path = scope.get("path") or "/"
    if "websocket.http.response" in (scope.get("extensions") or {}):
        body = error_body("openai", 404, _not_served("websocket", path), "not_found_error")
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 404,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.close", "code": 1008})


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
        exchange = access.CURRENT.get()
        shaped: bytes | None
        if exchange is not None and exchange.credential_failure is not None:
            # The failure hook saw the provider's credential fail (credfail): a 502 says so.
            held = {**held, "status": credfail.STATUS}
            detail = credfail.client_message(exchange.credential_failure)
            shaped = error_body(self.family, credfail.STATUS, detail, "api_error")
        else:
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
    """This process's log lines in $TENANTGW_LOG_FORMAT (`jsonlog`), the access log's too."""
    fmt = jsonlog.log_format()
    jsonlog.install(fmt)
    access.access_log.configure(fmt)


class RefusalsAreNotErrors(logging.Filter):
    """LiteLLM logs every failed request at ERROR, tenantgw's refusals by design included (a
    spent budget's 402, a rate limit's 429, a residency 403): a log-based alert on errors would
    fire on policies working. Those lines are written at INFO; the access line and the ledger
    row record the refusal. Provider errors and LiteLLM's own keep their level."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            record.levelno >= logging.ERROR
            and isinstance(args, tuple)
            and any(is_refusal(arg) for arg in args)
        ):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def install_refusal_filter(logger: logging.Logger) -> RefusalsAreNotErrors:
    """`RefusalsAreNotErrors` first among `logger`'s filters: LiteLLM's redaction filter
    formats the message and drops the arguments the refusal is recognised by."""
    refusals = RefusalsAreNotErrors()
    logger.filters.insert(0, refusals)
    return refusals


def litellm_logging() -> None:
    """LiteLLM's loggers write through their own handler only, in tenantgw's format.

    Each has LiteLLM's handler, which keeps its filters (its secret redaction among them);
    they stop propagating to the root logger's handler, which would write every line twice.
    In JSON the handler gets tenantgw's formatter, so every line of the process has the same
    fields, and LiteLLM's ASCII-art banner (printed at start-up) is not shown.
    """
    fmt = jsonlog.log_format()
    install_refusal_filter(logging.getLogger("LiteLLM Proxy"))
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            continue
        logger.propagate = False
        if fmt == "json":
            for handler in logger.handlers:
                handler.setFormatter(jsonlog.JsonFormatter())
    if fmt == "json":
        from litellm.proxy.common_utils import banner

        banner.show_banner = lambda: None


def prepare_worker() -> None:
    """In a worker, before LiteLLM's proxy is imported: switch off the LiteLLM work the gateway
    does not need (`trim`), and hand LiteLLM the config like its CLI does.

    `litellm --config F` stores its options as JSON in $WORKER_CONFIG, which the proxy's
    start-up reads; these are the CLI's defaults with the config path.
    """
    configure_logging()
    trim.switch_off_unused_litellm_work()
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
    """LiteLLM's proxy app wrapped in GatewayMiddleware (uvicorn factory).

    The composition root: the worker's one GatewayRuntime is built here, attached to the
    handler LiteLLM finds by name, started at the app's startup and closed at its shutdown;
    the LiteLLM work tenantgw does not need is switched off once LiteLLM has started (`trim`).
    """
    prepare_worker()
    from litellm.proxy.proxy_server import app as proxy_app

    litellm_logging()

    from tenantgw.gateway.callbacks import handler
    from tenantgw.gateway.runtime import GatewayRuntime, serve_with

    runtime = GatewayRuntime.from_settings()
    handler.attach(runtime)
    drain = Drain()
    # Read before LiteLLM's start-up reads the file: a change in between is not missed.
    routing = modelsync.baseline(os.environ.get(CONFIG_ENV))

    def after_startup() -> None:
        trim.after_litellm_startup()
        modelsync.start(routing)  # a new ModelAlias without a restart
        heap.tune_after_startup()  # last: freezes the started proxy's heap
        drain.install()  # SIGTERM drains from now on (`drain`)

    wrapped: ASGIApp = serve_with(
        GatewayMiddleware(proxy_app, drain=drain), runtime, after_startup=after_startup
    )
    return wrapped


def __getattr__(name: str) -> Any:
    # `tenantgw.gateway.app:app` for servers that want an object rather than a factory.
    if name == "app":
        return create_app()
    raise AttributeError(name)
