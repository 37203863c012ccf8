"""The tenant's PII policy applied to a request: redact, or refuse, before anything goes upstream.

`apply_pii_policy_async` is what the pre-call hook runs. Python's `re` holds the GIL, so a
thread does not keep a large scan off the event loop: texts not already in the scanner's
cache are scanned on the event loop only while they are small (`INLINE_CHARS` in all);
larger ones go to a process pool (`TENANTGW_PII_SCAN_PROCESSES` processes, default 1) and
must be scanned within `TENANTGW_PII_SCAN_TIMEOUT_SECONDS` (default 30 s).

When the scan cannot finish (the deadline passes, or the scanning process dies) the request
is refused with a 503 `overloaded_error` and `retry-after`, in both modes: "block" fails
closed, and "redact" never forwards text it has not scanned. The stuck processes are
terminated and a new pool starts for the next request.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from tenantgw.gateway.errors import InvalidRequestError, ServiceUnavailableError
from tenantgw.gateway.pii.detectors import ALL_ENTITIES
from tenantgw.gateway.pii.scanner import scanner_for
from tenantgw.gateway.pii.walk import edit_request_texts, request_texts

log = logging.getLogger("tenantgw.gateway")

PROCESSES_ENV = "TENANTGW_PII_SCAN_PROCESSES"
TIMEOUT_ENV = "TENANTGW_PII_SCAN_TIMEOUT_SECONDS"
DEFAULT_PROCESSES = 1
DEFAULT_TIMEOUT_SECONDS = 30.0
INLINE_CHARS = 32 * 1024
"""Characters of not yet scanned text a request may have for the scan to run on the event
loop (a few milliseconds); more goes to the process pool."""
RETRY_AFTER_SECONDS = 5.0

Result = tuple[str, dict[str, int]]


def _env_number(name: str, default: float, minimum: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        log.error("%s=%r is not a number; using %s", name, raw, default)
        return default
    return value if value >= minimum else default


class ScanUnavailableError(ServiceUnavailableError):
    """The prompt could not be scanned completely: the request must not go upstream."""


# --------------------------------------------------------------------------- the process pool


def _scan_in_worker(entities: tuple[str, ...], texts: list[str]) -> list[tuple[str | None, Any]]:
    """In a pool process: (redacted text or None when unchanged, counts) per text."""
    scanner = scanner_for(entities)
    results: list[tuple[str | None, Any]] = []
    for text in texts:
        redacted, counts = scanner.redact(text)
        results.append((None if redacted is text else redacted, counts))
    return results


def _warm_worker() -> None:
    scanner_for(ALL_ENTITIES)  # compile every detector once, before the first scan


class ScanPool:
    """Processes that scan large prompts, replaced as a whole when one gets stuck."""

    def __init__(self, processes: int | None = None) -> None:
        self.processes = processes or int(_env_number(PROCESSES_ENV, DEFAULT_PROCESSES, 1))
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                # spawn, not fork: the gateway process runs threads (LiteLLM, Redis clients)
                self._executor = ProcessPoolExecutor(
                    max_workers=self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_warm_worker,
                )
            return self._executor

    def _discard(self, executor: ProcessPoolExecutor) -> None:
        """Terminate `executor`'s processes (a scan in them may never end) and forget it."""
        with self._lock:
            if self._executor is executor:
                self._executor = None
        # ProcessPoolExecutor cannot cancel a running call: its processes are stopped.
        processes: dict[int, Any] = getattr(executor, "_processes", None) or {}
        for process in list(processes.values()):
            process.terminate()
        executor.shutdown(wait=False, cancel_futures=True)

    async def scan(self, entities: Iterable[str], texts: list[str], seconds: float) -> list[Result]:
        """(redacted, counts) of each text, scanned in a pool process within `seconds`."""
        executor = self._current()
        loop = asyncio.get_running_loop()
        key = tuple(sorted(entities))
        try:
            future = loop.run_in_executor(executor, _scan_in_worker, key, texts)
            raw = await asyncio.wait_for(future, seconds)
        except TimeoutError:
            self._discard(executor)
            raise ScanUnavailableError(
                f"the gateway could not scan this prompt for personal data within {seconds:g} s, "
                "so it was not sent: retry later, or send a shorter prompt",
                retry_after=RETRY_AFTER_SECONDS,
            ) from None
        except (BrokenProcessPool, RuntimeError) as exc:  # a process died, or shut down
            self._discard(executor)
            log.error("the PII scan process failed (%s): the request is refused", exc)
            raise ScanUnavailableError(
                "the gateway's personal-data scanner failed on this prompt, so it was not "
                "sent: retry",
                retry_after=RETRY_AFTER_SECONDS,
            ) from None
        return [
            (text if redacted is None else redacted, counts)
            for text, (redacted, counts) in zip(texts, raw, strict=True)
        ]

    def close(self) -> None:
        """Stop the pool's processes (tests, shutdown)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            self._discard(executor)


_pool: ScanPool | None = None
_pool_lock = threading.Lock()


def scan_pool() -> ScanPool:
    """This process's scan pool, created on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ScanPool()
        return _pool


