"""The operator hands the C heap's free memory back to the kernel after a burst of reconciles.

A burst (a cold start over a thousand Tenants, a restart, a mass change) parses tens of
thousands of watch events and API answers. Python frees those objects at once, but glibc's
allocator keeps the pages it got for them, so the process's RSS stays near the burst's peak for
good: about a quarter of the operator's RSS after converging 1000 tenants was free memory
(docs/benchmarks.md, "Operator at scale"). `malloc_trim(0)` returns it.

The loop trims once the reconciles in flight have drained after some work, and every
`busy_every` seconds while a burst goes on; an idle operator is never trimmed twice. It costs a
few milliseconds of the event loop per trim. On a C library without `malloc_trim` (musl) the
loop is not started.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("tenantgw.operator")

BUSY_EVERY = 30.0
"""Seconds between trims while reconciles keep running."""


class Work(Protocol):
    """What the loop reads of the Waker."""

    @property
    def runs(self) -> int: ...

    @property
    def running(self) -> int: ...


def malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class HeapTrim:
    """Decides when to trim: after work, once it drained, or every `busy_every` s during it."""

    def __init__(
        self,
        trim: Callable[[int], int],
        busy_every: float = BUSY_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._trim, self._every, self._clock = trim, busy_every, clock
        self._runs_at_trim = 0
        self._trimmed_at = clock()
        self.trims = 0

    def tick(self, work: Work) -> bool:
        """Trim if it is time; True when it did."""
        if work.runs == self._runs_at_trim:
            return False  # nothing ran since the last trim: nothing new to give back
        if work.running and self._clock() - self._trimmed_at < self._every:
            return False
        self._runs_at_trim = work.runs
        self._trimmed_at = self._clock()
        self._trim(0)
        self.trims += 1
        return True


async def run_heap_trim_loop(work: Work, tick: float = 1.0) -> None:
    """Every `tick` s, trim the heap when `HeapTrim` says so (see the module's docstring)."""
    trim = malloc_trim()
    if trim is None:
        log.info("no malloc_trim in this C library: the heap is not trimmed")
        return
    heap = HeapTrim(trim)
    while True:
        await asyncio.sleep(tick)
        heap.tick(work)
