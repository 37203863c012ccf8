"""The operator's heap trim: when it trims, and that glibc's malloc_trim gives memory back."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from tenantgw.operator.heap import HeapTrim, malloc_trim

pytestmark = pytest.mark.unit


@dataclass
class Work:
    runs: int = 0
    running: int = 0


def heap(every: float = 30.0) -> tuple[HeapTrim, list[int], list[float]]:
    calls: list[int] = []
    now = [0.0]

    def trim(pad: int) -> int:
        calls.append(pad)
        return 1

    return HeapTrim(trim, busy_every=every, clock=lambda: now[0]), calls, now


def test_an_idle_operator_is_not_trimmed() -> None:
    h, calls, now = heap()
    for t in range(100):
        now[0] = float(t)
        assert not h.tick(Work(runs=0, running=0))
    assert calls == []


def test_it_trims_once_when_work_has_drained() -> None:
    h, calls, _ = heap()
    assert h.tick(Work(runs=5, running=0))
    assert not h.tick(Work(runs=5, running=0))  # nothing ran since
    assert calls == [0]


def test_during_a_burst_it_trims_every_busy_period_and_once_more_at_its_end() -> None:
    h, calls, now = heap(every=30)
    trimmed_at = []
    for t in range(100):
        now[0] = float(t)
        if h.tick(Work(runs=t + 1, running=50)):
            trimmed_at.append(t)
    assert trimmed_at == [30, 60, 90]
    now[0] = 100.5
    assert h.tick(Work(runs=101, running=0))  # drained: at once
    assert h.trims == len(calls) == 4


PROBE = """
import sys
from tenantgw.operator.heap import malloc_trim

def anon_kb():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("RssAnon"))

# 300 MB of 1 kB objects (past pymalloc: glibc's heap), one in 50 kept: the freed ones leave
# holes glibc does not return by itself.
blocks = [bytes(1000) + bytes([i % 251]) for i in range(300_000)]
kept = blocks[::50]
del blocks
before = anon_kb()
malloc_trim()(0)
print(before - anon_kb(), len(kept))
"""


def test_malloc_trim_gives_freed_heap_memory_back() -> None:
    assert malloc_trim() is not None, "glibc's malloc_trim not found"
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout
    released_kb = int(out.split()[0])
    assert released_kb > 100_000, out  # well over 100 MB of the ~290 MB freed
