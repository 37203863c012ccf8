"""Claude Code sessions against the real Postgres and Redis: the ledger column, its migration
on an existing tenant schema, the spool, and Session budgets with their per-session counters."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from test_gateway_budgets import TenantRedis, _tenant_redis, budget, guards, request, rules

from e2e.fixtures import Services, tenant_role
from tenantgw.gateway import budgets as budgets_module
from tenantgw.gateway.budgets import COUNTER_GRACE
from tenantgw.gateway.ledger import Ledger
from tenantgw.gateway.periods import budget_counter_key, period_end, session_spend_key
from tenantgw.gateway.usage import UsageRecord
from tenantgw.tenancy.redis_acl import RedisAdmin

pytestmark = pytest.mark.integration

# The usage table as the first release created it: no session_id.
OLD_TABLE = """
CREATE TABLE usage (
    request_id text PRIMARY KEY, ts timestamptz NOT NULL, tenant text NOT NULL,
    key_name text NOT NULL, requested_model text NOT NULL, alias text NOT NULL,
    provider text, provider_model text, region text,
    input_tokens integer NOT NULL DEFAULT 0, output_tokens integer NOT NULL DEFAULT 0,
    cache_read_tokens integer NOT NULL DEFAULT 0, cache_write_tokens integer NOT NULL DEFAULT 0,
    cost_usd numeric(20, 10) NOT NULL DEFAULT 0, list_cost_usd numeric(20, 10),
    latency_ms integer, ttft_ms integer,
    status text NOT NULL CHECK (status IN ('success', 'error')), http_status integer,
    error_type text, downgraded_from text, stream boolean NOT NULL DEFAULT false
);
INSERT INTO usage (request_id, ts, tenant, key_name, requested_model, alias, status)
VALUES ('from-before', now(), 'eng', 'alice', 'fast-code', 'fast-code', 'success');
"""


@pytest.fixture
def tenant_dsn(services: Services) -> Iterator[str]:
    with tenant_role(services, "tg_sess") as (_, dsn):
        yield dsn


@pytest.fixture
def tenant_redis(services: Services) -> Iterator[TenantRedis]:
    yield from _tenant_redis(services.redis_url)


def row(session_id: str | None, *, cost: float = 0.5, key: str = "alice") -> UsageRecord:
    return UsageRecord(
        request_id=uuid.uuid4().hex,
        ts=datetime.now(UTC),
        tenant="eng",
        key_name=key,
        requested_model="fast-code",
        alias="fast-code",
        provider="sim",
        provider_model="m",
        region=None,
        input_tokens=10,
        output_tokens=5,
        cache_read_tokens=0,
        cache_write_tokens=0,
        cost_usd=cost,
        list_cost_usd=None,
        latency_ms=12,
        ttft_ms=3,
        status="success",
        http_status=200,
        error_type=None,
        downgraded_from=None,
        stream=True,
        session_id=session_id,
    )


def select(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return list(conn.execute(query.encode(), params).fetchall())


async def test_an_existing_ledger_table_gains_the_session_column_and_keeps_its_rows(
    tenant_dsn: str, tmp_path: Path
) -> None:
    """Upgrade: a tenant whose usage table predates sessions gets the column at the next start."""
    with psycopg.connect(tenant_dsn, autocommit=True) as conn:
        conn.execute(OLD_TABLE.encode())
    ledger = Ledger(tenant_dsn, tmp_path)
    await ledger.start()
    sid = str(uuid.uuid4())
    ledger.record(row(sid))
    ledger.record(row(None))
    await ledger.drain()
    await ledger.stop()
    rows = select(tenant_dsn, "SELECT request_id, session_id FROM usage ORDER BY ts")
    assert rows[0] == ("from-before", None)
    assert sorted(r[1] or "" for r in rows[1:]) == ["", sid]
    # A second start (another replica, a restart) leaves the upgraded table as it is.
    again = Ledger(tenant_dsn, tmp_path)
    await again.start()
    await again.stop()
    # The database refuses a malformed id too: defence in depth behind the gateway's check.
    with (
        psycopg.connect(tenant_dsn, autocommit=True) as conn,
        pytest.raises(psycopg.errors.CheckViolation),
    ):
        conn.execute(
            "INSERT INTO usage (request_id, ts, tenant, key_name, requested_model, alias, status,"
            " session_id) VALUES ('x', now(), 'eng', 'a', 'm', 'm', 'success', %s)",
            ["bad id\n"],
        )


async def test_spooled_rows_keep_their_session(
    tenant_dsn: str, tenant_redis: TenantRedis, tmp_path: Path
) -> None:
    """Rows that waited in the Redis stream or on disk reach the ledger with their session."""
    unreachable = "postgresql://nobody:x@127.0.0.1:9/none"
    client = redis.asyncio.Redis.from_url(tenant_redis.url, socket_timeout=5)
    streamed, on_disk = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        down = Ledger(unreachable, tmp_path / "a", redis=client, tenant=tenant_redis.tenant)
        await down.start()
        down.record(row(streamed))
        await down.stop()
        assert down.stats.streamed == 1
    finally:
        await client.aclose()
    disk = Ledger(unreachable, tmp_path / "b")
    await disk.start()
    disk.record(row(on_disk))
    await disk.stop()
    assert disk.stats.spooled == 1

    client = redis.asyncio.Redis.from_url(tenant_redis.url, socket_timeout=5)
    try:
        up = Ledger(tenant_dsn, tmp_path / "b", redis=client, tenant=tenant_redis.tenant)
        await up.start()
        up.record(row(None))
        await up.drain()
        await up.stop()
    finally:
        await client.aclose()
    sessions = {r[0] for r in select(tenant_dsn, "SELECT session_id FROM usage")}
    assert sessions == {streamed, on_disk, None}


async def test_the_ledger_sums_the_top_sessions(tenant_dsn: str, tmp_path: Path) -> None:
    ledger = Ledger(tenant_dsn, tmp_path)
    await ledger.start()
    for sid, cost, n in (("s-big", 1.0, 3), ("s-small", 0.25, 2)):
        for _ in range(n):
            ledger.record(row(sid, cost=cost))
    ledger.record(row(None, cost=9.0))
    await ledger.drain()
    since = datetime.now(UTC) - timedelta(hours=1)
    assert await ledger.session_spend_since(since) == [("s-big", 3.0), ("s-small", 0.5)]
    assert await ledger.session_spend_since(since, limit=1) == [("s-big", 3.0)]
    assert await ledger.spent_since(since, {"kind": "Session", "name": "s-small"}) == 0.5
    await ledger.stop()


# --------------------------------------------------------------------------- Session budgets


def in_session(t: TenantRedis, session_id: str | None, key: str = "alice") -> Any:
    ctx = request(t, key=key)
    ctx.session_id = session_id
    return ctx


async def test_each_session_has_its_own_cap_and_requests_without_one_are_not_capped(
    tenant_redis: TenantRedis,
) -> None:
    t = tenant_redis
    limits = rules(budget("per-session", 0.05, "Session"))
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    async with guards(t) as (guard,):
        spend = in_session(t, first)
        assert (await guard.check(spend, limits)).action == "allow"
        await guard.add_spend(spend, 0.05)
        refused = await guard.check(in_session(t, first), limits)
        other = await guard.check(in_session(t, second), limits)
        other_key = await guard.check(in_session(t, first, key="bob"), limits)
        none = await guard.check(in_session(t, None), limits)
        assert await guard.spent("per-session", limits, first) == pytest.approx(0.05)
        assert await guard.spent("per-session", limits, second) == 0
    assert (refused.action, refused.policy) == ("block", "per-session")
    assert f"budget per-session (session {first}) has reached its daily limit of $0.05" in (
        refused.message
    )
    assert other.action == "allow"  # another session of the same key
    # The session is a label, not an identity: the same id under another key is the same
    # session for this policy (a client cannot reset its cap by switching keys either).
    assert other_key.action == "block"
    assert none.action == "allow"  # no session: Session policies do not apply


async def test_session_counters_expire_with_the_period_and_reservations_with_the_lease(
    tenant_redis: TenantRedis,
) -> None:
    t = tenant_redis
    limits = rules(budget("per-session", 10, "Session"))
    sid = str(uuid.uuid4())
    now = datetime.now(UTC)
    spend_key = session_spend_key(budget_counter_key(t.tenant, "per-session", "daily", now))
    admin = redis.Redis.from_url(t.admin_url, socket_timeout=5)
    async with guards(t) as (guard,):
        held = in_session(t, sid)
        await guard.check(held, limits)
        resv = f"{budget_counter_key(t.tenant, 'per-session', 'daily', now)}:session:{sid}:resv"
        assert admin.hexists(resv, held.request_id)
        assert 0 < admin.ttl(resv) <= guard.lease_seconds
        await guard.add_spend(held, 0.25)
        assert admin.hlen(resv) == 0  # its running total gone with it
    expected = (period_end("daily", now) + COUNTER_GRACE).timestamp()
    assert admin.expiretime(spend_key) == int(expected)
    assert admin.zscore(spend_key, sid) == 250_000
    admin.close()


async def test_rotating_session_ids_cannot_grow_the_counters_past_their_bound(
    tenant_redis: TenantRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker sending a new id per request only evicts the sessions that spent least."""
    t = tenant_redis
    monkeypatch.setattr(budgets_module, "MAX_SESSIONS", 5)
    limits = rules(budget("per-session", 10, "Session"))
    spend_key = session_spend_key(
        budget_counter_key(t.tenant, "per-session", "daily", datetime.now(UTC))
    )
    async with guards(t) as (guard,):
        big = in_session(t, "big-spender")
        await guard.add_spend(big, 5.0, limits)
        for n in range(40):
            await guard.add_spend(in_session(t, f"rotating-{n}"), 0.001 * (n + 1), limits)
    admin = redis.Redis.from_url(t.admin_url, socket_timeout=5)
    members = {m.decode(): s for m, s in admin.zrange(spend_key, 0, -1, withscores=True)}
    admin.close()
    assert len(members) == 5
    assert members["big-spender"] == 5_000_000
    assert "rotating-39" in members


