"""The procedures of docs/disaster-recovery.md, run against the real PostgreSQL and a Redis.

User story: the platform team loses a tenant's database schemas, or its Redis, and follows the
disaster-recovery page; afterwards the ledger holds every row it had, the audit trail verifies
with its signed checkpoints and is still append-only for the gateway, and no budget spend was
forgiven.

The backup and restore commands are read out of the page's `run-by` blocks and run with bash,
so the page shows exactly what is tested. Tenants are provisioned by the operator's own
Provisioner; the gateway side is the real Ledger, AuditTrail and BudgetGuard with the tenant's
own credentials.
"""

# ruff: noqa: S608  (SQL names the throwaway tenant's schemas)
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis.asyncio as aioredis
from psycopg import errors as pgerr
from redis import exceptions as rexc

from e2e.fixtures import Services
from e2e.throwaway_redis import throwaway_redis
from tenantgw.api.audit_trail import audit_schema, b64, generate_signing_key
from tenantgw.cli import audit as cli
from tenantgw.gateway.audit import AuditTrail
from tenantgw.gateway.budgets import BudgetGuard
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.files import Rules
from tenantgw.gateway.ledger import Ledger
from tenantgw.gateway.metrics import GatewayMetrics
from tenantgw.gateway.storehealth import StoreHealth, StoreUnavailable
from tenantgw.gateway.usage import UsageRecord
from tenantgw.tenancy import Provisioner, password_from, schema_name

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "disaster-recovery.md"
POLICIES = ("team-monthly", "alice-weekly")


def doc_block(label: str) -> str:
    """The shell block of the page that follows `<!-- run-by: <this file> <label> -->`."""
    marker = re.escape(f"<!-- run-by: tests/integration/{Path(__file__).name} {label} -->")
    found = re.search(marker + r"\s*```sh\n(.*?)```", PAGE.read_text(), re.S)
    assert found, f"docs/disaster-recovery.md has no run-by block {label!r}"
    return found.group(1)


def run_block(label: str, env: dict[str, str], cwd: Path) -> list[str]:
    """Run a block of the page with bash (errexit, pipefail); its output lines."""
    if shutil.which("pg_dump") is None:
        pytest.fail("pg_dump is not installed (Debian's postgresql-client; make setup)")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", doc_block(label)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{label} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout.splitlines()


def _rules(tenant: str, *budgets: dict[str, Any]) -> Rules:
    return Rules.model_validate(
        {
            "tenant": tenant,
            "aliases": {"fast-code": {"cost_tier": "medium"}},
            "budgets": list(budgets),
            "compliance": {"audit": {"enabled": True, "bodies": "redacted"}},
        }
    )


def _budget(name: str, limit_usd: float, kind: str = "Tenant", scope: str | None = None,
            period: str = "monthly") -> dict[str, Any]:  # fmt: skip
    return {
        "name": name,
        "scope": {"kind": kind, "name": scope},
        "period": period,
        "limit_usd": limit_usd,
        "alert_thresholds": [100],
        "on_exceeded": {"action": "block", "to_cost_tier": None},
    }


def _ctx(tenant: str, key: str = "alice") -> RequestContext:
    return RequestContext(
        tenant=tenant,
        key_name=key,
        request_id=secrets.token_hex(16),
        requested_model="claude-sonnet-4-5",
        alias="fast-code",
        call_type="anthropic_messages",
    )


def _usage(ctx: RequestContext, cost: float) -> UsageRecord:
    return UsageRecord(
        request_id=ctx.request_id,
        ts=datetime.now(UTC),
        tenant=ctx.tenant,
        key_name=ctx.key_name,
        requested_model=ctx.requested_model,
        alias=ctx.alias,
        provider="sim",
        provider_model="qwen/qwen3-coder",
        region="us-east-1",
        input_tokens=100,
        output_tokens=10,
        cache_read_tokens=0,
        cache_write_tokens=0,
        cost_usd=cost,
        list_cost_usd=None,
        latency_ms=40,
        ttft_ms=20,
        status="success",
        http_status=200,
        error_type=None,
        downgraded_from=None,
        stream=False,
    )


