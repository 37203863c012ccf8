"""The tenant's usage ledger in Postgres: one row per request, written in batches, never lost.

`record()` only appends to an in-memory queue; a background task writes batches (up to
`batch_size` rows, or whatever arrived within `flush_interval`) with
`INSERT ... ON CONFLICT (request_id) DO NOTHING`, so writing a row twice is harmless.

When Postgres fails, the batch goes to the spool and the writer backs off (0.2 s doubling to
`max_backoff`); while it backs off, new batches go straight to the spool, so memory stays small
however long the outage. The spool is, in order (`spool.py`):

1. the tenant's Redis stream `t:{<tenant>}:ledger:spool`, shared by every replica: rows there
   survive the pod (a rollout, an eviction, SIGKILL) and any replica that reaches Postgres
   replays them, deleting by entry id only what it inserted;
2. the local disk spool (fsynced JSON lines in the pod's emptyDir), when Redis fails too or the
   stream is full; those rows move to the stream as soon as Redis answers again, and are
   replayed from disk when Postgres answers first. Only they die with the pod.

Every writer checks the stream at start and every `stream_check_interval` seconds, so rows a
dead pod left are replayed by the survivors; a lease in Redis lets one replica replay at a time
(only an economy: inserts are idempotent and entries are deleted only after their commit).
The queue is bounded too: past `max_queue` rows, the oldest are moved to the disk spool at once
(a short blocking write, only when the writer cannot keep up).

On SIGTERM, `lifespan.LedgerLifespan` runs LiteLLM's pending callbacks and then `stop()`, which
writes or spools the queue; at interpreter exit (the `atexit` hook) the queued rows are spooled
synchronously. After either, `record()` spools each row at once: stream first, disk last. What
SIGKILL leaves in memory (the rows of the last `flush_interval`) is lost.

The table lives in the connection's default schema (the tenant role's own schema, first on its
search_path) and is created at start if absent; columns added since the first release
(`session_id`, `list_model`, `labels`, `failed_attempts`, ...) are added to an existing table
at start too (`SCHEMA_SQL`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg
from redis import exceptions as rexc

from tenantgw.gateway.redisclient import RedisClient
from tenantgw.gateway.spool import (
    DEFAULT_SPOOL_DIR,
    MAX_STREAM_ROWS,
    STREAM_CHECK_INTERVAL,
    Spool,
    StreamFullError,
    StreamSpool,
)

log = logging.getLogger("tenantgw.gateway.ledger")

TABLE = "usage"
COLUMNS: tuple[str, ...] = (
    "request_id",
    "ts",
    "tenant",
    "key_name",
    "requested_model",
    "alias",
    "provider",
    "provider_model",
    "region",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "list_cost_usd",
    "latency_ms",
    "ttft_ms",
    "status",
    "http_status",
    "error_type",
    "downgraded_from",
    "stream",
    "parent_request_id",
    "safeguard_verdicts",
    "session_id",
    "list_model",
    "labels",
    "failed_attempts",
)
"""Columns of the usage table, in the order of `usage.UsageRecord`'s fields."""

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS usage (
    request_id         text PRIMARY KEY,
    ts                 timestamptz NOT NULL,
    tenant             text NOT NULL,
    key_name           text NOT NULL,
    requested_model    text NOT NULL,
    alias              text NOT NULL,
    provider           text,
    provider_model     text,
    region             text,
    input_tokens       integer NOT NULL DEFAULT 0,
    output_tokens      integer NOT NULL DEFAULT 0,
    cache_read_tokens  integer NOT NULL DEFAULT 0,
    cache_write_tokens integer NOT NULL DEFAULT 0,
    cost_usd           numeric(20, 10) NOT NULL DEFAULT 0,
    list_cost_usd      numeric(20, 10),
    latency_ms         integer,
    ttft_ms            integer,
    status             text NOT NULL CHECK (status IN ('success', 'error')),
    http_status        integer,
    error_type         text,
    downgraded_from    text,
    stream             boolean NOT NULL DEFAULT false,
    parent_request_id  text,
    safeguard_verdicts jsonb
);
CREATE INDEX IF NOT EXISTS usage_ts_idx ON usage (ts);
CREATE INDEX IF NOT EXISTS usage_key_ts_idx ON usage (key_name, ts);
CREATE INDEX IF NOT EXISTS usage_alias_ts_idx ON usage (alias, ts);
COMMENT ON TABLE usage IS 'tenantgw: one row per gateway request (tokens, cost, latency)';
DO $$
BEGIN
    -- Added after the first release: tables of existing tenants get them here, in one ALTER
    -- TABLE. Looked up first, so that a start does not take its exclusive lock for nothing.
    IF (
        SELECT count(*) FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'usage'
          AND column_name IN (
            'parent_request_id', 'safeguard_verdicts', 'session_id', 'list_model', 'labels',
            'failed_attempts'
          )
    ) < 6 THEN
        ALTER TABLE usage
            ADD COLUMN IF NOT EXISTS parent_request_id text,
            ADD COLUMN IF NOT EXISTS safeguard_verdicts jsonb,
            ADD COLUMN IF NOT EXISTS session_id text
                CONSTRAINT usage_session_id_check CHECK (session_id ~ '^[A-Za-z0-9._:-]{1,64}$'),
            ADD COLUMN IF NOT EXISTS list_model text,
            ADD COLUMN IF NOT EXISTS labels jsonb
                CONSTRAINT usage_labels_check CHECK (jsonb_typeof(labels) = 'object'),
            ADD COLUMN IF NOT EXISTS failed_attempts jsonb
                CONSTRAINT usage_failed_attempts_check
                CHECK (jsonb_typeof(failed_attempts) = 'array');
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS usage_session_ts_idx ON usage (session_id, ts)
    WHERE session_id IS NOT NULL;