async def test_session_spend_is_restored_from_the_ledger_and_read_by_the_operator(
    tenant_redis: TenantRedis, tenant_dsn: str, tmp_path: Path, services: Services
) -> None:
    t = tenant_redis
    limits = rules(budget("per-session", 1.0, "Session"))
    ledger = Ledger(tenant_dsn, tmp_path)
    await ledger.start()
    for sid, cost in (("s-a", 0.75), ("s-a", 0.5), ("s-b", 0.25)):
        ledger.record(row(sid, cost=cost))
    await ledger.drain()
    spend_key = session_spend_key(
        budget_counter_key(t.tenant, "per-session", "daily", datetime.now(UTC))
    )
    async with guards(t, ledger_reader=ledger) as (guard,):
        # Redis lost the counters (a flush, a failover): the ledger has the record.
        assert await guard.reconcile_from_ledger(limits) == 2
        assert await guard.reconcile_from_ledger(limits) == 0
        refused = await guard.check(in_session(t, "s-a"), limits)
        allowed = await guard.check(in_session(t, "s-b"), limits)
    await ledger.stop()
    assert refused.action == "block"
    assert allowed.action == "allow"
    admin = RedisAdmin(services.redis_url, connect_timeout=5, note=lambda *_: None)
    ((top, top_micro, count, over),) = await admin.read_session_spend([(spend_key, 1_000_000)])
    assert (top, top_micro, count, over) == ("s-a", 1_250_000, 2, 1)
    assert await admin.read_session_spend([(spend_key + ":none", 1)]) == [(None, 0, 0, 0)]
