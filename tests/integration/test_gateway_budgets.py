"""Budgets against the real Redis (and Postgres for the ledger): block, downgrade, no overshoot.

Each test is a fresh tenant whose Redis ACL user may touch only `t:{<tenant>}:*`. The flush test
uses a Redis database of its own, so that a real FLUSHDB wipes nobody else's keys.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
import redis
import redis.asyncio as aioredis

from e2e.fixtures import Services, tenant_role
from tenantgw.api.markers import key_prefix
from tenantgw.gateway.budgets import BudgetGuard
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.files import Rules
from tenantgw.gateway.ledger import Ledger
from tenantgw.gateway.metrics import GatewayMetrics
from tenantgw.gateway.periods import period_end
from tenantgw.gateway.storehealth import StoreHealth
from tenantgw.gateway.usage import UsageRecord
from tenantgw.tenancy.redis_acl import COMMAND_RULES

pytestmark = pytest.mark.integration

RNG = random.Random(20261128)  # noqa: S311 (timings and costs, not secrets)


@dataclass(frozen=True)
class TenantRedis:
    tenant: str
    url: str
    """The tenant's own ACL user (keys t:{<tenant>}:* only)."""
    admin_url: str


def _tenant_redis(admin_url: str, db: int = 0) -> Iterator[TenantRedis]:
    tenant = f"bg-{uuid.uuid4().hex[:10]}"
    user, password = f"tenant-{tenant}", secrets.token_hex(16)
    parts = urlsplit(admin_url)
    admin_url = urlunsplit(parts._replace(path=f"/{db}"))
    admin = redis.Redis.from_url(admin_url, socket_timeout=5)
    # Exactly the rules the operator gives a tenant's gateway (tenantgw.tenancy).
    admin.execute_command(
        "ACL", "SETUSER", user, "reset", "on", f">{password}", f"~{key_prefix(tenant)}*",
        "resetchannels", *COMMAND_RULES,
    )  # fmt: skip
    netloc = f"{quote(user)}:{quote(password)}@{parts.hostname}:{parts.port}"
    try:
        yield TenantRedis(
            tenant, urlunsplit(parts._replace(netloc=netloc, path=f"/{db}")), admin_url
        )
    finally:
        keys = list(admin.scan_iter(match=f"{key_prefix(tenant)}*"))
        if keys:
            admin.delete(*keys)
        admin.acl_deluser(user)
        admin.close()


def admin_keys(t: TenantRedis, pattern: str) -> list[bytes]:
    """Keys matching `pattern`, listed as the admin (a tenant's user may not SCAN)."""
    admin = redis.Redis.from_url(t.admin_url, socket_timeout=5)
    try:
        return list(admin.scan_iter(match=pattern))
    finally:
        admin.close()


@pytest.fixture
def tenant_redis(services: Services) -> Iterator[TenantRedis]:
    yield from _tenant_redis(services.redis_url)


@pytest.fixture
def flush_redis(services: Services) -> Iterator[TenantRedis]:
    yield from _tenant_redis(services.redis_url)


@dataclass(frozen=True)
class TenantDb:
    role: str
    dsn: str


@pytest.fixture
def tenant_db(services: Services) -> Iterator[TenantDb]:
    """A tenant role owning its schema, as the operator provisions it; dropped afterwards."""
    with tenant_role(services, "tg_test") as (role, dsn):
        yield TenantDb(role, dsn)


@asynccontextmanager
async def guards(t: TenantRedis, n: int = 1, **kw: Any) -> AsyncIterator[list[BudgetGuard]]:
    """`n` budget guards with their own Redis connections, like `n` gateway replicas."""
    clients = [aioredis.Redis.from_url(t.url, socket_timeout=5) for _ in range(n)]
    made = [
        BudgetGuard(
            client, t.tenant, StoreHealth(t.tenant, GatewayMetrics.registered(), redis=client), **kw
        )
        for client in clients
    ]
    try:
        yield made
    finally:
        for guard in made:
            await guard.aclose()
        for client in clients:
            await client.aclose()


async def hlen(client: aioredis.Redis, key: Any) -> int:
    """Reservations held in one reservation hash."""
    return await cast("Awaitable[int]", client.hlen(key))


def request(t: TenantRedis, alias: str = "fast-code", key: str = "alice") -> RequestContext:
    return RequestContext(
        tenant=t.tenant,
        key_name=key,
        request_id=uuid.uuid4().hex,
        requested_model="claude-sonnet-4-5",
        alias=alias,
    )


