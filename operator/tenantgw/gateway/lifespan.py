"""The ledger's part of a gateway worker's lifespan: start with the worker, drain on SIGTERM.

Start: the ledger's writer starts as soon as the worker is up (in the background, so a Postgres
that does not answer never delays readiness), not on the first request: a new pod replays the
usage rows that a previous pod left in the tenant's Redis stream even while no traffic comes.

Stop: a rollout or an eviction sends SIGTERM. The worker drains (`drain`: readiness fails,
accepting stops after a delay), uvicorn lets the requests in flight finish within its grace,
runs the app's lifespan shutdown, and the worker exits without running `atexit` hooks (uvicorn
re-raises the signal when its own handler got it), so neither LiteLLM's flush of its pending
logging callbacks nor the ledger's exit hook can be relied on. `runtime.serve_with` therefore
drains in the lifespan shutdown, before uvicorn hears it is complete: it waits for the
callbacks LiteLLM still holds (each one records its request's usage row), then stops the
ledger, which writes the queued rows to Postgres or, during an outage, to the tenant's Redis
stream. Both steps are bounded so that the worker exits well inside the pod's grace period.
"""

from __future__ import annotations

import asyncio
import logging

from tenantgw.gateway.ledger import Ledger

log = logging.getLogger("tenantgw.gateway.shutdown")

CALLBACKS_TIMEOUT = 15.0
"""Seconds to wait for LiteLLM's pending logging callbacks."""
LEDGER_TIMEOUT = 25.0
"""Seconds to write or spool the ledger's queue (well inside the 60 s grace period)."""


async def flush_litellm_callbacks(seconds: float = CALLBACKS_TIMEOUT) -> None:
    """Run the logging callbacks LiteLLM still holds: each one records its request's usage."""
    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

        await asyncio.wait_for(GLOBAL_LOGGING_WORKER.flush(), seconds)
    except Exception:
        log.exception("LiteLLM's pending callbacks did not all run before shutdown")


async def stop_ledger(ledger: Ledger, seconds: float = LEDGER_TIMEOUT) -> None:
    """Write or spool every queued usage row, within `seconds`."""
    try:
        await asyncio.wait_for(ledger.stop(), seconds)
    except Exception:
        # The exit hook is not coming (uvicorn re-raises SIGTERM): spool what is left now.
        kept = ledger.spool_unwritten()
        log.exception("the ledger did not stop cleanly; %d rows spooled", kept)
