"""The audit trail against the real PostgreSQL and Redis: append-only, chained, signed, erasable.

User story: a compliance officer can show, for every request a team's gateway served or refused,
who called what, where it was served and why it was refused, and prove the record was not
edited, deleted, reordered or truncated since; a team member holding the gateway's credentials
cannot change the trail, and a person's bodies can be erased without breaking the proof.

Tenants are provisioned by the real Provisioner (role, schema, audit schema); the gateway side
is the real `AuditTrail` writer with the tenant's own DSN; tampering is done with the tenant's
own credentials where the grants allow anything, else with the admin's (a compromised database).
"""

# ruff: noqa: S608  (SQL names the throwaway tenant's audit schema)
from __future__ import annotations

import asyncio
import csv
import io
import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import pytest_asyncio
from psycopg import errors as pgerr

from e2e.fixtures import Services
from e2e.gateway_launch import free_port
from e2e.throwaway_redis import CommandLog, throwaway_redis
from tenantgw.api.audit_trail import audit_schema, generate_signing_key, key_id
from tenantgw.cli import audit as cli
from tenantgw.gateway.audit import AuditTrail, stream_key
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.errors import PermissionDeniedError, RateLimitError
from tenantgw.gateway.files import Rules
from tenantgw.gateway.redisclient import connect
from tenantgw.gateway.refusals import budget_refusal
from tenantgw.gateway.usage import UsageRecord
from tenantgw.tenancy import Provisioner, TenantStorage
from tenantgw.tenancy.audit import AuditAdmin

pytestmark = pytest.mark.integration

EMAIL, CARD = "jane.doe@example.com", "4111 1111 1111 1111"


def _rules(tenant: str, *, enabled: bool = True, bodies: str = "redacted") -> Rules:
    return Rules.model_validate(
        {"tenant": tenant, "compliance": {"audit": {"enabled": enabled, "bodies": bodies}}}
    )


class World:
    def __init__(self, services: Services, name: str, storage: TenantStorage) -> None:
        self.services, self.name, self.storage = services, name, storage
        self.schema = audit_schema(name)
        self.private, self.public = generate_signing_key()
        self.keys = {key_id(self.public): self.public}
        self.admin = cli.admin_for(services.postgres_dsn)
        self.rules = _rules(name)

    def trail(self, tmp: Path, **kw: Any) -> AuditTrail:
        return AuditTrail(
            self.storage.postgres_dsn, self.name, lambda: self.rules, tmp, flush_interval=0.01, **kw
        )

    def sql_admin(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.services.postgres_dsn, autocommit=True) as conn:
            cur = conn.execute(statement.encode(), params)
            return cur.fetchall() if cur.description else []

    def records(self) -> list[dict[str, Any]]:
        rows = self.sql_admin(f"SELECT content FROM {self.schema}.records ORDER BY seq")
        return [json.loads(r[0]) for r in rows]

    async def verify(self) -> Any:
        return await cli.verify(self.admin, self.name, self.keys)


@pytest_asyncio.fixture
async def world(services: Services) -> AsyncIterator[World]:
    provisioner = Provisioner(services.postgres_dsn, services.redis_url)
    name = f"it-audit-{secrets.token_hex(4)}"
    try:
        storage = await provisioner.ensure(name)
        yield World(services, name, storage)
    finally:
        await provisioner.remove(name)
        await provisioner.close()


def _ctx(tenant: str, key: str = "alice", alias: str = "fast-code", **kw: Any) -> RequestContext:
    return RequestContext(
        tenant=tenant,
        key_name=key,
        request_id=secrets.token_hex(16),
        requested_model="claude-sonnet-4-5",
        alias=alias,
        call_type="anthropic_messages",
        **kw,
    )


