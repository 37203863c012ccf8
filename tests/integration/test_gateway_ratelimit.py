"""Rate limits hold across gateway replicas: two RateLimiters share the real Redis.

Each test runs as a fresh tenant whose Redis ACL user may touch only `t:{<tenant>}:*`, as the
operator provisions it, so the limiter's scripts are proven to stay inside that prefix.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError

from e2e.fixtures import Services
from tenantgw.api.markers import key_prefix
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.files import Rules
from tenantgw.gateway.metrics import GatewayMetrics
from tenantgw.gateway.ratelimit import RateLimited, RateLimiter
from tenantgw.gateway.storehealth import StoreHealth, StoreUnavailable
from tenantgw.tenancy.redis_acl import COMMAND_RULES

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class TenantRedis:
    tenant: str
    url: str
    """The tenant's own ACL user (keys t:{<tenant>}:* only)."""


@pytest.fixture
def tenant_redis(services: Services) -> Iterator[TenantRedis]:
    """A throwaway tenant with a Redis ACL user limited to its prefix; its keys removed after."""
    tenant = f"rl-{uuid.uuid4().hex[:10]}"
    user, password = f"tenant-{tenant}", secrets.token_hex(16)
    admin = redis.Redis.from_url(services.redis_url, socket_timeout=5)
    # Exactly the rules the operator gives a tenant's gateway (tenantgw.tenancy).
    admin.execute_command(
        "ACL", "SETUSER", user, "reset", "on", f">{password}", f"~{key_prefix(tenant)}*",
        "resetchannels", *COMMAND_RULES,
    )  # fmt: skip
    parts = urlsplit(services.redis_url)
    netloc = f"{quote(user)}:{quote(password)}@{parts.hostname}:{parts.port}"
    try:
        yield TenantRedis(tenant, urlunsplit(parts._replace(netloc=netloc)))
    finally:
        keys = list(admin.scan_iter(match=f"{key_prefix(tenant)}*"))
        if keys:
            admin.delete(*keys)
        admin.acl_deluser(user)
        admin.close()


def limiter_of(client: aioredis.Redis, tenant: str, **kw: Any) -> RateLimiter:
    """A gateway's RateLimiter: with the store health of its process."""
    store = StoreHealth(tenant, GatewayMetrics.registered(), redis=client)
    return RateLimiter(client, tenant, store, **kw)


@asynccontextmanager
async def replicas(t: TenantRedis, n: int = 2, **kw: Any) -> AsyncIterator[list[RateLimiter]]:
    """`n` rate limiters with their own Redis connections, like `n` gateway replicas."""
    clients = [aioredis.Redis.from_url(t.url, socket_timeout=5) for _ in range(n)]
    try:
        yield [limiter_of(client, t.tenant, **kw) for client in clients]
    finally:
        for client in clients:
            await client.aclose()


def request(t: TenantRedis, key: str = "alice") -> RequestContext:
    return RequestContext(
        tenant=t.tenant,
        key_name=key,
        request_id=uuid.uuid4().hex,
        requested_model="claude-sonnet-4-5",
        alias="fast-code",
    )


def rules(
    *,
    rpm: int | None = None,
    tpm: int | None = None,
    parallel: int | None = None,
    alice_rpm: int | None = None,
    alice_tpm: int | None = None,
) -> Rules:
    return Rules.model_validate(
        {
            "tenant": "rl",
            "keys": [
                {"name": "alice", "rpm": alice_rpm, "tpm": alice_tpm},
                {"name": "bob", "rpm": None, "tpm": None},
            ],
            "limits": {"rpm": rpm, "tpm": tpm, "max_parallel_requests": parallel},
        }
    )


async def test_a_key_rpm_is_shared_by_two_replicas(tenant_redis: TenantRedis) -> None:
    limits = rules(rpm=1000, alice_rpm=10)
    async with replicas(tenant_redis) as (one, two):
        for i in range(10):
            await (one if i % 2 else two).acquire(request(tenant_redis), limits)
        for replica in (one, two):
            with pytest.raises(RateLimited) as refused:
                await replica.acquire(request(tenant_redis), limits)
            assert re.fullmatch(
                r"key alice is over its 10 requests per minute; retry in \d+ s",
                refused.value.message,
            )
            assert 55 <= refused.value.retry_after <= 60
            assert (refused.value.limit, refused.value.scope) == ("rpm", "key")
        # Another key of the same tenant is not affected.
        await one.acquire(request(tenant_redis, "bob"), limits)


async def test_the_tenant_rpm_counts_every_key(tenant_redis: TenantRedis) -> None:
    limits = rules(rpm=5)
    async with replicas(tenant_redis) as (one, two):
        for i in range(5):
            await (one, two)[i % 2].acquire(request(tenant_redis, ("alice", "bob")[i % 2]), limits)
        with pytest.raises(RateLimited) as refused:
            await two.acquire(request(tenant_redis, "carol"), limits)
    assert refused.value.message.startswith(
        f"tenant {tenant_redis.tenant} is over its 5 requests per minute; retry in"
    )
    assert refused.value.scope == "tenant"


