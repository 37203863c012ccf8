"""Requests per minute, tokens per minute and parallel requests, per tenant and per key, in Redis.

Every gateway replica of a tenant shares the same counters, so the limits hold for the tenant
as a whole. The checks are part of the request's ADMIT script and the release part of its
SETTLE (`scripts.py`, one EVALSHA each, together with the budgets'), atomic across replicas;
they touch only keys under `t:{<tenant>}:` (the tenant's Redis ACL allows nothing else) and read
the clock of the Redis server, so replicas with skewed clocks agree.

Windows slide over the last 60 s in one-second buckets: a hash per counter whose fields are
Unix seconds. A request is admitted when the requests of the window stay within `rpm` and the
tokens already used in the window are below `tpm` (tokens are known only after the response;
`release()` adds them). Requests in progress are members of a sorted set scored by a lease
deadline, so a replica that dies mid-request frees its slots when the lease runs out instead of
leaking them forever.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from tenantgw.api.markers import tenant_key
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.files import Rules
from tenantgw.gateway.redisclient import RedisClient
from tenantgw.gateway.scripts import NO_BUDGETS_ADMIT, NO_BUDGETS_SETTLE, Part, Scripts
from tenantgw.gateway.storehealth import STORE_ERRORS, StoreHealth

log = logging.getLogger("tenantgw.gateway.ratelimit")

WINDOW_SECONDS = 60
LEASE_SECONDS = 660
"""How long a request counts as in progress if its replica never releases it: the gateway's
600 s request timeout plus a margin."""
STEP = "ratelimit"

# Which limit refused a request: the codes the acquire script returns.
_PARALLEL, _KEY_RPM, _TENANT_RPM, _KEY_TPM, _TENANT_TPM = 1, 2, 3, 4, 5


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

    Its part of the request's ADMIT and SETTLE scripts (`scripts.py`) is built by
    `admit_part()` and `settle_part()`; `enforcer.Enforcer` runs them together with the budget
    guard's. `acquire()` and `release()` run them alone. When Redis does not answer,
    `acquire()` raises `StoreUnavailable` (the caller applies the Tenant's onStoreUnavailable)
    and `release()` is queued in `store` until Redis answers again.
    """

    def __init__(
        self,
        redis: RedisClient,
        tenant: str,
        store: StoreHealth,
        *,
        window_seconds: int = WINDOW_SECONDS,
        lease_seconds: int = LEASE_SECONDS,
        scripts: Scripts | None = None,
    ) -> None:
        self.redis = redis
        self.tenant = tenant
        self.store = store
        self.prefix = tenant_key(tenant, "rl")
        self.window_seconds = window_seconds
        self.lease_seconds = lease_seconds
        self.scripts = scripts or Scripts(redis, tenant)

    def _keys(self, key_name: str) -> list[str]:
        return [
            f"{self.prefix}:req",
            f"{self.prefix}:req:key:{key_name}",
            f"{self.prefix}:tok",
            f"{self.prefix}:tok:key:{key_name}",
            f"{self.prefix}:inflight",
        ]

    def admit_part(self, ctx: RequestContext, rules: Rules) -> Part | None:
        """The limits' part of the request's ADMIT; None when no limit applies to it."""
        tenant_rpm, key_rpm, tenant_tpm, key_tpm, parallel = limits_for(rules, ctx.key_name)
        if not any((tenant_rpm, key_rpm, tenant_tpm, key_tpm, parallel)):
            return None
        args = (
            1,
            tenant_rpm,
            key_rpm,
            tenant_tpm,
            key_tpm,
            parallel,
            self.lease_seconds,
            self.window_seconds,
        )
        return Part(keys=self._keys(ctx.key_name), args=args)

    def settle_part(self, ctx: RequestContext, tokens: int, *, free_slot: bool = True) -> Part:
        """The limits' part of the request's SETTLE: free its slot, count its tokens."""
        keys = self._keys(ctx.key_name)
        args = (1, 1 if free_slot else 0, max(int(tokens), 0), self.window_seconds)
        return Part(keys=[keys[2], keys[3], keys[4]], args=args)

    def check_result(self, ctx: RequestContext, result: Sequence[int]) -> None:
        """Raise RateLimited when ADMIT's answer says a limit refused the request."""
        code, value, retry_after = result[0], result[1], result[2]
        if code:
            raise self._refusal(ctx, code, value, retry_after)

    async def acquire(self, ctx: RequestContext, rules: Rules) -> bool:
        """Admit the request (True when it holds a slot to release) or raise RateLimited.

        Raises StoreUnavailable when Redis does not answer. Without any limit for the request,
        nothing is asked of Redis and False is returned.
        """
        part = self.admit_part(ctx, rules)
        if part is None:
            return False
        self.store.check(STEP)
        try:
            result = await self.scripts.run_admit(ctx.request_id, part, NO_BUDGETS_ADMIT)
        except STORE_ERRORS as exc:
            unavailable = self.store.failed(STEP, exc)
            self.undo(ctx, part)
            raise unavailable from None
        self.store.answered()
        self.check_result(ctx, result)
        return True

    def undo(self, ctx: RequestContext, part: Part) -> None:
        """After an ADMIT that got no answer: a timeout may hide a slot the script did take,
        so give it back once Redis answers."""
        if part.args[5]:  # max parallel requests
            self.store.defer(f"slot of {ctx.request_id}", self._free(ctx, 0))

    async def release(self, ctx: RequestContext, tokens: int) -> None:
        """End the request: free its parallel slot and count its tokens in the tpm windows.

        Never lost: when Redis does not answer, the release waits in `store` until it does.
        """
        await self.store.write(STEP, f"release of {ctx.request_id}", self._free(ctx, tokens))

    def _free(self, ctx: RequestContext, tokens: int) -> Callable[[], Awaitable[Any]]:
        return self.scripts.settle_call(
            ctx.request_id, self.settle_part(ctx, tokens), NO_BUDGETS_SETTLE
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
