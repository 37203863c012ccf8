"""Provisioner: one tenant's PostgreSQL role and schema and Redis ACL user, idempotently."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis.asyncio as aioredis

from tenantgw.tenancy.audit import AuditAdmin
from tenantgw.tenancy.errors import StorageError
from tenantgw.tenancy.naming import (
    check_password,
    generate_password,
    tenant_postgres_dsn,
    tenant_redis_url,
    validate_tenant_name,
)
from tenantgw.tenancy.postgres import DEFAULT_MAX_CONNECTIONS, ENV_MAX_CONNECTIONS, PostgresAdmin
from tenantgw.tenancy.redis_acl import RedisAdmin

log = logging.getLogger(__name__)

ENV_POSTGRES_DSN = "TENANTGW_POSTGRES_DSN"
ENV_REDIS_URL = "TENANTGW_REDIS_URL"
ENV_TENANT_POSTGRES_HOST = "TENANTGW_TENANT_POSTGRES_HOST"
ENV_TENANT_POSTGRES_PORT = "TENANTGW_TENANT_POSTGRES_PORT"
ENV_TENANT_REDIS_HOST = "TENANTGW_TENANT_REDIS_HOST"
ENV_TENANT_REDIS_PORT = "TENANTGW_TENANT_REDIS_PORT"
DEFAULT_CONNECTION_LIMIT = 50
DEFAULT_CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class TenantStorage:
    """What a tenant's gateway needs to reach its storage; both carry the tenant's password."""

    postgres_dsn: str = field(repr=False)
    redis_url: str = field(repr=False)


def _port(value: str | int | None, what: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise StorageError(f"{what} must be a port number, not {value!r}")
    return port


def _count(value: str | None, what: str) -> int | None:
    if not value:
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise StorageError(f"{what} must be a whole number of at least 1, not {value!r}")
    return count


class Provisioner:
    """Gives each tenant its own PostgreSQL role and schema and Redis ACL user.

    Holds the admin credentials, which only the operator has; a tenant's gateway gets only the
    TenantStorage that `ensure()` returns. PostgreSQL connections come from a pool of at most
    `max_connections` (TENANTGW_POSTGRES_MAX_CONNECTIONS); Redis calls share one admin client.
    """

    def __init__(
        self,
        admin_postgres_dsn: str,
        admin_redis_url: str,
        *,
        postgres_host_override: str | None = None,
        postgres_port_override: int | None = None,
        redis_host_override: str | None = None,
        redis_port_override: int | None = None,
        connection_limit: int = DEFAULT_CONNECTION_LIMIT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if connection_limit < 1:
            raise StorageError(f"connection_limit must be at least 1, not {connection_limit}")
        self._writes = 0
        self._turns: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None
        self._postgres = PostgresAdmin(
            admin_postgres_dsn,
            connect_timeout=connect_timeout,
            connection_limit=connection_limit,
            note=self._note,
            max_connections=max_connections,
        )
        self.audit = AuditAdmin(self._postgres.pool.connection, self._note)
        """The tenants' audit trails (schema, checkpoints, retention, erasure)."""
        self._redis = RedisAdmin(admin_redis_url, connect_timeout=connect_timeout, note=self._note)
        self._pg_host = postgres_host_override or self._postgres.host
        self._pg_port = _port(postgres_port_override, "the PostgreSQL port") or self._postgres.port
        self._redis_host = redis_host_override or self._redis.host
        self._redis_port = _port(redis_port_override, "the Redis port") or self._redis.port
        if not self._pg_host or self._pg_host.startswith("/"):
            raise StorageError(
                f"{ENV_POSTGRES_DSN} connects through a Unix socket, which gateways cannot use: "
                f"set {ENV_TENANT_POSTGRES_HOST} to the host name gateways reach PostgreSQL by"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Provisioner | None:
        """From TENANTGW_* variables; None when neither admin variable is set (no storage)."""
        env = os.environ if environ is None else environ
        dsn, url = env.get(ENV_POSTGRES_DSN, ""), env.get(ENV_REDIS_URL, "")
        if not dsn and not url:
            return None
        if not dsn or not url:
            missing = ENV_REDIS_URL if dsn else ENV_POSTGRES_DSN
            present = ENV_POSTGRES_DSN if dsn else ENV_REDIS_URL
            raise StorageError(f"{present} is set but {missing} is not: set both or neither")
        return cls(
            dsn,
            url,
            postgres_host_override=env.get(ENV_TENANT_POSTGRES_HOST) or None,
            postgres_port_override=_port(
                env.get(ENV_TENANT_POSTGRES_PORT), ENV_TENANT_POSTGRES_PORT
            ),
            redis_host_override=env.get(ENV_TENANT_REDIS_HOST) or None,
            redis_port_override=_port(env.get(ENV_TENANT_REDIS_PORT), ENV_TENANT_REDIS_PORT),
            max_connections=_count(env.get(ENV_MAX_CONNECTIONS), ENV_MAX_CONNECTIONS)
            or DEFAULT_MAX_CONNECTIONS,
        )

    @property
    def writes(self) -> int:
        """How many changing statements (SQL DDL/DCL, ACL SETUSER/SAVE/DELUSER, UNLINK) ran."""
        return self._writes

    def _note(self, tenant_name: str, change: str) -> None:
        self._writes += 1
        log.info("tenant %s: %s", tenant_name, change)

    def storage(self, tenant_name: str, password: str) -> TenantStorage:
        """The tenant's DSN and URL for a password, without touching any server."""
        validate_tenant_name(tenant_name)
        check_password(password, tenant_name)
        return TenantStorage(
            postgres_dsn=tenant_postgres_dsn(
                tenant_name,
                password,
                self._pg_host,
                self._pg_port,
                self._postgres.dbname,
                sslmode=self._postgres.sslmode,
                tls_params=self._postgres.tls_params,
            ),
            redis_url=tenant_redis_url(
                tenant_name,
                password,
                self._redis_host,
                self._redis_port,
                self._redis.db,
                scheme=self._redis.scheme,
                tls_params=self._redis.tls_params,
            ),
        )

    def tls_files(self) -> dict[str, str]:
        """The files the admin DSN and URL check the servers with (`sslrootcert`, `sslcrl`,
        `ssl_ca_certs`; not libpq's `sslrootcert=system`), by parameter -> their text, read now
        (a rotated CA is read at the next reconcile). The tenants' gateways mount them."""
        files: dict[str, str] = {}
        wanted = [
            (ENV_POSTGRES_DSN, self._postgres.tls_params, ("sslrootcert", "sslcrl")),
            (ENV_REDIS_URL, self._redis.tls_params, ("ssl_ca_certs",)),
        ]
        for env, params, names in wanted:
            for name in names:
                path = params.get(name)
                if not path or (name == "sslrootcert" and path == "system"):
                    continue
                try:
                    files[name] = Path(path).read_text()
                except (OSError, UnicodeDecodeError) as exc:
                    raise StorageError(
                        f"{env}: {name}={path} cannot be read for the gateways to mount: {exc}"
                    ) from None
        return files

    async def ensure(self, tenant_name: str, password: str | None = None) -> TenantStorage:
        """Create the tenant's storage or repair it; only reads when it is already right.

        Pass the password stored from the last call so that resyncs keep it; None generates
        one (a new tenant, or a lost Secret: the role and user then get the new password).
        """
        validate_tenant_name(tenant_name)
        password = generate_password() if password is None else password
        storage = self.storage(tenant_name, password)
        async with self._turn():
            await self._postgres.ensure(tenant_name, password)
            try:
                await self.audit.ensure(tenant_name)
            except psycopg.Error as err:
                raise StorageError(
                    f"PostgreSQL at {self._postgres.endpoint} failed to provision the audit "
                    f"trail of tenant {tenant_name}: {err}"
                ) from err
            await self._redis.ensure(tenant_name, password)
        return storage

    def _turn(self) -> asyncio.Semaphore:
        """A turn among the tenants being provisioned: at most as many as the pool has
        connections, the others wait in arrival order.

        A thousand tenants reconciled at once would otherwise move through the steps in
        lockstep (every role, then every audit trail, then every Redis user), and none would
        get its gateway until all had storage; one tenant at a time per turn, each finishes
        and goes on to be applied while the next is provisioned.
        """
        loop = asyncio.get_running_loop()
        if self._turns is None or self._turns[0] is not loop:
            self._turns = (loop, asyncio.Semaphore(self._postgres.pool.max_size))
        return self._turns[1]

    async def read_counters(self, keys: list[str]) -> list[int]:
        """Integer counters under tenants' key prefixes (budget spend), 0 when missing."""
        return await self._redis.read_counters(keys)

    async def read_session_spend(
        self, keys: list[tuple[str, int]]
    ) -> list[tuple[str | None, int, int, int]]:
        """Session policies' spend sets: (top session, its micro-USD, sessions, over limit)."""
        return await self._redis.read_session_spend(keys)

    async def read_text(self, key: str) -> str | None:
        """A string under a tenant's key prefix (a gateway's marker), None when missing."""
        return await self._redis.read_text(key)

    def redis(self) -> AbstractAsyncContextManager[aioredis.Redis]:
        """A connection as the admin Redis user, closed on exit (the webhook outbox's)."""
        return self._redis.connect()

    async def close(self) -> None:
        """Close the idle PostgreSQL connections and the Redis client (at shutdown)."""
        await self._postgres.close()
        await self._redis.close()

    async def remove(self, tenant_name: str, *, keep_data: bool = False) -> None:
        """Drop the tenant's schema (with its data), role, ACL user and keys. Idempotent.

        `keep_data` (deletionPolicy Retain) keeps the schema and its role, locked out (NOLOGIN,
        sessions ended): the ledger and audit rows stay for the platform to keep or drop.
        """
        validate_tenant_name(tenant_name)
        await self._postgres.remove(tenant_name, keep_data=keep_data)
        if not keep_data:
            await self.audit.remove(tenant_name)
        await self._redis.remove(tenant_name)
