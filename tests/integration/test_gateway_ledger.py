"""The usage ledger against the real PostgreSQL and Redis: one row per request, none lost.

Every test runs as a fresh tenant role that owns its own schema (its search_path), as the
operator provisions tenants; outages are real: the role is refused logins (`NOLOGIN`) and its
connections are terminated, then it is allowed back. The durable spool is the tenant's Redis
stream, reached as the tenant's own ACL user; when Redis must go down too, the test runs its own
throwaway redis-server and stops it (never the shared one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from psycopg import sql

from e2e.fixtures import Services
from tenantgw.api.markers import key_prefix
from tenantgw.gateway.ledger import Ledger
from tenantgw.gateway.spool import Spool, rejected_key, stream_key
from tenantgw.gateway.usage import UsageRecord
from tenantgw.tenancy.naming import generate_password, tenant_redis_url
from tenantgw.tenancy.redis_acl import RedisAdmin

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class TenantDb:
    role: str
    dsn: str
    """The tenant role's own DSN (its schema first on its search_path)."""
    admin_dsn: str

    def admin(self, statement: sql.Composed | str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(
                statement if isinstance(statement, sql.Composed) else statement.encode(), params
            )
            return cur.fetchall() if cur.description else []

    def rows(self) -> list[tuple[Any, ...]]:
        table = sql.Identifier(self.role, "usage")
        return self.admin(sql.SQL("SELECT * FROM {} ORDER BY request_id").format(table))

    def count(self) -> tuple[int, int]:
        """(rows, distinct request ids) in the tenant's usage table."""
        table = sql.Identifier(self.role, "usage")
        query = sql.SQL("SELECT count(*), count(DISTINCT request_id) FROM {}").format(table)
        (row,) = self.admin(query)
        return int(row[0]), int(row[1])

    def outage(self) -> None:
        """Refuse the role's logins and cut its connections: the gateway's Postgres is gone."""
        role = sql.Identifier(self.role)
        self.admin(sql.SQL("ALTER ROLE {} NOLOGIN").format(role))
        self.admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", self.role
        )

    def recover(self) -> None:
        self.admin(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(self.role)))


def tenant_db(admin_dsn: str) -> Iterator[TenantDb]:
    """A throwaway tenant role and schema in the real server, dropped afterwards."""
    role, password = f"tg_test_{uuid.uuid4().hex[:12]}", secrets.token_hex(16)
    parts = urlsplit(admin_dsn)
    netloc = f"{quote(role)}:{quote(password)}@{parts.hostname}:{parts.port}"
    db = TenantDb(role, urlunsplit(parts._replace(netloc=netloc)), admin_dsn)
    ident = sql.Identifier(role)
    db.admin(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident, sql.Literal(password)))
    db.admin(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(ident, ident))
    db.admin(sql.SQL("ALTER ROLE {} SET search_path = {}").format(ident, ident))
    try:
        yield db
    finally:
        db.recover()
        db.admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", role)
        db.admin(sql.SQL("DROP SCHEMA {} CASCADE").format(ident))
        db.admin(sql.SQL("DROP ROLE {}").format(ident))


@pytest.fixture
def db(services: Services) -> Iterator[TenantDb]:
    yield from tenant_db(services.postgres_dsn)


def usage(n: int, *, prefix: str = "req", key: str = "alice", cost: float = 0.001) -> UsageRecord:
    return UsageRecord(
        request_id=f"{prefix}-{n:06d}",
        ts=datetime.now(UTC),
        tenant="engineering-team",
        key_name=key,
        requested_model="claude-sonnet-4-5-20250929",
        alias="fast-code",
        provider="openrouter",
        provider_model="qwen/qwen3-coder",
        region="us-east-1",
        input_tokens=1_200,
        output_tokens=300,
        cache_read_tokens=40_000,
        cache_write_tokens=0,
        cost_usd=cost,
        list_cost_usd=0.0201,
        latency_ms=850,
        ttft_ms=240,
        status="success",
        http_status=200,
        error_type=None,
        downgraded_from=None,
        stream=True,
    )


def spool_files(directory: Path, pattern: str = "*.jsonl") -> list[Path]:
    return sorted(directory.glob(pattern))


async def wait_for_rows(db: TenantDb, expected: int, within: float = 30.0) -> tuple[int, int]:
    deadline = time.monotonic() + within
    counts = await asyncio.to_thread(db.count)
    while counts[0] < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        counts = await asyncio.to_thread(db.count)
    return counts