def _usage(ctx: RequestContext, *, alias: str | None = None, ok: bool = True) -> UsageRecord:
    return UsageRecord(
        request_id=ctx.request_id,
        ts=datetime.now(UTC),
        tenant=ctx.tenant,
        key_name=ctx.key_name,
        requested_model=ctx.requested_model,
        alias=alias or ctx.alias,
        provider="sim",
        provider_model="qwen/qwen3-coder",
        region="us-east-1",
        input_tokens=120,
        output_tokens=30,
        cache_read_tokens=0,
        cache_write_tokens=0,
        cost_usd=0.0012,
        list_cost_usd=None,
        latency_ms=50,
        ttft_ms=50,
        status="success" if ok else "error",
        http_status=200 if ok else 502,
        error_type=None if ok else "APIError",
        downgraded_from=ctx.downgraded_from,
        stream=False,
    )


def _request(text: str) -> dict[str, Any]:
    return {
        "model": "fast-code",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": text}],
        "litellm_metadata": {"user_api_key": "sk-secret-do-not-store"},
    }


async def _serve(trail: AuditTrail, ctx: RequestContext, text: str, **usage: Any) -> None:
    trail.admitted(ctx, _request(text), None)
    answer = {"role": "assistant", "content": [{"type": "text", "text": f"echo {text}"}]}
    trail.finished(ctx, _usage(ctx, **usage), answer)


async def _populate(world: World, tmp: Path, n: int = 5) -> AuditTrail:
    trail = world.trail(tmp)
    await trail.start()
    for i in range(n):
        await _serve(trail, _ctx(world.name), f"hello {i}")
    await trail.drain()
    return trail


# ----------------------------------------------------------------------------- grants


async def test_tenant_role_can_append_but_never_edit_delete_truncate_or_drop(
    world: World, tmp_path: Path
) -> None:
    trail = await _populate(world, tmp_path, 2)
    await trail.stop()
    s = world.schema
    attacks = [
        f"UPDATE {s}.records SET content = '{{}}' WHERE seq = 1",
        f"DELETE FROM {s}.records WHERE seq = 1",
        f"TRUNCATE {s}.records",
        f"DROP TABLE {s}.records",
        f"ALTER TABLE {s}.records DISABLE TRIGGER ALL",
        f"DROP SCHEMA {s} CASCADE",
        f"SELECT dek FROM {s}.data_keys",
        f"DELETE FROM {s}.data_keys",
        f"INSERT INTO {s}.checkpoints VALUES ('checkpoint', 99, '\\x00', now(), 'k', '\\x00')",
        f"DELETE FROM {s}.checkpoints",
        f"CREATE TABLE {s}.shadow (x int)",
    ]
    with psycopg.connect(world.storage.postgres_dsn, autocommit=True) as conn:
        for attack in attacks:
            with pytest.raises(pgerr.InsufficientPrivilege, match=r"denied|must be owner"):
                conn.execute(attack.encode())
        # What the role may do: read its trail and the names of its data keys.
        assert conn.execute(f"SELECT count(*) FROM {s}.records".encode()).fetchone() == (2,)
        conn.execute(f"SELECT key_id, key_name FROM {s}.data_keys".encode())
    assert len(world.records()) == 2
    assert (await world.verify()).ok


async def test_provisioning_is_idempotent_and_repairs_a_widened_grant(
    world: World, services: Services
) -> None:
    provisioner = Provisioner(services.postgres_dsn, services.redis_url)
    try:
        assert await provisioner.audit.ensure(world.name) is False  # in place: reads only
        role = f"tgw_{world.name.replace('-', '_')}"
        world.sql_admin(f"GRANT DELETE ON {world.schema}.records TO {role}")
        assert await provisioner.audit.ensure(world.name) is True
        with (
            psycopg.connect(world.storage.postgres_dsn, autocommit=True) as conn,
            pytest.raises(pgerr.InsufficientPrivilege),
        ):
            conn.execute(f"DELETE FROM {world.schema}.records".encode())
        # The tenant's own provisioning leaves the audit schema usable by the role.
        await provisioner.ensure(world.name, _password(world.storage))
        assert await provisioner.audit.ensure(world.name) is False
    finally:
        await provisioner.close()