COMMENT ON COLUMN usage.session_id IS
    'tenantgw: the client''s X-Claude-Code-Session-Id when well-formed, else NULL';
COMMENT ON COLUMN usage.list_model IS
    'tenantgw: the Claude model list_cost_usd is priced at (asked for, or spec.costBaseline)';
COMMENT ON COLUMN usage.labels IS
    'tenantgw: cost labels {label: value} of the key and the allowed label header';
COMMENT ON COLUMN usage.failed_attempts IS
    'tenantgw: the failed attempts before the outcome, in order: [{alias, provider, '
    'provider_model, http_status, error_type}] (never a body or a credential); NULL: none';
COMMENT ON COLUMN usage.parent_request_id IS
    'tenantgw: for a classifier call, the request whose tool calls it judged';
COMMENT ON COLUMN usage.safeguard_verdicts IS
    'tenantgw: for a classifier call, {tool_use id: not_flagged | flagged | unavailable:<reason>}';
"""

# Identifiers are constants, values are parameters.
INSERT_SQL = (
    f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join(f'%({c})s' for c in COLUMNS)}) "
    "ON CONFLICT (request_id) DO NOTHING"
)
_SCHEMA_LOCK = 0x7465_6E61_6E74  # pg_advisory_xact_lock key: two replicas creating the table

BATCH_SIZE = 500
FLUSH_INTERVAL = 0.2
MAX_QUEUE = 10_000
MAX_BACKOFF = 5.0
REPLAY_LEASE = 15.0
"""Seconds one replica replays the stream alone (renewed per batch); 0: no lease."""
_REDIS_ERRORS = (rexc.RedisError, OSError, TimeoutError)
_DATA_ERRORS = (psycopg.errors.DataError, psycopg.errors.IntegrityError)
"""What Postgres says of a row it will never take (as opposed to an outage)."""


class Row(Protocol):
    """What the ledger stores: `usage.UsageRecord`."""

    def as_row(self) -> dict[str, Any]: ...


@dataclass
class LedgerStats:
    """What the writer has done since start (also what the tests measure)."""

    written: int = 0
    """Rows in batches Postgres committed (duplicates included, skipped by ON CONFLICT)."""
    streamed: int = 0
    """Rows put in the tenant's Redis stream (the durable spool)."""
    spooled: int = 0
    """Rows put in the local disk spool (Redis failing too, or the stream full)."""
    promoted: int = 0
    """Rows moved from the disk spool to the stream once Redis answered again."""
    replayed: int = 0
    """Rows inserted from either spool (duplicates included, skipped by ON CONFLICT)."""
    failures: int = 0
    batches: int = 0
    rejected: int = 0
    """Spooled rows Postgres refused as data (set aside in the rejected store, not retried)."""
    dropped: int = 0
    """Rows lost because Postgres, Redis, the spool disk and the memory bound all failed."""
    last_error: str | None = None