def scan_timeout() -> float:
    """Seconds a request's scan may take ($TENANTGW_PII_SCAN_TIMEOUT_SECONDS, default 30)."""
    return _env_number(TIMEOUT_ENV, DEFAULT_TIMEOUT_SECONDS, 0.001)


# --------------------------------------------------------------------------- the policy


def _refuse(totals: dict[str, int], tenant: str) -> InvalidRequestError:
    kinds = ", ".join(sorted(totals))
    who = f"tenant {tenant}'s" if tenant else "the tenant's"
    return InvalidRequestError(
        f"request refused by {who} PII policy: it contains {kinds}; "
        "remove that data from the prompt and retry",
    )


def _apply(
    data: dict[str, Any], mode: str, results: dict[str, Result], tenant: str
) -> dict[str, int]:
    """Edit `data` with the scan `results` of its texts; counts per entity type."""
    totals: dict[str, int] = {}

    def edit(text: str) -> str:
        redacted, counts = results[text]
        for entity, count in counts.items():
            totals[entity] = totals.get(entity, 0) + count
        return redacted if mode == "redact" else text

    edit_request_texts(data, edit)
    if mode == "block" and totals:
        raise _refuse(totals, tenant)
    return totals


def apply_pii_policy(
    data: dict[str, Any], mode: str, entities: Iterable[str], *, tenant: str = ""
) -> dict[str, int]:
    """Redact (mode "redact") or refuse (mode "block") personal data in a request body.

    Returns the counts per entity type found. "block" raises InvalidRequestError naming the types
    found, never the values; "off" does nothing. Scans in the calling thread.
    """
    if mode == "off":
        return {}
    scanner = scanner_for(entities)
    results = {text: scanner.redact(text) for text in request_texts(data)}
    return _apply(data, mode, results, tenant)


async def apply_pii_policy_async(
    data: dict[str, Any],
    mode: str,
    entities: Iterable[str],
    *,
    tenant: str = "",
    seconds: float | None = None,
    pool: ScanPool | None = None,
) -> dict[str, int]:
    """`apply_pii_policy` that keeps large scans off the event loop, within a deadline.

    Raises ScanUnavailableError (503) when the prompt could not be scanned completely: in no
    mode does text that was not scanned go upstream.
    """
    if mode == "off":
        return {}
    scanner = scanner_for(entities)
    results: dict[str, Result] = {}
    pending: dict[str, None] = {}  # texts to scan, once each, in order
    for text in request_texts(data):
        if text in results or text in pending:
            continue
        hit = scanner.cached(text) if text else (text, {})
        if hit is not None:
            results[text] = hit
        else:
            pending[text] = None
    if sum(len(text) for text in pending) <= INLINE_CHARS:
        for text in pending:
            results[text] = scanner.redact(text)
    else:
        chosen = pool or scan_pool()
        texts = list(pending)
        scanned = await chosen.scan(scanner.entities, texts, seconds or scan_timeout())
        for text, (redacted, counts) in zip(texts, scanned, strict=True):
            scanner.remember(text, redacted, counts)
            results[text] = (redacted, counts)
    return _apply(data, mode, results, tenant)


def scan_text(text: str, entities: Iterable[str] = ALL_ENTITIES) -> dict[str, int]:
    """Counts per entity type in one text (nothing is changed)."""
    return scanner_for(entities).redact(text)[1]


def redact_text(text: str, entities: Iterable[str] = ALL_ENTITIES) -> str:
    """One text with every finding replaced by its placeholder."""
    return scanner_for(entities).redact(text)[0]