def _password(storage: TenantStorage) -> str:
    from tenantgw.tenancy import password_from

    return password_from(storage.postgres_dsn)


async def test_a_tenants_credentials_cannot_read_or_append_to_another_tenants_trail_or_ledger(
    world: World, services: Services, tmp_path: Path
) -> None:
    """Two teams on one database: team A's gateway DSN (the credential a team member could
    lift from its pod) tries B's audit trail and B's usage ledger every way it could."""
    from tenantgw.api.audit_trail import Entry, append
    from tenantgw.gateway.ledger import Ledger
    from tenantgw.tenancy import role_name, schema_name

    trail = await _populate(world, tmp_path / "b", 3)  # B = world: a trail with 3 records
    await trail.stop()
    await world.admin.checkpoint(world.name, world.private)
    ledger = Ledger(world.storage.postgres_dsn, tmp_path / "b-spool")
    await ledger.start()
    ledger.record(_usage(_ctx(world.name)))
    await ledger.drain()
    await ledger.stop()
    b_trail, b_ledger = world.schema, schema_name(world.name)

    provisioner = Provisioner(services.postgres_dsn, services.redis_url)
    a_name = f"it-audit-a-{secrets.token_hex(4)}"
    try:
        a = await provisioner.ensure(a_name)
        attacks = [
            f"SELECT count(*) FROM {b_trail}.records",
            f"SELECT content FROM {b_trail}.records WHERE seq = 1",
            f"INSERT INTO {b_trail}.records (seq, event_id, ts, kind, content, prev_hash, hash) "
            "VALUES (4, 'forged', now(), 'request', '{}', '\\x00', '\\x00')",
            f"UPDATE {b_trail}.records SET content = '{{}}'",
            f"DELETE FROM {b_trail}.records",
            f"SELECT key_id, key_name FROM {b_trail}.data_keys",
            f"INSERT INTO {b_trail}.data_keys (key_id, key_name, dek) VALUES ('k', 'x', '\\x00')",
            f"SELECT * FROM {b_trail}.checkpoints",
            f"UPDATE {b_trail}.write_lock SET touched = now()",
            f"SELECT 1 FROM {b_trail}.write_lock FOR UPDATE",
            f"SELECT count(*) FROM {b_ledger}.usage",
            f"INSERT INTO {b_ledger}.usage (request_id, ts) VALUES ('forged', now())",
            f"DELETE FROM {b_ledger}.usage",
            f"SET ROLE {role_name(world.name)}",
        ]
        with psycopg.connect(a.postgres_dsn, autocommit=True) as conn:
            for attack in attacks:
                with pytest.raises(pgerr.InsufficientPrivilege, match="denied"):
                    conn.execute(attack.encode())
        # The gateway's own append, pointed at B's trail with A's credentials.
        entry = Entry(
            event_id=secrets.token_hex(8),
            ts=datetime.now(UTC),
            kind="request",
            key_name="mallory",
            content={"kind": "request", "key": "mallory", "decision": "admitted"},
        )
        async with await psycopg.AsyncConnection.connect(a.postgres_dsn, autocommit=True) as conn:
            with pytest.raises(pgerr.InsufficientPrivilege):
                await append(conn, b_trail, [entry])
        # B's trail and ledger are as B left them, and still verify.
        assert [r["seq"] for r in world.records()] == [1, 2, 3]
        assert world.sql_admin(f"SELECT count(*) FROM {b_ledger}.usage") == [(1,)]
        verdict = await world.verify()
        assert verdict.ok, verdict.problem
        assert verdict.checkpoints == 1
    finally:
        await provisioner.remove(a_name)
        await provisioner.close()


# ----------------------------------------------------------------------------- records