async def test_the_table_is_created_in_the_tenants_own_schema(db: TenantDb, tmp_path: Path) -> None:
    ledger = Ledger(db.dsn, tmp_path)
    await ledger.start()
    await ledger.stop()
    tables = db.admin(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'usage'"
        " AND table_schema = %s",
        db.role,
    )
    assert tables == [(db.role,)]
    columns = db.admin(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = 'usage' ORDER BY ordinal_position",
        db.role,
    )
    assert [c for c, _ in columns][:3] == ["request_id", "ts", "tenant"]
    assert dict(columns)["cost_usd"] == "numeric"
    # A second start (another replica, a restart) finds the table and keeps it.
    again = Ledger(db.dsn, tmp_path)
    await again.start()
    await again.stop()


async def test_one_row_per_record_written_in_batches(db: TenantDb, tmp_path: Path) -> None:
    ledger = Ledger(db.dsn, tmp_path)
    await ledger.start()
    started = time.monotonic()
    for n in range(1_200):
        ledger.record(usage(n))
    for n in range(100):  # the same requests reported twice: still one row each
        ledger.record(usage(n))
    await ledger.drain()
    elapsed = time.monotonic() - started
    await ledger.stop()

    assert db.count() == (1_200, 1_200)
    # 1300 records in batches of at most 500: a handful of INSERT transactions, not 1300.
    assert ledger.stats.batches <= 6, ledger.stats
    assert ledger.stats.spooled == 0
    print(f"1300 records -> {ledger.stats.batches} batches in {elapsed * 1000:.0f} ms")

    row = db.rows()[0]
    assert row[0] == "req-000000"
    assert row[3:6] == ("alice", "claude-sonnet-4-5-20250929", "fast-code")
    assert float(row[13]) == pytest.approx(0.001)


async def test_a_row_keeps_every_field(db: TenantDb, tmp_path: Path) -> None:
    rec = UsageRecord(
        **{
            **usage(1).as_row(),
            "session_id": "5b1f7e2a-claude-session",
            "list_model": "claude-sonnet-4-5-20250929",
            "labels": '{"project": "checkout", "team": "payments"}',
            "failed_attempts": '[{"alias": "primary", "provider": "bedrock", '
            '"provider_model": "m", "http_status": 429, "error_type": "RateLimitError"}]',
        }
    )
    failed = UsageRecord(
        **{
            **rec.as_row(),
            "request_id": "req-1:failed:fast-code:1795825002704094",
            "status": "error",
            "http_status": 500,
            "error_type": "InternalServerError",
            "list_cost_usd": None,
            "ttft_ms": None,
            "downgraded_from": "reasoning",
        }
    )
    ledger = Ledger(db.dsn, tmp_path)
    await ledger.start()
    ledger.record(rec)
    ledger.record(failed)
    await ledger.stop()
    by_id = {row[0]: row for row in db.rows()}
    stored = by_id["req-000001"]
    expected = rec.as_row()
    assert stored[1] == expected["ts"]
    assert list(stored[2:13]) == [expected[c] for c in list(expected)[2:13]]
    assert stored[15:] == (
        850,
        240,
        "success",
        200,
        None,
        None,
        True,
        None,
        None,
        "5b1f7e2a-claude-session",
        "claude-sonnet-4-5-20250929",
        {"project": "checkout", "team": "payments"},  # jsonb, read back as a dict
        [
            {
                "alias": "primary",
                "provider": "bedrock",
                "provider_model": "m",
                "http_status": 429,
                "error_type": "RateLimitError",
            }
        ],
    )
    error = by_id[failed.request_id]
    assert error[14] is None
    assert error[16:21] == (None, "error", 500, "InternalServerError", "reasoning")


