"""The request audit trail: one hash-chained record per request, admitted or refused.

`AuditTrail` is built once per gateway worker (`runtime.GatewayRuntime`) and driven by the
callbacks at three points: `refused()` when the pre-call checks refuse a request (budget 402,
rate limit 429, PII block, residency 403, store unavailable 503, ...), `admitted()` when they
let it through (the digest of the request as it goes upstream, and its body per
`compliance.audit.bodies`), and `finished()` with the request's usage record when it ends,
on success or final failure. `enabled: false` in the rules makes all three do nothing.

What a record holds: time, key, route (the call type), requested model, alias routed to and
alias that served (a fallback when they differ), provider, provider model, the region that
served it, the attempts that failed before (`failed_attempts`, as in the ledger), the decision
(admitted / refused, with the status and the reason), the PII entity types and counts
redacted, the downgrade, tokens, cost, the request id and the SHA-256 digest of the (redacted)
request. Bodies (`redacted`: the request as sent upstream and the response,
every PII entity type the scanner knows replaced by its placeholder, whatever the tenant's
redaction mode; `full`: the request as the client sent it) are encrypted with the tenant key's
data key (`tenantgw.api.audit_trail`); no credential, header or metadata is ever recorded.

Writing follows the ledger's rules (`ledger.py`), simplified: `record` only queues; a
background task appends batches to the chain (`audit_trail.append`); when Postgres fails,
batches wait in the tenant's Redis stream `t:{<tenant>}:audit:spool`, else on local disk, and
are appended when Postgres answers again (by event id, so a replay never duplicates a record).
While they wait, bodies are in the clear in the tenant's own Redis and the pod's emptyDir.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from redis import exceptions as rexc

from tenantgw.api.audit_trail import (
    DATA_KEYS,
    Entry,
    append,
    audit_schema,
    canonical,
    encrypt_body,
    new_data_key,
)
from tenantgw.api.markers import tenant_key
from tenantgw.gateway import pii
from tenantgw.gateway.context import RequestContext, new_request_id
from tenantgw.gateway.files import Rules
from tenantgw.gateway.redisclient import RedisClient
from tenantgw.gateway.spool import (
    DEFAULT_SPOOL_DIR,
    STREAM_CHECK_INTERVAL,
    Spool,
    StreamFullError,
    StreamSpool,
)
from tenantgw.gateway.usage import UsageRecord, status_of

log = logging.getLogger("tenantgw.gateway.audit")

BODY_FIELDS = (
    "model", "messages", "system", "tools", "tool_choice", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "top_k", "stop", "stop_sequences", "prompt", "input", "instructions",
    "thinking", "stream", "response_format", "reasoning_effort",
)  # fmt: skip
"""The parts of a request body a record keeps: what the model reads and how it answers.
Never LiteLLM's metadata, headers or anything else the proxy adds (keys, hashes, user ids)."""
BATCH_SIZE = 200
FLUSH_INTERVAL = 0.2
MAX_QUEUE = 10_000
MAX_BACKOFF = 5.0
PENDING_MAX = 50_000
_REDIS_ERRORS = (rexc.RedisError, OSError, TimeoutError)


def stream_key(tenant: str) -> str:
    return tenant_key(tenant, "audit", "spool")


def request_subset(data: Mapping[str, Any]) -> dict[str, Any]:
    """What of a request body a record keeps (BODY_FIELDS)."""
    return {k: data[k] for k in BODY_FIELDS if k in data}


def _jsonable(value: Any) -> Any:
    """A response object as JSON data (LiteLLM's pydantic responses, dicts, or text)."""
    for method in ("model_dump", "dict"):
        dump = getattr(value, method, None)
        if callable(dump):
            with contextlib.suppress(Exception):
                return json.loads(json.dumps(dump(), default=str))
    if isinstance(value, Mapping | list | str | int | float | bool) or value is None:
        return json.loads(json.dumps(value, default=str))
    return str(value)


CLEAN_MEMO_CHARS = 4 * 1024 * 1024
"""Characters of short texts (tool names and descriptions, schema words, roles) the audit
remembers were scanned with nothing found, so the stored copy does not scan them again."""