async def test_records_of_admitted_refused_redacted_downgraded_and_fallback_requests(
    world: World, tmp_path: Path
) -> None:
    trail = world.trail(tmp_path)
    await trail.start()
    plain = _ctx(world.name)
    await _serve(trail, plain, "write a haiku")
    redacted = _ctx(world.name, pii_counts={"EMAIL": 1, "CREDIT_CARD": 1})
    await _serve(trail, redacted, f"mail {EMAIL} card {CARD}")
    down = _ctx(world.name, alias="cheap", downgraded_from="reasoning")
    await _serve(trail, down, "think")
    fell = _ctx(world.name, alias="fast-code")
    await _serve(trail, fell, "fallback please", alias="reasoning")
    over = _ctx(world.name)
    trail.refused(
        over,
        RateLimitError("key alice is over its 10 requests per minute", retry_after=3),
        key_name="alice",
        call_type="anthropic_messages",
        data=_request("x"),
    )
    trail.refused(
        None,
        PermissionDeniedError("model 'eu' is not allowed by its data residency (allowed: x)"),
        key_name="bob",
        call_type="acompletion",
        data=_request("y"),
    )

    class Broke:
        action, policy, limit_usd, spent_usd, period = "block", "team", 1.0, 1.5, "daily"
        message = "over budget"

    trail.refused(
        _ctx(world.name),
        budget_refusal(Broke(), world.name),
        key_name="alice",
        call_type="anthropic_messages",
        data=_request("z"),
    )
    await trail.drain()
    await trail.stop()
    by_id = {r["request_id"]: r for r in world.records()}
    assert len(by_id) == 7
    ok = by_id[plain.request_id]
    assert ok["decision"] == "admitted"
    assert ok["outcome"] == "success"
    assert (ok["provider"], ok["region"], ok["served_alias"]) == ("sim", "us-east-1", "fast-code")
    assert ok["tokens"]["input"] == 120
    assert ok["cost_usd"] == pytest.approx(0.0012)
    assert len(ok["request_digest"]) == 64
    assert ok["body"] == "redacted"
    assert by_id[redacted.request_id]["pii"] == {"EMAIL": 1, "CREDIT_CARD": 1}
    assert by_id[down.request_id]["downgraded_from"] == "reasoning"
    assert by_id[fell.request_id]["fallback_from"] == "fast-code"
    assert by_id[fell.request_id]["served_alias"] == "reasoning"
    refused = {r["reason"]: r for r in by_id.values() if r["decision"] == "refused"}
    assert set(refused) == {"rate_limit", "residency", "budget"}
    assert refused["rate_limit"]["status"] == 429
    assert refused["budget"]["status"] == 402
    assert refused["residency"]["key"] == "bob"
    assert "data residency" in refused["residency"]["message"]
    # Bodies: encrypted at rest, redacted inside, never LiteLLM's metadata.
    raw = world.sql_admin(f"SELECT body FROM {world.schema}.records WHERE body IS NOT NULL")
    assert raw
    assert all(EMAIL.encode() not in bytes(b) for (b,) in raw)
    out = io.StringIO()
    await cli.export(world.admin, world.name, out, bodies=True)
    exported = out.getvalue()
    assert EMAIL not in exported
    assert CARD not in exported
    assert "sk-secret" not in exported
    assert "[REDACTED_EMAIL]" in exported
    assert (await world.verify()).ok


async def test_enabled_false_writes_nothing(world: World, tmp_path: Path) -> None:
    world.rules = _rules(world.name, enabled=False)
    trail = await _populate(world, tmp_path, 3)
    trail.refused(
        None, RateLimitError("x"), key_name="a", call_type="acompletion", data=_request("q")
    )
    await trail.drain()
    await trail.stop()
    assert world.records() == []
    assert world.sql_admin(f"SELECT count(*) FROM {world.schema}.data_keys") == [(0,)]


