"""The admin side of a tenant's audit trail: schema and grants, checkpoints, retention, erasure.

The trail lives in schema `ta_<tenant>`, owned by the operator's admin role, never by the
tenant role (see `tenantgw.api.audit_trail` for why and for the chain). `ensure()` only reads
when everything is in place; `checkpoint()` writes only when the chain head moved;
`prune()` only when a record is older than the retention; so an idle tenant costs reads only.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from tenantgw.api.audit_trail import (
    CHAIN_COLUMNS,
    CHECKPOINTS,
    DATA_KEYS,
    RECORDS,
    WRITE_LOCK,
    ChainRow,
    Checkpoint,
    Entry,
    append,
    audit_schema,
    checkpoint_message,
    key_id,
    parse_rows,
    public_key_of,
    sign,
)
from tenantgw.tenancy.naming import role_name, validate_tenant_name

log = logging.getLogger(__name__)

Conn = Any
Connect = Callable[[], AbstractAsyncContextManager[Conn]]
MARKER = "tenantgw audit trail v1"
"""Comment on the records table: the layout below is in place (bump to migrate)."""


def _ddl(tenant: str) -> str:
    s, r = audit_schema(tenant), role_name(tenant)
    # Identifiers from a validated DNS label ([a-z0-9_] after the prefix): no quoting needed.
    return f"""