def budget(
    name: str, limit_usd: float, kind: str = "Tenant", scope: str | None = None, **kw: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "scope": {"kind": kind, "name": scope},
        "period": kw.get("period", "daily"),
        "limit_usd": limit_usd,
        "alert_thresholds": [50, 80, 100],
        "on_exceeded": {
            "action": kw.get("action", "block"),
            "to_cost_tier": kw.get("to_cost_tier"),
        },
    }


ALIASES = {
    "reasoning": {"cost_tier": "high"},
    "fast-code": {"cost_tier": "medium"},
    "docs-b": {"cost_tier": "low"},
    "docs-a": {"cost_tier": "low"},
}


def rules(*budgets: dict[str, Any], aliases: dict[str, Any] = ALIASES) -> Rules:
    """The rules file of a tenant with these aliases and budgets, as the gateway reads it."""
    return Rules.model_validate({"tenant": "bg", "aliases": aliases, "budgets": list(budgets)})


async def test_a_spent_budget_blocks_with_the_policy_limit_and_reset(
    tenant_redis: TenantRedis,
) -> None:
    limits = rules(budget("team-daily", 0.05))
    async with guards(tenant_redis) as (guard,):
        first = request(tenant_redis)
        assert (await guard.check(first, limits)).action == "allow"
        await guard.add_spend(first, 0.05)
        decision = await guard.check(request(tenant_redis), limits)
        assert await guard.spent("team-daily") == pytest.approx(0.05)
    tomorrow = period_end("daily", datetime.now(UTC))
    assert decision.action == "block"
    assert decision.policy == "team-daily"
    assert decision.resets_at == tomorrow
    assert decision.message == (
        "budget team-daily (tenant) has reached its daily limit of $0.05 ($0.05 spent); "
        f"it resets at {tomorrow:%Y-%m-%d} 00:00 UTC"
    )


async def test_key_and_alias_budgets_only_cover_their_scope(tenant_redis: TenantRedis) -> None:
    limits = rules(
        budget("alice-cap", 0.01, "Key", "alice"),
        budget("reasoning-cap", 0.01, "ModelAlias", "reasoning"),
        budget("team", 100.0),
    )
    async with guards(tenant_redis) as (guard,):
        spend = request(tenant_redis, alias="reasoning", key="alice")
        await guard.check(spend, limits)
        spends = await guard.add_spend(spend, 0.02)
        assert {s.policy: round(s.utilization_percent) for s in spends} == {
            "alice-cap": 200,
            "reasoning-cap": 200,
            "team": 0,
        }
        alice = await guard.check(request(tenant_redis, key="alice"), limits)
        bob_reasoning = await guard.check(request(tenant_redis, "reasoning", "bob"), limits)
        bob_fast = await guard.check(request(tenant_redis, "fast-code", "bob"), limits)
    assert (alice.action, alice.policy) == ("block", "alice-cap")
    assert "key alice" in alice.message
    assert (bob_reasoning.action, bob_reasoning.policy) == ("block", "reasoning-cap")
    assert bob_fast.action == "allow"


async def test_an_exceeded_alias_budget_downgrades_to_the_cheaper_tier(
    tenant_redis: TenantRedis,
) -> None:
    limits = rules(
        budget(
            "reasoning-cap", 0.01, "ModelAlias", "reasoning", action="downgrade", to_cost_tier="low"
        )
    )
    async with guards(tenant_redis) as (guard,):
        spend = request(tenant_redis, alias="reasoning")
        await guard.check(spend, limits)
        await guard.add_spend(spend, 0.012)
        decision = await guard.check(request(tenant_redis, alias="reasoning"), limits)
        # The downgraded request holds a reservation under docs-a's policies only.
        assert decision.to_alias == "docs-a"
        downgraded = request(tenant_redis, alias="docs-a")
        assert (await guard.check(downgraded, limits)).action == "allow"
    assert decision.action == "downgrade"
    assert decision.policy == "reasoning-cap"
    assert "reasoning is served by docs-a (cost tier low)" in decision.message