async def test_refused_requests_do_not_use_up_the_window(tenant_redis: TenantRedis) -> None:
    limits = rules(alice_rpm=2)
    async with replicas(tenant_redis, 1) as (one,):
        await one.acquire(request(tenant_redis), limits)
        await one.acquire(request(tenant_redis), limits)
        for _ in range(5):
            with pytest.raises(RateLimited):
                await one.acquire(request(tenant_redis), limits)
        window = await cast(
            "Awaitable[list[bytes]]",
            one.redis.hvals(f"{key_prefix(tenant_redis.tenant)}rl:req:key:alice"),
        )
    assert sum(int(v) for v in window) == 2


async def test_max_parallel_requests_across_replicas(tenant_redis: TenantRedis) -> None:
    limits = rules(parallel=4)
    in_flight, peak, admitted, refused = 0, 0, 0, 0
    refusals: list[str] = []

    async with replicas(tenant_redis) as limiters:

        async def call(i: int) -> None:
            nonlocal in_flight, peak, admitted, refused
            limiter = limiters[i % 2]
            ctx = request(tenant_redis)
            try:
                await limiter.acquire(ctx, limits)
            except RateLimited as exc:
                refusals.append(exc.message)
                refused += 1
                return
            admitted += 1
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.05)
            in_flight -= 1
            await limiter.release(ctx, 100)

        for _ in range(3):
            await asyncio.gather(*(call(i) for i in range(40)))

        assert peak == 4
        assert refused > 0
        assert admitted >= 12
        assert set(refusals) == {
            f"tenant {tenant_redis.tenant} has 4 requests in progress, its maximum; retry in 1 s"
        }
        # Every slot was released: four new requests fit again.
        fresh = [request(tenant_redis) for _ in range(4)]
        for ctx in fresh:
            await limiters[0].acquire(ctx, limits)
        for ctx in fresh:
            await limiters[1].release(ctx, 0)


async def test_tokens_count_after_the_response(tenant_redis: TenantRedis) -> None:
    limits = rules(alice_tpm=1000, tpm=10_000)
    async with replicas(tenant_redis) as (one, two):
        first = request(tenant_redis)
        await one.acquire(first, limits)
        # The response used more than the key's minute allows: the next request waits.
        await one.release(first, 1_200)
        with pytest.raises(RateLimited) as refused:
            await two.acquire(request(tenant_redis), limits)
        assert re.fullmatch(
            r"key alice is over its 1000 tokens per minute; retry in \d+ s", refused.value.message
        )
        assert 55 <= refused.value.retry_after <= 60
        # bob has no key limit and the tenant has room left.
        await two.acquire(request(tenant_redis, "bob"), limits)


async def test_a_replica_that_dies_frees_its_slots_after_the_lease(
    tenant_redis: TenantRedis,
) -> None:
    limits = rules(parallel=1)
    async with replicas(tenant_redis, lease_seconds=1) as (dying, survivor):
        await dying.acquire(request(tenant_redis), limits)  # never released
        with pytest.raises(RateLimited):
            await survivor.acquire(request(tenant_redis), limits)
        await asyncio.sleep(1.2)
        await survivor.acquire(request(tenant_redis), limits)


async def test_the_tenant_user_cannot_reach_other_tenants(
    tenant_redis: TenantRedis, services: Services
) -> None:
    async with replicas(tenant_redis, 1) as (one,):
        ctx = request(tenant_redis)
        await one.acquire(ctx, rules(rpm=10, alice_tpm=10, parallel=3))
        with pytest.raises(NoPermissionError):
            await one.redis.set(f"{key_prefix('someone-else')}x", "1")
        with pytest.raises(NoPermissionError):
            await one.redis.scan(match="t:*")
    admin = redis.Redis.from_url(services.redis_url, socket_timeout=5)
    keys = sorted(k.decode() for k in admin.scan_iter(match=f"{key_prefix(tenant_redis.tenant)}*"))
    admin.close()
    prefix = key_prefix(tenant_redis.tenant)
    # The window, the slot, and the ADMIT call's answer (kept for a resend of the call).
    assert [k.rsplit(":", 1)[0] for k in keys] == [
        f"{prefix}admitted:{ctx.request_id}",
        f"{prefix}rl",
        f"{prefix}rl",
    ]
    assert keys[1:] == [f"{prefix}rl:inflight", f"{prefix}rl:req"]


def unreachable() -> aioredis.Redis:
    """A client of a port nobody listens on, without redis-py's slow default retries."""
    return aioredis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )


async def test_no_limits_no_redis_round_trip(tenant_redis: TenantRedis) -> None:
    broken = unreachable()
    limiter = limiter_of(broken, tenant_redis.tenant)
    # nothing configured: no call, so no error
    assert await limiter.acquire(request(tenant_redis), rules()) is False
    await broken.aclose()


async def test_redis_down_is_reported_and_releases_wait_for_it(tenant_redis: TenantRedis) -> None:
    broken = unreachable()
    limiter = limiter_of(broken, tenant_redis.tenant)
    with pytest.raises(StoreUnavailable) as down:
        await limiter.acquire(request(tenant_redis), rules(rpm=1))
    assert (down.value.step, down.value.reason) == ("ratelimit", "connection_error")
    # Within the skip window Redis is not asked again.
    with pytest.raises(StoreUnavailable):
        await limiter.acquire(request(tenant_redis), rules(rpm=1))
    await limiter.release(request(tenant_redis), 10)
    assert limiter.store.pending == 1  # kept, not dropped
    await limiter.store.aclose(grace=0.1)
    await broken.aclose()
