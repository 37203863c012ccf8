"""Background tasks of the gateway that stop when asked, even when a cancellation is lost.

Python 3.11's `asyncio.wait_for` can swallow a cancellation that arrives just as the awaited
call finishes (fixed in 3.12): a loop whose body uses it then goes on to its next sleep with the
cancellation spent, and whoever awaits the task waits forever (a gateway that never shuts down).
Loops check `cancel_requested()` between rounds, and `stop()` waits a bounded time.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("tenantgw.gateway")

STOP_TIMEOUT = 10.0
"""Seconds `stop` waits for a task after cancelling it, per attempt."""


def cancel_requested() -> bool:
    """Whether the running task was asked to stop (its cancellation may have been swallowed)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def stop(task: asyncio.Task[None] | None, *, patience: float = STOP_TIMEOUT) -> None:
    """Cancel `task` and wait until it is done, cancelling again while it is not."""
    if task is None or task.done():
        return
    for _ in range(3):
        task.cancel()
        done, _pending = await asyncio.wait({task}, timeout=patience)
        if done:
            if not task.cancelled() and task.exception() is not None:
                log.warning("background task %s ended with %r", task.get_name(), task.exception())
            return
    log.error("background task %s did not stop after 3 cancellations", task.get_name())
