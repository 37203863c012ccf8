"""Client-shaped errors, body limits, JSON checks and the route allowlist of the gateway's ASGI
middleware.

The middleware wraps a tiny ASGI app here, so no LiteLLM proxy has to start.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tenantgw.gateway import access, credfail, errors, routes
from tenantgw.gateway.app import GatewayMiddleware
from tenantgw.gateway.bodies import body_problem

pytestmark = pytest.mark.unit

Scope = dict[str, Any]
Message = dict[str, Any]
App = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Upstream:
    """A stand-in for LiteLLM: answers with what the test says and records what it read."""

    status: int = 200
    body: bytes = b'{"ok":true}'
    content_type: bytes = b"application/json"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    read: bytes | None = None
    scope: Scope | None = None
    chunks: list[bytes] | None = None
    raise_error: bool = False

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        self.scope = scope
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RuntimeError("client disconnected")
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.read = body
        if self.raise_error:
            raise ValueError("bug in the app")
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"content-type", self.content_type), *self.headers],
            }
        )
        for chunk in self.chunks or [self.body]:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def call(
    app: Any,
    path: str,
    body: bytes | list[bytes] = b"",
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    content_length: bool = True,
) -> Response:
    chunks = body if isinstance(body, list) else [body]
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    raw_headers.append((b"content-type", b"application/json"))
    if content_length:
        raw_headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
    path, _, query = path.partition("?")
    scope: Scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query.encode(),
        "headers": raw_headers,
    }
    pending = list(chunks)
    served = {"count": 0}

    async def receive() -> Message:
        if pending:
            chunk = pending.pop(0)
            served["count"] += 1
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        return {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body_out = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers_out = {k.decode(): v.decode() for k, v in start["headers"]}
    response = Response(start["status"], headers_out, body_out)
    response.headers["x-test-chunks-read"] = str(served["count"])
    return response


def anthropic_shaped(payload: Any, error_type: str) -> str:
    assert payload["type"] == "error"
    assert payload["error"]["type"] == error_type
    assert set(payload["error"]) == {"type", "message"}
    message: str = payload["error"]["message"]
    return message


def openai_shaped(payload: Any, status: int) -> str:
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert payload["error"]["code"] == str(status)
    message: str = payload["error"]["message"]
    return message


GOOD_MESSAGES = json.dumps(
    {"model": "fast-code", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
).encode()
OPENAI_AUTH_ERROR = json.dumps(
    {
        "error": {
            "message": "invalid key",
            "type": "authentication_error",
            "param": None,
            "code": "401",
        }
    }
).encode()


# --------------------------------------------------------------------------- error shapes


async def test_openai_shaped_auth_error_becomes_anthropic_shaped() -> None:
    upstream = Upstream(status=401, body=OPENAI_AUTH_ERROR)
    response = await call(GatewayMiddleware(upstream), "/v1/messages", GOOD_MESSAGES)
    assert response.status == 401
    assert anthropic_shaped(response.json(), "authentication_error") == "invalid key"
    assert int(response.headers["content-length"]) == len(response.body)


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/chat/completions"), ("POST", "/chat/completions")],
)
async def test_openai_routes_keep_openai_shape(method: str, path: str) -> None:
    upstream = Upstream(status=401, body=OPENAI_AUTH_ERROR)
    response = await call(GatewayMiddleware(upstream), path, GOOD_MESSAGES, method=method)
    assert response.status == 401
    assert response.body == OPENAI_AUTH_ERROR  # already right: passed through as is


async def test_anthropic_shaped_error_on_openai_route_becomes_openai_shaped() -> None:
    body = json.dumps({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}})
    upstream = Upstream(status=429, body=body.encode(), headers=[(b"retry-after", b"7")])
    response = await call(GatewayMiddleware(upstream), "/v1/chat/completions", GOOD_MESSAGES)
    assert response.status == 429
    assert openai_shaped(response.json(), 429) == "slow"
    assert response.headers["retry-after"] == "7"


async def test_retry_after_is_kept_when_reshaping() -> None:
    upstream = Upstream(
        status=429,
        body=json.dumps({"error": {"message": "over rpm", "type": "x", "code": "429"}}).encode(),
        headers=[(b"retry-after", b"12"), (b"x-litellm-call-id", b"abc")],
    )
    response = await call(GatewayMiddleware(upstream), "/v1/messages", GOOD_MESSAGES)
    assert response.status == 429
    assert anthropic_shaped(response.json(), "rate_limit_error") == "over rpm"
    assert response.headers["retry-after"] == "12"
    assert response.headers["x-litellm-call-id"] == "abc"


@pytest.mark.parametrize(
    ("path", "family"), [("/v1/messages", "anthropic"), ("/v1/chat/completions", "openai")]
)
async def test_plain_text_500_becomes_json(path: str, family: str) -> None:
    upstream = Upstream(status=500, body=b"Internal Server Error", content_type=b"text/plain")
    response = await call(GatewayMiddleware(upstream), path, GOOD_MESSAGES)
    assert response.status == 500
    assert response.headers["content-type"] == "application/json"
    if family == "anthropic":
        assert anthropic_shaped(response.json(), "api_error") == "Internal Server Error"
    else:
        assert openai_shaped(response.json(), 500) == "Internal Server Error"


async def test_error_body_in_several_chunks_is_reshaped_whole() -> None:
    upstream = Upstream(status=401, chunks=[OPENAI_AUTH_ERROR[:10], OPENAI_AUTH_ERROR[10:]])
    response = await call(GatewayMiddleware(upstream), "/v1/messages", GOOD_MESSAGES)
    assert anthropic_shaped(response.json(), "authentication_error") == "invalid key"


async def test_litellm_error_types_map_to_anthropic_types_by_status() -> None:
    body = {"error": {"message": "no", "type": "auth_error", "param": "None", "code": "403"}}
    upstream = Upstream(status=403, body=json.dumps(body).encode())
    response = await call(GatewayMiddleware(upstream), "/v1/messages", GOOD_MESSAGES)
    assert anthropic_shaped(response.json(), "permission_error") == "no"


async def test_successful_responses_pass_through_untouched() -> None:
    stream = [b"event: message_start\ndata: {}\n\n", b"event: message_stop\ndata: {}\n\n"]
    upstream = Upstream(status=200, chunks=stream, content_type=b"text/event-stream")
    response = await call(GatewayMiddleware(upstream), "/v1/messages", GOOD_MESSAGES)
    assert response.status == 200
    assert response.body == b"".join(stream)


async def test_app_crash_before_answering_is_a_shaped_500() -> None:
    upstream = Upstream(raise_error=True)
    response = await call(GatewayMiddleware(upstream), "/v1/messages", GOOD_MESSAGES)
    assert response.status == 500
    anthropic_shaped(response.json(), "api_error")


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ],
)
def test_anthropic_error_types_follow_the_status(status: int, error_type: str) -> None:
    assert errors.anthropic_error(status, "m") == {
        "type": "error",
        "error": {"type": error_type, "message": "m"},
    }


def test_fastapi_detail_bodies_keep_their_message() -> None:
    shaped = errors.reshape_error("anthropic", 404, b'{"detail":"Not Found"}', "application/json")
    assert shaped is not None
    assert json.loads(shaped)["error"]["message"] == "Not Found"


def test_route_families() -> None:
    assert errors.route_family("/v1/messages") == "anthropic"
    assert errors.route_family("/claude_code_gateway/v1/messages") == "anthropic"
    assert errors.route_family("/anthropic/v1/messages") == "anthropic"
    assert errors.route_family("/v1/chat/completions") == "openai"
    assert errors.route_family("/v1/messagesx") == "openai"


# --------------------------------------------------------------------------- body limits


@pytest.mark.parametrize(
    ("path", "family"), [("/v1/messages", "anthropic"), ("/v1/chat/completions", "openai")]
)
async def test_oversized_body_is_refused_before_it_is_read(path: str, family: str) -> None:
    upstream = Upstream()
    app = GatewayMiddleware(upstream, max_body_bytes=1000)
    response = await call(app, path, b"x" * 5000)
    assert response.status == 413
    assert response.headers["x-test-chunks-read"] == "0"
    assert upstream.scope is None
    if family == "anthropic":
        message = anthropic_shaped(response.json(), "request_too_large")
    else:
        message = openai_shaped(response.json(), 413)
    assert "at most 1000 bytes" in message


async def test_chunked_oversized_body_is_cut_off_at_the_limit() -> None:
    upstream = Upstream()
    app = GatewayMiddleware(upstream, max_body_bytes=1000)
    chunks = [b"x" * 400] * 10
    response = await call(app, "/v1/messages", chunks, content_length=False)
    assert response.status == 413
    assert int(response.headers["x-test-chunks-read"]) == 3  # not one chunk more
    anthropic_shaped(response.json(), "request_too_large")


async def test_chunked_oversized_body_on_routes_without_json_is_refused_too() -> None:
    upstream = Upstream()
    app = GatewayMiddleware(upstream, max_body_bytes=1000)
    response = await call(
        app, "/health/liveliness", [b"x" * 400] * 10, method="GET", content_length=False
    )
    assert response.status == 413
    openai_shaped(response.json(), 413)


async def test_body_under_the_limit_reaches_the_app_unchanged() -> None:
    upstream = Upstream()
    app = GatewayMiddleware(upstream, max_body_bytes=len(GOOD_MESSAGES))
    response = await call(app, "/v1/messages", [GOOD_MESSAGES[:7], GOOD_MESSAGES[7:]])
    assert response.status == 200
    assert upstream.read == GOOD_MESSAGES
    assert upstream.scope is not None
    # the parsed body is handed on, so LiteLLM does not parse it again
    keys, parsed = upstream.scope["parsed_body"]
    assert keys == ("model", "max_tokens", "messages")
    assert parsed["model"] == "fast-code"


def test_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTGW_MAX_BODY_BYTES", "2048")
    assert GatewayMiddleware(Upstream()).max_body_bytes == 2048
    monkeypatch.setenv("TENANTGW_MAX_BODY_BYTES", "lots")
    assert GatewayMiddleware(Upstream()).max_body_bytes == 10 * 1024 * 1024


# --------------------------------------------------------------------------- JSON checks


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"model": "fast-code",', "not valid JSON"),
        (b"", "request body is empty"),
        (b"[1, 2]", "must be a JSON object, not an array"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model: required field is missing"),
        (b'{"model": "m"}', "messages: required field is missing"),
        (b'{"model": 7, "messages": []}', "model: must be a non-empty string"),
        (b'{"model": "m", "messages": "hi"}', "messages: must be an array"),
        (b'{"model": "m", "messages": []}', "messages: must contain at least one message"),
        (b'{"model": "m", "messages": ["hi"]}', "messages[0]: must be an object"),
        (b'{"model": "m", "messages": [{"content": "hi"}]}', "messages[0].role"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions"])
async def test_bad_bodies_are_a_400_naming_the_problem(
    path: str, body: bytes, expected: str
) -> None:
    upstream = Upstream()
    response = await call(GatewayMiddleware(upstream), path, body)
    assert response.status == 400
    assert upstream.scope is None
    if path == "/v1/messages":
        message = anthropic_shaped(response.json(), "invalid_request_error")
    else:
        message = openai_shaped(response.json(), 400)
    assert expected in message


def test_required_fields_by_route() -> None:
    door = routes.door_for("POST", "/v1/messages")
    assert door is not None
    assert door.fields == ("model", "messages")
    health = routes.door_for("GET", "/health/readiness")
    assert health is not None
    assert health.fields is None
    assert (
        body_problem({"model": "m", "messages": [{"role": "user"}]}, ("model", "messages")) is None
    )


async def test_lifespan_reaches_the_app() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    await GatewayMiddleware(app)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]


@dataclass
class CredentialFailingUpstream(Upstream):
    """LiteLLM after its failure hook saw the provider's credential fail (`credfail`)."""

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        exchange = access.CURRENT.get()
        assert exchange is not None
        exchange.credential_failure = "Error when retrieving credentials from container-role"
        await super().__call__(scope, receive, send)


@pytest.mark.parametrize(("path", "status"), [("/v1/messages", 500), ("/v1/chat/completions", 401)])
async def test_a_credential_failure_is_a_502_saying_whose_problem_it_is(
    path: str, status: int
) -> None:
    """LiteLLM's 500 (or Entra ID's 401, which reads as a bad tenant key) becomes a 502 in the
    client's shape with the credential library's reason, not LiteLLM's wrapper text."""
    body = json.dumps({"error": {"message": "litellm.APIConnectionError: boto3 said no"}})
    upstream = CredentialFailingUpstream(status=status, body=body.encode())
    response = await call(GatewayMiddleware(upstream), path, GOOD_MESSAGES)
    assert response.status == credfail.STATUS
    assert int(response.headers["content-length"]) == len(response.body)
    if path == "/v1/messages":
        message = anthropic_shaped(response.json(), "api_error")
    else:
        message = openai_shaped(response.json(), 502)
    assert "platform" in message
    assert "container-role" in message
    assert "boto3 said no" not in message
