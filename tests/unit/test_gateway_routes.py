"""One door: the gateway serves only its allowlist of routes, and refuses the rest before LiteLLM.

The walk below takes every route LiteLLM's proxy app registers (lazily registered feature
routers and mounted apps included) and sends a request to each through `GatewayMiddleware`
around a stand-in app that records whether it was reached. A LiteLLM upgrade that adds a
route fails here unless the route is refused or deliberately put on the allowlist.
e2e/test_gateway_doors.py walks the same routes against a real gateway process.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tenantgw.gateway import routes
from tenantgw.gateway.app import GatewayMiddleware
from tenantgw.gateway.bodies import MAX_JSON_DEPTH, shape_problem
from tenantgw.gateway.errors import route_family

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

pytestmark = pytest.mark.unit

Message = dict[str, Any]
MASTER_KEY_HEADERS = [(b"authorization", b"Bearer sk-the-master-key")]


class Recorder:
    """Stands in for LiteLLM: counts the requests that reach it and answers 200."""

    def __init__(self) -> None:
        self.reached: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.reached.append(f"{scope['type']} {scope.get('method', '')} {scope['path']}")
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})


async def http(
    app: Any, method: str, path: str, body: bytes = b"", headers: list[Any] | None = None
) -> tuple[int, Any, int]:
    """(status, parsed body, body chunks read) of one request through `app`."""
    reads = {"count": 0}

    async def receive() -> Message:
        reads["count"] += 1
        return {"type": "http.request", "body": body, "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"content-type", b"application/json"), *(headers or MASTER_KEY_HEADERS)],
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    raw = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(raw) if raw else None, reads["count"]


async def websocket(app: Any, path: str, extensions: dict[str, Any]) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": path, "headers": [], "extensions": extensions}
    await app(scope, receive, send)
    return sent


def assert_refused(path: str, payload: Any) -> None:
    if route_family(path) == "anthropic":
        assert payload["type"] == "error"
        assert payload["error"]["type"] == "not_found_error"
    else:
        assert payload["error"]["code"] == "404"
        assert payload["error"]["type"] == "not_found_error"
    assert "is not served by this gateway" in payload["error"]["message"]


@pytest.fixture(scope="module")
def litellm_routes() -> list[routes.RegisteredRoute]:
    from litellm.proxy.proxy_server import app

    return routes.registered_routes(app)


def test_the_walk_sees_litellms_whole_app(litellm_routes: list[routes.RegisteredRoute]) -> None:
    paths = {route.path for route in litellm_routes}
    # eager routes, lazily registered ones, pass-through prefixes, mounts and websockets
    for expected in ("/v1/chat/completions", "/v1/messages", "/key/generate", "/ui"):
        assert expected in paths
    assert any(path.startswith("/bedrock/") for path in paths)
    assert any(route.kind == "websocket" for route in litellm_routes)
    assert len(litellm_routes) > 500


async def test_every_route_litellm_registers_is_refused_or_on_the_allowlist(
    litellm_routes: list[routes.RegisteredRoute],
) -> None:
    recorder = Recorder()
    app = GatewayMiddleware(recorder)
    served: set[str] = set()
    for route in litellm_routes:
        for path in route.sample_paths():
            if route.kind == "websocket":
                sent = await websocket(app, path, {})
                assert sent == [{"type": "websocket.close", "code": 1008}], path
                continue
            for method in sorted(route.methods or {"GET", "POST"}):
                door = routes.door_for(method, path)
                before = len(recorder.reached)
                status, payload, _ = await http(app, method, path, b"{}")
                if door is None:
                    assert status == 404, f"{method} {path} answered {status}"
                    assert_refused(path, payload)
                    assert len(recorder.reached) == before, f"{method} {path} reached LiteLLM"
                else:
                    served.add(f"{method} {door.path}")
    # every door LiteLLM really has is found by the walk, and no other route is open
    assert served == {
        "POST /v1/messages",
        "POST /v1/messages/count_tokens",
        "POST /v1/chat/completions",
        "POST /chat/completions",
        "GET /v1/models",
        "GET /models",
        "GET /v1/models/{model_id}",
        "GET /health/liveliness",
        "GET /health/readiness",
    }
    for reached in recorder.reached:  # only doors reach LiteLLM
        _, method, path = reached.split(" ")
        assert routes.door_for(method, path) is not None, reached


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/azure/openai/deployments/fast-code/chat/completions"),
        ("POST", "/openai/v1/chat/completions"),
        ("POST", "/anthropic/v1/messages"),
        ("POST", "/bedrock/model/fast-code/converse"),
        ("POST", "/v1/files"),
        ("POST", "/v1/batches"),
        ("POST", "/key/generate"),
        ("GET", "/spend/calculate"),
        ("POST", "/v1/messages/"),  # no trailing-slash variant
        ("POST", "/claude_code_gateway/v1/messages"),
        ("GET", "/v1/messages"),  # a door's path with another method
        ("HEAD", "/health/readiness"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/responses"),
        ("GET", "/not/a/route/at/all"),
    ],
)
async def test_closed_routes_are_a_404_without_reading_the_body(method: str, path: str) -> None:
    recorder = Recorder()
    status, payload, reads = await http(GatewayMiddleware(recorder), method, path, b"{}")
    assert status == 404
    assert_refused(path, payload)
    assert reads == 0
    assert recorder.reached == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/messages"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/chat/completions"),
        ("GET", "/health/liveliness"),
    ],
)
async def test_doors_reach_litellm(method: str, path: str) -> None:
    recorder = Recorder()
    body = b'{"model": "fast-code", "messages": [{"role": "user", "content": "hi"}]}'
    status, _, _ = await http(GatewayMiddleware(recorder), method, path, body)
    assert status == 200
    assert recorder.reached == [f"http {method} {path}"]


@pytest.mark.parametrize("path", ["/metrics", "/metrics/"])
async def test_metrics_are_the_gateways_own_not_litellms(path: str) -> None:
    """/metrics is answered by tenantgw's collectors: LiteLLM's exporter is not loaded."""
    from tenantgw.gateway.metrics import GatewayMetrics

    GatewayMetrics.registered()
    recorder = Recorder()
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
    await GatewayMiddleware(recorder)(scope, receive, send)
    assert recorder.reached == []
    assert sent[0]["status"] == 200
    text = b"".join(m.get("body", b"") for m in sent[1:]).decode()
    assert "# TYPE litellm_proxy_total_requests_metric_total counter" in text
    assert "# TYPE tenantgw_requests_total counter" in text


async def test_websockets_get_a_404_where_the_server_can_send_one() -> None:
    recorder = Recorder()
    sent = await websocket(
        GatewayMiddleware(recorder), "/v1/realtime", {"websocket.http.response": {}}
    )
    assert sent[0]["type"] == "websocket.http.response.start"
    assert sent[0]["status"] == 404
    assert "not served" in json.loads(sent[1]["body"])["error"]["message"]
    assert recorder.reached == []


def test_the_allowlist_is_one_table() -> None:
    assert {door.path for door in routes.DOORS} >= {"/v1/messages", "/v1/chat/completions"}
    assert routes.door_for("post", "/v1/messages") is not None
    assert routes.door_for("POST", "/V1/messages") is None
    for door in routes.DOORS:
        if door.purpose in ("model", "count_tokens"):
            assert door.fields == ("model", "messages")
            assert door.methods == {"POST"}
        else:
            assert door.fields is None


# --------------------------------------------------------------------------- walked JSON


def nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions"])
async def test_json_nested_1000_deep_is_a_400_naming_the_problem(path: str) -> None:
    recorder = Recorder()
    content = "[" * 1000 + '"deep"' + "]" * 1000  # json.dumps itself cannot nest that deep
    body = (
        f'{{"model": "fast-code", "messages": [{{"role": "user", "content": {content}}}]}}'
    ).encode()
    status, payload, _ = await http(GatewayMiddleware(recorder), "POST", path, body)
    assert status == 400
    assert f"nested more than {MAX_JSON_DEPTH} levels deep" in payload["error"]["message"]
    assert recorder.reached == []


def test_depth_and_size_caps() -> None:
    # the body, messages and a message are 3 levels; nested(n) adds n - 1 arrays
    assert shape_problem({"messages": [{"content": nested(MAX_JSON_DEPTH - 2)}]}) is None
    assert shape_problem({"messages": [{"content": nested(MAX_JSON_DEPTH - 1)}]}) is not None
    many = {"input": [0] * 50}
    assert shape_problem(many, max_values=100) is None
    problem = shape_problem(many, max_values=40)
    assert problem is not None
    assert "more than 40 JSON values" in problem
