"""The garbage collector of a gateway worker: its start-up heap frozen, young collections rarer.

A started LiteLLM proxy holds close to a million live objects (its modules, the model cost map,
the router, pydantic's schemas), nearly all of which live as long as the worker. CPython's
collector does not know that: every full (generation-2) collection walks all of them (tens to
hundreds of ms, charged to whichever request happened to allocate at that moment), and the
default generation-0 threshold of 700 allocations sets off a young collection several times
per request (LiteLLM allocates thousands of container objects per request) and a
generation-1 collection every ten of those. So, once per worker, when LiteLLM's start-up is
complete and before the first request (`after_startup`):

1. the start-up's garbage is collected (`gc.collect()`), then everything still alive is moved
   to the collector's permanent generation (`gc.freeze()`): it is never walked again. Frozen
   objects are still freed by reference counting when the last reference goes; only cyclic
   garbage among them would stay, and that is the start-up's (a bounded, one-off amount),
   never a request's, since requests' objects are created after the freeze;
2. the generation-0 threshold is raised to `$TENANTGW_GC_THRESHOLD` (default `DEFAULT_THRESHOLD`
   allocations): a request's short-lived objects mostly die by reference counting before a
   collection comes, and the cycles LiteLLM leaves behind are collected a little later, in
   fewer, larger batches. Generations 1 and 2 keep Python's thresholds. `0` keeps Python's
   defaults for all three, and a value that is not a whole number is reported and ignored.

Neither changes what a request does or records; what it saves is CPU per request (and the
occasional long pause of a full collection, which shows in the p99), measured in
docs/benchmarks.md's Gateway section. With several uvicorn workers each worker process
runs its own start-up, so each freezes its own heap.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger("tenantgw.gateway")

THRESHOLD_ENV = "TENANTGW_GC_THRESHOLD"
DEFAULT_THRESHOLD = 50_000
"""Allocations (net of deallocations) of container objects between generation-0 collections."""


def gc_threshold(env: Mapping[str, str] = os.environ) -> int:
    """$TENANTGW_GC_THRESHOLD, else `DEFAULT_THRESHOLD`; 0 keeps Python's own thresholds."""
    raw = env.get(THRESHOLD_ENV, "").strip()
    if not raw:
        return DEFAULT_THRESHOLD
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        log.error(
            "%s=%r is not a whole number of allocations; using %d",
            THRESHOLD_ENV,
            raw,
            DEFAULT_THRESHOLD,
        )
        return DEFAULT_THRESHOLD
    return value


@dataclass(frozen=True)
class Tuned:
    """What `tune_after_startup` did: the objects frozen and the thresholds now in force."""

    frozen: int
    thresholds: tuple[int, int, int]


def tune_after_startup(env: Mapping[str, str] = os.environ) -> Tuned:
    """Collect the start-up's garbage, freeze what is left, set generation 0's threshold."""
    threshold = gc_threshold(env)
    if threshold:
        gc.collect()
        gc.freeze()
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(threshold, gen1, gen2)
    tuned = Tuned(frozen=gc.get_freeze_count(), thresholds=gc.get_threshold())
    log.info(
        "garbage collector: %d start-up objects frozen, thresholds %s",
        tuned.frozen,
        tuned.thresholds,
    )
    return tuned