async def test_a_postgres_outage_loses_nothing(db: TenantDb, tmp_path: Path) -> None:
    ledger = Ledger(db.dsn, tmp_path)
    await ledger.start()
    sent = 0

    async def produce(count: int, per_second: float, prefix: str = "req") -> None:
        nonlocal sent
        for _ in range(count):
            ledger.record(usage(sent, prefix=prefix))
            sent += 1
            await asyncio.sleep(1 / per_second)

    await produce(200, 1_000)
    await ledger.drain()
    assert db.count() == (200, 200)

    outage_started = time.monotonic()
    await asyncio.to_thread(db.outage)
    await produce(1_000, 200)  # five seconds of traffic while Postgres refuses us
    for n in range(0, 200, 4):  # and some requests reported twice
        ledger.record(usage(n))
    await ledger.drain()
    in_db_during = db.count()[0]
    on_disk = ledger.spool.count_rows()
    assert in_db_during == 200
    assert on_disk >= 1_000
    assert ledger.queued == 0  # nothing piles up in memory during the outage

    await asyncio.to_thread(db.recover)
    outage_s = time.monotonic() - outage_started
    await produce(200, 1_000)
    recovered_started = time.monotonic()
    counts = await wait_for_rows(db, 1_400)
    recovery_s = time.monotonic() - recovered_started
    await ledger.stop()

    assert counts == (1_400, 1_400)
    assert ledger.spool.count_rows() == 0
    assert ledger.stats.replayed >= 1_000
    assert ledger.stats.failures >= 1
    print(
        f"outage {outage_s:.1f} s: {on_disk} rows spooled, {ledger.stats.replayed} replayed, "
        f"all {counts[0]} rows present {recovery_s:.1f} s after Postgres came back"
    )


async def test_rows_spooled_by_a_process_that_died_are_replayed(
    db: TenantDb, tmp_path: Path
) -> None:
    # A gateway that ran during an outage and then stopped: its rows are only on disk.
    down = Ledger(db.dsn, tmp_path, connect_timeout=2)
    await asyncio.to_thread(db.outage)
    await down.start()
    for n in range(300):
        down.record(usage(n, prefix="before-restart"))
    await down.stop()
    assert Spool(tmp_path).count_rows() == 300
    # Its spool file as a dead process leaves it: named after another pid.
    (active,) = spool_files(tmp_path, "usage-active-*.jsonl")
    active.rename(tmp_path / "usage-active-999999999.jsonl")
    await asyncio.to_thread(db.recover)

    restarted = Ledger(db.dsn, tmp_path)
    await restarted.start()
    restarted.record(usage(0, prefix="after-restart"))
    counts = await wait_for_rows(db, 301)
    await restarted.stop()
    assert counts == (301, 301)
    assert not spool_files(tmp_path)


async def test_rows_in_memory_at_exit_are_kept_on_disk(db: TenantDb, tmp_path: Path) -> None:
    # LiteLLM gives plugins no shutdown hook; the ledger's atexit hook spools what is left.
    ledger = Ledger(db.dsn, tmp_path, flush_interval=60)
    await ledger.start()
    for n in range(42):
        ledger.record(usage(n, prefix="at-exit"))
    assert ledger.spool_unwritten() == 42  # what the interpreter runs at exit
    assert Spool(tmp_path).count_rows() == 42
    await ledger.stop()
    restarted = Ledger(db.dsn, tmp_path)
    await restarted.start()
    counts = await wait_for_rows(db, 42)
    await restarted.stop()
    assert counts == (42, 42)


async def test_memory_stays_bounded_when_postgres_is_down(db: TenantDb, tmp_path: Path) -> None:
    ledger = Ledger(db.dsn, tmp_path, max_queue=100, batch_size=50)
    await ledger.start()
    await asyncio.to_thread(db.outage)
    peak = 0
    for n in range(2_000):  # a burst with no await: the writer never gets to run
        ledger.record(usage(n))
        peak = max(peak, ledger.queued)
    assert peak <= 100
    await ledger.drain()
    await asyncio.to_thread(db.recover)
    counts = await wait_for_rows(db, 2_000)
    await ledger.stop()
    assert counts == (2_000, 2_000)