def _to_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _from_json(row: Mapping[str, Any]) -> dict[str, Any]:
    values = {column: row.get(column) for column in COLUMNS}
    if isinstance(values["ts"], str):
        values["ts"] = datetime.fromisoformat(values["ts"])
    return values


class Ledger:
    """Batched, idempotent, outage-proof writer of usage rows into the tenant's Postgres schema.

    With `redis` (the tenant's client; `tenant` names its stream) rows that Postgres cannot take
    wait in the tenant's Redis stream and survive the pod; without it, only on local disk.
    """

    def __init__(
        self,
        dsn: str,
        spool_dir: Path | str = DEFAULT_SPOOL_DIR,
        *,
        redis: RedisClient | None = None,
        tenant: str | None = None,
        batch_size: int = BATCH_SIZE,
        flush_interval: float = FLUSH_INTERVAL,
        max_queue: int = MAX_QUEUE,
        max_backoff: float = MAX_BACKOFF,
        max_stream_rows: int = MAX_STREAM_ROWS,
        stream_check_interval: float = STREAM_CHECK_INTERVAL,
        replay_lease: float = REPLAY_LEASE,
        connect_timeout: float = 5.0,
        statement_timeout: float = 15.0,
    ) -> None:
        if redis is not None and not tenant:
            raise ValueError("a Ledger with a Redis client needs the tenant that names its stream")
        self.dsn = dsn
        self.spool = Spool(spool_dir)
        self.rejected = Spool(spool_dir, name="rejected")
        self.stream = (
            StreamSpool(redis, tenant, max_rows=max_stream_rows)
            if redis is not None and tenant
            else None
        )
        self.stream_check_interval = stream_check_interval
        self.replay_lease = replay_lease
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max(max_queue, batch_size)
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self.stats = LedgerStats()
        self._queue: deque[dict[str, Any]] = deque()
        self._has_rows = asyncio.Event()
        self._full = asyncio.Event()
        self._stopping = False
        self._writer: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._read_conn: psycopg.AsyncConnection[Any] | None = None
        self._read_lock = asyncio.Lock()
        self._schema_ready = False
        self._spool_pending = False
        self._backoff = 0.0
        self._retry_at = 0.0
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight: list[dict[str, Any]] = []
        self._exit_hook = False
        self._closed = False
        self._stream_pending = False
        self._stream_check_at = 0.0
        self._redis_backoff = 0.0
        self._redis_retry_at = 0.0
        self._stream_full_logged = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Create the table if needed and start the writer.

        Postgres or Redis being down is not an error here: rows are spooled and the writer keeps
        trying. The first batch looks at the stream for rows a previous pod left.
        """
        if self._writer is not None:
            return
        self._stopping = False
        self._closed = False
        self._spool_pending = await asyncio.to_thread(self.spool.has_rows)
        self._stream_check_at = 0.0
        try:
            await self._connect()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            self._failed(exc, "connect")
        self._writer = asyncio.get_running_loop().create_task(
            self._run(), name="tenantgw-ledger-writer"
        )
        if not self._exit_hook:
            # LiteLLM gives callbacks no shutdown hook: at interpreter exit (SIGTERM included),
            # whatever is still in memory goes to the spool, replayed by the next start.
            atexit.register(self.spool_unwritten)
            self._exit_hook = True

    async def stop(self) -> None:
        """Write (or spool) everything queued, then close the connections."""
        self._stopping = True
        self._has_rows.set()
        self._full.set()
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer
        self._closed = True  # no writer any more: from now on record() spools each row at once
        if self._queue:  # never started, or recorded while the writer finished
            await self._spool_rows(self._take(len(self._queue)))
        await self._close()
        if self._exit_hook:
            atexit.unregister(self.spool_unwritten)
            self._exit_hook = False
        if self._read_conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await self._read_conn.close()
            self._read_conn = None
        if self.stream is not None:
            self.stream.close_blocking()

    # ------------------------------------------------------------------ recording

    def record(self, rec: Row | Mapping[str, Any]) -> None:
        """Queue one usage row; never blocks on Postgres."""
        row = dict(rec) if isinstance(rec, Mapping) else rec.as_row()
        if self._closed:
            # After the exit hook ran (LiteLLM flushes its callbacks later, at exit too): no
            # writer will run again, so the row goes to the spool now.
            self._spool_blocking([row])
            return
        self._queue.append(row)
        self._idle.clear()
        self._has_rows.set()
        if len(self._queue) >= self.batch_size:
            self._full.set()
        if len(self._queue) > self.max_queue:
            # The writer is not keeping up (Postgres slow or down): bound memory by moving the
            # oldest rows to disk now. A short blocking write, rare by construction; the writer
            # moves them on to the stream.
            overflow = self._take(len(self._queue) - self.max_queue + self.batch_size)
            try:
                self.stats.spooled += self.spool.append(_to_json(r) for r in overflow)
                self._spool_pending = True
            except OSError as exc:
                self.stats.dropped += len(overflow)
                log.error(
                    "ledger queue full and spool unwritable (%s): %d usage rows LOST",
                    exc,
                    len(overflow),
                )

    def spool_unwritten(self) -> int:
        """Put the queued rows, and the batch being written, in the spool now (blocking).

        Run at interpreter exit; from then on (as after `stop()`) `record()` spools each row
        at once. The stream
        first (over a synchronous connection: the event loop is gone), the disk when Redis
        fails. Returns how many rows were spooled. Rows of the batch in flight may be written
        twice, which ON CONFLICT makes harmless.
        """
        self._closed = True
        rows, self._in_flight = [*self._in_flight, *self._take(len(self._queue))], []
        return self._spool_blocking(rows)

    def _spool_blocking(self, rows: list[dict[str, Any]]) -> int:
        if not rows:
            return 0
        encoded = [_to_json(r) for r in rows]
        if self.stream is not None:
            try:
                written = self.stream.append_blocking(encoded)
            except (*_REDIS_ERRORS, StreamFullError) as exc:
                log.warning("%d usage rows could not go to the Redis stream (%s)", len(rows), exc)
            else:
                self.stats.streamed += written
                return written
        try:
            written = self.spool.append(encoded)
        except OSError:
            self.stats.dropped += len(rows)
            log.exception("%d usage rows could not be spooled at exit: LOST", len(rows))
            return 0
        self.stats.spooled += written
        self._spool_pending = True
        return written

    @property
    def queued(self) -> int:
        """Rows in memory waiting for the writer."""
        return len(self._queue)

    async def drain(self) -> None:
        """Wait until every row recorded so far is written or spooled (for tests and shutdown)."""
        if self._writer is not None:
            await self._idle.wait()

    # ------------------------------------------------------------------ reading

    async def spent_since(self, period_start: datetime, scope: Mapping[str, Any]) -> float:
        """USD recorded since `period_start` for a budget scope {kind: Tenant|Key|ModelAlias, name}.

        Raises psycopg errors when Postgres cannot be read (the caller retries later).
        """
        kind, name = scope.get("kind") or "Tenant", scope.get("name")
        sql = f"SELECT coalesce(sum(cost_usd), 0) FROM {TABLE} WHERE ts >= %s"  # noqa: S608
        params: list[Any] = [period_start]
        if kind == "Key":
            sql += " AND key_name = %s"
            params.append(name)
        elif kind == "ModelAlias":
            sql += " AND alias = %s"
            params.append(name)
        elif kind == "Session":
            sql += " AND session_id = %s"
            params.append(name)
        rows = await self._read(sql, params)
        return float(rows[0][0]) if rows else 0.0

    async def session_spend_since(
        self, period_start: datetime, limit: int = 1000
    ) -> list[tuple[str, float]]:
        """The `limit` sessions that spent most since `period_start`: (session id, USD).

        Raises psycopg errors when Postgres cannot be read (the caller retries later).
        """
        sql = (
            f"SELECT session_id, sum(cost_usd) AS spent FROM {TABLE}"  # noqa: S608
            " WHERE ts >= %s AND session_id IS NOT NULL"
            " GROUP BY session_id ORDER BY spent DESC LIMIT %s"
        )
        rows = await self._read(sql, [period_start, limit])
        return [(str(row[0]), float(row[1])) for row in rows]

    async def _read(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """The rows of one query on the reading connection ([] before the table exists)."""
        async with self._read_lock:
            if self._read_conn is None or self._read_conn.closed:
                self._read_conn = await self._open()
            try:
                cur = await asyncio.wait_for(
                    self._read_conn.execute(sql.encode(), params), self.statement_timeout
                )
                return list(await cur.fetchall())
            except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
                return []  # the writer has not created (or upgraded) the table yet
            except (psycopg.Error, OSError, TimeoutError):
                with contextlib.suppress(psycopg.Error, OSError):
                    await self._read_conn.close()
                self._read_conn = None
                raise

    # ------------------------------------------------------------------ the writer

    def _take(self, n: int) -> list[dict[str, Any]]:
        return [self._queue.popleft() for _ in range(min(n, len(self._queue)))]

    def _pending(self) -> bool:
        return self._spool_pending or self._stream_pending

    async def _next_batch(self) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        if not self._queue and not self._stopping:
            self._idle.set()
            self._has_rows.clear()
            # Wake up now and then without new rows, to replay the spool after an outage.
            now = loop.time()
            if self._spool_pending:
                wait = max(self._retry_at - now, 0.05)
            elif self._stream_pending:
                wait = max(self._retry_at - now, self._redis_retry_at - now, 0.05)
            else:
                wait = 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._has_rows.wait(), wait)
        if self._queue and len(self._queue) < self.batch_size and not self._stopping:
            self._full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.flush_interval)
        return self._take(self.batch_size)

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            stopping = self._stopping and not self._queue
            # Until written or spooled, the batch is what the exit hook saves (a cancelled
            # writer included).
            self._in_flight = batch
            try:
                await self._write(batch, last=stopping)
            except Exception as exc:  # never lose rows to a bug in a corner: keep them spooled
                log.exception("ledger writer failed; spooling %d rows", len(batch))
                self._failed(exc, "write")
                await self._spool_rows(batch)
            self._in_flight = []
            if not self._queue:
                self._idle.set()
            if stopping:
                return

    async def _write(self, batch: list[dict[str, Any]], *, last: bool) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._retry_at:
            # Backing off after a failure: rows go to the spool, Postgres is left alone.
            await self._spool_rows(batch)
            await self._promote()
            return
        if not self._stream_pending and loop.time() >= self._stream_check_at:
            self._stream_pending = await self._stream_has_rows()
        if not batch and not self._pending():
            return
        try:
            conn = self._conn or await self._connect()
            if self._pending():
                await self._replay(conn)
            if batch:
                await self._insert(conn, batch)
                self.stats.written += len(batch)
            self._backoff = 0.0
        except (psycopg.Error, OSError, TimeoutError) as exc:
            self._failed(exc, "write")
            await self._close()
            await self._spool_rows(batch)
            await self._promote()
            self._backoff = min(max(self._backoff * 2, 0.2), self.max_backoff)
            self._retry_at = loop.time() + (0 if last else self._backoff)

    async def _replay(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self._spool_pending:
            await self._replay_disk(conn)
        if self._stream_pending:
            await self._replay_stream(conn)

    async def _replay_disk(self, conn: psycopg.AsyncConnection[Any]) -> None:
        paths = await asyncio.to_thread(self.spool.claim)
        for path in paths:
            rows = await asyncio.to_thread(self.spool.read, path)
            for start in range(0, len(rows), self.batch_size):
                await self._insert_replayed(conn, rows[start : start + self.batch_size])
            await asyncio.to_thread(self.spool.remove, path)
            self.stats.replayed += len(rows)
            if rows:
                log.info("replayed %d spooled usage rows from %s", len(rows), path.name)
        self._spool_pending = await asyncio.to_thread(self.spool.has_rows)

    async def _replay_stream(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Insert the stream's rows up to its newest entry now, deleting what was inserted.

        Redis failing leaves the rows where they are (retried later); Postgres failing raises.
        """
        stream = self.stream
        if stream is None or not self._redis_usable():
            return
        loop = asyncio.get_running_loop()
        replayed, leased = 0, False
        try:
            if self.replay_lease > 0:
                leased = await stream.lease(stream.token, self.replay_lease)
                if not leased:  # another replica replays now; look again later
                    self._stream_pending = False
                    self._stream_check_at = loop.time() + self.stream_check_interval
                    return
            upto = await stream.last_id()
            after: str | None = None
            while upto is not None:
                entries = await stream.read(after, upto, self.batch_size)
                if not entries:
                    break
                rows = [row for _, row in entries if row is not None]
                if rows:
                    await self._insert_replayed(conn, rows)
                # Only after the commit: an entry is deleted once its row is in Postgres.
                await stream.delete([entry_id for entry_id, _ in entries])
                replayed += len(rows)
                self.stats.replayed += len(rows)
                after = entries[-1][0]
                if after == upto:
                    break
                if leased:
                    await stream.lease(stream.token, self.replay_lease)
            if leased:
                await stream.release(stream.token)
        except _REDIS_ERRORS as exc:
            self._redis_failed(exc)
            return
        finally:
            if replayed:
                log.info("replayed %d usage rows from %s", replayed, stream.key)
        self._stream_pending = False
        self._stream_check_at = loop.time() + self.stream_check_interval

    async def _stream_has_rows(self) -> bool:
        """Whether the stream holds rows (another pod's, or ours from before a restart)."""
        self._stream_check_at = asyncio.get_running_loop().time() + self.stream_check_interval
        if self.stream is None or not self._redis_usable():
            return False
        try:
            return await self.stream.length() > 0
        except _REDIS_ERRORS as exc:
            self._redis_failed(exc)
            return False

    async def _insert_replayed(
        self, conn: psycopg.AsyncConnection[Any], rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Insert spooled rows. A row Postgres refuses as data (not an outage) is set aside
        in the rejected store, so one bad row never holds the spool, nor vanishes."""
        pairs: list[tuple[Mapping[str, Any], dict[str, Any]]] = []
        for row in rows:
            try:
                pairs.append((row, _from_json(row)))
            except (TypeError, ValueError) as exc:
                await self._reject(row, exc)
        if not pairs:
            return
        try:
            await self._insert(conn, [value for _, value in pairs])
            return
        except _DATA_ERRORS:
            pass  # find the culprits one by one
        for row, value in pairs:
            try:
                await self._insert(conn, [value])
            except _DATA_ERRORS as exc:
                await self._reject(row, exc)

    async def _reject(self, row: Mapping[str, Any], exc: BaseException) -> None:
        self.stats.rejected += 1
        kept = f"the stream {self.stream.rejected_key}" if self.stream else "the disk"
        if self.stream is not None:
            try:
                await self.stream.reject(row, f"{type(exc).__name__}: {exc}")
            except _REDIS_ERRORS:
                kept = "the disk"
        if kept == "the disk":
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.rejected.append, [_to_json(row)])
        log.error(
            "usage row %r refused by Postgres (%s: %s): set aside in %s",
            row.get("request_id"),
            type(exc).__name__,
            exc,
            kept,
        )

    async def _insert(
        self, conn: psycopg.AsyncConnection[Any], rows: Sequence[Mapping[str, Any]]
    ) -> None:
        async def run() -> None:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(INSERT_SQL.encode(), rows)

        await asyncio.wait_for(run(), self.statement_timeout)
        self.stats.batches += 1

    async def _spool_rows(self, rows: list[dict[str, Any]]) -> None:
        """Put rows in the stream, else on disk; if the disk fails too, back into the queue."""
        if not rows:
            return
        encoded = [_to_json(r) for r in rows]
        if await self._stream_rows(encoded):
            return
        try:
            self.stats.spooled += await asyncio.to_thread(self.spool.append, encoded)
            self._spool_pending = True
        except OSError as exc:
            self._failed(exc, "spool")
            room = 0 if self._stopping else max(self.max_queue - len(self._queue), 0)
            keep, lost = rows[:room], rows[room:]
            self._queue.extendleft(reversed(keep))
            if lost:
                self.stats.dropped += len(lost)
                log.error("Postgres, Redis and the spool all fail: %d usage rows LOST", len(lost))
            if keep:
                await asyncio.sleep(1.0)  # do not spin on a broken disk

    async def _stream_rows(self, encoded: list[dict[str, Any]]) -> bool:
        """Rows into the stream; False when they must go elsewhere (no Redis, down, full)."""
        if self.stream is None or not self._redis_usable():
            return False
        try:
            self.stats.streamed += await self.stream.append(encoded)
        except StreamFullError as exc:
            if not self._stream_full_logged:
                log.error("%s: usage rows go to the local disk spool until it drains", exc)
                self._stream_full_logged = True
            return False
        except _REDIS_ERRORS as exc:
            self._redis_failed(exc)
            return False
        self._stream_full_logged = False
        self._stream_pending = True
        self._redis_backoff = 0.0
        return True

    async def _promote(self) -> None:
        """Move rows from the disk spool to the stream, where they outlive the pod."""
        if not self._spool_pending or self.stream is None or not self._redis_usable():
            return
        paths = await asyncio.to_thread(self.spool.claim)
        for path in paths:
            rows = await asyncio.to_thread(self.spool.read, path)
            for start in range(0, len(rows), self.batch_size):
                if not await self._stream_rows(rows[start : start + self.batch_size]):
                    # Redis failed again; the rows streamed so far will be streamed again
                    # from this file, which replay's ON CONFLICT makes harmless.
                    return
            await asyncio.to_thread(self.spool.remove, path)
            self.stats.promoted += len(rows)
            if rows:
                log.info("moved %d usage rows from %s to %s", len(rows), path.name, self.stream.key)
        self._spool_pending = await asyncio.to_thread(self.spool.has_rows)

    def _redis_usable(self) -> bool:
        return asyncio.get_running_loop().time() >= self._redis_retry_at

    def _redis_failed(self, exc: BaseException) -> None:
        self._failed(exc, "redis")
        self._redis_backoff = min(max(self._redis_backoff * 2, 0.2), self.max_backoff)
        self._redis_retry_at = asyncio.get_running_loop().time() + self._redis_backoff

    # ------------------------------------------------------------------ connections

    async def _open(self) -> psycopg.AsyncConnection[Any]:
        return await asyncio.wait_for(
            psycopg.AsyncConnection.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=max(1, int(self.connect_timeout)),
                application_name="tenantgw-ledger",
            ),
            self.connect_timeout + 1,
        )

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await self._open()
        if not self._schema_ready:
            try:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEMA_LOCK])
                    await conn.execute(SCHEMA_SQL.encode())
            except BaseException:
                await conn.close()
                raise
            self._schema_ready = True
        self._conn = conn
        return conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await conn.close()

    def _failed(self, exc: BaseException, what: str) -> None:
        self.stats.failures += 1
        message = f"{type(exc).__name__}: {exc}".strip()
        if message != self.stats.last_error:
            log.warning("ledger %s failed (%s); rows are spooled until it works", what, message)
        self.stats.last_error = message