async def test_replicas_append_to_one_well_defined_chain(world: World, tmp_path: Path) -> None:
    trails = [world.trail(tmp_path / str(i), batch_size=3) for i in range(3)]
    for t in trails:
        await t.start()
    for round_ in range(10):
        for t in trails:
            await _serve(t, _ctx(world.name, key=f"k{round_ % 2}"), f"r{round_}")
        await asyncio.sleep(0)
    await asyncio.gather(*(t.drain() for t in trails))
    for t in trails:
        await t.stop()
    seqs = [r["seq"] for r in world.records()]
    assert seqs == list(range(1, 31))
    assert (await world.verify()).ok


# ----------------------------------------------------------------------------- verify


async def _signed(world: World, tmp: Path, n: int = 6) -> None:
    trail = await _populate(world, tmp, n)
    await trail.stop()
    assert await world.admin.checkpoint(world.name, world.private) == n
    assert await world.admin.checkpoint(world.name, world.private) is None  # head unchanged


async def test_verify_names_an_edited_record(world: World, tmp_path: Path) -> None:
    await _signed(world, tmp_path)
    world.sql_admin(
        f"UPDATE {world.schema}.records SET content = replace(content, '\"alice\"', '\"mallory\"')"
        " WHERE seq = 3"
    )
    verdict = await world.verify()
    assert not verdict.ok
    assert verdict.first_bad == 3
    assert "edited" in verdict.problem


async def test_verify_names_a_deleted_record(world: World, tmp_path: Path) -> None:
    await _signed(world, tmp_path)
    world.sql_admin(f"DELETE FROM {world.schema}.records WHERE seq = 4")
    verdict = await world.verify()
    assert not verdict.ok
    assert verdict.first_bad == 4
    assert "missing" in verdict.problem


async def test_verify_names_reordered_records(world: World, tmp_path: Path) -> None:
    await _signed(world, tmp_path)
    s = world.schema
    world.sql_admin(
        f"UPDATE {s}.records SET seq = seq + 1000 WHERE seq IN (2, 5);"
        f"UPDATE {s}.records SET seq = CASE seq WHEN 1002 THEN 5 ELSE 2 END WHERE seq > 1000"
    )
    verdict = await world.verify()
    assert not verdict.ok
    assert verdict.first_bad == 2
    assert "reordered" in verdict.problem


async def test_verify_names_truncation_after_a_checkpoint(world: World, tmp_path: Path) -> None:
    await _signed(world, tmp_path)
    world.sql_admin(f"DELETE FROM {world.schema}.records WHERE seq >= 5")
    verdict = await world.verify()
    assert not verdict.ok
    assert verdict.first_bad == 5
    assert "truncated" in verdict.problem


async def test_verify_catches_a_rewritten_chain_by_its_checkpoint(
    world: World, tmp_path: Path
) -> None:
    """A compromised database rewrites record 3 and recomputes every hash after it: the chain
    holds, the signed checkpoint does not."""
    from tenantgw.api.audit_trail import GENESIS, record_hash

    await _signed(world, tmp_path)
    s = world.schema
    rows = world.sql_admin(f"SELECT seq, content, body FROM {s}.records ORDER BY seq")
    prev = GENESIS
    for seq, content, body in rows:
        if seq == 3:
            content = content.replace('"alice"', '"mallory"')
        h = record_hash(prev, content, bytes(body) if body else None)
        world.sql_admin(
            f"UPDATE {s}.records SET content = %s, prev_hash = %s, hash = %s WHERE seq = %s",
            content,
            prev,
            h,
            seq,
        )
        prev = h
    verdict = await world.verify()
    assert not verdict.ok
    assert verdict.first_bad == 1
    assert "checkpoint" in verdict.problem
    # A checkpoint forged with another key is refused too.
    world.sql_admin(f"DELETE FROM {s}.checkpoints")
    other, _ = generate_signing_key()
    await world.admin.checkpoint(world.name, other)
    assert "unknown key" in (await world.verify()).problem


