"""The Tenant's EnforcementAvailable condition from what a gateway left in Redis after an outage.

A gateway's StoreHealth and the operator's Provisioner share a redis-server of the test's own:
the gateway lives through an outage (frozen Redis), writes its summary once Redis answers, and
the operator turns it into the condition; with Redis dead, the operator reports that itself.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from e2e.fixtures import Services
from e2e.throwaway_redis import ThrowawayRedis, throwaway_redis
from tenantgw.api import Tenant
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.files import Rules
from tenantgw.gateway.metrics import GatewayMetrics
from tenantgw.gateway.ratelimit import RateLimiter
from tenantgw.gateway.storehealth import StoreHealth, StoreUnavailable
from tenantgw.reconcile.enforcement import (
    EnforcementObservation,
    enforcement_condition,
    observe_enforcement,
)
from tenantgw.tenancy import Provisioner

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    with throwaway_redis(tmp_path) as redis_server:
        yield redis_server


def tenant(name: str, mode: str) -> Tenant:
    return Tenant.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": name, "generation": 3},
            "spec": {"enforcement": {"onStoreUnavailable": mode}},
        }
    )


async def test_an_outage_seen_by_a_gateway_shows_on_the_tenant(
    server: ThrowawayRedis, services: Services
) -> None:
    name = f"enf-{uuid.uuid4().hex[:8]}"
    provisioner = Provisioner(services.postgres_dsn, server.url)
    spec = tenant(name, "Closed")
    fresh = enforcement_condition(spec, await observe_enforcement(provisioner, name), 3)
    assert (fresh["status"], fresh["reason"]) == ("True", "Enforced")
    assert "refused with 503 (onStoreUnavailable: Closed)" in fresh["message"]

    client = aioredis.Redis.from_url(
        server.url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    store = StoreHealth(name, GatewayMetrics.registered(), redis=client, skip_after=0.2)
    limiter = RateLimiter(client, name, store)
    rules = Rules.model_validate({"tenant": name, "limits": {"rpm": 100}})
    server.freeze()
    try:
        for _ in range(3):
            with pytest.raises(StoreUnavailable) as down:
                await limiter.acquire(_request(name), rules)
            store.skipped(down.value, refused=True)
    finally:
        server.thaw()
    for _ in range(100):
        await asyncio.sleep(0.05)
        try:
            await limiter.acquire(_request(name), rules)
        except StoreUnavailable:
            continue
        break
    await store.aclose()
    await client.aclose()

    seen = await observe_enforcement(provisioner, name)
    recovered = enforcement_condition(spec, seen, 3)
    assert (recovered["status"], recovered["reason"]) == ("True", "Recovered")
    assert (
        "(timeout); with onStoreUnavailable: Closed, 3 requests were refused"
        in (recovered["message"])
    )

    server.kill()
    dead = enforcement_condition(
        tenant(name, "Open"), await observe_enforcement(provisioner, name), 3
    )
    assert (dead["status"], dead["reason"]) == ("False", "StoreUnavailable")
    assert "admitted unchecked (onStoreUnavailable: Open)" in dead["message"]


def test_without_storage_the_condition_says_so() -> None:
    cond = enforcement_condition(tenant("x", "Closed"), EnforcementObservation(False), 1)
    assert (cond["status"], cond["reason"]) == ("False", "StoreNotConfigured")


def _request(name: str) -> RequestContext:
    return RequestContext(
        tenant=name,
        key_name="alice",
        request_id=uuid.uuid4().hex,
        requested_model="fast-code",
        alias="fast-code",
    )