class BodyRedactor:
    """Redacts a stored body with every PII entity type the scanner knows.

    Texts the tenant's own policy already scanned with every entity type are not scanned
    again (`known`: text -> text as redacted): the request's texts after its redaction, and the
    answer's texts the response policy rewrote. Short texts found clean are remembered
    (`CLEAN_MEMO_CHARS`; long ones are in the scanner's own cache).
    """

    def __init__(self) -> None:
        self._clean: OrderedDict[str, None] = OrderedDict()
        self._clean_chars = 0

    def text(self, text: str, known: Mapping[str, str]) -> str:
        hit = known.get(text)
        if hit is not None:
            return hit
        if text in self._clean:
            return text
        scanner = pii.scanner_for(pii.ALL_ENTITIES)
        redacted, counts = scanner.redact(text)
        if not counts and len(text) < scanner.CACHE_MIN_CHARS:
            self._clean[text] = None
            self._clean_chars += len(text)
            while self._clean_chars > CLEAN_MEMO_CHARS:
                old, _ = self._clean.popitem(last=False)
                self._clean_chars -= len(old)
        return redacted

    def value(self, value: Any, known: Mapping[str, str]) -> Any:
        """Every string in a JSON value (keys too) redacted."""
        if isinstance(value, str):
            return self.text(value, known)
        if isinstance(value, list):
            return [self.value(v, known) for v in value]
        if isinstance(value, dict):
            return {self.text(k, known): self.value(v, known) for k, v in value.items()}
        return value


def covers_everything(rules: Rules) -> bool:
    """Whether the tenant's PII policy scans for every entity type the audit redacts."""
    policy = rules.compliance.pii_redaction
    if policy.mode == "off":
        return False
    return not policy.entities or set(pii.ALL_ENTITIES) <= {e.upper() for e in policy.entities}


def refusal_reason(exc: BaseException) -> str:
    """Why the gateway refused a request, as a short code."""
    status = getattr(exc, "status", None) or status_of(exc)
    message = str(getattr(exc, "message", exc))
    if status == 402:
        return "budget"
    if status == 429:
        return "rate_limit"
    if status == 403 and "data residency" in message:
        return "residency"
    if status == 400 and "PII policy" in message:
        return "pii_block"
    if status == 503:
        return "store_unavailable" if "store" in message else "unavailable"
    if status == 404:
        return "model_not_found"
    if status == 401:
        return "unauthenticated"
    return f"http_{status}" if status else type(exc).__name__


class _Pending:
    __slots__ = ("body", "digest")

    def __init__(self, digest: str, body: Any) -> None:
        self.digest, self.body = digest, body