# ----------------------------------------------------------------------------- export


async def test_export_round_trips_as_jsonl_and_csv(world: World, tmp_path: Path) -> None:
    await _signed(world, tmp_path, 4)
    out = io.StringIO()
    assert await cli.export(world.admin, world.name, out) == 4
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["seq"] for r in lines] == [1, 2, 3, 4]
    assert lines == [{**r, "hash": lines[i]["hash"]} for i, r in enumerate(world.records())]
    out = io.StringIO()
    assert await cli.export(world.admin, world.name, out, fmt="csv") == 4
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [int(r["seq"]) for r in rows] == [1, 2, 3, 4]
    assert rows[0]["request_id"] == lines[0]["request_id"]
    future = datetime.now(UTC) + timedelta(days=1)
    assert await cli.export(world.admin, world.name, io.StringIO(), since=future) == 0


# ----------------------------------------------------------------------------- retention


async def test_retention_prunes_and_the_chain_still_verifies(world: World, tmp_path: Path) -> None:
    await _signed(world, tmp_path, 6)
    old = datetime.now(UTC) - timedelta(days=40)
    world.sql_admin(f"UPDATE {world.schema}.records SET ts = %s WHERE seq <= 4", old)
    assert await world.admin.prune(world.name, 30, world.private) == 4
    assert [r["seq"] for r in world.records()] == [5, 6]
    verdict = await world.verify()
    assert verdict.ok, verdict.problem
    assert verdict.first_seq == 5
    assert "pruned" in verdict.notes[0]
    assert await world.admin.prune(world.name, 30, world.private) == 0  # nothing older: no write
    # The trail keeps growing on top of the cut.
    trail = await _populate(world, tmp_path, 2)
    await trail.stop()
    assert (await world.verify()).ok
    # Deleting a retained record is still caught.
    world.sql_admin(f"DELETE FROM {world.schema}.records WHERE seq = 5")
    assert (await world.verify()).first_bad == 5


# ----------------------------------------------------------------------------- erasure


async def test_erase_destroys_a_keys_bodies_and_the_chain_still_verifies(
    world: World, tmp_path: Path
) -> None:
    trail = world.trail(tmp_path)
    await trail.start()
    await _serve(trail, _ctx(world.name, key="alice"), "alice secret plan")
    await _serve(trail, _ctx(world.name, key="bob"), "bob plan")
    await trail.drain()
    await world.admin.checkpoint(world.name, world.private)
    assert await world.admin.erase(world.name, "alice") == 1
    out = io.StringIO()
    await cli.export(world.admin, world.name, out, bodies=True)
    bodies = {r["key"]: r["body"] for r in map(json.loads, out.getvalue().splitlines())}
    assert bodies["alice"] == "erased"
    assert "bob plan" in json.dumps(bodies["bob"])
    assert (await world.verify()).ok
    # Alice's next request gets a new data key: readable, and the old one stays gone.
    await _serve(trail, _ctx(world.name, key="alice"), "after erasure")
    await trail.drain()
    await trail.stop()
    out = io.StringIO()
    await cli.export(world.admin, world.name, out, bodies=True)
    assert "after erasure" in out.getvalue()
    assert "alice secret plan" not in out.getvalue()
    assert (await world.verify()).ok


async def test_an_export_decrypts_bodies_written_under_a_key_newer_than_its_key_read(
    world: World, tmp_path: Path
) -> None:
    """A writer's first body creates its data key. Written between the export's read of the
    keys and its read of the records, that body was reported `erased`, though nothing was."""
    trail = world.trail(tmp_path)
    await trail.start()

    class WriteAfterKeyRead(AuditAdmin):
        """The admin, with a record of a new key appended right after the keys are read."""

        async def data_keys(self, tenant: str) -> dict[str, bytes]:
            keys = await super().data_keys(tenant)
            if not keys:
                await _serve(trail, _ctx(world.name, key="carol"), "carol wrote meanwhile")
                await trail.drain()
            return keys

    admin = WriteAfterKeyRead(world.admin._connect)
    try:
        out = io.StringIO()
        assert await cli.export(admin, world.name, out, bodies=True) == 1
    finally:
        await trail.stop()
    (record,) = map(json.loads, out.getvalue().splitlines())
    assert record["key"] == "carol"
    assert record["body"] != "erased"
    assert "carol wrote meanwhile" in json.dumps(record["body"])


