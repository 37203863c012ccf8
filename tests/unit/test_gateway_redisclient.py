"""Which Redis client a gateway builds from TENANTGW_REDIS_URL (no server needed)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from tenantgw.api.markers import key_prefix, tenant_key
from tenantgw.gateway.redisclient import connect, is_cluster_url, node_url

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("url", "cluster"),
    [
        ("redis://tgw%3Aeng:pw@redis:6379/0", False),
        ("rediss://tgw%3Aeng:pw@redis:6380/0", False),
        ("redis+cluster://tgw%3Aeng:pw@redis-0.redis:6379/0", True),
        ("rediss+cluster://tgw%3Aeng:pw@redis-0.redis:6380/0", True),
    ],
)
async def test_the_url_scheme_picks_the_client(url: str, cluster: bool) -> None:
    client = connect(url)
    try:
        assert is_cluster_url(url) is cluster
        assert isinstance(client, aioredis.RedisCluster if cluster else aioredis.Redis)
        assert node_url(url).split("://")[0] in ("redis", "rediss")
    finally:
        await client.aclose()


def test_every_key_of_a_tenant_hashes_by_the_tenant() -> None:
    """The braces are the Cluster hash tag: only the tenant's name decides the slot."""
    assert key_prefix("eng") == "t:{eng}:"
    assert tenant_key("eng", "budget", "team", "2026-12-01") == "t:{eng}:budget:team:2026-12-01"


async def test_pooled_connections_are_not_pinged_after_a_lull() -> None:
    """An idle health check would add a PING round trip to the first request after each lull;
    a dead connection is retried instead (tests/integration/test_gateway_redis_reconnect.py)."""
    client = connect("redis://redis:6379/0")
    try:
        assert not client.connection_pool.connection_kwargs.get("health_check_interval")
    finally:
        await client.aclose()