class AuditTrail:
    """Queues audit records of this worker's requests and appends them to the tenant's chain."""

    def __init__(
        self,
        dsn: str,
        tenant: str,
        rules: Callable[[], Rules],
        spool_dir: Path | str = DEFAULT_SPOOL_DIR,
        *,
        redis: RedisClient | None = None,
        batch_size: int = BATCH_SIZE,
        flush_interval: float = FLUSH_INTERVAL,
        max_backoff: float = MAX_BACKOFF,
        statement_timeout: float = 15.0,
        stream_check_interval: float = STREAM_CHECK_INTERVAL,
    ) -> None:
        self.dsn = dsn
        self.tenant = tenant
        self.schema = audit_schema(tenant)
        self.rules = rules
        self.spool = Spool(spool_dir, name="audit")
        self.stream: StreamSpool | None = None
        if redis is not None:
            self.stream = StreamSpool(redis, tenant)
            # The same mechanism as the ledger's spool, under the audit's own keys.
            self.stream.key = stream_key(tenant)
            self.stream.lease_key = tenant_key(tenant, "audit", "replaying")
            self.stream.rejected_key = tenant_key(tenant, "audit", "rejected")
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_backoff = max_backoff
        self.statement_timeout = statement_timeout
        self.stream_check_interval = stream_check_interval
        self.written = 0
        self.spooled = 0
        self.failures = 0
        self.last_error: str | None = None
        self._queue: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._deks: dict[str, tuple[str, bytes]] = {}
        self._redactor = BodyRedactor()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._stopping = False
        self._spool_pending = False
        self._stream_pending = False
        self._stream_check_at = 0.0
        self._backoff = 0.0
        self._retry_at = 0.0

    # ------------------------------------------------------------------ settings

    def _settings(self) -> tuple[bool, str]:
        try:
            audit = self.rules().compliance.audit
        except Exception:  # no rules file: nothing to audit against
            return False, "none"
        return audit.enabled, audit.bodies

    # ------------------------------------------------------------------ the three hooks

    def capture(self, data: Mapping[str, Any]) -> Any:
        """The request as the client sent it, when bodies are `full` (before PII redaction)."""
        enabled, bodies = self._settings()
        if not enabled or bodies != "full":
            return None
        return json.loads(json.dumps(request_subset(data), default=str))

    def admitted(self, ctx: RequestContext, data: Mapping[str, Any], original: Any) -> None:
        """The checks let the request through: remember its digest and body until it ends."""
        enabled, bodies = self._settings()
        if not enabled:
            return
        sent = request_subset(data)
        digest_ = _digest(sent)
        body: Any = None
        if bodies == "full":
            body = original if original is not None else sent
        elif bodies == "redacted":
            # What the tenant's policy scanned went upstream redacted: only the rest is scanned.
            known: dict[str, str] = {}
            if covers_everything(self.rules()):
                known = {text: text for text in pii.request_texts(dict(sent))}
            body = self._redactor.value(json.loads(json.dumps(sent, default=str)), known)
        self._pending[ctx.request_id] = _Pending(digest_, body)
        while len(self._pending) > PENDING_MAX:  # requests that never reported an end
            self._pending.popitem(last=False)

    def refused(
        self,
        ctx: RequestContext | None,
        exc: BaseException,
        *,
        key_name: str | None,
        call_type: str,
        data: Mapping[str, Any],
    ) -> None:
        """The pre-call checks refused the request: one record, no body."""
        enabled, _ = self._settings()
        if not enabled:
            return
        if ctx is not None:
            self._pending.pop(ctx.request_id, None)
        requested = data.get("model")
        content = {
            "kind": "request",
            "ts": _now(),
            "request_id": ctx.request_id if ctx else new_request_id(),
            "key": ctx.key_name if ctx else key_name,
            "route": call_type,
            "requested_model": ctx.requested_model if ctx else requested,
            "alias": ctx.alias if ctx else None,
            "served_alias": None,
            "provider": None,
            "provider_model": None,
            "region": None,
            "decision": "refused",
            "status": getattr(exc, "status", None) or status_of(exc),
            "reason": refusal_reason(exc),
            "message": str(getattr(exc, "message", exc))[:1000],
            "pii": dict(ctx.pii_counts) if ctx else {},
            "downgraded_from": ctx.downgraded_from if ctx else None,
            "fallback_from": None,
            "failed_attempts": None,
            "session_id": ctx.session_id if ctx else None,
            "parent_request_id": ctx.parent_request_id if ctx else None,
            "safeguard_verdicts": dict(ctx.verdicts) if ctx and ctx.verdicts else None,
            "tokens": None,
            "cost_usd": 0.0,
            "request_digest": _digest(request_subset(data)),
            "body": None,
        }
        self._queue_record(content, None)

    def finished(self, ctx: RequestContext, rec: UsageRecord | None, response: Any) -> None:
        """The admitted request ended (a response, or a failure after every fallback)."""
        pending = self._pending.pop(ctx.request_id, None)
        enabled, bodies = self._settings()
        if not enabled or pending is None:
            return
        served = rec.alias if rec is not None else None
        ok = rec is not None and rec.status == "success"
        content = {
            "kind": "request",
            "ts": _now(),
            "request_id": ctx.request_id,
            "key": ctx.key_name,
            "route": ctx.call_type,
            "requested_model": ctx.requested_model,
            "alias": ctx.alias,
            "served_alias": served,
            "provider": rec.provider if rec else None,
            "provider_model": rec.provider_model if rec else None,
            "region": rec.region if rec else None,
            "decision": "admitted",
            "status": (rec.http_status or (200 if ok else None)) if rec else None,
            "outcome": "success" if ok else "error",
            "error_type": rec.error_type if rec else None,
            "pii": dict(ctx.pii_counts),
            "pii_response": dict(ctx.response_pii_counts),
            "response_withheld": ctx.response_withheld,
            "downgraded_from": ctx.downgraded_from,
            "fallback_from": ctx.alias if served and served != ctx.alias else None,
            # The attempts that failed before the outcome, as in the ledger row.
            "failed_attempts": (
                json.loads(rec.failed_attempts) if rec and rec.failed_attempts else None
            ),
            # Claude Code's session, and for an auto-mode check the request it judged and
            # its verdict per tool call (the ledger row has the same).
            "session_id": ctx.session_id,
            "parent_request_id": ctx.parent_request_id,
            "safeguard_verdicts": (
                json.loads(rec.safeguard_verdicts) if rec and rec.safeguard_verdicts else None
            ),
            "tokens": (
                {
                    "input": rec.input_tokens,
                    "output": rec.output_tokens,
                    "cache_read": rec.cache_read_tokens,
                    "cache_write": rec.cache_write_tokens,
                }
                if rec
                else None
            ),
            "cost_usd": rec.cost_usd if rec else 0.0,
            "request_digest": pending.digest,
            "body": bodies if pending.body is not None else None,
        }
        body = None
        if pending.body is not None:
            answer = _jsonable(response) if ok else None
            if bodies == "redacted" and answer is not None:
                known = ctx.response_pii_texts if covers_everything(self.rules()) else {}
                answer = self._redactor.value(answer, known)
            body = {"request": pending.body, "response": answer}
        self._queue_record(content, body)

    # ------------------------------------------------------------------ queue and writer

    def _queue_record(self, content: dict[str, Any], body: Any) -> None:
        item = {
            "event_id": f"request:{content['request_id']}",
            "ts": content["ts"],
            "key_name": content.get("key"),
            "content": content,
            "body": canonical(body) if body is not None else None,
        }
        if len(self._queue) >= MAX_QUEUE:
            self._spool_blocking([item])
            return
        self._queue.append(item)
        self._idle.clear()
        self._wake.set()

    async def start(self) -> None:
        if self._writer is not None:
            return
        self._stopping = False
        self._spool_pending = await asyncio.to_thread(self.spool.has_rows)
        self._writer = asyncio.get_running_loop().create_task(self._run(), name="tenantgw-audit")

    async def stop(self) -> None:
        """Write (or spool) what is queued, then close."""
        self._stopping = True
        self._wake.set()
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer
        if self._queue:
            await self._spool([self._queue.popleft() for _ in range(len(self._queue))])
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                await self._conn.close()
            self._conn = None

    async def drain(self) -> None:
        """Wait until every record queued so far is written or spooled (tests, benchmarks)."""
        if self._writer is not None:
            await self._idle.wait()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue and not self._stopping:
                self._idle.set()
                self._wake.clear()
                wait = 0.5 if self._spool_pending else 5.0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                if self._queue and not self._stopping:
                    await asyncio.sleep(self.flush_interval)  # gather a batch
            batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
            stopping = self._stopping and not self._queue
            if loop.time() < self._retry_at and not stopping:
                await self._spool(batch)
            else:
                try:
                    await self._write(batch)
                except (psycopg.Error, OSError, TimeoutError) as exc:
                    self._failed(exc)
                    await self._spool(batch)
                except Exception as exc:  # never lose records to a bug in a corner
                    log.exception("audit writer failed; spooling %d records", len(batch))
                    self._failed(exc)
                    await self._spool(batch)
            if not self._queue:
                self._idle.set()
            if stopping:
                return

    async def _write(self, batch: list[dict[str, Any]]) -> None:
        # The stream is looked at every `stream_check_interval` s, not before every batch: an
        # empty stream would otherwise cost a Redis round trip per batch under load.
        now = asyncio.get_running_loop().time()
        if not self._stream_pending and now >= self._stream_check_at:
            self._stream_check_at = now + self.stream_check_interval
            self._stream_pending = await self._stream_has_rows()
        if not (batch or self._spool_pending or self._stream_pending):
            return
        conn = await self._connection()
        await self._replay(conn)
        if batch:
            self.written += await self._append(conn, batch)
        self._backoff = 0.0

    async def _append(self, conn: psycopg.AsyncConnection[Any], items: list[dict[str, Any]]) -> int:
        entries = await self._entries(conn, items)
        return await asyncio.wait_for(append(conn, self.schema, entries), self.statement_timeout)

    async def _entries(
        self, conn: psycopg.AsyncConnection[Any], items: list[dict[str, Any]]
    ) -> list[Entry]:
        names = {str(i.get("key_name") or "") for i in items if i.get("body") is not None}
        await self._refresh_keys(conn, names)
        entries = []
        for item in items:
            body, key_id = None, None
            if item.get("body") is not None:
                key_id, dek = self._deks[str(item.get("key_name") or "")]
                body = encrypt_body(dek, str(item["body"]).encode(), item["event_id"])
            content = dict(item["content"])
            if key_id is not None:
                content["body_key_id"] = key_id
            entries.append(
                Entry(
                    event_id=item["event_id"],
                    ts=datetime.fromisoformat(item["ts"]),
                    kind="request",
                    key_name=item.get("key_name"),
                    content=content,
                    body=body,
                    body_key_id=key_id,
                )
            )
        return entries

    async def _refresh_keys(self, conn: psycopg.AsyncConnection[Any], names: set[str]) -> None:
        """A data key per tenant key in `names`; one that was erased is replaced by a new one."""
        if not names:
            return
        table = f'"{self.schema}".{DATA_KEYS}'
        cached = [self._deks[n][0] for n in names if n in self._deks]
        if cached:
            cur = await conn.execute(
                f"SELECT key_id FROM {table} WHERE key_id = ANY(%s)",  # noqa: S608
                [cached],
            )
            alive = {row[0] for row in await cur.fetchall()}
            for name in list(names):
                if name in self._deks and self._deks[name][0] not in alive:
                    del self._deks[name]  # erased: bodies from now on get a new key
        for name in names - self._deks.keys():
            key_id, dek = secrets.token_hex(16), new_data_key()
            await conn.execute(
                f"INSERT INTO {table} (key_id, key_name, dek) VALUES (%s, %s, %s)",  # noqa: S608
                [key_id, name, dek],
            )
            self._deks[name] = (key_id, dek)

    # ------------------------------------------------------------------ spool

    async def _spool(self, items: list[dict[str, Any]]) -> None:
        if not items:
            return
        if self.stream is not None:
            try:
                self.spooled += await self.stream.append(items)
                self._stream_pending = True
                return
            except (*_REDIS_ERRORS, StreamFullError) as exc:
                log.warning("audit records not in the Redis stream (%s): to disk", exc)
        try:
            self.spooled += await asyncio.to_thread(self.spool.append, items)
            self._spool_pending = True
        except OSError:
            log.exception("%d audit records could not be spooled: LOST", len(items))

    def _spool_blocking(self, items: list[dict[str, Any]]) -> None:
        try:
            self.spooled += self.spool.append(items)
            self._spool_pending = True
        except OSError:
            log.exception("%d audit records could not be spooled: LOST", len(items))

    async def _stream_has_rows(self) -> bool:
        if self.stream is None:
            return False
        try:
            return await self.stream.length() > 0
        except _REDIS_ERRORS:
            return False

    async def _replay(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if self._spool_pending:
            for path in await asyncio.to_thread(self.spool.claim):
                items = await asyncio.to_thread(self.spool.read, path)
                for start in range(0, len(items), self.batch_size):
                    self.written += await self._append(conn, items[start : start + self.batch_size])
                await asyncio.to_thread(self.spool.remove, path)
            self._spool_pending = await asyncio.to_thread(self.spool.has_rows)
        stream = self.stream
        if stream is None or not self._stream_pending:
            return
        try:
            upto = await stream.last_id()
            after: str | None = None
            while upto is not None:
                entries = await stream.read(after, upto, self.batch_size)
                if not entries:
                    break
                items = [row for _, row in entries if row is not None]
                if items:
                    self.written += await self._append(conn, items)
                await stream.delete([entry_id for entry_id, _ in entries])
                after = entries[-1][0]
                if after == upto:
                    break
        except _REDIS_ERRORS as exc:
            log.warning("audit stream not replayed now (%s)", exc)
            return
        # Up to the newest entry when the replay began; a later one is found by the next look.
        self._stream_pending = False

    # ------------------------------------------------------------------ connection

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn: psycopg.AsyncConnection[Any] = await asyncio.wait_for(
            psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=5, application_name="tenantgw-audit"
            ),
            6,
        )
        self._conn = conn
        return conn

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        message = f"{type(exc).__name__}: {exc}".strip()
        if message != self.last_error:
            log.warning("audit write failed (%s); records are spooled until it works", message)
        self.last_error = message
        conn, self._conn = self._conn, None
        if conn is not None:
            asyncio.get_running_loop().create_task(conn.close())
        self._backoff = min(max(self._backoff * 2, 0.2), self.max_backoff)
        self._retry_at = asyncio.get_running_loop().time() + self._backoff


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _digest(value: Any) -> str:
    import hashlib

    return hashlib.sha256(canonical(value).encode()).hexdigest()


__all__ = ["AuditTrail", "refusal_reason", "request_subset", "stream_key"]
