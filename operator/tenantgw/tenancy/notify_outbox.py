"""The budget webhooks' outbox in Redis: one record per message, one schedule for all.

- `t:{<tenant>}:notify:<policy>:<YYYY-MM-DD>:<threshold>`: the message (JSON: its id, frozen
  body, delivery state), created with SET NX, so a threshold of a period has at most one
  message whoever creates it, and expiring with the period's counters (period end + 7 days).
- `tenantgw:notify:due`: a sorted set of record keys scored by when each is next due. Taking
  a message moves its score forward by a lease, atomically (one script), so two operators
  never send the same message at the same time; an operator that dies while sending leaves it
  to be taken again when the lease ends. A sent or abandoned message leaves the set.
- `t:{<tenant>}:notify:<policy>:<YYYY-MM-DD>:failures`: failed attempts in the period.

The schedule lives outside every tenant's key prefix: gateways cannot read or reorder it.
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis import exceptions as rexc

from tenantgw.api.markers import tenant_key
from tenantgw.tenancy.errors import StorageError

DUE_KEY = "tenantgw:notify:due"

# KEYS: record, schedule; ARGV: record JSON, expiry (unix s), due (unix s)
_ENQUEUE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EXAT', ARGV[2]) then
  redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
  return 1
end
return 0
"""
# KEYS: schedule; ARGV: now, lease end, most to take
_TAKE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], member)
end
return due
"""


def record_key(tenant: str, policy: str, period_label: str, threshold: int) -> str:
    """Where the message of one threshold of one policy's period is kept."""
    return tenant_key(tenant, "notify", policy, period_label, str(threshold))


def failures_key(tenant: str, policy: str, period_label: str) -> str:
    """Failed delivery attempts of one policy's messages in one period."""
    return tenant_key(tenant, "notify", policy, period_label, "failures")


class RedisSource(Protocol):
    def redis(self) -> AbstractAsyncContextManager[aioredis.Redis]: ...


@dataclass(frozen=True)
class Taken:
    """A message whose lease this operator holds: its key and record (None when it expired)."""

    key: str
    record: dict[str, Any] | None


class Outbox:
    """Reads and writes the outbox with the operator's admin Redis user."""

    def __init__(self, source: RedisSource) -> None:
        self._source = source

    async def enqueue(self, items: list[tuple[str, dict[str, Any], int, float]]) -> int:
        """Create each (key, record, expire at, due at) unless it exists; how many were new."""
        if not items:
            return 0
        try:
            async with self._source.redis() as client:
                pipe = client.pipeline(transaction=False)
                for key, record, expire_at, due in items:
                    pipe.eval(_ENQUEUE, 2, key, DUE_KEY, json.dumps(record), expire_at, due)
                created = await pipe.execute()
        except (rexc.RedisError, OSError) as err:
            raise StorageError(f"could not queue budget notifications in Redis: {err}") from err
        return sum(int(c) for c in created)

    async def take(self, now: float, lease: float, limit: int) -> list[Taken]:
        """The messages due at `now`, leased to this caller until `now + lease`."""
        try:
            async with self._source.redis() as client:
                keys = await client.eval(_TAKE, 1, DUE_KEY, now, now + lease, limit)  # type: ignore[misc]
                if not keys:
                    return []
                values = await client.mget(keys)
        except (rexc.RedisError, OSError) as err:
            raise StorageError(f"could not read due budget notifications: {err}") from err
        return [
            Taken(str(k), json.loads(v) if v else None) for k, v in zip(keys, values, strict=True)
        ]

    async def settle(
        self, key: str, record: dict[str, Any] | None, next_due: float | None, failures: str | None
    ) -> int | None:
        """Store the record's new state (kept TTL); reschedule at `next_due` or drop it from the
        schedule; count a failure under `failures`. Returns the period's failures when counted."""
        try:
            async with self._source.redis() as client:
                pipe = client.pipeline(transaction=True)
                if record is not None:
                    pipe.set(key, json.dumps(record), xx=True, keepttl=True)
                if next_due is None:
                    pipe.zrem(DUE_KEY, key)
                else:
                    pipe.zadd(DUE_KEY, {key: next_due}, xx=True)
                if failures is not None:
                    pipe.incr(failures)
                    pipe.expiretime(key)
                result = await pipe.execute()
                if failures is None:
                    return None
                count, expire_at = int(result[-2]), int(result[-1])
                if expire_at > 0:
                    await client.expireat(failures, expire_at)
                return count
        except (rexc.RedisError, OSError) as err:
            raise StorageError(f"could not record a budget notification's delivery: {err}") from err

    async def failures(self, key: str) -> int:
        """Failed attempts counted under `key` (0 when none)."""
        try:
            async with self._source.redis() as client:
                value = await client.get(key)
        except (rexc.RedisError, OSError) as err:
            raise StorageError(f"could not read budget notification failures: {err}") from err
        return int(value or 0)
