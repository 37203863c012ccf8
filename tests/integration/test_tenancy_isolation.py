"""A tenant's storage credentials reach its own data and nothing else, on the real servers.

User story: two teams share the platform's PostgreSQL and Redis; each team's gateway holds only
its own credentials, and with them it can neither read nor spoil the other team's ledger,
audit trail, budgets or cache, nor the servers themselves.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis
from psycopg import errors as pgerr
from psycopg import sql
from redis import exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from e2e.fixtures import Services
from tenantgw.api.markers import key_prefix
from tenantgw.tenancy import (
    Provisioner,
    StorageError,
    TenantStorage,
    password_from,
    role_name,
    schema_name,
)

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Tenant:
    name: str
    storage: TenantStorage

    @property
    def keys(self) -> str:
        return f"{key_prefix(self.name)}"


def _name(label: str) -> str:
    return f"it-{label}-{secrets.token_hex(4)}"


@pytest.fixture
def provisioner(services: Services) -> Provisioner:
    return Provisioner(services.postgres_dsn, services.redis_url)


@pytest_asyncio.fixture
async def two_tenants(provisioner: Provisioner) -> AsyncIterator[tuple[Tenant, Tenant]]:
    a_name, b_name = _name("a"), _name("b")
    try:
        a = Tenant(a_name, await provisioner.ensure(a_name))
        b = Tenant(b_name, await provisioner.ensure(b_name))
        yield a, b
    finally:
        await provisioner.remove(a_name)
        await provisioner.remove(b_name)


async def _pg(dsn: str) -> psycopg.AsyncConnection[tuple[object, ...]]:
    return await psycopg.AsyncConnection.connect(dsn, connect_timeout=5, autocommit=True)


async def _admin_one(services: Services, query: str, *params: object) -> tuple[object, ...] | None:
    async with await _pg(services.postgres_dsn) as conn:
        cur = await conn.execute(query, params or None)
        return await cur.fetchone()


def _redis(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=5)


# --------------------------------------------------------------------------- PostgreSQL


async def test_a_tenant_owns_its_schema_and_lands_in_it(two_tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = two_tenants
    async with await _pg(a.storage.postgres_dsn) as conn:
        cur = await conn.execute("select current_user, current_schema()")
        assert await cur.fetchone() == (role_name(a.name), schema_name(a.name))
        await conn.execute("create table usage (id serial primary key, tokens int)")
        await conn.execute("insert into usage (tokens) values (42), (7)")
        total = sql.SQL("select sum(tokens) from {}.usage").format(
            sql.Identifier(schema_name(a.name))
        )
        cur = await conn.execute(total)
        assert await cur.fetchone() == (49,)


async def test_a_tenant_cannot_read_write_or_create_in_another_tenants_schema(
    two_tenants: tuple[Tenant, Tenant],
) -> None:
    a, b = two_tenants
    other = sql.Identifier(schema_name(b.name))
    async with await _pg(b.storage.postgres_dsn) as conn:
        await conn.execute("create table ledger (secret text)")
        await conn.execute("insert into ledger values ('b-only')")
        await conn.execute("create function peek() returns text language sql as 'select 1::text'")
    async with await _pg(a.storage.postgres_dsn) as conn:
        for template in (
            "select * from {}.ledger",
            "insert into {}.ledger values ('spoiled')",
            "delete from {}.ledger",
            "create table {}.planted (x int)",
            "select {}.peek()",
            "create table public.planted (x int)",
            "create schema planted",
        ):
            with pytest.raises(pgerr.InsufficientPrivilege, match="permission denied"):
                await conn.execute(sql.SQL(template).format(other))
    async with await _pg(b.storage.postgres_dsn) as conn:
        cur = await conn.execute("select secret from ledger")
        assert await cur.fetchall() == [("b-only",)]


async def test_the_tenant_role_has_no_powers(
    services: Services, two_tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = two_tenants
    row = await _admin_one(
        services,
        "select r.rolcanlogin, r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolreplication,"
        " r.rolbypassrls, r.rolconnlimit, r.rolconfig, left(a.rolpassword, 14)"
        " from pg_roles r join pg_authid a on a.oid = r.oid where r.rolname = %s",
        role_name(a.name),
    )
    assert row == (
        True, False, False, False, False, False, 50,
        [f"search_path={schema_name(a.name)}"], "SCRAM-SHA-256$",
    )  # fmt: skip


async def test_a_wrong_password_does_not_log_in(two_tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = two_tenants
    url = urlsplit(a.storage.postgres_dsn)
    wrong = a.storage.postgres_dsn.replace(f":{url.password}@", ":not-the-password@")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        await _pg(wrong)


# --------------------------------------------------------------------------- Redis


async def test_a_tenant_uses_its_own_keys_and_scripts(two_tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = two_tenants
    client = _redis(a.storage.redis_url)
    try:
        assert await client.set(a.keys + "x", "1") is True
        assert await client.get(a.keys + "x") == "1"
        script = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
        assert await client.eval(script, 1, a.keys + "x", 41) == 42  # type: ignore[misc]
        incr = client.register_script(script)  # EVALSHA, and SCRIPT LOAD on a cache miss
        assert await incr(keys=[a.keys + "x"], args=[1]) == 43
        async with client.pipeline(transaction=True) as pipe:
            pipe.hset(a.keys + "h", "spent", "1.5")
            pipe.expire(a.keys + "h", 60)
            assert await pipe.execute() == [1, True]
    finally:
        await client.aclose()


async def test_a_tenant_cannot_reach_other_keys_or_the_server(
    two_tenants: tuple[Tenant, Tenant],
) -> None:
    a, b = two_tenants
    other = b.keys + "x"
    owner = _redis(b.storage.redis_url)
    client = _redis(a.storage.redis_url)
    try:
        await owner.set(other, "b-only")
        refused: list[tuple[object, ...]] = [
            ("GET", other),
            ("SET", other, "spoiled"),
            ("DEL", other),
            ("RENAME", other, a.keys + "stolen"),
            ("EVAL", "return redis.call('GET', KEYS[1])", 1, other),
            ("KEYS", "*"),
            ("SCAN", 0),
            ("RANDOMKEY",),
            ("DBSIZE",),
            ("SELECT", 1),
            ("FLUSHALL",),
            ("FLUSHDB",),
            ("CONFIG", "GET", "*"),
            ("INFO",),
            ("CLIENT", "LIST"),
            ("CLIENT", "TRACKING", "ON", "BCAST"),
            ("ACL", "LIST"),
            ("PUBLISH", "events", "x"),
            ("FUNCTION", "LIST"),
            ("SCRIPT", "FLUSH"),
            ("MONITOR",),
        ]
        for command in refused:
            with pytest.raises(rexc.NoPermissionError):
                await client.execute_command(*command)  # type: ignore[no-untyped-call]
        # A script may not reach keys it did not declare either.
        with pytest.raises(rexc.ResponseError, match="can't access"):
            await client.eval("return redis.call('GET', '" + other + "')", 0)  # type: ignore[misc]
        assert await owner.get(other) == "b-only"
    finally:
        await client.aclose()
        await owner.aclose()


async def test_a_tenant_spools_usage_in_its_own_stream_only(
    two_tenants: tuple[Tenant, Tenant],
) -> None:
    # The gateway's ledger keeps rows Postgres cannot take in `t:{<tenant>}:ledger:spool`: the
    # stream commands it uses work there, and on no other tenant's stream, scripts included.
    a, b = two_tenants
    mine, theirs = a.keys + "ledger:spool", b.keys + "ledger:spool"
    owner = _redis(b.storage.redis_url)
    client = _redis(a.storage.redis_url)
    try:
        await owner.xadd(theirs, {"r": '{"request_id": "b-only"}'})
        first = await client.xadd(mine, {"r": '{"request_id": "a-1"}'})
        append = client.register_script("return redis.call('XADD', KEYS[1], '*', 'r', ARGV[1])")
        await append(keys=[mine], args=['{"request_id": "a-2"}'])
        assert await client.xlen(mine) == 2
        assert [e[0] for e in await client.xrevrange(mine, "+", "-", count=1)] != [first]
        entries = await client.xrange(mine, "-", "+", count=10)
        assert [e[1]["r"] for e in entries] == ['{"request_id": "a-1"}', '{"request_id": "a-2"}']
        assert await client.xdel(mine, first) == 1
        await client.xadd(a.keys + "ledger:rejected", {"r": "{}"}, maxlen=10, approximate=True)
        refused: list[tuple[object, ...]] = [
            ("XADD", theirs, "*", "r", "{}"),
            ("XLEN", theirs),
            ("XRANGE", theirs, "-", "+"),
            ("XREVRANGE", theirs, "+", "-", "COUNT", 1),
            ("XDEL", theirs, "0-1"),
            ("XTRIM", theirs, "MAXLEN", 0),
            ("XREAD", "STREAMS", theirs, "0"),
            ("XINFO", "STREAM", theirs),
        ]
        for command in refused:
            with pytest.raises(rexc.NoPermissionError):
                await client.execute_command(*command)  # type: ignore[no-untyped-call]
        with pytest.raises(rexc.NoPermissionError):
            await append(keys=[theirs], args=["{}"])
        with pytest.raises(rexc.ResponseError, match="can't access"):
            await client.eval("return redis.call('XLEN', '" + theirs + "')", 0)  # type: ignore[misc]
        assert await owner.xlen(theirs) == 1
    finally:
        await client.aclose()
        await owner.aclose()


async def test_redis_refuses_unauthenticated_and_wrong_password_clients(
    two_tenants: tuple[Tenant, Tenant],
) -> None:
    a, _ = two_tenants
    url = urlsplit(a.storage.redis_url)
    anonymous = aioredis.Redis(
        host=url.hostname or "", port=url.port or 0, socket_timeout=5, retry=Retry(NoBackoff(), 0)
    )
    wrong = _redis(a.storage.redis_url.replace(f":{url.password}@", ":not-the-password@"))
    try:
        with pytest.raises(
            (rexc.AuthenticationError, rexc.ResponseError), match=r"(?i)noauth|authentication"
        ):
            await anonymous.get(a.keys + "x")
        with pytest.raises(rexc.AuthenticationError):
            await wrong.get(a.keys + "x")
    finally:
        await anonymous.aclose()
        await wrong.aclose()


# --------------------------------------------------------------------------- idempotence, drift


async def _fingerprint(services: Services, tenant: Tenant) -> tuple[object, ...]:
    row = await _admin_one(
        services,
        "select rolpassword from pg_authid where rolname = %s",
        role_name(tenant.name),
    )
    admin = _redis(services.redis_url)
    try:
        user = await admin.execute_command("ACL", "GETUSER", f"tgw:{tenant.name}")  # type: ignore[no-untyped-call]
    finally:
        await admin.aclose()
    return row, user


async def test_ensure_again_with_the_stored_password_changes_nothing(
    services: Services, provisioner: Provisioner, two_tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = two_tenants
    before, writes = await _fingerprint(services, a), provisioner.writes
    again = await Provisioner(services.postgres_dsn, services.redis_url).ensure(
        a.name, password_from(a.storage.postgres_dsn)
    )
    assert again == a.storage
    again = await provisioner.ensure(a.name, password_from(a.storage.redis_url))
    assert provisioner.writes == writes
    assert again == a.storage
    assert await _fingerprint(services, a) == before


async def test_ensure_repairs_drift_and_then_rests(
    services: Services, provisioner: Provisioner, two_tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = two_tenants
    password = password_from(a.storage.postgres_dsn)
    role = sql.Identifier(role_name(a.name))
    own, other = sql.Identifier(schema_name(a.name)), sql.Identifier(schema_name(b.name))
    async with await _pg(services.postgres_dsn) as conn:
        for statement in (
            sql.SQL("alter role {} password 'someone-else-chose-this'").format(role),
            sql.SQL("grant usage, create on schema {} to {}").format(other, role),
            sql.SQL("grant usage on schema {} to public").format(own),
            sql.SQL("alter role {} createdb connection limit -1").format(role),
            sql.SQL("grant create on database tenantgw to {}").format(role),
        ):
            await conn.execute(statement)
    admin = _redis(services.redis_url)
    try:
        await admin.execute_command("ACL", "SETUSER", f"tgw:{a.name}", "~*", "+@all", "&*")  # type: ignore[no-untyped-call]
    finally:
        await admin.aclose()

    writes = provisioner.writes
    assert await provisioner.ensure(a.name, password) == a.storage
    assert provisioner.writes > writes

    async with await _pg(a.storage.postgres_dsn) as conn:
        planted = sql.SQL("create table {}.planted (x int)")
        with pytest.raises(pgerr.InsufficientPrivilege):
            await conn.execute(planted.format(sql.Identifier(schema_name(b.name))))
    client = _redis(a.storage.redis_url)
    try:
        with pytest.raises(rexc.NoPermissionError):
            await client.get(b.keys + "x")
    finally:
        await client.aclose()
    writes = provisioner.writes
    await provisioner.ensure(a.name, password)
    assert provisioner.writes == writes


async def test_a_password_postgres_hashed_itself_counts_as_the_same(
    services: Services, provisioner: Provisioner, two_tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = two_tenants
    password = password_from(a.storage.postgres_dsn)
    async with await _pg(services.postgres_dsn) as conn:
        statement = sql.SQL("alter role {} password {}").format(
            sql.Identifier(role_name(a.name)), sql.Literal(password)
        )
        await conn.execute(statement)
    writes = provisioner.writes
    await provisioner.ensure(a.name, password)
    assert provisioner.writes == writes


async def test_ensure_without_a_password_rotates_it(
    provisioner: Provisioner, two_tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = two_tenants
    rotated = await provisioner.ensure(a.name)
    assert password_from(rotated.postgres_dsn) != password_from(a.storage.postgres_dsn)
    async with await _pg(rotated.postgres_dsn) as conn:
        await conn.execute("select 1")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        await _pg(a.storage.postgres_dsn)
    client = _redis(rotated.redis_url)
    try:
        assert await client.ping() is True  # type: ignore[misc]
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- removal


async def test_remove_leaves_no_role_schema_user_or_key(
    services: Services, provisioner: Provisioner
) -> None:
    name = _name("gone")
    storage = await provisioner.ensure(name)
    lingering = await _pg(storage.postgres_dsn)  # a gateway still connected
    await lingering.execute("create table ledger (x int)")
    client = _redis(storage.redis_url)
    keys = [f"{key_prefix(name)}{i}" for i in range(1234)]
    await client.mset(dict.fromkeys(keys, "1"))
    await client.aclose()

    await provisioner.remove(name)

    row = await _admin_one(
        services,
        "select exists (select 1 from pg_roles where rolname = %s),"
        " exists (select 1 from pg_namespace where nspname = %s)",
        role_name(name),
        schema_name(name),
    )
    assert row == (False, False)
    with pytest.raises(psycopg.OperationalError):
        await lingering.execute("select 1")
    await lingering.close()
    admin = _redis(services.redis_url)
    try:
        assert await admin.execute_command("ACL", "GETUSER", f"tgw:{name}") is None  # type: ignore[no-untyped-call]
        assert [k async for k in admin.scan_iter(match=f"{key_prefix(name)}*")] == []
    finally:
        await admin.aclose()
    writes = provisioner.writes
    await provisioner.remove(name)
    assert provisioner.writes == writes


async def test_tenants_provisioned_together_are_all_saved_to_the_acl_file(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """A cold start provisions many tenants at once, and one ACL SAVE may cover the users of
    several (those set while the save before it ran): however they are grouped, every user is
    in the ACL file when its ensure returns, and no save is made without a change."""
    provisioner = Provisioner(services.postgres_dsn, services.redis_url)
    names = [_name(f"burst{i}") for i in range(12)]
    admin = _redis(services.redis_url)
    try:
        aclfile = (await admin.config_get("aclfile"))["aclfile"]
        if not aclfile:
            pytest.skip("the shared Redis runs without an aclfile")
        caplog.set_level("INFO", logger="tenantgw.tenancy.provisioner")

        async def ensure_and_read(name: str) -> bool:
            await provisioner.ensure(name)
            text = await asyncio.to_thread(Path(aclfile).read_text)
            return f"user tgw:{name} " in text

        saved = await asyncio.gather(*(ensure_and_read(n) for n in names))
        assert all(saved), "an ensure returned before the ACL file held its user"
        saves = [r for r in caplog.records if r.getMessage().endswith("redis: ACL SAVE")]
        setusers = [r for r in caplog.records if "redis: ACL SETUSER" in r.getMessage()]
        assert len(setusers) == len(names)
        assert 1 <= len(saves) <= len(names)
    finally:
        await admin.aclose()
        for name in names:
            await provisioner.remove(name)
        await provisioner.close()


async def test_remove_keeping_data_locks_the_role_out_and_ensure_lets_it_back_in(
    services: Services, provisioner: Provisioner
) -> None:
    """deletionPolicy Retain: the ledger stays, its credentials stop working, a new Tenant of
    the same name logs in again (new password) and finds it."""
    name = _name("kept")
    storage = await provisioner.ensure(name)
    try:
        lingering = await _pg(storage.postgres_dsn)  # a gateway still connected
        await lingering.execute("create table ledger (x int)")
        await lingering.execute("insert into ledger values (42)")

        await provisioner.remove(name, keep_data=True)

        row = await _admin_one(
            services,
            "select (select rolcanlogin from pg_roles where rolname = %s),"
            " exists (select 1 from pg_namespace where nspname = %s)",
            role_name(name),
            schema_name(name),
        )
        assert row == (False, True)
        with pytest.raises(psycopg.OperationalError):
            await lingering.execute("select 1")  # its session was ended
        await lingering.close()
        with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
            await _pg(storage.postgres_dsn)
        admin = _redis(services.redis_url)
        try:
            assert await admin.execute_command("ACL", "GETUSER", f"tgw:{name}") is None  # type: ignore[no-untyped-call]
        finally:
            await admin.aclose()
        writes = provisioner.writes
        await provisioner.remove(name, keep_data=True)
        assert provisioner.writes == writes  # nothing left to lock

        again = await provisioner.ensure(name)
        assert password_from(again.postgres_dsn) != password_from(storage.postgres_dsn)
        async with await _pg(again.postgres_dsn) as conn:
            cur = await conn.execute("select x from ledger")
            assert await cur.fetchall() == [(42,)]
    finally:
        await provisioner.remove(name)


# --------------------------------------------------------------------------- admin errors


async def test_a_wrong_admin_password_says_which_variable(services: Services) -> None:
    pg = urlsplit(services.postgres_dsn)
    bad_dsn = services.postgres_dsn.replace(f":{pg.password}@", ":wrong@")
    with pytest.raises(StorageError, match=r"refused the admin login.*TENANTGW_POSTGRES_DSN"):
        await Provisioner(bad_dsn, services.redis_url).ensure(_name("x"))
    rd = urlsplit(services.redis_url)
    bad_url = services.redis_url.replace(f":{rd.password}@", ":wrong@")
    provisioner = Provisioner(services.postgres_dsn, bad_url)
    with pytest.raises(StorageError, match=r"refused the admin login.*TENANTGW_REDIS_URL"):
        await provisioner.remove(_name("x"))


async def test_an_unreachable_server_says_so(services: Services) -> None:
    provisioner = Provisioner(
        "postgresql://u:p@127.0.0.1:1/tenantgw", services.redis_url, connect_timeout=2
    )
    with pytest.raises(StorageError, match=r"could not reach PostgreSQL at 127\.0\.0\.1:1"):
        await provisioner.ensure(_name("x"))


# --------------------------------------------------------------------------- Redis without aclfile


@pytest.fixture
def redis_without_aclfile(tmp_path: Path) -> Iterator[str]:
    """A throwaway redis-server whose users live only in memory; its admin URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    password = secrets.token_hex(16)
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", password],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://default:{password}@127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_timeout=1)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            pytest.fail(f"redis-server on port {port} did not answer")
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_a_redis_without_aclfile_still_gets_users(
    services: Services, redis_without_aclfile: str, caplog: pytest.LogCaptureFixture
) -> None:
    provisioner = Provisioner(services.postgres_dsn, redis_without_aclfile)
    name = _name("noacl")
    try:
        storage = await provisioner.ensure(name)
        assert "has no aclfile" in caplog.text
        client = _redis(storage.redis_url)
        try:
            assert await client.set(f"{key_prefix(name)}x", "1") is True
        finally:
            await client.aclose()
    finally:
        await provisioner.remove(name)
