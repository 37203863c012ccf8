"""The operator's admin connection to PostgreSQL: ensure and remove a tenant's role and schema.

Reading (pg_catalog) and planning (pg_plan) are separate so that an idle resync costs a few
catalog reads and no statement that changes anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tenantgw.tenancy.errors import StorageError
from tenantgw.tenancy.naming import POSTGRES_TLS_PARAMS, role_name, schema_name
from tenantgw.tenancy.pg_catalog import AdminState, Conn, one, read_state
from tenantgw.tenancy.pg_plan import PgState, Step, plan_ensure, plan_remove
from tenantgw.tenancy.pg_pool import ConnectionPool

ENV_MAX_CONNECTIONS = "TENANTGW_POSTGRES_MAX_CONNECTIONS"
DEFAULT_MAX_CONNECTIONS = 4

# Called before each change with (tenant, description): counts and logs writes.
Note = Callable[[str, str], None]
# Session limits of the admin connection: DDL waits behind long transactions at most this long.
SESSION_OPTIONS = "-c lock_timeout=10000 -c statement_timeout=60000"
# The provisioning transaction's commit does not wait for the WAL flush (see `_run`).
NO_WAL_FLUSH = sql.SQL("SET LOCAL synchronous_commit TO off")


def _explain(err: psycopg.Error) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    detail = err.diag.message_detail
    return f"{text} ({detail})" if detail else text


class PostgresAdmin:
    """Provisions tenant roles and schemas with the operator's admin DSN."""

    def __init__(
        self,
        dsn: str,
        *,
        connect_timeout: float,
        connection_limit: int,
        note: Note,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as err:
            raise StorageError(f"TENANTGW_POSTGRES_DSN is not a valid DSN: {err}") from None
        self.host = str(params.get("host") or "")
        self.port = int(str(params.get("port") or 5432).split(",")[0])
        self.dbname = str(params.get("dbname") or "")
        self.sslmode = str(params["sslmode"]) if params.get("sslmode") else None
        self.tls_params = {k: str(params[k]) for k in POSTGRES_TLS_PARAMS if params.get(k)}
        if not self.dbname:
            raise StorageError("TENANTGW_POSTGRES_DSN names no database: end it with /tenantgw")
        self.endpoint = f"{self.host or 'local socket'}:{self.port}"
        options = str(params.get("options") or "")
        self._dsn = dsn
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "options": f"{options} {SESSION_OPTIONS}".strip(),
            "application_name": "tenantgw-operator",
        }
        if "connect_timeout" not in params:
            self._kwargs["connect_timeout"] = max(1, round(connect_timeout))
        self._connection_limit = connection_limit
        self._note = note
        self._lock: asyncio.Lock | None = None
        # What the last catalog read said about the admin: the next reads go in one round trip.
        self._admin: AdminState | None = None
        self.pool = ConnectionPool(
            self._open,
            max_size=max_connections,
            endpoint=self.endpoint,
            setting=ENV_MAX_CONNECTIONS,
            wait_seconds=max(60.0, connect_timeout),
        )

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[Conn]:
        async with self.pool.connection() as conn:
            yield conn

    async def _open(self) -> Conn:
        try:
            return await psycopg.AsyncConnection.connect(self._dsn, **self._kwargs)
        except psycopg.OperationalError as err:
            reason = _explain(err)
            if any(word in reason for word in ("authentication", "pg_hba", "does not exist")):
                raise StorageError(
                    f"PostgreSQL at {self.endpoint} refused the admin login ({reason}): "
                    "check TENANTGW_POSTGRES_DSN"
                ) from err
            raise StorageError(
                f"could not reach PostgreSQL at {self.endpoint} ({reason}): check that it runs "
                "and that TENANTGW_POSTGRES_DSN points at it"
            ) from err

    async def _password_works(self, tenant_name: str, password: str) -> bool:
        """Log in as the tenant role: how an admin that cannot read verifiers checks them.

        Only a login that works confirms the password; when it fails for any reason (a wrong
        password, the role locked out, no pg_hba entry from here, its connection limit
        reached) setting the password again is the safe answer.
        """
        async with self.pool.slot():
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._dsn,
                    user=role_name(tenant_name),
                    password=password,
                    connect_timeout=self._kwargs.get("connect_timeout", 5),
                    application_name="tenantgw-operator",
                )
            except psycopg.OperationalError:
                return False
            await conn.close()
        return True

    async def _apply(self, conn: Conn, tenant_name: str, steps: list[Step]) -> None:
        """Run the steps in one transaction: a failure leaves nothing half-done.

        Tenants' DDL touches shared catalog rows (the database's ACL, schema public), and
        PostgreSQL refuses two concurrent updates of one such row ("tuple concurrently
        updated"): one transaction at a time per operator, and a retry for other writers.
        """
        if not steps:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        for attempt in range(3):
            try:
                async with self._lock:
                    await self._run(conn, tenant_name, steps)
                return
            except StorageError as err:
                if "concurrently" not in str(err) or attempt == 2:
                    raise
                await asyncio.sleep(0.1 * (attempt + 1))

    async def _run(self, conn: Conn, tenant_name: str, steps: list[Step]) -> None:
        """Send the steps in one round trip; on failure, again one by one to name the step.

        Several statements in one simple query (no parameters: every value is a literal) run
        in one implicit transaction, all or nothing. `synchronous_commit` is off for it: the
        commit does not wait for the WAL flush. Safe because provisioning is idempotent and
        `ensure()` reads the catalogs again at every reconcile: a transaction lost in a crash
        of the server is planned and run again.
        """
        for description, _ in steps:
            self._note(tenant_name, f"postgres: {description}")
        batch = sql.SQL("; ").join([NO_WAL_FLUSH, *(statement for _, statement in steps)])
        try:
            await conn.execute(batch)
        except psycopg.Error as err:
            if conn.closed or isinstance(err, psycopg.OperationalError):
                # The connection is gone, or a lock or statement timeout: running the steps
                # again would wait as long again. Which step it was is not known.
                what = steps[0][0]
                if len(steps) > 1:
                    what = f"{what} (and {len(steps) - 1} more steps in one transaction)"
                raise self._failure(tenant_name, what, err) from err
        else:
            return
        # Nothing of the batch stayed; the same steps one at a time tell which one fails (or
        # all go through this time, e.g. after a concurrent update of a shared row).
        failing = steps[0][0]
        try:
            async with conn.transaction():
                await conn.execute(NO_WAL_FLUSH)
                for description, statement in steps:
                    failing = description
                    await conn.execute(statement)
        except psycopg.Error as err:
            raise self._failure(tenant_name, failing, err) from err

    def _failure(self, tenant_name: str, description: str, err: psycopg.Error) -> StorageError:
        if isinstance(err, psycopg.errors.InsufficientPrivilege):
            return StorageError(
                f"PostgreSQL at {self.endpoint} did not let the admin role {description} for "
                f"tenant {tenant_name} ({_explain(err)}): it needs SUPERUSER, or CREATEROLE, "
                "ownership of the database and ADMIN OPTION on the tenant roles it did not "
                "create (docs/operations.md, Storage)"
            )
        return StorageError(
            f"PostgreSQL at {self.endpoint} failed to {description} for tenant "
            f"{tenant_name}: {_explain(err)}"
        )

    async def ensure(self, tenant_name: str, password: str) -> None:
        """Create what is missing and fix what drifted; only reads when all is in place."""
        async with self._connect() as conn:
            state = await self._read_state(conn, tenant_name)
        # The login check takes a connection slot of its own: never while holding one, or a
        # full pool of ensures would wait for each other.
        state = await self._check_password(state, tenant_name, password)
        steps = plan_ensure(state, tenant_name, password, connection_limit=self._connection_limit)
        if steps:
            async with self._connect() as conn:
                await self._apply(conn, tenant_name, steps)

    async def _read_state(self, conn: Conn, tenant_name: str) -> PgState:
        for attempt in range(2):
            known = self._admin
            try:
                state, self._admin = await read_state(
                    conn,
                    tenant_name,
                    connection_limit=self._connection_limit,
                    endpoint=self.endpoint,
                    admin=known,
                )
                return state
            except psycopg.Error as err:
                # Read one by one next: the admin may have changed (no longer a superuser:
                # pg_authid refused), and then the reads in one round trip fail together.
                self._admin = None
                if known is None or attempt == 1 or isinstance(err, psycopg.OperationalError):
                    raise StorageError(
                        f"PostgreSQL at {self.endpoint} failed to read the catalogs for tenant "
                        f"{tenant_name}: {_explain(err)}"
                    ) from err
        raise AssertionError("unreachable")

    async def _check_password(self, state: PgState, tenant_name: str, password: str) -> PgState:
        role = state.role
        if state.admin_superuser or role is None:
            return state  # the verifier is in the state, or there is no role yet
        works = await self._password_works(tenant_name, password)
        return replace(state, role=replace(role, password_ok=works))

    async def _read(self, conn: Conn, tenant_name: str, query: str, params: Any) -> Any:
        try:
            return await one(conn, query, params)
        except psycopg.Error as err:
            raise StorageError(
                f"PostgreSQL at {self.endpoint} failed to read the catalogs for tenant "
                f"{tenant_name}: {_explain(err)}"
            ) from err

    async def remove(self, tenant_name: str, *, keep_data: bool = False) -> None:
        """Drop the schema with everything in it, then the role; nothing to do is no error.

        `keep_data`: only lock the role out and end its sessions; schema and role stay, and
        `ensure()` gives the role its login back when a Tenant of that name is created again.
        """
        role, schema = role_name(tenant_name), schema_name(tenant_name)
        r = sql.Identifier(role)
        async with self._connect() as conn:
            can_login, has_schema, pids = await self._read(
                conn,
                tenant_name,
                "SELECT (SELECT rolcanlogin FROM pg_roles WHERE rolname = %(role)s),"
                " EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %(schema)s),"
                " ARRAY(SELECT pid FROM pg_stat_activity WHERE usename = %(role)s)",
                {"role": role, "schema": schema},
            )
            # Lock the role out and end its sessions first, each committed on its own, so that
            # no gateway reconnects in between or holds locks that the drops would wait for.
            if can_login:
                lock_out = sql.SQL("ALTER ROLE {} NOLOGIN").format(r)
                await self._apply(conn, tenant_name, [(f"lock {role} out", lock_out)])
            if pids:
                end = sql.SQL(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {}"
                ).format(sql.Literal(role))
                await self._apply(conn, tenant_name, [(f"end {len(pids)} sessions of {role}", end)])
            if keep_data:
                return
            steps = plan_remove(tenant_name, has_schema=has_schema, has_role=can_login is not None)
            await self._apply(conn, tenant_name, steps)
