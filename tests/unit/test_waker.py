"""Wake-ups of one tenant fold together, and a deleted tenant is never reconciled again."""

from __future__ import annotations

import asyncio

import pytest

from tenantgw.operator.waker import Waker

pytestmark = pytest.mark.unit


async def test_a_burst_of_wakeups_costs_two_reconciles_that_never_overlap() -> None:
    runs: list[str] = []
    running = 0

    async def reconcile(name: str) -> None:
        nonlocal running
        running += 1
        assert running == 1, "two reconciles of one tenant overlapped"
        runs.append(name)
        await asyncio.sleep(0.05)
        running -= 1

    waker = Waker(reconcile)
    await asyncio.gather(*(waker.wake("team-a") for _ in range(6)))
    assert runs == ["team-a", "team-a"]


async def test_stop_waits_for_the_running_reconcile_and_refuses_new_ones() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    runs = 0

    async def reconcile(_: str) -> None:
        nonlocal runs
        runs += 1
        started.set()
        await release.wait()

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