async def test_a_torn_spool_line_is_skipped(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append([{"request_id": "a"}, {"request_id": "b"}])
    with (tmp_path / f"usage-active-{os.getpid()}.jsonl").open("a") as f:
        f.write('{"request_id": "c", "ts": ')  # the process died mid-write
    (pending,) = spool.claim()
    assert [r["request_id"] for r in spool.read(pending)] == ["a", "b"]


async def test_nothing_is_spent_before_the_table_exists(db: TenantDb, tmp_path: Path) -> None:
    ledger = Ledger(db.dsn, tmp_path)  # not started: no table yet
    assert await ledger.spent_since(datetime.now(UTC), {"kind": "Tenant"}) == 0.0
    await ledger.stop()


async def test_spent_since_sums_a_budget_scope(db: TenantDb, tmp_path: Path) -> None:
    ledger = Ledger(db.dsn, tmp_path)
    await ledger.start()
    now = datetime.now(UTC)
    old = UsageRecord(**{**usage(0, prefix="old").as_row(), "ts": now - timedelta(days=40)})
    ledger.record(old)
    for n in range(10):
        ledger.record(usage(n, key="alice", cost=0.25))
    for n in range(4):
        ledger.record(
            UsageRecord(**{**usage(n, prefix="bob", key="bob", cost=1.0).as_row(), "alias": "x"})
        )
    await ledger.drain()
    since = now - timedelta(days=1)
    assert await ledger.spent_since(since, {"kind": "Tenant"}) == pytest.approx(6.5)
    assert await ledger.spent_since(since, {"kind": "Key", "name": "alice"}) == pytest.approx(2.5)
    assert await ledger.spent_since(since, {"kind": "ModelAlias", "name": "x"}) == pytest.approx(4)
    assert await ledger.spent_since(now - timedelta(days=60), {"kind": "Tenant"}) == (
        pytest.approx(6.501)
    )
    await ledger.stop()


# --------------------------------------------------------------------------- the Redis stream


@dataclass(frozen=True)
class TenantRedis:
    tenant: str
    url: str
    """The tenant ACL user's URL (keys `t:{<tenant>}:*` only), as its gateway gets it."""
    admin_url: str

    def client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)

    async def admin(self, *command: Any) -> Any:
        client = aioredis.Redis.from_url(self.admin_url, decode_responses=True, socket_timeout=5)
        try:
            return await client.execute_command(*command)  # type: ignore[no-untyped-call]
        finally:
            await client.aclose()

    async def stream_length(self) -> int:
        return int(await self.admin("XLEN", stream_key(self.tenant)))


@pytest_asyncio.fixture
async def tenant_redis(services: Services) -> AsyncIterator[TenantRedis]:
    """A tenant ACL user on the shared Redis, provisioned as the operator does; removed after."""
    tenant = f"it-ledger-{uuid.uuid4().hex[:8]}"
    admin = RedisAdmin(services.redis_url, connect_timeout=5, note=lambda *_: None)
    password = generate_password()
    await admin.ensure(tenant, password)
    parts = urlsplit(services.redis_url)
    url = tenant_redis_url(tenant, password, parts.hostname or "", parts.port or 6379, 0)
    try:
        yield TenantRedis(tenant, url, services.redis_url)
    finally:
        await admin.remove(tenant)


async def test_rows_spooled_in_redis_survive_the_pod(
    db: TenantDb, tenant_redis: TenantRedis, tmp_path: Path
) -> None:
    # A pod spools through an outage into the tenant's stream; then the pod is gone, its
    # emptyDir with it. A new pod, on a fresh disk, replays what the old one left.
    old_disk, new_disk = tmp_path / "old-pod", tmp_path / "new-pod"
    client = tenant_redis.client()
    old = Ledger(db.dsn, old_disk, redis=client, tenant=tenant_redis.tenant, connect_timeout=2)
    await old.start()
    await asyncio.to_thread(db.outage)
    for n in range(500):
        old.record(usage(n, prefix="old-pod"))
        if n % 50 == 0:
            await asyncio.sleep(0.01)
    await old.drain()
    await old.stop()
    assert await tenant_redis.stream_length() == 500
    assert Spool(old_disk).count_rows() == 0  # nothing needed the local disk
    assert old.stats.streamed == 500
    shutil.rmtree(old_disk, ignore_errors=True)

    new = Ledger(db.dsn, new_disk, redis=client, tenant=tenant_redis.tenant)
    await new.start()
    await asyncio.to_thread(db.recover)
    new.record(usage(0, prefix="new-pod"))
    counts = await wait_for_rows(db, 501)
    await new.drain()
    await new.stop()
    await client.aclose()
    assert counts == (501, 501)
    assert await tenant_redis.stream_length() == 0
    assert new.stats.replayed == 500


