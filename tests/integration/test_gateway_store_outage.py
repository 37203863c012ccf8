"""A Redis outage, with a redis-server of the test's own frozen, killed and restarted.

What must hold: while Redis does not answer, checks raise StoreUnavailable at once (no timeout
per request after the first); releases and spend updates are never dropped, they are delivered
once Redis answers, so `maxParallelRequests` and budget reservations are free again right away
rather than after their 660 s lease; one log line per transition, not per request; the outage
summary is left in `t:{<tenant>}:enforcement` for the operator.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from e2e.throwaway_redis import ThrowawayRedis, throwaway_redis
from tenantgw.gateway.budgets import BudgetGuard
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.files import Rules
from tenantgw.gateway.metrics import GatewayMetrics
from tenantgw.gateway.ratelimit import RateLimited, RateLimiter
from tenantgw.gateway.storehealth import StoreHealth, StoreUnavailable, marker_key

pytestmark = pytest.mark.integration

TENANT = f"outage-{uuid.uuid4().hex[:8]}"
RULES = Rules.model_validate(
    {
        "tenant": TENANT,
        "aliases": {"fast-code": {"cost_tier": "medium"}},
        "limits": {"max_parallel_requests": 2},
        "budgets": [{"name": "team", "period": "daily", "limit_usd": 0.02}],
    }
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    with throwaway_redis(tmp_path) as redis_server:
        yield redis_server


@asynccontextmanager
async def connected(server: ThrowawayRedis) -> AsyncIterator[aioredis.Redis]:
    """A client that fails fast, like the gateway's (shorter timeouts, for a quick test)."""
    redis = aioredis.Redis.from_url(
        server.url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    try:
        yield redis
    finally:
        await redis.aclose()


def request() -> RequestContext:
    return RequestContext(
        tenant=TENANT,
        key_name="alice",
        request_id=uuid.uuid4().hex,
        requested_model="fast-code",
        alias="fast-code",
    )


async def eventually_delivered(store: StoreHealth) -> None:
    for _ in range(200):
        if store.pending == 0 and store.outage is None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{store.pending} writes still wait for Redis")


async def test_a_frozen_redis_holds_no_slot_once_it_answers_again(
    server: ThrowawayRedis, caplog: pytest.LogCaptureFixture
) -> None:
    async with connected(server) as client:
        await frozen_and_thawed(server, client, caplog)


async def frozen_and_thawed(
    server: ThrowawayRedis, client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    store = StoreHealth(TENANT, GatewayMetrics.registered(), redis=client, skip_after=0.5)
    limiter = RateLimiter(client, TENANT, store)
    guard = BudgetGuard(client, TENANT, store, default_estimate_usd=0.01)
    caplog.set_level(logging.WARNING, logger="tenantgw.gateway.store")

    held = [request(), request()]
    for ctx in held:
        assert await limiter.acquire(ctx, RULES) is True
        assert (await guard.check(ctx, RULES)).action == "allow"
    with pytest.raises(RateLimited):
        await limiter.acquire(request(), RULES)  # both slots taken

    server.freeze()
    try:
        for ctx in held:  # the requests end while Redis hangs
            await limiter.release(ctx, 100)
            await guard.add_spend(ctx, 0.0)
        assert store.pending == 4
        for _ in range(20):  # many requests, no timeout each: the skip window answers
            with pytest.raises(StoreUnavailable) as down:
                await limiter.acquire(request(), RULES)
        assert down.value.reason == "timeout"
    finally:
        server.thaw()

    await eventually_delivered(store)
    # Both slots and both reservations are free again, long before their lease.
    again = [request(), request()]
    for ctx in again:
        assert await limiter.acquire(ctx, RULES) is True
        assert (await guard.check(ctx, RULES)).action == "allow"

    for ctx in again:
        await limiter.release(ctx, 0)
        await guard.add_spend(ctx, 0.0)

    # A check that reaches the hung server times out here but runs there once it wakes up:
    # the slot or reservation it took is given back too.
    for check in (
        lambda: limiter.acquire(request(), RULES),
        lambda: guard.check(request(), RULES),
    ):
        server.freeze()
        try:
            with pytest.raises(StoreUnavailable):
                await check()
        finally:
            server.thaw()
        await eventually_delivered(store)
    for ctx in [request(), request()]:
        assert await limiter.acquire(ctx, RULES) is True
        assert (await guard.check(ctx, RULES)).action == "allow"

    transitions = [r.getMessage() for r in caplog.records]
    assert len([m for m in transitions if "Redis unavailable" in m]) == 3  # one per outage
    assert len([m for m in transitions if "answers again" in m]) == 3
    for _ in range(50):
        summary = await client.get(marker_key(TENANT))
        if summary:
            break
        await asyncio.sleep(0.05)
    assert summary is not None
    assert json.loads(summary)["reason"] == "timeout"
    await guard.aclose()
    await store.aclose()


async def test_releases_wait_through_a_crash_and_restart(server: ThrowawayRedis) -> None:
    async with connected(server) as client:
        await crashed_and_restarted(server, client)


async def crashed_and_restarted(server: ThrowawayRedis, client: aioredis.Redis) -> None:
    store = StoreHealth(TENANT, GatewayMetrics.registered(), redis=client, skip_after=0.5)
    limiter = RateLimiter(client, TENANT, store)
    ctx = request()
    assert await limiter.acquire(ctx, RULES) is True
    server.kill()
    await limiter.release(ctx, 10)
    with pytest.raises(StoreUnavailable) as down:
        await limiter.acquire(request(), RULES)
    assert down.value.reason == "connection_error"
    assert store.pending == 1
    server.start()
    await eventually_delivered(store)
    assert await limiter.acquire(request(), RULES) is True
    await store.aclose()
