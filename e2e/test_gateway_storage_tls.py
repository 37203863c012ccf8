"""The gateway image, run from exactly what the operator renders, reaches TLS-only storage.

The operator's admin DSN says `sslmode=verify-full&sslrootcert=<ca>` and its admin URL
`rediss://...?ssl_ca_certs=<ca>`, files on the operator's own filesystem. The gateway image has
no such files: the operator puts their text into Secret `gateway`, the Deployment mounts them
beside keys.json, and the tenant's DSN and URL name the mounted files (render.storage_tls). A
PostgreSQL and a redis-server of this test's own speak TLS only (plaintext refused), with a
certificate of a CA made here; the gateway container (read-only root filesystem, the pod's
mounts only) serves a request whose ledger row lands over an encrypted session of the tenant's
role, and whose rate-limit counters land in the TLS Redis. (A CA that does not vouch for the
servers is refused by every client: tests/integration/test_storage_tls.py.)
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import psycopg
import pytest
import redis
from psycopg import sql

from e2e.containers import ImageError, built_images
from e2e.gateway_launch import launch_gateway_container
from e2e.helpers import eventually
from e2e.provider_sim import start_simulator
from e2e.rendered_gateway import alice_inputs, materialize
from e2e.throwaway_tls_stores import TlsPostgres, TlsRedis, tls_postgres, tls_redis
from e2e.tls_certs import CertificateAuthority
from tenantgw.api import ModelAlias, Tenant
from tenantgw.render import StorageEndpoints, render_tenant
from tenantgw.render.names import SECRET_MOUNT
from tenantgw.tenancy import Provisioner
from tenantgw.tenancy.naming import role_name

pytestmark = pytest.mark.e2e

MODEL = "claude-sonnet-4-5"
PROVIDER_KEY = "sk-ant-sim-provider-" + secrets.token_hex(6)


@dataclass(frozen=True)
class Stores:
    pg: TlsPostgres
    redis: TlsRedis
    ca: Path


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    workdir = tmp_path_factory.mktemp("gateway-storage-tls")
    authority = CertificateAuthority(workdir / "ca")
    server = authority.issue("store", ["localhost", "127.0.0.1"])
    with tls_postgres(server) as pg, tls_redis(server, workdir / "redis") as rd:
        yield Stores(pg, rd, authority.cert_path)


@pytest.fixture(scope="module")
def gateway_image() -> str:
    try:
        return built_images()["gateway"].id
    except ImageError as exc:
        pytest.fail(str(exc), pytrace=False)


def tenant_objects(
    name: str, sim_url: str, storage: StorageEndpoints, key: str
) -> list[dict[str, object]]:
    tenant = Tenant.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": name, "uid": "00000000-0000-4000-8000-0000000a1402"},
            "spec": {
                "providers": [
                    {
                        "name": "anthropic",
                        "type": "anthropic",
                        "apiBase": sim_url,
                        "credentialsSecretRef": {"name": "anthropic", "key": "apiKey"},
                    }
                ],
                "catalog": [{"provider": "anthropic", "model": MODEL, "costTier": "high"}],
                "keys": [{"name": "alice", "rpm": 100}],
                "routing": {"defaultAlias": "claude"},
                "gateway": {"replicas": 1},
            },
        }
    )
    alias = ModelAlias.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "ModelAlias",
            "metadata": {"name": "claude", "namespace": f"tenant-{name}"},
            "spec": {"aliases": [MODEL], "targets": [{"provider": "anthropic", "model": MODEL}]},
        }
    )
    return render_tenant(alice_inputs(tenant, [alias], storage, key))


async def test_the_gateway_image_reaches_tls_storage_with_the_mounted_ca(
    stores: Stores, gateway_image: str, tmp_path: Path
) -> None:
    tenant = "stls-" + secrets.token_hex(3)
    admin_dsn, admin_url = stores.pg.dsn(stores.ca), stores.redis.url(stores.ca)
    _, sim = start_simulator(api_key=PROVIDER_KEY)
    provisioner = Provisioner(admin_dsn, admin_url)
    key = "sk-tgw-" + secrets.token_hex(20)
    try:
        storage = await provisioner.ensure(tenant)
        tls_files = provisioner.tls_files()
        assert tls_files == {
            "sslrootcert": stores.ca.read_text(),
            "ssl_ca_certs": stores.ca.read_text(),
        }
        endpoints = StorageEndpoints(storage.postgres_dsn, storage.redis_url, tls_files)
        objects = tenant_objects(tenant, sim.root_url, endpoints, key)
        files = materialize(objects, {"anthropic": {"apiKey": PROVIDER_KEY}}, tmp_path / "pod")
        # What the pod gets names the mounted files, never the operator's own path.
        dsn, url = files.pod_env["TENANTGW_POSTGRES_DSN"], files.pod_env["TENANTGW_REDIS_URL"]
        assert f"sslrootcert={SECRET_MOUNT}/postgres-ca.crt" in dsn
        assert "sslmode=verify-full" in dsn
        assert url.startswith("rediss://")
        assert f"ssl_ca_certs={SECRET_MOUNT}/redis-ca.crt" in url
        assert str(stores.ca) not in dsn + url
        mounted = files.mounts[SECRET_MOUNT]
        assert (mounted / "postgres-ca.crt").read_text() == stores.ca.read_text()
        assert (mounted / "redis-ca.crt").read_text() == stores.ca.read_text()

        with launch_gateway_container(
            gateway_image, files.workdir, files.pod, files.mounts, files.pod_env
        ) as gw:
            client = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=60)
            reply = client.messages.create(
                model=MODEL, max_tokens=32, messages=[{"role": "user", "content": "hello"}]
            )
            assert reply.content

            def landed() -> tuple[bool, int] | None:
                with psycopg.connect(admin_dsn, autocommit=True) as admin:
                    table = sql.Identifier(f"t_{tenant.replace('-', '_')}", "usage")
                    count = admin.execute(sql.SQL("SELECT count(*) FROM {}").format(table))
                    rows = count.fetchone()
                    ssl = admin.execute(
                        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a "
                        "USING (pid) WHERE a.usename = %s",
                        [role_name(tenant)],
                    ).fetchone()
                if rows and rows[0] >= 1 and ssl and ssl[0] is not None:
                    return bool(ssl[0]), int(rows[0])
                return None

            encrypted, rows = eventually(landed, 60, "the ledger row over TLS")
            assert encrypted, "a session of the tenant's role is not encrypted"
            assert rows == 1
            admin_redis = redis.Redis.from_url(admin_url)
            try:
                tenant_keys = list(admin_redis.scan_iter(match=f"t:{{{tenant}}}:*"))
            finally:
                admin_redis.close()
            assert tenant_keys, "the gateway wrote no counter into the TLS Redis"
    finally:
        sim.stop()
        try:
            await provisioner.remove(tenant)
        finally:
            await provisioner.close()