@pytest.mark.parametrize("lease", [15.0, 0.0], ids=["one-replays", "all-replay-at-once"])
async def test_replicas_replaying_at_once_lose_and_duplicate_nothing(
    db: TenantDb, tenant_redis: TenantRedis, tmp_path: Path, lease: float
) -> None:
    client = tenant_redis.client()
    spooler = Ledger(db.dsn, tmp_path / "spooler", redis=client, tenant=tenant_redis.tenant)
    await spooler.start()
    await asyncio.to_thread(db.outage)
    for n in range(3_000):
        spooler.record(usage(n, prefix="spooled"))
        if n % 100 == 0:
            await asyncio.sleep(0)
    await spooler.stop()
    assert await tenant_redis.stream_length() == 3_000
    await asyncio.to_thread(db.recover)

    # Three replicas start together and replay the same stream in small batches, while each
    # serves new traffic of its own; without the lease, all three replay the same entries.
    replicas = [
        Ledger(db.dsn, tmp_path / f"replica-{i}", redis=client, tenant=tenant_redis.tenant,
               batch_size=100, replay_lease=lease)
        for i in range(3)
    ]  # fmt: skip
    started = time.monotonic()
    await asyncio.gather(*(r.start() for r in replicas))
    for n in range(300):
        replicas[n % 3].record(usage(n, prefix=f"live-{n % 3}"))
        if n % 30 == 0:
            await asyncio.sleep(0.01)
    counts = await wait_for_rows(db, 3_300)
    elapsed = time.monotonic() - started
    for replica in replicas:
        await replica.stop()
    await client.aclose()
    assert counts == (3_300, 3_300)
    assert await tenant_redis.stream_length() == 0
    replayed = [r.stats.replayed for r in replicas]
    assert sum(replayed) >= 3_000
    if lease:
        assert sorted(replayed) == [0, 0, 3_000]  # one replica held the lease
    print(f"3 replicas replayed {replayed} of 3000 stream rows; all rows in {elapsed:.1f} s")


async def test_a_lease_left_by_a_dead_replica_only_delays_the_replay(
    db: TenantDb, tenant_redis: TenantRedis, tmp_path: Path
) -> None:
    client = tenant_redis.client()
    spooler = Ledger(db.dsn, tmp_path / "spooler", redis=client, tenant=tenant_redis.tenant)
    await spooler.start()
    await asyncio.to_thread(db.outage)
    for n in range(50):
        spooler.record(usage(n, prefix="orphaned"))
    await spooler.stop()
    await asyncio.to_thread(db.recover)
    # The replica that held the lease was killed mid-replay: its lease runs out by itself.
    key = f"{key_prefix(tenant_redis.tenant)}ledger:replaying"
    await tenant_redis.admin("SET", key, "killed-replica", "PX", 2_000)
    survivor = Ledger(db.dsn, tmp_path / "survivor", redis=client, tenant=tenant_redis.tenant,
                      stream_check_interval=0.5)  # fmt: skip
    await survivor.start()
    counts = await wait_for_rows(db, 50)
    await survivor.stop()
    await client.aclose()
    assert counts == (50, 50)
    assert survivor.stats.replayed == 50
    assert await tenant_redis.stream_length() == 0


async def test_a_row_postgres_refuses_is_set_aside_not_retried_forever(
    db: TenantDb, tenant_redis: TenantRedis, tmp_path: Path
) -> None:
    key = stream_key(tenant_redis.tenant)
    good = UsageRecord(**{**usage(1, prefix="good").as_row()}).as_row()
    bad = {**usage(2, prefix="bad").as_row(), "status": "stolen"}  # breaks the CHECK
    for row in (good, bad):
        payload = json.dumps({k: v.isoformat() if isinstance(v, datetime) else v
                              for k, v in row.items()})  # fmt: skip
        await tenant_redis.admin("XADD", key, "*", "r", payload)
    await tenant_redis.admin("XADD", key, "*", "r", "not json")
    client = tenant_redis.client()
    ledger = Ledger(db.dsn, tmp_path, redis=client, tenant=tenant_redis.tenant)
    await ledger.start()
    ledger.record(usage(3, prefix="live"))
    counts = await wait_for_rows(db, 2)
    await ledger.drain()
    await ledger.stop()
    await client.aclose()
    assert counts == (2, 2)
    assert {r[0] for r in db.rows()} == {"good-000001", "live-000003"}
    assert await tenant_redis.stream_length() == 0
    assert ledger.stats.rejected == 1
    (entry,) = await tenant_redis.admin("XRANGE", rejected_key(tenant_redis.tenant), "-", "+")
    fields = entry[1]
    assert json.loads(fields["r"])["request_id"] == "bad-000002"
    assert "CheckViolation" in fields["reason"]


