"""The ledger's durable spool under a Postgres outage: what it costs and how fast it drains.

`python -m e2e.bench.ledger_spool [--rows N] [--replicas R]` provisions a throwaway tenant
(Postgres role and schema, Redis ACL user) on the local services, records N usage rows through
a `Ledger` while the tenant's role is refused logins (NOLOGIN), measures how they are kept (the
Redis stream, its memory per row, the time to spool), then lets Postgres back with R replicas
replaying the same stream at once, and measures the time until every row is in Postgres and
the stream is empty, and the duplicates (none may exist). Prints a Markdown table; asserts
nothing but the invariants (exactly N rows).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis.asyncio as aioredis
from psycopg import sql

from e2e.fixtures import DEV, _read_env
from tenantgw.gateway.ledger import Ledger
from tenantgw.gateway.spool import stream_key
from tenantgw.tenancy import Provisioner, role_name, schema_name


def _row(n: int) -> dict[str, Any]:
    return {
        "request_id": f"bench-{n:08d}-{secrets.token_hex(4)}",
        "ts": datetime.now(UTC),
        "tenant": "bench",
        "key_name": "alice",
        "requested_model": "claude-sonnet-4-5-20250929",
        "alias": "fast-code",
        "provider": "openrouter",
        "provider_model": "qwen/qwen3-coder",
        "region": "us-east-1",
        "input_tokens": 1_200,
        "output_tokens": 300,
        "cache_read_tokens": 40_000,
        "cache_write_tokens": 0,
        "cost_usd": 0.000_81,
        "list_cost_usd": 0.020_1,
        "latency_ms": 850,
        "ttft_ms": 240,
        "status": "success",
        "http_status": 200,
        "error_type": None,
        "downgraded_from": None,
        "stream": True,
    }


async def _admin_sql(dsn: str, statement: sql.Composed | str, *params: object) -> list[Any]:
    query = statement if isinstance(statement, sql.Composed) else statement.encode()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(query, params or None)
        return await cur.fetchall() if cur.description else []


async def run(rows: int, replicas: int) -> list[tuple[str, str]]:
    env = _read_env(DEV / "services.env")
    admin_dsn, admin_url = env["TENANTGW_POSTGRES_DSN"], env["TENANTGW_REDIS_URL"]
    tenant = f"bench-ledger-{secrets.token_hex(3)}"
    provisioner = Provisioner(admin_dsn, admin_url)
    storage = await provisioner.ensure(tenant)
    role = sql.Identifier(role_name(tenant))
    admin = aioredis.Redis.from_url(admin_url, decode_responses=True)
    client = aioredis.Redis.from_url(storage.redis_url, socket_timeout=2)
    table = sql.Identifier(schema_name(tenant), "usage")
    count = sql.SQL("SELECT count(*), count(DISTINCT request_id) FROM {}").format(table)
    results: list[tuple[str, str]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pod = Ledger(storage.postgres_dsn, Path(tmp) / "pod", redis=client, tenant=tenant)
            await pod.start()
            await _admin_sql(admin_dsn, sql.SQL("ALTER ROLE {} NOLOGIN").format(role))
            await _admin_sql(
                admin_dsn,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                role_name(tenant),
            )
            started = time.monotonic()
            for n in range(rows):
                pod.record(_row(n))
                if n % 100 == 99:
                    await asyncio.sleep(0)
            await pod.drain()
            spool_s = time.monotonic() - started
            await pod.stop()
            in_stream = int(await admin.xlen(stream_key(tenant)))
            memory = int(await admin.memory_usage(stream_key(tenant)) or 0)
            results += [
                ("rows recorded during the outage", f"{rows}"),
                ("kept in the Redis stream / on local disk / lost",
                 f"{in_stream} / {pod.spool.count_rows()} / {pod.stats.dropped}"),
                ("time to record and spool them all", f"{spool_s:.2f} s "
                 f"({rows / spool_s:,.0f} rows/s)"),
                ("Redis memory of the stream", f"{memory / 2**20:.1f} MiB "
                 f"({memory / max(in_stream, 1):.0f} bytes per row)"),
            ]  # fmt: skip

            await _admin_sql(admin_dsn, sql.SQL("ALTER ROLE {} LOGIN").format(role))
            ledgers = [
                Ledger(storage.postgres_dsn, Path(tmp) / f"replica-{i}", redis=client,
                       tenant=tenant)
                for i in range(replicas)
            ]  # fmt: skip
            started = time.monotonic()
            await asyncio.gather(*(ledger.start() for ledger in ledgers))
            while True:
                ((total, distinct),) = await _admin_sql(admin_dsn, count)
                if total >= rows and await admin.xlen(stream_key(tenant)) == 0:
                    break
                await asyncio.sleep(0.05)
            drain_s = time.monotonic() - started
            for ledger in ledgers:
                await ledger.stop()
            assert (total, distinct) == (rows, rows), (total, distinct)
            replayed = [ledger.stats.replayed for ledger in ledgers]
            results += [
                (f"time until all rows are in Postgres ({replicas} replicas replaying)",
                 f"{drain_s:.2f} s ({rows / drain_s:,.0f} rows/s)"),
                ("rows each replica replayed", " / ".join(map(str, replayed))),
                ("rows in Postgres / distinct request ids", f"{total} / {distinct}"),
            ]  # fmt: skip
    finally:
        await client.aclose()
        await admin.aclose()
        await provisioner.remove(tenant)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()
    results = asyncio.run(run(args.rows, args.replicas))
    print("| Measure | Value |\n| --- | --- |")
    for name, value in results:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
