"""A tenant's DDL goes to PostgreSQL in one round trip, and still fails whole and by name.

User story: the operator sends all of a tenant's provisioning statements at once (one
transaction, one round trip); when one of them fails, nothing of the others stays, and the
error says which step failed, as it did when the steps went one by one. Its catalog reads go in
one round trip too, and see what the reads one by one see.
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import replace

import psycopg
import pytest
from psycopg import sql

from e2e.fixtures import Services
from tenantgw.tenancy import Provisioner, StorageError, schema_name
from tenantgw.tenancy.pg_catalog import read_state
from tenantgw.tenancy.postgres import PostgresAdmin

pytestmark = pytest.mark.integration


def _admin(services: Services, notes: list[str]) -> PostgresAdmin:
    return PostgresAdmin(
        services.postgres_dsn,
        connect_timeout=5,
        connection_limit=5,
        note=lambda _tenant, change: notes.append(change),
    )


async def _role_exists(services: Services, role: str) -> bool:
    async with await psycopg.AsyncConnection.connect(services.postgres_dsn) as conn:
        cur = await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        return await cur.fetchone() is not None


async def test_a_failing_step_is_named_and_leaves_nothing(services: Services) -> None:
    role = f"it_batch_{secrets.token_hex(4)}"
    notes: list[str] = []
    admin = _admin(services, notes)
    steps = [
        (f"create role {role}", sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role))),
        (
            "grant a role that does not exist",
            sql.SQL("GRANT it_batch_nobody TO CURRENT_USER").format(),
        ),
        (f"drop role {role}", sql.SQL("DROP ROLE {}").format(sql.Identifier(role))),
    ]
    try:
        async with admin.pool.connection() as conn:
            with pytest.raises(
                StorageError, match=r"failed to grant a role that does not exist for tenant t1: "
            ) as caught:
                await admin._apply(conn, "t1", steps)
            assert "create role" not in str(caught.value)
            # The connection is usable afterwards and outside any transaction.
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert not await _role_exists(services, role), "a step before the failing one stayed"
        assert notes == [f"postgres: {d}" for d, _ in steps]
    finally:
        async with await psycopg.AsyncConnection.connect(
            services.postgres_dsn, autocommit=True
        ) as conn:
            await conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        await admin.close()


async def test_the_steps_go_through_together(services: Services) -> None:
    role = f"it_batch_{secrets.token_hex(4)}"
    admin = _admin(services, [])
    r = sql.Identifier(role)
    try:
        async with admin.pool.connection() as conn:
            await admin._apply(
                conn,
                "t1",
                [
                    (f"create role {role}", sql.SQL("CREATE ROLE {} NOLOGIN").format(r)),
                    ("set its search_path", sql.SQL("ALTER ROLE {} SET search_path = x").format(r)),
                ],
            )
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            cur = await conn.execute("SELECT rolconfig FROM pg_roles WHERE rolname = %s", [role])
            assert await cur.fetchone() == (["search_path=x"],)
    finally:
        async with admin.pool.connection() as conn:
            await conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(r))
        await admin.close()


async def test_catalog_reads_in_one_round_trip_read_the_same(services: Services) -> None:
    """The pipelined read (with what is known of the admin, right or wrong) and the one by one
    read see the same state, drift included."""
    name = f"it-batch-{secrets.token_hex(4)}"
    provisioner = Provisioner(services.postgres_dsn, services.redis_url)
    admin = provisioner._postgres
    try:
        await provisioner.ensure(name)
        async with admin.pool.connection() as conn:
            await conn.execute(
                sql.SQL("GRANT USAGE ON SCHEMA {} TO PUBLIC").format(
                    sql.Identifier(schema_name(name))
                )
            )
            read = functools.partial(
                read_state, conn, name, connection_limit=50, endpoint=admin.endpoint
            )
            one_by_one, known = await read()
            assert one_by_one.schema_grantees == ("",)
            assert one_by_one.role is not None
            assert one_by_one.role.verifier
            pipelined, again = await read(admin=known)
            assert (pipelined, again) == (one_by_one, known)
            wrong = replace(known, superuser=not known.superuser)
            assert await read(admin=wrong) == (one_by_one, known)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    finally:
        await provisioner.remove(name)
        await provisioner.close()