async def test_a_downgrade_target_over_its_own_budget_is_blocked(tenant_redis: TenantRedis) -> None:
    limits = rules(
        budget("team", 0.01, action="downgrade", to_cost_tier="low"),
        budget("docs-a-cap", 0.001, "ModelAlias", "docs-a"),
    )
    async with guards(tenant_redis) as (guard,):
        spend = request(tenant_redis, alias="docs-a")
        await guard.check(spend, limits)
        await guard.add_spend(spend, 0.02)
        decision = await guard.check(request(tenant_redis, alias="reasoning"), limits)
        resv = admin_keys(tenant_redis, f"{key_prefix(tenant_redis.tenant)}budget:*:resv")
        held = sum([await hlen(guard.redis, k) for k in resv])
    assert (decision.action, decision.policy) == ("block", "docs-a-cap")
    assert held == 0  # a blocked request holds nothing


async def test_no_tier_to_downgrade_to_blocks(tenant_redis: TenantRedis) -> None:
    limits = rules(
        budget("team", 0.01, action="downgrade", to_cost_tier="low"),
        aliases={"reasoning": {"cost_tier": "high"}},
    )
    async with guards(tenant_redis) as (guard,):
        await guard.add_spend(request(tenant_redis, "reasoning"), 0.01, limits)
        decision = await guard.check(request(tenant_redis, "reasoning"), limits)
    assert decision.action == "block"
    assert "no model alias has cost tier low" in decision.message


async def run_clients(
    replicas: list[BudgetGuard],
    t: TenantRedis,
    limits: Rules,
    *,
    clients: int,
    cost: float,
    requests_each: int,
) -> int:
    """`clients` concurrent clients spread over the replicas, each sending requests of `cost`
    until blocked; returns how many were admitted."""
    admitted = 0

    async def client(i: int) -> None:
        nonlocal admitted
        guard = replicas[i % len(replicas)]
        for _ in range(requests_each):
            ctx = request(t)
            decision = await guard.check(ctx, limits)
            if decision.action == "block":
                return
            admitted += 1
            await asyncio.sleep(RNG.uniform(0.005, 0.03))  # the upstream call
            await guard.add_spend(ctx, cost)

    await asyncio.gather(*(client(i) for i in range(clients)))
    return admitted


async def test_fifty_concurrent_clients_do_not_overshoot(tenant_redis: TenantRedis) -> None:
    cost, limit = 0.002, 0.10  # 50 requests' worth of budget
    limits = rules(budget("small", limit))
    async with guards(tenant_redis, 2) as replicas:
        admitted = await run_clients(
            replicas, tenant_redis, limits, clients=50, cost=cost, requests_each=10
        )
        spent = await replicas[0].spent("small")
        leftovers = admin_keys(tenant_redis, f"{key_prefix(tenant_redis.tenant)}*:resv")
        held = sum([await hlen(replicas[0].redis, k) for k in leftovers])
    overshoot = spent - limit
    print(f"50 clients x 2 replicas: {admitted} admitted, spent ${spent:.4f} of ${limit:.2f}")
    # At most one request's cost beyond the limit per replica (in fact: at most one overall).
    assert overshoot <= cost * len(replicas) + 1e-9
    assert spent >= limit  # and the budget was used up, not starved by reservations
    assert held == 0  # every reservation was settled


async def test_fifty_clients_with_uneven_costs(tenant_redis: TenantRedis) -> None:
    """Costs vary around the alias's average: the estimate absorbs most of it."""
    limit = 0.10
    limits = rules(budget("small", limit))
    admitted = 0
    async with guards(tenant_redis, 2) as replicas:

        async def client(i: int) -> None:
            nonlocal admitted
            guard = replicas[i % 2]
            for _ in range(10):
                ctx = request(tenant_redis)
                if (await guard.check(ctx, limits)).action == "block":
                    return
                admitted += 1
                await asyncio.sleep(RNG.uniform(0.005, 0.03))
                await guard.add_spend(ctx, RNG.uniform(0.0015, 0.0025))

        await asyncio.gather(*(client(i) for i in range(50)))
        spent = await replicas[0].spent("small")
    print(f"uneven costs: {admitted} admitted, spent ${spent:.4f} of ${limit:.2f}")
    # One request's (largest) cost per replica.
    assert spent - limit <= 0.0025 * len(replicas) + 1e-9


async def test_a_request_that_never_reports_frees_its_reservation_after_the_lease(
    tenant_redis: TenantRedis,
) -> None:
    limits = rules(budget("small", 0.01))
    async with guards(tenant_redis, 2, lease_seconds=1, default_estimate_usd=0.01) as (dies, lives):
        assert (await dies.check(request(tenant_redis), limits)).action == "allow"  # never settles
        held = await lives.check(request(tenant_redis), limits)
        await asyncio.sleep(1.2)
        later = await lives.check(request(tenant_redis), limits)
    assert held.action == "block"
    assert "held by requests in progress" in held.message
    assert later.action == "allow"


