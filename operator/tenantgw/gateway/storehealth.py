"""Whether Redis answers, as the rate limiter and the budget guard see it, and the writes that
must reach it whatever happens.

Checks. The limiter and the guard ask `check()` before a request: after a Redis error they
leave Redis alone for `skip_after` seconds (requests then pay no timeout each), and raise
`StoreUnavailable`. What happens to the request then is the Tenant's choice
(`spec.enforcement.onStoreUnavailable`), applied by the caller: Closed refuses it with a 503
and `retry-after`, Open admits it unchecked. Either way the caller counts it with `skipped()`
in `tenantgw_enforcement_skipped_total{step,reason,action}`.

Transitions. One log line when Redis stops answering (healthy -> unavailable, naming the mode
in force) and one when it answers again (with how long, and how many requests were refused or
admitted unchecked meanwhile), never one per request. On recovery the gateway writes that
summary to `t:{<tenant>}:enforcement` (an hour's TTL), which the operator reads for the Tenant's
`EnforcementAvailable` condition.

Writes that free something. Releasing a rate-limit slot and adding spend (which drops the
budget reservation) are never dropped: when Redis does not answer, they wait in a bounded
in-memory queue that a background task retries, oldest first, until Redis answers. So an
outage does not leave slots and reservations held until their 660 s lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tenantgw.api.markers import enforcement_marker_key
from tenantgw.gateway import tasks
from tenantgw.gateway.files import StoreMode
from tenantgw.gateway.metrics import GatewayMetrics
from tenantgw.gateway.redisclient import RedisClient

log = logging.getLogger("tenantgw.gateway.store")

SKIP_AFTER_ERROR = 5.0
"""Seconds the gateway leaves Redis alone after an error: during an outage requests then pay
one timeout per interval, not one each."""
MAX_PENDING = 10_000
"""Releases and spend updates kept in memory while Redis does not answer (oldest dropped past
this; their leases still free them)."""
RETRY_MIN, RETRY_MAX = 0.2, 5.0
"""Back-off of the task that retries pending writes, in seconds."""
MARKER_TTL = 3600
"""How long the summary of the last outage stays readable by the operator."""
STORE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)
"""What counts as Redis not answering (redis-py wraps most socket errors; OSError for the rest)."""

Write = Callable[[], Awaitable[Any]]


def marker_key(tenant: str) -> str:
    """`t:{<tenant>}:enforcement`: the last outage a gateway of the tenant lived through."""
    return enforcement_marker_key(tenant)


def reason_of(exc: BaseException) -> str:
    """The `reason` label of a Redis failure."""
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, RedisConnectionError | ConnectionError | OSError):
        return "connection_error"
    return "redis_error"


class StoreUnavailable(Exception):  # noqa: N818 (it is a condition, not a failure of ours)
    """A step (`ratelimit` or `budget`) could not run because its store is unavailable.

    `reason` is `timeout`, `connection_error`, `redis_error` or `not_configured`;
    `retry_after` the seconds until the gateway asks Redis again.
    """

    def __init__(self, step: str, reason: str, detail: str, retry_after: float) -> None:
        super().__init__(f"{step}: Redis unavailable ({detail})")
        self.step = step
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after

    def for_step(self, step: str) -> StoreUnavailable:
        """The same unavailability, for another step of the same call."""
        return StoreUnavailable(step, self.reason, self.detail, self.retry_after)


@dataclass
class Outage:
    """One period during which Redis did not answer this process."""

    since: datetime
    started: float
    reason: str
    detail: str
    mode: str
    refused: int = 0
    admitted: int = 0


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class StoreHealth:
    """Redis availability for one gateway process, and the writes waiting for it."""

    def __init__(
        self,
        tenant: str,
        metrics: GatewayMetrics,
        *,
        redis: RedisClient | None = None,
        mode: Callable[[], StoreMode] = lambda: "Closed",
        skip_after: float = SKIP_AFTER_ERROR,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tenant = tenant
        self.metrics = metrics
        self.redis = redis
        self.mode = mode
        self.skip_after = skip_after
        self.max_pending = max_pending
        self._clock = clock
        self._skip_until = 0.0
        self.outage: Outage | None = None
        self._pending: deque[tuple[str, Write]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.dropped = 0
        """Pending writes dropped because the queue was full."""

    # ------------------------------------------------------------------ state

    @property
    def available(self) -> bool:
        """False while the gateway leaves Redis alone after an error."""
        return self._clock() >= self._skip_until

    @property
    def pending(self) -> int:
        """Writes waiting for Redis."""
        return len(self._pending)

    def check(self, step: str) -> None:
        """Raise StoreUnavailable while Redis is left alone after an error."""
        now = self._clock()
        if now < self._skip_until:
            outage = self.outage
            raise StoreUnavailable(
                step,
                outage.reason if outage else "redis_error",
                outage.detail if outage else "recent error",
                retry_after=self._skip_until - now,
            )

    def failed(self, step: str, exc: BaseException) -> StoreUnavailable:
        """Note a Redis error of `step`; the StoreUnavailable to raise for the request."""
        now = self._clock()
        detail = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
        reason = reason_of(exc)
        self._skip_until = now + self.skip_after
        if self.outage is None:
            mode = self._mode()
            self.outage = Outage(
                since=datetime.now(UTC), started=now, reason=reason, detail=detail, mode=mode
            )
            log.warning(
                "Redis unavailable for tenant %s (%s): rate limits and budgets cannot be "
                "checked; %s until it answers (onStoreUnavailable: %s)",
                self.tenant,
                detail,
                "requests are refused with 503" if mode == "Closed" else "requests are admitted",
                mode,
            )
        return StoreUnavailable(step, reason, detail, retry_after=self.skip_after)

    def answered(self) -> None:
        """Redis answered: end the outage (one log line, the marker) and flush what waits."""
        self._skip_until = 0.0
        outage, self.outage = self.outage, None
        if outage is not None:
            seconds = self._clock() - outage.started
            log.warning(
                "Redis answers again for tenant %s after %.1f s: %d requests refused, %d "
                "admitted unchecked meanwhile (onStoreUnavailable: %s); %d releases and spend "
                "updates to deliver",
                self.tenant,
                seconds,
                outage.refused,
                outage.admitted,
                outage.mode,
                len(self._pending),
            )
            self._spawn(self._write_marker(outage, datetime.now(UTC)))
        if self._pending:
            self._start_flusher()

    def skipped(self, exc: StoreUnavailable, *, refused: bool) -> None:
        """Count a request whose step could not run, refused (Closed) or admitted (Open)."""
        action = "refused" if refused else "admitted"
        self.metrics.skipped(self.tenant, exc.step, exc.reason, action)
        if self.outage is not None:
            if refused:
                self.outage.refused += 1
            else:
                self.outage.admitted += 1

    def _mode(self) -> StoreMode:
        try:
            return self.mode()
        except Exception:  # the rules cannot be read: the default holds
            return "Closed"

    # ------------------------------------------------------------------ writes

    async def write(self, step: str, what: str, write: Write) -> Any:
        """Run `write` now if Redis answers, else queue it until it does; its result or None."""
        if not self.available:
            self.defer(what, write)
            return None
        try:
            result = await write()
        except STORE_ERRORS as exc:
            self.failed(step, exc)
            self.defer(what, write)
            return None
        self.answered()
        return result

    def defer(self, what: str, write: Write) -> None:
        """Queue a write for the retry task (bounded: the oldest goes first when full)."""
        self._pending.append((what, write))
        while len(self._pending) > self.max_pending:
            lost, _ = self._pending.popleft()
            self.dropped += 1
            self.metrics.skipped(self.tenant, "release", "queue_full", "dropped")
            log.error("pending Redis writes over %d: %s dropped", self.max_pending, lost)
        self._start_flusher()

    def _start_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush(), name=f"tenantgw-redis-retry-{self.tenant}"
            )

    async def _flush(self) -> None:
        delay = RETRY_MIN
        while self._pending:
            if not self.available:
                await asyncio.sleep(max(min(self._skip_until - self._clock(), delay), 0.01))
            what, write = self._pending[0]
            try:
                await write()
            except STORE_ERRORS as exc:
                self.failed("release", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one write must not hold up the others forever
                log.exception("pending Redis write failed: %s dropped", what)
            self._pending.popleft()
            delay = RETRY_MIN
            if self.outage is not None:
                self.answered()

    async def flush(self, seconds: float) -> int:
        """Wait up to `seconds` for the pending writes to reach Redis; how many still wait."""
        if self._pending:
            self._start_flusher()
        task = self._flusher
        if task is not None and not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), seconds)
        return len(self._pending)

    # ------------------------------------------------------------------ marker

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (a synchronous caller): nothing to report to
            coro.close()
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _write_marker(self, outage: Outage, until: datetime) -> None:
        if self.redis is None:
            return
        summary = {
            "since": _utc(outage.since),
            "until": _utc(until),
            "reason": outage.reason,
            "detail": outage.detail[:200],
            "mode": outage.mode,
            "refused": outage.refused,
            "admitted": outage.admitted,
        }
        try:
            await self.redis.set(marker_key(self.tenant), json.dumps(summary), ex=MARKER_TTL)
        except STORE_ERRORS as exc:
            log.info("summary of the Redis outage not written (%s)", exc)

    async def aclose(self, grace: float = 2.0) -> None:
        """Deliver what waits (for up to `grace` s), then stop the retry task."""
        left = await self.flush(grace)
        if left:
            log.warning(
                "%d releases and spend updates not delivered to Redis at shutdown; their "
                "leases free them",
                left,
            )
        if self._background:  # the outage summary being written: let it finish
            await asyncio.wait(set(self._background), timeout=grace)
        for task in (self._flusher, *self._background):
            await tasks.stop(task)
        self._flusher = None
