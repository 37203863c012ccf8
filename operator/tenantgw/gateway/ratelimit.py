"""Requests per minute, tokens per minute and parallel requests, per tenant and per key, in Redis.

Every gateway replica of a tenant shares the same counters, so the limits hold for the tenant
as a whole. Each check is one Lua script (EVALSHA), atomic across replicas, that touches only
keys under `t:<tenant>:` (the tenant's Redis ACL allows nothing else) and reads the clock of
the Redis server, so replicas with skewed clocks agree.

Windows slide over the last 60 s in one-second buckets: a hash per counter whose fields are
Unix seconds. A request is admitted when the requests of the window stay within `rpm` and the
tokens already used in the window are below `tpm` (tokens are known only after the response;
`release()` adds them). Requests in progress are members of a sorted set scored by a lease
deadline, so a replica that dies mid-request frees its slots when the lease runs out instead of
leaking them forever.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.files import Rules
from tenantgw.gateway.storehealth import STORE_ERRORS, StoreHealth

log = logging.getLogger("tenantgw.gateway.ratelimit")

WINDOW_SECONDS = 60
LEASE_SECONDS = 660
"""How long a request counts as in progress if its replica never releases it: the gateway's
600 s request timeout plus a margin."""
STEP = "ratelimit"

# Which limit refused a request: the codes the acquire script returns.
_PARALLEL, _KEY_RPM, _TENANT_RPM, _KEY_TPM, _TENANT_TPM = 1, 2, 3, 4, 5

_ACQUIRE = """
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[8])