async def test_a_full_stream_sends_rows_to_disk(
    db: TenantDb, tenant_redis: TenantRedis, tmp_path: Path
) -> None:
    client = tenant_redis.client()
    ledger = Ledger(db.dsn, tmp_path, redis=client, tenant=tenant_redis.tenant,
                    max_stream_rows=100, batch_size=40)  # fmt: skip
    await ledger.start()
    await asyncio.to_thread(db.outage)
    for n in range(300):
        ledger.record(usage(n))
        if n % 20 == 0:
            await asyncio.sleep(0.01)
    await ledger.drain()
    in_stream, on_disk = await tenant_redis.stream_length(), ledger.spool.count_rows()
    assert in_stream <= 100
    assert in_stream + on_disk == 300
    assert on_disk > 0
    await asyncio.to_thread(db.recover)
    counts = await wait_for_rows(db, 300)
    await ledger.stop()
    await client.aclose()
    assert counts == (300, 300)


async def test_rows_recorded_at_exit_go_to_the_stream(
    db: TenantDb, tenant_redis: TenantRedis, tmp_path: Path
) -> None:
    # At interpreter exit the event loop is gone: the hook and every later record (LiteLLM
    # flushes its callbacks at exit, after our hook) use a short synchronous connection.
    client = tenant_redis.client()
    ledger = Ledger(db.dsn, tmp_path, redis=client, tenant=tenant_redis.tenant, flush_interval=60)
    await ledger.start()
    for n in range(42):
        ledger.record(usage(n, prefix="at-exit"))
    assert ledger.spool_unwritten() == 42
    ledger.record(usage(42, prefix="at-exit"))  # a callback LiteLLM flushes after our hook
    assert await tenant_redis.stream_length() == 43
    assert Spool(tmp_path).count_rows() == 0
    await ledger.stop()
    shutil.rmtree(tmp_path, ignore_errors=True)
    restarted = Ledger(db.dsn, tmp_path, redis=client, tenant=tenant_redis.tenant)
    await restarted.start()
    counts = await wait_for_rows(db, 43)
    await restarted.stop()
    await client.aclose()
    assert counts == (43, 43)


# --------------------------------------------------------------------------- Redis down too


@dataclass
class ThrowawayRedis:
    """A redis-server of this test alone, which the test stops and starts again."""

    port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.05)
        pytest.fail(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = ThrowawayRedis(port, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_with_redis_down_too_rows_wait_on_disk_then_move_to_redis(
    db: TenantDb, throwaway_redis: ThrowawayRedis, tmp_path: Path
) -> None:
    tenant = f"it-ledger-{uuid.uuid4().hex[:8]}"
    disk = tmp_path / "pod"
    client = aioredis.Redis.from_url(throwaway_redis.url, socket_timeout=1,
                                     socket_connect_timeout=1)  # fmt: skip
    ledger = Ledger(db.dsn, disk, redis=client, tenant=tenant, max_backoff=1.0)
    await ledger.start()
    await asyncio.to_thread(db.outage)
    throwaway_redis.stop()
    for n in range(200):
        ledger.record(usage(n, prefix="both-down"))
        if n % 20 == 0:
            await asyncio.sleep(0.01)
    await ledger.drain()
    assert ledger.spool.count_rows() == 200  # the last resort: the pod's own disk
    assert ledger.stats.streamed == 0

    # Redis is back, Postgres still is not: the rows move to the stream, off the pod.
    throwaway_redis.start()
    deadline, on_disk = time.monotonic() + 30, ledger.spool.count_rows()
    while on_disk and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        on_disk = ledger.spool.count_rows()
    assert on_disk == 0
    assert await client.xlen(stream_key(tenant)) == 200
    assert ledger.stats.promoted == 200
    await ledger.stop()
    shutil.rmtree(disk, ignore_errors=True)  # the pod goes, its emptyDir with it

    await asyncio.to_thread(db.recover)
    replacement = Ledger(db.dsn, tmp_path / "new-pod", redis=client, tenant=tenant)
    await replacement.start()
    counts = await wait_for_rows(db, 200)
    await replacement.stop()
    await client.aclose()
    assert counts == (200, 200)
