"""Storage provisioning with a CREATEROLE admin (no superuser), on the real PostgreSQL.

User story: the platform runs on a managed PostgreSQL (RDS, Cloud SQL, Azure) whose best role is
CREATEROLE, not SUPERUSER. It gives tenantgw a database of its own, owned by that role, and the
operator provisions and removes tenants there exactly as with a superuser, through a capped pool
of connections so that a thousand tenants at once never exhaust the server.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from urllib.parse import quote, urlsplit

import psycopg
import pytest
import pytest_asyncio
from psycopg import errors as pgerr
from psycopg import sql

from e2e.fixtures import Services
from tenantgw.tenancy import Provisioner, StorageError, password_from, role_name, schema_name

pytestmark = pytest.mark.integration

APP = "tenantgw-operator"  # the application_name of every operator connection


@dataclass(frozen=True)
class Platform:
    """A CREATEROLE admin role and the database it owns, made for one test."""

    admin: str
    database: str
    dsn: str  # the admin's DSN of that database
    superuser_dsn: str  # the services' superuser, same database


async def _su(dsn: str, statement: sql.Composed | str, *params: object) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(statement, params or None)
        return await cur.fetchall() if cur.description else []


def _with(dsn: str, *, user: str | None = None, password: str | None = None, db: str) -> str:
    parts = urlsplit(dsn)
    user = quote(user or parts.username or "", safe="")
    password = quote(password or parts.password or "", safe="")
    return f"postgresql://{user}:{password}@{parts.hostname}:{parts.port}/{db}"


@pytest_asyncio.fixture
async def platform(services: Services) -> AsyncIterator[Platform]:
    token = secrets.token_hex(4)
    admin, database, password = f"it_admin_{token}", f"it_tenantgw_{token}", secrets.token_hex(16)
    su = services.postgres_dsn
    await _su(su, sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
        sql.Identifier(admin), sql.Literal(password)))  # fmt: skip
    await _su(su, sql.SQL("CREATE DATABASE {} OWNER {}").format(
        sql.Identifier(database), sql.Identifier(admin)))  # fmt: skip
    try:
        yield Platform(
            admin,
            database,
            _with(su, user=admin, password=password, db=database),
            _with(su, db=database),
        )
    finally:
        await _su(su, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(database)))  # fmt: skip
        for (role,) in await _su(
            su,
            "SELECT r.rolname FROM pg_roles r JOIN pg_auth_members m ON m.roleid = r.oid "
            "WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = %s)",
            admin,
        ):
            await _su(su, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(str(role))))
        await _su(su, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(admin)))


def _tenant(label: str) -> str:
    return f"cr-{label}-{secrets.token_hex(3)}"


async def test_a_createrole_admin_provisions_and_removes_a_tenant(
    platform: Platform, services: Services
) -> None:
    (is_super,) = (
        await _su(platform.dsn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    )[0]
    assert is_super is False
    provisioner = Provisioner(platform.dsn, services.redis_url)
    name = _tenant("one")
    try:
        storage = await provisioner.ensure(name)
        async with await psycopg.AsyncConnection.connect(
            storage.postgres_dsn, autocommit=True
        ) as tenant:
            await tenant.execute("CREATE TABLE usage (id int)")
            await tenant.execute("INSERT INTO usage VALUES (1)")
            cur = await tenant.execute("SELECT current_schema(), count(*) FROM usage")
            assert await cur.fetchone() == (schema_name(name), 1)
            with pytest.raises(pgerr.InsufficientPrivilege):
                await tenant.execute("CREATE TABLE public.escape (id int)")

        # The admin cannot read password verifiers; it checks by logging in, and changes nothing.
        writes = provisioner.writes
        again = await provisioner.ensure(name, password=_password(storage.postgres_dsn))
        assert again.postgres_dsn == storage.postgres_dsn
        assert provisioner.writes == writes

        # Someone changes the tenant's password behind the operator's back: set again.
        await _su(platform.superuser_dsn, sql.SQL("ALTER ROLE {} PASSWORD 'tampered-password-1'")
                  .format(sql.Identifier(role_name(name))))  # fmt: skip
        await provisioner.ensure(name, password=_password(storage.postgres_dsn))
        assert provisioner.writes == writes + 1
        async with await psycopg.AsyncConnection.connect(storage.postgres_dsn) as tenant:
            assert (await (await tenant.execute("SELECT count(*) FROM usage")).fetchone()) == (1,)

        await provisioner.remove(name)
        left = await _su(
            platform.superuser_dsn,
            "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = %s),"
            " (SELECT count(*) FROM pg_namespace WHERE nspname = %s)",
            role_name(name),
            schema_name(name),
        )
        assert left == [(0, 0)]
    finally:
        await provisioner.remove(name)
        await provisioner.close()


def _password(dsn: str) -> str:
    return password_from(dsn)


async def test_many_concurrent_provisions_stay_under_the_connection_cap(
    platform: Platform, services: Services
) -> None:
    cap, tenants = 3, [_tenant(f"n{i}") for i in range(12)]
    provisioner = Provisioner(platform.dsn, services.redis_url, max_connections=cap)
    seen: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        async with await psycopg.AsyncConnection.connect(
            platform.superuser_dsn, autocommit=True
        ) as conn:
            while not done.is_set():
                cur = await conn.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name = %s",
                    (platform.database, APP),
                )
                row = await cur.fetchone()
                seen.append(int(row[0]) if row else 0)
                await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    try:
        stored = await asyncio.gather(*(provisioner.ensure(t) for t in tenants))
        # Again with their passwords: each checks its password by logging in as the tenant.
        await asyncio.gather(
            *(
                provisioner.ensure(t, _password(s.postgres_dsn))
                for t, s in zip(tenants, stored, strict=True)
            )
        )
        await asyncio.gather(*(provisioner.remove(t) for t in tenants))
    finally:
        done.set()
        await watcher
        await asyncio.gather(*(provisioner.remove(t) for t in tenants), return_exceptions=True)
        await provisioner.close()
    assert max(seen) >= 1, "the watcher never saw the operator's connections"
    assert max(seen) <= cap, f"up to {max(seen)} connections at once with a cap of {cap}"
    roles = await _su(
        platform.superuser_dsn,
        "SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)",
        [role_name(t) for t in tenants],
    )
    assert roles == [(0,)]


async def test_unmet_requirements_are_named_with_their_fix(
    platform: Platform, services: Services
) -> None:
    su = platform.superuser_dsn
    # Another application's schema, open to PUBLIC, in the database: not dedicated.
    await _su(su, "CREATE SCHEMA billing")
    await _su(su, "GRANT USAGE ON SCHEMA billing TO PUBLIC")
    provisioner = Provisioner(platform.dsn, services.redis_url)
    try:
        with pytest.raises(
            StorageError, match="is not dedicated to tenantgw: it holds schema billing"
        ):
            await provisioner.ensure(_tenant("shared"))
        await _su(su, "DROP SCHEMA billing")

        # A CREATEROLE admin that does not own the database.
        await _su(services.postgres_dsn, sql.SQL("ALTER DATABASE {} OWNER TO CURRENT_USER")
                  .format(sql.Identifier(platform.database)))  # fmt: skip
        with pytest.raises(StorageError, match=f"ALTER DATABASE {platform.database} OWNER TO"):
            await provisioner.ensure(_tenant("owner"))

        # Neither SUPERUSER nor CREATEROLE.
        await _su(services.postgres_dsn, sql.SQL("ALTER ROLE {} NOCREATEROLE")
                  .format(sql.Identifier(platform.admin)))  # fmt: skip
        with pytest.raises(StorageError, match="neither SUPERUSER nor CREATEROLE"):
            await provisioner.ensure(_tenant("powerless"))
    finally:
        await provisioner.close()


async def test_an_admin_that_lost_superuser_is_read_again_one_by_one(
    platform: Platform, services: Services
) -> None:
    """Catalog reads go in one round trip in the form the admin could run last time; an admin
    that is no longer a superuser is refused pg_authid, and the reads are made again."""
    provisioner = Provisioner(platform.dsn, services.redis_url)
    admin = provisioner._postgres
    name = _tenant("demoted")
    try:
        first = await provisioner.ensure(name)
        assert admin._admin is not None
        assert admin._admin.superuser is False
        admin._admin = replace(admin._admin, superuser=True)  # as if it had been one
        writes = provisioner.writes
        storage = await provisioner.ensure(name, password=_password(first.postgres_dsn))
        assert provisioner.writes == writes, "the state read again is the same: nothing to do"
        assert admin._admin is not None
        assert admin._admin.superuser is False
        async with await psycopg.AsyncConnection.connect(storage.postgres_dsn) as tenant:
            cur = await tenant.execute("SELECT current_schema()")
            assert await cur.fetchone() == (schema_name(name),)
    finally:
        await provisioner.remove(name)
        await provisioner.close()
