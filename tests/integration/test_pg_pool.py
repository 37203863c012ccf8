"""The operator's PostgreSQL pool: never more than its cap open, and busy sessions handed on.

User story: a platform engineer caps the operator's connections to PostgreSQL
(TENANTGW_POSTGRES_MAX_CONNECTIONS). When a thousand tenants reconcile at once, the operator
keeps at most that many sessions open, serves them in turn, and hands a session that one
reconcile gives back straight to the next one instead of closing it and logging in again.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import psycopg
import pytest

from e2e.fixtures import Services
from tenantgw.tenancy import StorageError
from tenantgw.tenancy.pg_pool import Conn, ConnectionPool

pytestmark = pytest.mark.integration


def _pool(services: Services, app: str, max_size: int, **kwargs: Any) -> ConnectionPool:
    async def connect() -> Conn:
        return await psycopg.AsyncConnection.connect(
            services.postgres_dsn, autocommit=True, application_name=app
        )

    return ConnectionPool(connect, max_size=max_size, endpoint="test", setting="TEST_MAX", **kwargs)


async def _sessions(services: Services, app: str) -> int:
    async with await psycopg.AsyncConnection.connect(services.postgres_dsn) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [app]
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_many_callers_share_the_capped_sessions(services: Services) -> None:
    app = f"it-pool-{secrets.token_hex(3)}"
    pool = _pool(services, app, max_size=3)
    peak = 0
    pids: set[int] = set()

    async def use(i: int) -> None:
        nonlocal peak
        if i % 4 == 0:  # a login check: holds a slot for a connection of its own
            async with pool.slot():
                conn = await psycopg.AsyncConnection.connect(
                    services.postgres_dsn, application_name=app
                )
                await asyncio.sleep(0.01)
                await conn.close()
            return
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT pg_backend_pid()")
            row = await cur.fetchone()
            assert row is not None
            pids.add(int(row[0]))
            await asyncio.sleep(0.01)

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, await _sessions(services, app))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.gather(*(use(i) for i in range(40)))
    finally:
        watcher.cancel()
    assert 1 <= peak <= 3, f"{peak} sessions were open at once, over the cap of 3"
    # 30 admin uses, 10 login checks in between: the admin sessions were handed on, not
    # closed and opened again for each caller.
    assert pool.opened <= 3 + 10, f"{pool.opened} admin sessions were opened for 30 uses"
    assert len(pids) == pool.opened
    await pool.close()
    assert await _sessions(services, app) == 0


async def test_a_session_left_in_a_transaction_is_not_handed_on(services: Services) -> None:
    app = f"it-pool-{secrets.token_hex(3)}"
    pool = _pool(services, app, max_size=1)
    async with pool.connection() as conn:
        await conn.execute("BEGIN")
        cur = await conn.execute("SELECT pg_backend_pid()")
        row = await cur.fetchone()
        assert row is not None
        dirty = int(row[0])
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT pg_backend_pid()")
        row = await cur.fetchone()
        assert row is not None
        assert int(row[0]) != dirty, "a session left inside a transaction was reused"
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    await pool.close()


async def test_a_caller_that_gives_up_frees_its_turn(services: Services) -> None:
    app = f"it-pool-{secrets.token_hex(3)}"
    pool = _pool(services, app, max_size=1, wait_seconds=0.3)
    async with pool.connection():
        with pytest.raises(StorageError, match=r"waited 0.3 s .* TEST_MAX allows"):
            async with pool.connection():
                pass
        cancelled = asyncio.create_task(pool.connection().__aenter__())
        await asyncio.sleep(0.05)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    # Neither the caller that timed out nor the one cancelled holds the only slot.
    async with pool.connection() as conn:
        await conn.execute("SELECT 1")
    async with pool.slot():
        pass
    await pool.close()
    assert await _sessions(services, app) == 0