def _sql(dsn: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(statement.encode(), params)
        return cur.fetchall() if cur.description else []


async def _eventually(probe: Callable[[], Any], what: str, deadline: float = 60) -> None:
    """Poll an async probe until it is true (a deadline, never an asserted timing)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not await probe():
        if loop.time() > end:
            pytest.fail(f"{what} did not happen within {deadline:.0f} s")
        await asyncio.sleep(0.1)


# ----------------------------------------------------------------------------- PostgreSQL


async def test_ledger_and_audit_trail_come_back_from_pg_dump_with_their_grants(
    services: Services, tmp_path: Path
) -> None:
    provisioner = Provisioner(services.postgres_dsn, services.redis_url)
    name = f"it-dr-{secrets.token_hex(4)}"
    ledger_schema, trail_schema = schema_name(name), audit_schema(name)
    rules = _rules(name)
    private, public = generate_signing_key()
    admin = cli.admin_for(services.postgres_dsn)
    try:
        storage = await provisioner.ensure(name)
        password = password_from(storage.postgres_dsn)
        # A gateway at work: ledger rows and audit records, two signed checkpoints.
        ledger = Ledger(storage.postgres_dsn, tmp_path / "spool")
        trail = AuditTrail(
            storage.postgres_dsn, name, lambda: rules, tmp_path / "audit", flush_interval=0.01
        )
        await ledger.start()
        await trail.start()
        for i in range(7):
            ctx = _ctx(name, key="alice" if i % 2 else "bob")
            trail.admitted(ctx, {"model": "fast-code", "messages": [{"role": "user",
                                 "content": f"request {i}"}]}, None)  # fmt: skip
            usage = _usage(ctx, 0.01 * (i + 1))
            trail.finished(ctx, usage, {"role": "assistant", "content": f"answer {i}"})
            ledger.record(usage)
            if i == 3:
                await trail.drain()
                assert await admin.checkpoint(name, private) == 4
        await trail.drain()
        await ledger.drain()
        assert await admin.checkpoint(name, private) == 7
        await trail.stop()
        await ledger.stop()
        before = _sql(services.postgres_dsn, f"SELECT request_id, cost_usd FROM "
                      f"{ledger_schema}.usage ORDER BY request_id")  # fmt: skip
        assert len(before) == 7

        env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT)]),
            "HOME": str(tmp_path),
            "TENANT": name,
            "TENANTGW_POSTGRES_DSN": services.postgres_dsn,
            "BACKUP": str(tmp_path / f"tenantgw-{name}.dump"),
            "AUDIT_PUBLIC_KEY": b64(public),
        }
        assert run_block("backup", env, tmp_path)[-1] == "7"

        # The disaster: both schemas are gone.
        _sql(
            services.postgres_dsn,
            f"DROP SCHEMA {ledger_schema} CASCADE; DROP SCHEMA {trail_schema} CASCADE",
        )
        # The operator's next reconcile provisions them again, empty, and the gateway
        # (restarted) creates an empty ledger table.
        await provisioner.ensure(name, password)
        fresh = Ledger(storage.postgres_dsn, tmp_path / "spool2")
        await fresh.start()
        await fresh.stop()
        assert _sql(services.postgres_dsn, f"SELECT count(*) FROM {ledger_schema}.usage") == [(0,)]

        restored = run_block("restore", env, tmp_path)
        assert restored[0] == "7"
        assert restored[-1].startswith(f"OK: audit trail of {name} verifies (7 records")
        assert "2 signed checkpoints" in restored[-1]
        after = _sql(services.postgres_dsn, f"SELECT request_id, cost_usd FROM "
                     f"{ledger_schema}.usage ORDER BY request_id")  # fmt: skip
        assert after == before
        verdict = await cli.verify(admin, name, cli.public_keys_from([b64(public)]))
        assert verdict.ok, verdict.problem
        assert (verdict.records, verdict.checkpoints) == (7, 2)

        # Grants and owners came back: the operator finds nothing to repair ...
        writes = provisioner.writes
        assert await provisioner.audit.ensure(name) is False
        await provisioner.ensure(name, password)
        assert provisioner.writes == writes
        # ... the gateway's role still cannot change the trail or read its keys ...
        with psycopg.connect(storage.postgres_dsn, autocommit=True) as conn:
            for attack in (
                f"UPDATE {trail_schema}.records SET content = '{{}}' WHERE seq = 1",
                f"DELETE FROM {trail_schema}.records WHERE seq = 7",
                f"TRUNCATE {trail_schema}.records",
                f"SELECT dek FROM {trail_schema}.data_keys",
                f"DELETE FROM {trail_schema}.checkpoints",
                f"DROP SCHEMA {trail_schema} CASCADE",
            ):
                with pytest.raises(pgerr.InsufficientPrivilege):
                    conn.execute(attack.encode())
            # ... and still owns its ledger (it lands in it and writes to it).
            assert conn.execute("SELECT count(*) FROM usage").fetchone() == (7,)
        # The gateway appends after the restored head and the chain still verifies.
        trail = AuditTrail(
            storage.postgres_dsn, name, lambda: rules, tmp_path / "audit3", flush_interval=0.01
        )
        await trail.start()
        ctx = _ctx(name)
        trail.admitted(ctx, {"model": "fast-code", "messages": []}, None)
        trail.finished(ctx, _usage(ctx, 0.5), {"role": "assistant", "content": "after"})
        await trail.drain()
        await trail.stop()
        verdict = await cli.verify(admin, name, cli.public_keys_from([b64(public)]))
        assert verdict.ok, verdict.problem
        assert verdict.last_seq == 8
        # Tampering with the restored trail is still caught by its restored checkpoints.
        _sql(services.postgres_dsn, f"DELETE FROM {trail_schema}.records WHERE seq >= 6")
        verdict = await cli.verify(admin, name, cli.public_keys_from([b64(public)]))
        assert not verdict.ok
        assert verdict.first_bad == 6
    finally:
        await provisioner.remove(name)
        await provisioner.close()


# ----------------------------------------------------------------------------- Redis


async def test_budgets_come_back_from_the_ledger_after_redis_loses_everything(
    services: Services, tmp_path: Path
) -> None:
    """A Redis restart without persistence and without an aclfile: the gateway's ACL user and
    every counter are gone; the operator's next reconcile recreates the user and the gateway's
    reconciliation raises the counters back to the ledger's spend."""
    (tmp_path / "redis").mkdir()
    with throwaway_redis(tmp_path / "redis") as server:
        provisioner = Provisioner(services.postgres_dsn, server.url)
        name = f"it-dr-{secrets.token_hex(4)}"
        limits = _rules(
            name,
            _budget("team-monthly", 1.0),
            _budget("alice-weekly", 5.0, "Key", "alice", period="weekly"),
        )
        try:
            storage = await provisioner.ensure(name)
            password = password_from(storage.redis_url)
            ledger = Ledger(storage.postgres_dsn, tmp_path / "spool")
            await ledger.start()
            client = aioredis.Redis.from_url(storage.redis_url, socket_timeout=2)
            guard = BudgetGuard(
                client,
                name,
                StoreHealth(name, GatewayMetrics.registered(), redis=client, skip_after=0.2),
                ledger_reader=ledger,
                reconcile_interval=0.2,
            )
            try:
                for _ in range(10):  # $1.00 by alice: the team's $1 is spent
                    ctx = _ctx(name)
                    assert (await guard.check(ctx, limits)).action == "allow"
                    ledger.record(_usage(ctx, 0.1))
                    await guard.add_spend(ctx, 0.1)
                await ledger.drain()
                assert (await guard.check(_ctx(name), limits)).action == "block"

                server.restart()  # SIGKILL and start: no keys, no tenant users
                probe = aioredis.Redis.from_url(storage.redis_url, socket_timeout=2)
                try:
                    with pytest.raises(
                        rexc.AuthenticationError, match="invalid username-password pair"
                    ):
                        await probe.ping()  # type: ignore[misc]
                finally:
                    await probe.aclose()
                # Meanwhile the gateway treats Redis as unavailable (onStoreUnavailable).
                with pytest.raises(StoreUnavailable):
                    await guard.check(_ctx(name), limits)

                # The operator's next reconcile of the tenant recreates its user.
                await provisioner.ensure(name, password)
                assert await client.ping() is True  # type: ignore[misc]

                async def restored() -> bool:
                    try:
                        spent = [await guard.spent(p, limits) for p in POLICIES]
                    except rexc.RedisError:
                        return False
                    if min(spent) < 1.0 - 1e-9:
                        # the reconciler starts with a check; a refused one is fine here
                        with contextlib.suppress(StoreUnavailable):
                            await guard.check(_ctx(name, key="carol"), limits)
                        return False
                    return True

                await _eventually(restored, "the budget counters coming back from the ledger")
                assert await guard.spent("team-monthly", limits) == pytest.approx(1.0)
                assert await guard.spent("alice-weekly", limits) == pytest.approx(1.0)
                blocked = await guard.check(_ctx(name), limits)
                assert blocked.action == "block"
                assert blocked.policy == "team-monthly"
            finally:
                await guard.aclose()
                await client.aclose()
                await ledger.stop()
        finally:
            await provisioner.remove(name)
            await provisioner.close()
