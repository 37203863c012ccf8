"""Graceful drain of a gateway worker on SIGTERM: out of the load balancer first, then stop.

A rollout, a scale-down or an eviction sends the pod SIGTERM while the Service may still route
new connections to it for a moment (endpoints, kube-proxy and ingress controllers learn of the
termination asynchronously). On SIGTERM a worker therefore, in this order:

1. answers its readiness probe, `GET /health/readiness`, with 503 at once (`draining`), and
   sends `connection: close` with every response, so that keep-alive clients reconnect to
   another pod; liveness stays 200 (the kubelet must not restart a draining pod);
2. keeps accepting and serving for `$TENANTGW_DRAIN_SECONDS` (default 5 s), long enough for
   the endpoints to drop the pod (this replaces a preStop sleep: the distroless image has no
   `sleep`, and a preStop hook would delay the readiness failure instead of starting it);
3. then hands over to uvicorn's own shutdown: it stops accepting, closes idle connections,
   lets the requests in flight (streams included) finish for up to
   `$TENANTGW_STREAM_GRACE_SECONDS` (default 60 s; `timeout_graceful_shutdown`), cuts those
   still running, and runs the lifespan shutdown, where the ledger is flushed
   (`runtime.serve_with`, `lifespan`). The worker then exits 0.

The pod's terminationGracePeriodSeconds is rendered as the sum of both plus the bounded flush
(render.workload), so the kubelet's SIGKILL never comes first. With several workers the
parent process (uvicorn's supervisor) passes SIGTERM on to each worker at once and waits for
them; each drains as above.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from types import FrameType
from typing import Any

log = logging.getLogger("tenantgw.gateway.drain")

DRAIN_SECONDS_ENV = "TENANTGW_DRAIN_SECONDS"
DEFAULT_DRAIN_SECONDS = 5.0
"""Seconds a worker keeps accepting after SIGTERM, its readiness already failing."""
STREAM_GRACE_SECONDS_ENV = "TENANTGW_STREAM_GRACE_SECONDS"
DEFAULT_STREAM_GRACE_SECONDS = 60
"""Seconds the requests in flight get once accepting stops; those still running are cut."""
READINESS_PATH = "/health/readiness"

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        log.error("%s=%r is not a number of seconds; using %s", name, raw, default)
        return default
    return value


def drain_seconds(env: Mapping[str, str] = os.environ) -> float:
    """$TENANTGW_DRAIN_SECONDS, else 5; a bad value is reported and ignored."""
    return _number(env, DRAIN_SECONDS_ENV, DEFAULT_DRAIN_SECONDS)


def stream_grace_seconds(env: Mapping[str, str] = os.environ) -> int:
    """$TENANTGW_STREAM_GRACE_SECONDS (whole seconds, as uvicorn takes them), else 60."""
    return round(_number(env, STREAM_GRACE_SECONDS_ENV, DEFAULT_STREAM_GRACE_SECONDS))


class Drain:
    """One worker's drain state: whether SIGTERM came, and what happens then (module doc)."""

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = drain_seconds() if seconds is None else seconds
        self.draining = False
        self._stopping: asyncio.Task[None] | None = None

    def install(self) -> None:
        """Take over SIGTERM from the server (call on the serving loop, in the main thread,
        once the server has installed its own handlers: at the end of the app's startup)."""
        loop = asyncio.get_running_loop()
        server_handler = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if self.draining:
                return
            self.draining = True
            loop.call_soon_threadsafe(self._start_stopping, server_handler, signum)

        signal.signal(signal.SIGTERM, on_sigterm)

    def _start_stopping(self, server_handler: Any, signum: int) -> None:
        log.info(
            "SIGTERM: readiness fails now; accepting stops in %.1f s, then the requests in "
            "flight get %d s to finish",
            self.seconds,
            stream_grace_seconds(),
        )
        self._stopping = asyncio.get_running_loop().create_task(
            self._stop_after_delay(server_handler, signum), name="tenantgw-drain"
        )

    async def _stop_after_delay(self, server_handler: Any, signum: int) -> None:
        await asyncio.sleep(self.seconds)
        server = getattr(server_handler, "__self__", None)
        if server is not None and hasattr(server, "should_exit"):
            # uvicorn's Server: its graceful shutdown, without its re-raise of the signal at
            # exit (a worker that drained cleanly exits 0, not killed by SIGTERM).
            server.should_exit = True
        elif callable(server_handler):
            server_handler(signum, None)
        else:  # the default action (or none): as if this handler had never been installed
            signal.signal(signum, server_handler)
            signal.raise_signal(signum)

    def closing(self, send: Send) -> Send:
        """`send` adding `connection: close` to the response's headers while draining, so that
        a keep-alive client's next request opens a connection (to another pod)."""

        async def closing_send(message: Message) -> None:
            if self.draining and message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers") or ()
                    if bytes(k).lower() != b"connection"
                ]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        return closing_send
