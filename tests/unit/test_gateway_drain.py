"""gateway.drain: SIGTERM fails readiness at once, then hands over to the server's shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import pytest

from tenantgw.gateway import __main__ as entry
from tenantgw.gateway.app import GatewayMiddleware
from tenantgw.gateway.drain import (
    DEFAULT_DRAIN_SECONDS,
    DEFAULT_STREAM_GRACE_SECONDS,
    Drain,
    drain_seconds,
    stream_grace_seconds,
)
from tenantgw.render.workload import (
    DRAIN_SECONDS,
    SHUTDOWN_FLUSH_SECONDS,
    STREAM_GRACE_SECONDS,
    TERMINATION_GRACE_SECONDS,
)

pytestmark = pytest.mark.unit


def test_settings_from_the_environment_and_bad_values_ignored() -> None:
    assert drain_seconds({}) == DEFAULT_DRAIN_SECONDS
    assert drain_seconds({"TENANTGW_DRAIN_SECONDS": "1.5"}) == 1.5
    assert drain_seconds({"TENANTGW_DRAIN_SECONDS": "soon"}) == DEFAULT_DRAIN_SECONDS
    assert drain_seconds({"TENANTGW_DRAIN_SECONDS": "-3"}) == DEFAULT_DRAIN_SECONDS
    assert stream_grace_seconds({}) == DEFAULT_STREAM_GRACE_SECONDS
    assert stream_grace_seconds({"TENANTGW_STREAM_GRACE_SECONDS": "2"}) == 2


def test_the_rendered_grace_period_outlasts_drain_streams_and_flush() -> None:
    assert (
        TERMINATION_GRACE_SECONDS == DRAIN_SECONDS + STREAM_GRACE_SECONDS + SHUTDOWN_FLUSH_SECONDS
    )
    assert (DRAIN_SECONDS, STREAM_GRACE_SECONDS) == (
        DEFAULT_DRAIN_SECONDS,
        DEFAULT_STREAM_GRACE_SECONDS,
    )


def test_uvicorn_gets_the_stream_grace_as_its_graceful_shutdown_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TENANTGW_STREAM_GRACE_SECONDS", "7")
    assert entry._uvicorn_options("127.0.0.1", 4000, 1)["timeout_graceful_shutdown"] == 7


class _Server:
    """What Drain needs of uvicorn's Server: its handler is a bound method, should_exit."""

    def __init__(self) -> None:
        self.should_exit = False
        self.signals: list[int] = []

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.signals.append(sig)
        self.should_exit = True


async def _call(app: Any, path: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": "GET", "path": path, "headers": []}
    await app(scope, receive, send)
    return sent


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x", b"1")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_sigterm_fails_readiness_at_once_and_stops_the_server_after_the_delay() -> None:
    server = _Server()
    drain = Drain(seconds=0.2)
    app = GatewayMiddleware(_ok, drain=drain)
    previous = signal.signal(signal.SIGTERM, server.handle_exit)

    async def scenario() -> None:
        drain.install()
        (start, _) = await _call(app, "/health/readiness")
        assert start["status"] == 200
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(0.05)
        assert drain.draining
        assert not server.should_exit  # still accepting
        start, body = await _call(app, "/health/readiness")
        assert start["status"] == 503
        assert (b"connection", b"close") in start["headers"]
        assert json.loads(body["body"]) == {"status": "draining"}
        # Other routes are served, with connection: close so that clients reconnect elsewhere.
        (start, _) = await _call(app, "/health/liveliness")
        assert start["status"] == 200
        assert (b"connection", b"close") in start["headers"]
        os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM changes nothing
        for _ in range(100):
            if server.should_exit:
                break
            await asyncio.sleep(0.05)

    try:
        asyncio.run(scenario())
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert server.should_exit
    # Not through the server's own handler: uvicorn would re-raise SIGTERM at exit.
    assert server.signals == []


def test_without_sigterm_nothing_changes() -> None:
    drain = Drain(seconds=0)
    app = GatewayMiddleware(_ok, drain=drain)
    (start, _) = asyncio.run(_call(app, "/health/liveliness"))
    assert start["status"] == 200
    assert (b"connection", b"close") not in start["headers"]