def usage(n: int, cost: float, key: str = "alice", alias: str = "fast-code") -> UsageRecord:
    return UsageRecord(
        request_id=f"req-{n:05d}",
        ts=datetime.now(UTC),
        tenant="t",
        key_name=key,
        requested_model="claude-sonnet-4-5",
        alias=alias,
        provider="openrouter",
        provider_model="qwen/qwen3-coder",
        region=None,
        input_tokens=100,
        output_tokens=10,
        cache_read_tokens=0,
        cache_write_tokens=0,
        cost_usd=cost,
        list_cost_usd=None,
        latency_ms=100,
        ttft_ms=50,
        status="success",
        http_status=200,
        error_type=None,
        downgraded_from=None,
        stream=False,
    )


async def test_counters_survive_a_redis_flush(
    flush_redis: TenantRedis, tenant_db: TenantDb, tmp_path: Path
) -> None:
    limits = rules(
        budget("team-monthly", 1.0, period="monthly"),
        budget("alice-weekly", 0.5, "Key", "alice", period="weekly"),
        budget("fast-daily", 10.0, "ModelAlias", "fast-code"),
    )
    ledger = Ledger(tenant_db.dsn, tmp_path)
    await ledger.start()
    # An old row from before this period must not count.
    old = UsageRecord(
        **{**usage(99_999, 5.0).as_row(), "ts": datetime.now(UTC) - timedelta(days=70)}
    )
    ledger.record(old)
    async with guards(flush_redis, ledger_reader=ledger, reconcile_interval=0.2) as (guard,):
        for n in range(12):  # $1.20 in total: the tenant budget is spent
            ctx = request(flush_redis)
            await guard.check(ctx, limits)
            ledger.record(usage(n, 0.1))
            await guard.add_spend(ctx, 0.1)
        await ledger.drain()
        assert (await guard.check(request(flush_redis), limits)).action == "block"

        # Redis restarts without persistence: every counter of the tenant is gone.
        admin = aioredis.Redis.from_url(flush_redis.admin_url)
        lost = [k async for k in admin.scan_iter(match=f"{key_prefix(flush_redis.tenant)}*")]
        await admin.unlink(*lost)
        await admin.aclose()
        assert await guard.spent("team-monthly") == 0

        # Within a reconciliation interval or two the counters are back from the ledger
        # (one pass raises them one after the other: wait for all of them).
        names = ("team-monthly", "alice-weekly", "fast-daily")
        for _ in range(200):
            if min([await guard.spent(name) for name in names]) >= 1.2:
                break
            await asyncio.sleep(0.05)
        assert await guard.spent("team-monthly") == pytest.approx(1.2)
        assert await guard.spent("alice-weekly") == pytest.approx(1.2)
        assert await guard.spent("fast-daily") == pytest.approx(1.2)
        blocked = await guard.check(request(flush_redis), limits)
        # Reconciliation never lowers a counter that is ahead of the ledger.
        await guard.add_spend(request(flush_redis), 0.3)
        assert await guard.reconcile_from_ledger() == 0
        assert await guard.spent("team-monthly") == pytest.approx(1.5)
    await ledger.stop()
    assert blocked.action == "block"
    assert blocked.policy == "alice-weekly"  # the first exhausted policy by name


async def test_a_ledger_outage_makes_the_reconciliation_warn_not_fail(
    flush_redis: TenantRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL down: each round logs a one-line warning naming the error, no traceback at
    ERROR (a log alert on errors would fire on an outage the admission already reports)."""
    limits = rules(budget("team-monthly", 1.0, period="monthly"))
    ledger = Ledger("postgresql://nobody@127.0.0.1:9/none?connect_timeout=2", tmp_path)
    with caplog.at_level(logging.WARNING, logger="tenantgw.gateway.budgets"):
        async with guards(flush_redis, ledger_reader=ledger, reconcile_interval=0.1) as (guard,):
            await guard.check(request(flush_redis), limits)
            for _ in range(100):
                if any("skipped" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
    mine = [r for r in caplog.records if r.name == "tenantgw.gateway.budgets"]
    assert any(
        r.levelno == logging.WARNING and "OperationalError" in r.getMessage() for r in mine
    ), [r.getMessage() for r in mine]
    assert not [r for r in mine if r.levelno >= logging.ERROR]