async def test_checkpoints_and_retention_pass_over_a_tenant_not_provisioned_yet(
    services: Services,
) -> None:
    """A thousand new tenants wait their turn for storage; the checkpoint loop meanwhile finds
    no trail for them, which is nothing to sign or prune, not an error."""
    provisioner = Provisioner(services.postgres_dsn, services.redis_url)
    private, _ = generate_signing_key()
    name = f"it-audit-new-{secrets.token_hex(4)}"
    try:
        assert await provisioner.audit.checkpoint(name, private) is None
        assert await provisioner.audit.prune(name, 30, private) == 0
        assert provisioner.writes == 0
    finally:
        await provisioner.close()


# ----------------------------------------------------------------------------- the Redis stream


async def test_records_that_waited_in_redis_while_postgres_was_down_are_appended_once(
    world: World, tmp_path: Path
) -> None:
    """A replica whose Postgres is unreachable spools to the tenant's Redis stream; the next
    writer (here another replica) appends them, once, before its own, and empties the stream."""
    assert world.storage.redis_url is not None
    redis = connect(world.storage.redis_url)
    down_dsn = world.storage.postgres_dsn.replace(
        f":{urlsplit(world.storage.postgres_dsn).port}/", f":{free_port()}/"
    )
    try:
        down = AuditTrail(
            down_dsn, world.name, lambda: world.rules, tmp_path / "down", redis=redis,
            flush_interval=0.01,
        )  # fmt: skip
        await down.start()
        for i in range(4):
            await _serve(down, _ctx(world.name), f"while down {i}")
        await down.drain()
        await down.stop()
        assert down.spooled == 4
        assert await redis.xlen(stream_key(world.name)) == 4
        assert world.records() == []

        trail = AuditTrail(
            world.storage.postgres_dsn, world.name, lambda: world.rules, tmp_path / "up",
            redis=redis, flush_interval=0.01,
        )  # fmt: skip
        await trail.start()
        await _serve(trail, _ctx(world.name), "after")
        await trail.drain()
        await trail.stop()
    finally:
        await redis.aclose()
    records = world.records()
    assert len(records) == 5
    assert len({r["request_id"] for r in records}) == 5
    assert (await world.verify()).ok
    check = connect(world.storage.redis_url)
    try:
        assert await check.xlen(stream_key(world.name)) == 0
    finally:
        await check.aclose()


async def test_an_empty_stream_is_looked_at_on_a_timer_not_before_every_batch(
    world: World, tmp_path: Path
) -> None:
    """Under load a writer appends a batch every flush: with the stream empty, none of them
    costs a Redis round trip; the stream is looked at every `stream_check_interval` s."""
    with throwaway_redis(tmp_path) as server:
        redis = connect(server.url)
        trail = world.trail(tmp_path / "spool", redis=redis, stream_check_interval=3600)
        try:
            await trail.start()
            await _serve(trail, _ctx(world.name), "first")  # its first look: XLEN
            await trail.drain()
            with CommandLog(server.url) as log:
                for i in range(5):
                    await _serve(trail, _ctx(world.name), f"batch {i}")
                    await trail.drain()
                await asyncio.sleep(0.5)  # MONITOR's reader thread catches up
                sent = log.round_trips()
            await trail.stop()
        finally:
            await redis.aclose()
    assert sent == [], sent
    assert len(world.records()) == 6