CREATE SCHEMA IF NOT EXISTS "{s}";
CREATE TABLE IF NOT EXISTS "{s}".{RECORDS} (
    seq         bigint PRIMARY KEY CHECK (seq > 0),
    event_id    text NOT NULL UNIQUE,
    ts          timestamptz NOT NULL,
    kind        text NOT NULL,
    key_name    text,
    content     text NOT NULL,
    body        bytea,
    body_key_id text,
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS records_ts_idx ON "{s}".{RECORDS} (ts);
CREATE TABLE IF NOT EXISTS "{s}".{DATA_KEYS} (
    key_id     text PRIMARY KEY,
    key_name   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    dek        bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS "{s}".{CHECKPOINTS} (
    kind      text NOT NULL CHECK (kind IN ('checkpoint', 'anchor')),
    seq       bigint NOT NULL,
    hash      bytea NOT NULL,
    ts        timestamptz NOT NULL,
    key_id    text NOT NULL,
    signature bytea NOT NULL,
    PRIMARY KEY (kind, seq)
);
CREATE TABLE IF NOT EXISTS "{s}".{WRITE_LOCK} (
    id      integer PRIMARY KEY CHECK (id = 1),
    touched timestamptz
);
INSERT INTO "{s}".{WRITE_LOCK} VALUES (1, now()) ON CONFLICT DO NOTHING;
REVOKE ALL ON SCHEMA "{s}" FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA "{s}" FROM PUBLIC, "{r}";
GRANT USAGE ON SCHEMA "{s}" TO "{r}";
GRANT SELECT, INSERT ON "{s}".{RECORDS} TO "{r}";
GRANT INSERT ON "{s}".{DATA_KEYS} TO "{r}";
GRANT SELECT (key_id, key_name, created_at) ON "{s}".{DATA_KEYS} TO "{r}";
GRANT SELECT ON "{s}".{CHECKPOINTS} TO "{r}";
GRANT SELECT, UPDATE (touched) ON "{s}".{WRITE_LOCK} TO "{r}";
COMMENT ON TABLE "{s}".{RECORDS} IS '{MARKER}';
"""


# Everything ensure() puts in place, read in one statement. The tenant role must hold exactly
# the grants above: no UPDATE/DELETE/TRUNCATE on records, no dek, no write on checkpoints.
_STATE_SQL = """
SELECT to_regclass(%(records)s) IS NOT NULL
   AND to_regclass(%(keys)s) IS NOT NULL
   AND to_regclass(%(checkpoints)s) IS NOT NULL
   AND to_regclass(%(lock)s) IS NOT NULL
   AND obj_description(to_regclass(%(records)s), 'pg_class') = %(marker)s
   AND (SELECT nspowner <> to_regrole(%(role)s) FROM pg_namespace WHERE nspname = %(schema)s)
   AND has_schema_privilege(%(role)s, %(schema)s, 'USAGE')
   AND NOT has_schema_privilege(%(role)s, %(schema)s, 'CREATE')
   AND has_table_privilege(%(role)s, %(records)s, 'INSERT')
   AND NOT has_table_privilege(%(role)s, %(records)s, 'UPDATE, DELETE, TRUNCATE')
   AND NOT has_table_privilege(%(role)s, %(checkpoints)s, 'INSERT, UPDATE, DELETE, TRUNCATE')
   AND NOT has_column_privilege(%(role)s, %(keys)s, 'dek', 'SELECT')
   AND NOT has_table_privilege(%(role)s, %(keys)s, 'UPDATE, DELETE, TRUNCATE')
   AND NOT has_table_privilege('public', %(records)s, 'SELECT, INSERT')
"""


def _names(tenant: str) -> dict[str, str]:
    s = audit_schema(validate_tenant_name(tenant))
    return {
        "schema": s,
        "role": role_name(tenant),
        "records": f"{s}.{RECORDS}",
        "keys": f"{s}.{DATA_KEYS}",
        "checkpoints": f"{s}.{CHECKPOINTS}",
        "lock": f"{s}.{WRITE_LOCK}",
        "marker": MARKER,
    }


class AuditAdmin:
    """Audit-trail operations that need the admin credentials (only the operator has them)."""

    def __init__(self, connect: Connect, note: Callable[[str, str], None] | None = None) -> None:
        self._connect = connect
        self._note = note or (lambda tenant, what: log.info("tenant %s: %s", tenant, what))

    async def ensure(self, tenant: str) -> bool:
        """Create or repair the trail's schema, tables and grants; True when it wrote."""
        names = _names(tenant)
        async with self._connect() as conn:
            cur = await conn.execute(_STATE_SQL, names)
            row = await cur.fetchone()
            if row is not None and row[0]:
                return False
            self._note(tenant, f"postgres: provision audit schema {names['schema']}")
            # One round trip: the statements of one simple query run as one implicit
            # transaction, all or nothing. Its commit does not wait for the WAL flush: the DDL
            # is idempotent and the state above is read again at every reconcile, so a change
            # lost in a crash of the server is made again.
            await conn.execute(f"SET LOCAL synchronous_commit TO off;{_ddl(tenant)}".encode())
        return True

    async def remove(self, tenant: str) -> None:
        """Drop the trail with its data (a Tenant deleted with deletionPolicy Delete)."""
        s = audit_schema(validate_tenant_name(tenant))
        async with self._connect() as conn:
            cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [s])
            if await cur.fetchone() is None:
                return
            self._note(tenant, f"postgres: drop audit schema {s}")
            await conn.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')

    async def append_control(self, tenant: str, event_id: str, content: Mapping[str, Any]) -> int:
        """Append one control-plane record (idempotent by `event_id`)."""
        entry = Entry(
            event_id=event_id,
            ts=datetime.now(UTC),
            kind="control",
            key_name=None,
            content={"kind": "control", **content},
        )
        async with self._connect() as conn:
            return await append(conn, audit_schema(tenant), [entry])

    async def head(self, tenant: str) -> tuple[int, bytes, datetime] | None:
        """The newest record: (seq, hash, ts), None for an empty trail."""
        s = audit_schema(validate_tenant_name(tenant))
        async with self._connect() as conn:
            cur = await conn.execute(
                f'SELECT seq, hash, ts FROM "{s}".{RECORDS} ORDER BY seq DESC LIMIT 1'
            )
            row = await cur.fetchone()
        return (int(row[0]), bytes(row[1]), row[2]) if row else None

    async def _sign(
        self, conn: Conn, tenant: str, kind: str, seq: int, hash_: bytes, private_key: bytes
    ) -> None:
        ts = datetime.now(UTC).replace(microsecond=0)
        signature = sign(private_key, checkpoint_message(tenant, kind, seq, hash_, ts))
        await conn.execute(
            f'INSERT INTO "{audit_schema(tenant)}".{CHECKPOINTS} '
            "(kind, seq, hash, ts, key_id, signature) VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (kind, seq) DO NOTHING",
            [kind, seq, hash_, ts, key_id(public_key_of(private_key)), signature],
        )

    async def checkpoint(self, tenant: str, private_key: bytes) -> int | None:
        """Sign the chain head when it moved since the last checkpoint; the seq signed, or None."""
        s = audit_schema(validate_tenant_name(tenant))
        async with self._connect() as conn:
            try:
                cur = await conn.execute(
                    f'SELECT r.seq, r.hash FROM "{s}".{RECORDS} r ORDER BY r.seq DESC LIMIT 1'
                )
            except psycopg.errors.UndefinedTable:
                return None  # not provisioned yet (a new tenant waiting its turn): no records
            head = await cur.fetchone()
            if head is None:
                return None
            cur = await conn.execute(
                f"SELECT coalesce(max(seq), 0) FROM \"{s}\".{CHECKPOINTS} WHERE kind = 'checkpoint'"
            )
            last = await cur.fetchone()
            if last is not None and int(last[0]) >= int(head[0]):
                return None
            await self._sign(conn, tenant, "checkpoint", int(head[0]), bytes(head[1]), private_key)
        return int(head[0])

    async def prune(
        self, tenant: str, retention_days: int, private_key: bytes, now: datetime | None = None
    ) -> int:
        """Delete records older than the retention, after signing an anchor at the cut.

        The newest record always stays (the chain's head); records newer than the cutoff are
        never deleted, so the cut is the last record before the first one still retained.
        """
        s = audit_schema(validate_tenant_name(tenant))
        cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
        try:
            return await self._prune(s, tenant, cutoff, retention_days, private_key)
        except psycopg.errors.UndefinedTable:
            return 0  # not provisioned yet: nothing to prune

    async def _prune(
        self, s: str, tenant: str, cutoff: datetime, retention_days: int, private_key: bytes
    ) -> int:
        async with self._connect() as conn, conn.transaction():
            await conn.execute(f'SELECT 1 FROM "{s}".{WRITE_LOCK} FOR UPDATE')
            cur = await conn.execute(f'SELECT min(seq), max(seq) FROM "{s}".{RECORDS}')
            bounds = await cur.fetchone()
            if bounds is None or bounds[0] is None:
                return 0
            first, last = int(bounds[0]), int(bounds[1])
            cur = await conn.execute(
                f'SELECT min(seq) FROM "{s}".{RECORDS} WHERE ts >= %s',
                [cutoff],
            )
            kept = await cur.fetchone()
            cut = (int(kept[0]) - 1) if kept and kept[0] is not None else last
            cut = min(cut, last - 1)
            if cut < first:
                return 0
            cur = await conn.execute(
                f'SELECT hash FROM "{s}".{RECORDS} WHERE seq = %s',
                [cut],
            )
            row = await cur.fetchone()
            assert row is not None
            self._note(tenant, f"audit: prune records {first}..{cut} (retention {retention_days}d)")
            await self._sign(conn, tenant, "anchor", cut, bytes(row[0]), private_key)
            cur = await conn.execute(
                f'DELETE FROM "{s}".{RECORDS} WHERE seq <= %s',
                [cut],
            )
            return int(cur.rowcount)

    async def erase(self, tenant: str, key_name: str) -> int:
        """Destroy the data keys of a tenant key (GDPR erasure): its stored bodies become
        unreadable, every hash stays valid. Returns how many data keys were destroyed."""
        s = audit_schema(validate_tenant_name(tenant))
        async with self._connect() as conn:
            cur = await conn.execute(
                f'DELETE FROM "{s}".{DATA_KEYS} WHERE key_name = %s',
                [key_name],
            )
            erased = int(cur.rowcount)
            # The deleted tuples stay in the heap until vacuumed: vacuum now.
            await conn.execute(f'VACUUM (FULL) "{s}".{DATA_KEYS}')
        self._note(tenant, f"audit: erased {erased} data keys of key {key_name}")
        return erased

    # ------------------------------------------------------------------ reading

    async def checkpoints(self, tenant: str) -> list[Checkpoint]:
        s = audit_schema(validate_tenant_name(tenant))
        async with self._connect() as conn:
            cur = await conn.execute(
                f'SELECT kind, seq, hash, ts, key_id, signature FROM "{s}".{CHECKPOINTS} '
                "ORDER BY seq, kind"
            )
            return [
                Checkpoint(kind, int(seq), bytes(h), ts, kid, bytes(sig))
                for kind, seq, h, ts, kid, sig in await cur.fetchall()
            ]

    async def chain(self, tenant: str, batch: int = 2000) -> AsyncGenerator[ChainRow, None]:
        """Every record in seq order, streamed (a server-side cursor)."""
        s = audit_schema(validate_tenant_name(tenant))
        async with self._connect() as conn, conn.transaction():
            cur = conn.cursor(name="audit_chain")
            await cur.execute(f'SELECT {CHAIN_COLUMNS} FROM "{s}".{RECORDS} ORDER BY seq')
            while rows := await cur.fetchmany(batch):
                for row in parse_rows(rows):
                    yield row

    async def records(
        self,
        tenant: str,
        since: datetime | None = None,
        until: datetime | None = None,
        batch: int = 2000,
    ) -> AsyncIterator[tuple[int, str, str | None, bytes | None, str, bytes]]:
        """(seq, content, body_key_id, body, event_id, hash) of records in [since, until)."""
        s = audit_schema(validate_tenant_name(tenant))
        where, params = [], []
        if since is not None:
            where.append("ts >= %s")
            params.append(since)
        if until is not None:
            where.append("ts < %s")
            params.append(until)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        async with self._connect() as conn, conn.transaction():
            cur = conn.cursor(name="audit_export")
            await cur.execute(
                f"SELECT seq, content, body_key_id, body, event_id, hash "
                f'FROM "{s}".{RECORDS} {clause} ORDER BY seq',
                params,
            )
            while rows := await cur.fetchmany(batch):
                for seq, content, kid, body, event_id, hash_ in rows:
                    yield (int(seq), content, kid, bytes(body) if body else None, event_id,
                           bytes(hash_))  # fmt: skip

    async def data_keys(self, tenant: str) -> dict[str, bytes]:
        """key_id → data key, for decrypting bodies on export (admin only)."""
        s = audit_schema(validate_tenant_name(tenant))
        async with self._connect() as conn:
            cur = await conn.execute(f'SELECT key_id, dek FROM "{s}".{DATA_KEYS}')
            return {kid: bytes(dek) for kid, dek in await cur.fetchall()}
