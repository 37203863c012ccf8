"""Storage over TLS: the operator's provisioning and a gateway's ledger and Redis clients use TLS
when the DSN and URL ask for it, and refuse a server whose certificate the CA does not vouch for.

A PostgreSQL and a redis-server of this test's own (e2e/throwaway_tls_stores.py, never the
shared ones) speak TLS only, with a certificate signed by a CA made here. The operator's admin
DSN says `sslmode=verify-full&sslrootcert=<ca>` and its admin URL `rediss://...?ssl_ca_certs=
<ca>`; the tenant's DSN and URL it hands the gateway carry the same checks, and the gateway's
own clients (the Ledger's psycopg connection, the runtime's Redis client) land rows over TLS.
Trusting another CA, every client refuses with the verification error in its log or exception,
and nothing falls back to plaintext (the servers accept none).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
import redis.exceptions as rexc
from psycopg import sql
from tests.integration.test_gateway_ledger import usage

from e2e.throwaway_tls_stores import TlsPostgres, TlsRedis, tls_postgres, tls_redis
from e2e.tls_certs import CertificateAuthority
from tenantgw.gateway.ledger import Ledger
from tenantgw.gateway.runtime import connect_redis
from tenantgw.tenancy import Provisioner
from tenantgw.tenancy.errors import StorageError
from tenantgw.tenancy.naming import role_name

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Stores:
    pg: TlsPostgres
    redis: TlsRedis
    ca: Path
    rogue_ca: Path


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    workdir = tmp_path_factory.mktemp("storage-tls")
    authority = CertificateAuthority(workdir / "ca")
    rogue = CertificateAuthority(workdir / "rogue", "not the platform's CA")
    server = authority.issue("store", ["localhost", "127.0.0.1"])
    with tls_postgres(server) as pg, tls_redis(server, workdir / "redis") as rd:
        yield Stores(pg, rd, authority.cert_path, rogue.cert_path)


def test_the_servers_take_no_plaintext(stores: Stores) -> None:
    """The premise: nothing can fall back to plaintext here, so a row that lands came over TLS."""
    plain = stores.pg.dsn(stores.ca, sslmode="disable")
    with pytest.raises(psycopg.OperationalError, match=r"no encryption|SSL off|reject"):
        psycopg.connect(plain, connect_timeout=5).close()


async def test_provisioned_tenant_storage_carries_the_checks_and_lands_rows_over_tls(
    stores: Stores, tmp_path: Path
) -> None:
    tenant = "tls-" + secrets.token_hex(3)
    provisioner = Provisioner(stores.pg.dsn(stores.ca), stores.redis.url(stores.ca))
    try:
        storage = await provisioner.ensure(tenant)
        dsn_query = parse_qs(urlsplit(storage.postgres_dsn).query)
        assert dsn_query["sslmode"] == ["verify-full"]
        assert dsn_query["sslrootcert"] == [str(stores.ca)]
        url = urlsplit(storage.redis_url)
        assert url.scheme == "rediss"
        assert parse_qs(url.query)["ssl_ca_certs"] == [str(stores.ca)]

        # The gateway's own clients, built exactly as the runtime builds them.
        redis = connect_redis(storage.redis_url)
        assert await redis.ping()  # type: ignore[misc]
        ledger = Ledger(storage.postgres_dsn, tmp_path / "spool", redis=redis, tenant=tenant)
        await ledger.start()
        for n in range(3):
            ledger.record(usage(n, prefix=tenant))
        await ledger.drain()
        with psycopg.connect(stores.pg.dsn(stores.ca), autocommit=True) as admin:
            ssl_sessions = admin.execute(
                "SELECT bool_and(s.ssl), count(*) FROM pg_stat_ssl s "
                "JOIN pg_stat_activity a USING (pid) WHERE a.usename = %s",
                [role_name(tenant)],
            ).fetchone()
            table = sql.Identifier(f"t_{tenant.replace('-', '_')}", "usage")
            rows = admin.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        await ledger.stop()
        await redis.aclose()
        assert ssl_sessions is not None
        assert ssl_sessions[1] >= 1, "the ledger holds no connection as the tenant role"
        assert ssl_sessions[0] is True, "a ledger connection is not encrypted"
        assert rows is not None
        assert rows[0] == 3
    finally:
        await provisioner.remove(tenant)
        await provisioner.close()


async def test_a_server_certificate_the_ca_does_not_vouch_for_is_refused(
    stores: Stores, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """verify-full with another CA: the operator, the ledger and Redis all refuse, loudly."""
    provisioner = Provisioner(stores.pg.dsn(stores.rogue_ca), stores.redis.url(stores.rogue_ca))
    try:
        with pytest.raises(StorageError, match="certificate verify failed"):
            await provisioner.ensure("tls-" + secrets.token_hex(3))
    finally:
        await provisioner.close()

    redis = connect_redis(stores.redis.url(stores.rogue_ca))
    with pytest.raises(rexc.ConnectionError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify"):
        await redis.ping()  # type: ignore[misc]
    await redis.aclose()

    caplog.set_level(logging.WARNING)
    ledger = Ledger(stores.pg.dsn(stores.rogue_ca), tmp_path / "spool", connect_timeout=3)
    await ledger.start()
    ledger.record(usage(0, prefix="tls-rogue"))
    await ledger.stop()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "certificate verify failed" in logged, logged
    assert any((tmp_path / "spool").iterdir()), "the refused row was not kept in the spool"