local function load(key)
  local raw = redis.call('HGETALL', key)
  local buckets, total, stale = {}, 0, {}
  for i = 1, #raw, 2 do
    local s, n = tonumber(raw[i]), tonumber(raw[i + 1])
    if s <= sec - window then
      stale[#stale + 1] = raw[i]
    else
      buckets[#buckets + 1] = {s, n}
      total = total + n
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  return total, buckets
end

-- Seconds until the window's total falls to `target` as its oldest buckets expire.
local function wait(buckets, total, target)
  table.sort(buckets, function(a, b) return a[1] < b[1] end)
  for _, b in ipairs(buckets) do
    total = total - b[2]
    if total <= target then return math.max(1, math.ceil(b[1] + window - now)) end
  end
  return window
end

local max_parallel = tonumber(ARGV[5])
if max_parallel > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  if redis.call('ZCARD', KEYS[5]) >= max_parallel then return {1, max_parallel, 1} end
end

local rpm = {{KEYS[2], tonumber(ARGV[2]), 2}, {KEYS[1], tonumber(ARGV[1]), 3}}
for _, c in ipairs(rpm) do
  if c[2] > 0 then
    local total, buckets = load(c[1])
    if total + 1 > c[2] then return {c[3], c[2], wait(buckets, total, c[2] - 1)} end
  end
end
local tpm = {{KEYS[4], tonumber(ARGV[4]), 4}, {KEYS[3], tonumber(ARGV[3]), 5}}
for _, c in ipairs(tpm) do
  if c[2] > 0 then
    local total, buckets = load(c[1])
    if total >= c[2] then return {c[3], c[2], wait(buckets, total, c[2] - 1)} end
  end
end

for _, c in ipairs(rpm) do
  if c[2] > 0 then
    redis.call('HINCRBY', c[1], sec, 1)
    redis.call('EXPIRE', c[1], window + 1)
  end
end
if max_parallel > 0 then
  redis.call('ZADD', KEYS[5], now + tonumber(ARGV[7]), ARGV[6])
  redis.call('EXPIRE', KEYS[5], tonumber(ARGV[7]))
end
return {0, 0, 0}
"""

_RELEASE = """
local t = redis.call('TIME')
local sec = tonumber(t[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local tokens = tonumber(ARGV[2])
if tokens > 0 then
  for i = 1, 2 do
    redis.call('HINCRBY', KEYS[i], sec, tokens)
    redis.call('EXPIRE', KEYS[i], tonumber(ARGV[3]) + 1)
  end
end
return 0
"""


class RateLimited(Exception):  # noqa: N818 (the name callers use)
    """A request over one of the tenant's or key's limits.

    `message` names the limit and says when to retry; `retry_after` is in whole seconds (>= 1).
    `limit` is "rpm", "tpm" or "max_parallel_requests", `scope` "key" or "tenant", `value` the
    configured limit.
    """

    def __init__(
        self, message: str, *, retry_after: int, limit: str, scope: str, value: int
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.limit = limit
        self.scope = scope
        self.value = value


def _positive(value: int | None) -> int:
    return value if value is not None and value > 0 else 0


def limits_for(rules: Rules, key_name: str) -> tuple[int, int, int, int, int]:
    """(tenant rpm, key rpm, tenant tpm, key tpm, max parallel) from the rules; 0 = no limit."""
    limits = rules.limits
    key = rules.key(key_name)
    return (
        _positive(limits.rpm),
        _positive(key.rpm if key is not None else None),
        _positive(limits.tpm),
        _positive(key.tpm if key is not None else None),
        _positive(limits.max_parallel_requests),
    )


def has_limits(rules: Rules, key_name: str) -> bool:
    """Whether any rate limit applies to a request of `key_name`."""
    return any(limits_for(rules, key_name))


class RateLimiter:
    """The tenant's rate limits, shared by all its gateway replicas through Redis.

    Call `acquire()` before a request goes upstream and `release()` exactly once when it is
    over (success or failure) with the tokens it used. When Redis does not answer, `acquire()`
    raises `StoreUnavailable` (the caller applies the Tenant's onStoreUnavailable) and
    `release()` is queued in `store` until Redis answers again.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        tenant: str,
        store: StoreHealth,
        *,
        window_seconds: int = WINDOW_SECONDS,
        lease_seconds: int = LEASE_SECONDS,
    ) -> None:
        self.redis = redis
        self.tenant = tenant
        self.store = store
        self.prefix = f"t:{tenant}:rl"
        self.window_seconds = window_seconds
        self.lease_seconds = lease_seconds
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)

    def _keys(self, key_name: str) -> list[str]:
        return [
            f"{self.prefix}:req",
            f"{self.prefix}:req:key:{key_name}",
            f"{self.prefix}:tok",
            f"{self.prefix}:tok:key:{key_name}",
            f"{self.prefix}:inflight",
        ]

    async def acquire(self, ctx: RequestContext, rules: Rules) -> bool:
        """Admit the request (True when it holds a slot to release) or raise RateLimited.

        Raises StoreUnavailable when Redis does not answer. Without any limit for the request,
        nothing is asked of Redis and False is returned.
        """
        tenant_rpm, key_rpm, tenant_tpm, key_tpm, parallel = limits_for(rules, ctx.key_name)
        if not any((tenant_rpm, key_rpm, tenant_tpm, key_tpm, parallel)):
            return False
        args: list[str | int] = [
            tenant_rpm,
            key_rpm,
            tenant_tpm,
            key_tpm,
            parallel,
            ctx.request_id,
            self.lease_seconds,
            self.window_seconds,
        ]
        self.store.check(STEP)
        try:
            result = await self._acquire(keys=self._keys(ctx.key_name), args=args)
        except STORE_ERRORS as exc:
            unavailable = self.store.failed(STEP, exc)
            if parallel:
                # A timeout may hide a slot the script did take: give it back once Redis answers.
                self.store.defer(f"slot of {ctx.request_id}", self._free(ctx, 0))
            raise unavailable from None
        self.store.answered()
        code, value, retry_after = (int(x) for x in result)
        if code:
            raise self._refusal(ctx, code, value, retry_after)
        return True

    async def release(self, ctx: RequestContext, tokens: int) -> None:
        """End the request: free its parallel slot and count its tokens in the tpm windows.

        Never lost: when Redis does not answer, the release waits in `store` until it does.
        """
        await self.store.write(STEP, f"release of {ctx.request_id}", self._free(ctx, tokens))

    def _free(self, ctx: RequestContext, tokens: int) -> Callable[[], Awaitable[Any]]:
        keys = self._keys(ctx.key_name)
        return functools.partial(
            self._release,
            keys=[keys[2], keys[3], keys[4]],
            args=[ctx.request_id, max(int(tokens), 0), self.window_seconds],
        )

    def _refusal(self, ctx: RequestContext, code: int, value: int, wait: int) -> RateLimited:
        retry = f"retry in {wait} s"
        key, tenant = f"key {ctx.key_name}", f"tenant {self.tenant}"
        if code == _PARALLEL:
            message = f"{tenant} has {value} requests in progress, its maximum; {retry}"
            return RateLimited(
                message,
                retry_after=wait,
                limit="max_parallel_requests",
                scope="tenant",
                value=value,
            )
        who, scope = (key, "key") if code in (_KEY_RPM, _KEY_TPM) else (tenant, "tenant")
        unit, limit = ("requests", "rpm") if code in (_KEY_RPM, _TENANT_RPM) else ("tokens", "tpm")
        message = f"{who} is over its {value} {unit} per minute; {retry}"
        return RateLimited(message, retry_after=wait, limit=limit, scope=scope, value=value)
