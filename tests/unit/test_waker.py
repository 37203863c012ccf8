"""Wake-ups of one tenant fold together, failures are retried with backoff, and a deleted
tenant is never reconciled again."""

from __future__ import annotations

import asyncio

import pytest

from tenantgw.operator.waker import FIRST, Turns, Waker, backoff

pytestmark = pytest.mark.unit


async def test_a_burst_of_wakeups_costs_two_reconciles_that_never_overlap() -> None:
    runs: list[str] = []
    running = 0

    async def reconcile(name: str) -> bool:
        nonlocal running
        running += 1
        assert running == 1, "two reconciles of one tenant overlapped"
        runs.append(name)
        await asyncio.sleep(0.05)
        running -= 1
        return True

    waker = Waker(reconcile)
    await asyncio.gather(*(waker.wake("team-a") for _ in range(6)))
    assert runs == ["team-a", "team-a"]


async def test_stop_waits_for_the_running_reconcile_and_refuses_new_ones() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    runs = 0

    async def reconcile(_: str) -> bool:
        nonlocal runs
        runs += 1
        started.set()
        await release.wait()
        return True

    waker = Waker(reconcile)
    first = asyncio.create_task(waker.wake("team-a"))
    await started.wait()
    await waker.wake("team-a")  # queued behind the running one
    stopping = asyncio.create_task(waker.stop("team-a"))
    await asyncio.sleep(0.1)
    assert not stopping.done(), "stop() returned while a reconcile was still running"
    release.set()
    await asyncio.wait_for(stopping, 1)
    await first
    await waker.wake("team-a")
    assert runs == 1, "a stopped tenant was reconciled again"
    waker.allow("team-a")
    await waker.wake("team-a")
    assert runs == 2


async def test_a_failed_reconcile_is_retried_until_it_succeeds() -> None:
    """kopf never retries an event handler: the Waker requeues what failed."""
    outcomes: list[Exception | bool] = [RuntimeError("422 Unprocessable Entity"), False, True]
    runs = 0
    converged = asyncio.Event()

    async def reconcile(_: str) -> bool:
        nonlocal runs
        outcome = outcomes[runs]
        runs += 1
        if outcome is True:
            converged.set()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    waker = Waker(reconcile, first_retry=0.01, max_retry=0.05)
    await waker.wake("team-a")  # raises inside: must not escape, must be requeued
    assert runs == 1
    await asyncio.wait_for(converged.wait(), 2)
    await asyncio.sleep(0.1)
    assert runs == 3, "a tenant that converged was reconciled again"
    assert waker.pending_retry("team-a") is None


async def test_a_wake_queued_behind_a_failed_reconcile_still_runs() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    runs = 0

    async def reconcile(_: str) -> bool:
        nonlocal runs
        runs += 1
        if runs == 1:
            started.set()
            await release.wait()
            raise RuntimeError("the API server refused")
        return True

    waker = Waker(reconcile, first_retry=60)
    first = asyncio.create_task(waker.wake("team-a"))
    await started.wait()
    await waker.wake("team-a")  # arrives while the failing reconcile runs
    release.set()
    await first
    assert runs == 2, "the wake queued behind a failed reconcile was dropped"
    assert waker.pending_retry("team-a") is None, "it succeeded: nothing left to retry"


async def test_stop_drops_a_queued_retry() -> None:
    runs = 0

    async def reconcile(_: str) -> bool:
        nonlocal runs
        runs += 1
        return False  # e.g. the namespace is still terminating

    waker = Waker(reconcile, first_retry=0.02)
    await waker.wake("team-a")
    assert waker.pending_retry("team-a") is not None
    await waker.stop("team-a")
    assert waker.pending_retry("team-a") is None
    await asyncio.sleep(0.1)
    assert runs == 1, "a deleted tenant was retried"


def test_backoff_doubles_per_failure_up_to_the_cap() -> None:
    assert [backoff(n, 1.0, 30.0) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


async def test_resyncs_are_jittered_and_counted_from_the_last_reconcile() -> None:
    from tenantgw.operator.waker import jittered

    draws = [jittered(100.0)() for _ in range(200)]
    assert all(80.0 <= d <= 120.0 for d in draws)
    assert max(draws) - min(draws) > 20, "every tenant would come back at the same moment"

    runs: list[str] = []

    async def reconcile(name: str) -> bool:
        runs.append(name)
        return True

    waker = Waker(reconcile)
    waker.resync = lambda: 0.05
    assert waker.due(["team-a"]) == [], "a tenant never reconciled is not due for a resync"
    await waker.wake("team-a")
    assert waker.due(["team-a"]) == []
    await asyncio.sleep(0.06)
    assert waker.due(["team-a"]) == ["team-a"]
    waker.spawn("team-a")
    assert waker.due(["team-a"]) == [], "a tenant being resynced was due twice"
    await asyncio.sleep(0.01)
    assert runs == ["team-a", "team-a"]
    await waker.stop("team-a")
    await asyncio.sleep(0.06)
    assert waker.due(["team-a"]) == [], "a deleted tenant stayed on the resync schedule"


async def test_at_most_concurrency_tenants_are_reconciled_at_once_in_arrival_order() -> None:
    running, most, order = 0, 0, []

    async def reconcile(name: str) -> bool:
        nonlocal running, most
        running += 1
        most = max(most, running)
        order.append(name)
        await asyncio.sleep(0.02)
        running -= 1
        return True

    waker = Waker(reconcile, concurrency=3)
    names = [f"team-{i}" for i in range(10)]
    await asyncio.gather(*(waker.wake(n) for n in names))
    assert most == 3
    assert order == names


async def test_a_tenant_reconciled_before_goes_ahead_of_new_ones_and_resyncs_go_last() -> None:
    """With every turn taken, the follow-up of an applied tenant (its gateway became
    Available) runs before the first pass of tenants queued earlier; a resync waits for all."""
    order: list[str] = []
    gate = asyncio.Event()

    async def reconcile(name: str) -> bool:
        order.append(name)
        if name == "busy":
            await gate.wait()
        return True

    waker = Waker(reconcile, concurrency=1)
    await waker.wake("applied")  # reconciled once: its next pass is a follow-up
    busy = asyncio.create_task(waker.wake("busy"))
    await asyncio.sleep(0)
    waker.spawn("old")  # a resync, queued first of the waiters
    await asyncio.sleep(0)
    queued = [asyncio.create_task(waker.wake(f"new-{i}")) for i in range(3)]
    await asyncio.sleep(0)
    queued.append(asyncio.create_task(waker.wake("applied")))
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(busy, *queued)
    await asyncio.sleep(0.01)
    assert order == ["applied", "busy", "applied", "new-0", "new-1", "new-2", "old"]


async def test_a_waiter_cancelled_in_the_queue_gives_no_turn_away() -> None:
    turns = Turns(1)
    await turns.acquire(FIRST)
    waiting = asyncio.create_task(turns.acquire(FIRST))
    later = asyncio.create_task(turns.acquire(FIRST))
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.sleep(0)
    turns.release()
    await asyncio.wait_for(later, 1)
    turns.release()
    await asyncio.wait_for(turns.acquire(FIRST), 1)  # the turn came back: not lost
