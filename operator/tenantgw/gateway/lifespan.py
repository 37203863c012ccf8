"""The ledger's part of a gateway worker's lifespan: start with the worker, drain on SIGTERM.

Start: the ledger's writer starts as soon as the worker is up (in the background, so a Postgres
that does not answer never delays readiness), not on the first request: a new pod replays the
usage rows that a previous pod left in the tenant's Redis stream even while no traffic comes.

Stop: a rollout or an eviction sends SIGTERM. uvicorn then stops accepting, lets the requests in
flight finish, runs the app's lifespan shutdown, and re-raises the signal with its default
action: the process dies without running `atexit` hooks, so neither LiteLLM's flush of its
pending logging callbacks nor the ledger's exit hook would run. `LedgerLifespan` therefore
drains in the lifespan shutdown, before uvicorn hears it is complete: it waits for the
callbacks LiteLLM still holds (each one records its request's usage row), then stops the
ledger, which writes the queued rows to Postgres or, during an outage, to the tenant's Redis
stream. Both steps are bounded so that the worker exits well inside the pod's grace period.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

log = logging.getLogger("tenantgw.gateway.shutdown")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CALLBACKS_TIMEOUT = 15.0
"""Seconds to wait for LiteLLM's pending logging callbacks."""
LEDGER_TIMEOUT = 25.0
"""Seconds to write or spool the ledger's queue (well inside the 60 s grace period)."""


async def start() -> None:
    """Start the process's ledger writer (and whatever else metering starts with it)."""
    from tenantgw.gateway import metering

    try:
        current = metering.state()
        if current is not None:
            await current.started()
    except Exception:
        log.exception("the ledger could not start with the worker; it starts on first use")


async def drain(
    callbacks_timeout: float = CALLBACKS_TIMEOUT, ledger_timeout: float = LEDGER_TIMEOUT
) -> None:
    """Run the callbacks LiteLLM still holds, then write or spool every queued usage row."""
    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

        await asyncio.wait_for(GLOBAL_LOGGING_WORKER.flush(), callbacks_timeout)
    except Exception:
        log.exception("LiteLLM's pending callbacks did not all run before shutdown")
    from tenantgw.gateway import metering

    current = metering.state()
    if current is None or current.ledger is None:
        return
    try:
        await asyncio.wait_for(current.ledger.stop(), ledger_timeout)
    except Exception:
        # The exit hook is not coming (uvicorn re-raises SIGTERM): spool what is left now.
        kept = current.ledger.spool_unwritten()
        log.exception("the ledger did not stop cleanly; %d rows spooled", kept)


class LedgerLifespan:
    """ASGI wrapper: `start()` after the app's lifespan startup, `drain()` after its shutdown."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._starting: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_around(message: Message) -> None:
            kind = message["type"]
            if kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                if self._starting is not None:
                    await asyncio.gather(self._starting, return_exceptions=True)
                await drain()
            await send(message)
            if kind == "lifespan.startup.complete":
                self._starting = asyncio.get_running_loop().create_task(
                    start(), name="tenantgw-ledger-start"
                )

        await self.app(scope, receive, send_around)
