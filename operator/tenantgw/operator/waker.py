"""Coalesce wake-ups: at most one reconcile per tenant runs, and one more is queued behind it.

A reconcile that did not finish its work (it raised, or said so) is tried again after a backoff
that doubles per consecutive failure, so no wake-up is lost to a failure: kopf does not retry
`on.event` handlers, and the next resync may be minutes away.

`run_resync_loop` wakes each tenant once per resync period counted from its last reconcile,
with the period drawn afresh each time (±`jitter`): a thousand tenants reconciled together at
start do not come back together every period, and a tenant an event just reconciled is not
resynced on top of it. One loop, not a timer task per Tenant.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class _State:
    running: bool = False
    again: bool = False


# Who goes first when every turn is taken (lower first, arrival order within a level).
FOLLOW_UP = 0
"""A tenant reconciled before: its objects exist, so the pass is short and mostly reads; it
is what turns an Available gateway into a Ready Tenant."""
FIRST = 1
"""A tenant this process has not reconciled yet (a new Tenant, or every Tenant at start)."""
RESYNC = 2
"""The periodic resync of a tenant nothing woke: it can wait for the others."""


class Turns:
    """A semaphore whose waiters are served by priority, then in arrival order."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    async def acquire(self, priority: int) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._arrivals), turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed a turn just as it was cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiting:
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1


def backoff(failures: int, first: float, cap: float) -> float:
    """Seconds before retry number `failures` (1-based): first, 2·first, 4·first, … ≤ cap."""
    return float(min(cap, first * 2 ** max(0, failures - 1)))


class Waker:
    """Runs `reconcile(name)`; wake-ups that arrive while it runs fold into one more run.

    A burst of events (a Tenant and its five ModelAliases at startup) costs two reconciles, not
    six, and two reconciles of one tenant never interleave. `reconcile` returns True when the
    tenant is where its spec wants it, False to be requeued (e.g. its namespace is still
    terminating, or the API server refused an apply); an exception counts as False.
    """

    def __init__(
        self,
        reconcile: Callable[[str], Awaitable[bool]],
        *,
        first_retry: float = 1.0,
        max_retry: float = 60.0,
        concurrency: int | None = None,
    ) -> None:
        self._reconcile = reconcile
        # A thousand tenants woken together (a cold start) would otherwise all be half-way for
        # as long as all of them take: their API calls and storage steps share the same
        # queues. With turns, each tenant's reconcile runs through while the others wait; the
        # follow-up of a tenant already applied (its Deployment became Available) goes before
        # the first pass of the next, and resyncs go last.
        self._turns = Turns(concurrency) if concurrency else None
        self._reconciled: set[str] = set()
        self._first, self._cap = first_retry, max_retry
        self._states: dict[str, _State] = {}
        self._stopped: set[str] = set()
        self._failures: dict[str, int] = {}
        self._retries: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._due: dict[str, float] = {}
        """When each tenant is resynced next (event-loop time), set as its reconcile ends."""
        self.resync: Callable[[], float] | None = None
        """Draws the seconds from a reconcile to its tenant's next resync (None: no resyncs)."""
        self.runs = 0
        """Reconciles finished so far."""

    @property
    def running(self) -> int:
        """Tenants with a reconcile running or waiting for its turn."""
        return len(self._states)

    def allow(self, name: str) -> None:
        """Let `name` be reconciled again (a Tenant of that name exists)."""
        self._stopped.discard(name)

    async def stop(self, name: str) -> None:
        """Refuse new reconciles of `name`, drop its retries, wait for a running one to end."""
        self._stopped.add(name)
        self._reconciled.discard(name)
        self._forget_retry(name)
        self._due.pop(name, None)
        while (state := self._states.get(name)) is not None and state.running:
            state.again = False
            await asyncio.sleep(0.05)

    def pending_retry(self, name: str) -> float | None:
        """Seconds until the queued retry of `name`, if one is queued."""
        handle = self._retries.get(name)
        return (
            None if handle is None else max(0.0, handle.when() - asyncio.get_running_loop().time())
        )

    async def wake(self, name: str, *, resync: bool = False) -> None:
        if name in self._stopped:
            return
        state = self._states.setdefault(name, _State())
        if state.running:
            state.again = True
            return
        state.running = True
        done = False
        try:
            while True:
                priority = RESYNC if resync else FOLLOW_UP if name in self._reconciled else FIRST
                state.again = False
                done = await self._run(name, priority)
                resync = False  # another pass is for a wake-up that came meanwhile
                if not state.again or name in self._stopped:
                    break
        finally:
            state.running = False
            self._states.pop(name, None)
        if name in self._stopped:
            return
        if self.resync is not None:
            self._due[name] = asyncio.get_running_loop().time() + self.resync()
        if done:
            self._forget_retry(name)
        else:
            self._retry_later(name)

    async def _run(self, name: str, priority: int) -> bool:
        try:
            if self._turns is None:
                return await self._reconcile(name)
            await self._turns.acquire(priority)
            try:
                return await self._reconcile(name)
            finally:
                self._turns.release()
        except Exception:  # any failure is retried; the log says what it was
            log.exception("tenant %s: reconcile failed", name)
            return False
        finally:
            self.runs += 1
            if name not in self._stopped:
                self._reconciled.add(name)

    def _retry_later(self, name: str) -> None:
        failures = self._failures[name] = self._failures.get(name, 0) + 1
        if name in self._retries:
            return  # one retry queued is enough
        delay = backoff(failures, self._first, self._cap)
        self._retries[name] = asyncio.get_running_loop().call_later(delay, self._fire, name)

    def _fire(self, name: str) -> None:
        self._retries.pop(name, None)
        task = asyncio.create_task(self.wake(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _forget_retry(self, name: str) -> None:
        self._failures.pop(name, None)
        handle = self._retries.pop(name, None)
        if handle is not None:
            handle.cancel()

    def due(self, names: Iterable[str]) -> list[str]:
        """Those of `names` whose resync time has come (never reconciled: not yet due)."""
        now = asyncio.get_running_loop().time()
        return [n for n in names if self._due.get(n, now + 1) <= now]

    def spawn(self, name: str) -> None:
        """Wake `name` in a task of its own (the resync loop does not wait for it)."""
        self._due.pop(name, None)  # set again when this reconcile ends
        task = asyncio.create_task(self.wake(name, resync=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def jittered(period: float, jitter: float = 0.2) -> Callable[[], float]:
    """A draw of `period` ± `jitter` (a fraction), uniform."""
    return lambda: period * (1 + jitter * (2 * random.random() - 1))  # noqa: S311 - not secret


async def run_resync_loop(waker: Waker, names: Callable[[], Iterable[str]], tick: float) -> None:
    """Every `tick` s, wake the tenants of `names()` whose resync is due (see `Waker.resync`)."""
    while True:
        await asyncio.sleep(tick)
        for name in waker.due(list(names())):
            waker.spawn(name)
