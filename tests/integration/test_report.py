"""`tenantctl report` against the real Postgres: its totals are SQL's over the same ledger.

The rows go in through the gateway's own Ledger (so the `labels` and `list_model` columns are
proven through the writer, and added to a table an older gateway created), then the CLI reads
them with the admin DSN like a platform engineer would.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from e2e.fixtures import Services
from tenantgw.cli.main import main
from tenantgw.gateway.ledger import Ledger
from tenantgw.gateway.usage import UsageRecord
from tenantgw.tenancy.naming import role_name, schema_name

pytestmark = pytest.mark.integration

OLD_TABLE = """
CREATE TABLE usage (
    request_id text PRIMARY KEY, ts timestamptz NOT NULL, tenant text NOT NULL,
    key_name text NOT NULL, requested_model text NOT NULL, alias text NOT NULL,
    provider text, provider_model text, region text,
    input_tokens integer NOT NULL DEFAULT 0, output_tokens integer NOT NULL DEFAULT 0,
    cache_read_tokens integer NOT NULL DEFAULT 0, cache_write_tokens integer NOT NULL DEFAULT 0,
    cost_usd numeric(20, 10) NOT NULL DEFAULT 0, list_cost_usd numeric(20, 10),
    latency_ms integer, ttft_ms integer,
    status text NOT NULL CHECK (status IN ('success', 'error')),
    http_status integer, error_type text, downgraded_from text,
    stream boolean NOT NULL DEFAULT false
)
"""


def _admin(dsn: str, statement: Any, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def tenant(services: Services) -> Iterator[tuple[str, str]]:
    """A tenant's role and schema as the operator names them, with an old-release table."""
    name = f"rpt-{uuid.uuid4().hex[:10]}"
    role, schema, password = role_name(name), schema_name(name), secrets.token_hex(16)
    admin = services.postgres_dsn
    parts = urlsplit(admin)
    dsn = urlunsplit(
        parts._replace(netloc=f"{quote(role)}:{password}@{parts.hostname}:{parts.port}")
    )
    r, s = sql.Identifier(role), sql.Identifier(schema)
    _admin(admin, sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(r, sql.Literal(password)))
    _admin(admin, sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(s, r))
    _admin(admin, sql.SQL("ALTER ROLE {} SET search_path = {}").format(r, s))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(OLD_TABLE.encode())
    try:
        yield name, dsn
    finally:
        _admin(
            admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", role
        )
        _admin(admin, sql.SQL("DROP SCHEMA {} CASCADE").format(s))
        _admin(admin, sql.SQL("DROP ROLE {}").format(r))


def record(tenant: str, n: int, when: datetime, **changes: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "request_id": f"r-{n:04d}",
        "ts": when,
        "tenant": tenant,
        "key_name": "alice",
        "requested_model": "claude-opus-4-1",
        "alias": "fast-code",
        "provider": "openrouter",
        "provider_model": "qwen/qwen3-coder",
        "region": None,
        "input_tokens": 1000 + n,
        "output_tokens": 200 + n,
        "cache_read_tokens": 10 * n,
        "cache_write_tokens": 0,
        "cost_usd": 0.0001 * (1 + n % 7),
        "list_cost_usd": 0.03 + 0.001 * n,
        "latency_ms": 400 + 10 * n,
        "ttft_ms": 100,
        "status": "success",
        "http_status": 200,
        "error_type": None,
        "downgraded_from": None,
        "stream": False,
        "list_model": "claude-opus-4-1",
        "labels": json.dumps({"project": "checkout", "team": "payments"}),
    }
    values.update(changes)
    return UsageRecord(**values)


async def test_report_totals_equal_sql_over_the_ledger(
    services: Services, tenant: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, dsn = tenant
    ledger = Ledger(dsn, tmp_path / "spool", flush_interval=0.05)
    await ledger.start()
    day1 = datetime(2025, 3, 1, 9, tzinfo=UTC)
    day2 = day1 + timedelta(days=1)
    for n in range(30):
        changes: dict[str, Any] = {}
        if n % 3 == 0:
            changes = {"key_name": "ci", "labels": json.dumps({"project": "search"})}
        if n % 5 == 0:
            changes |= {"alias": "reasoning", "provider": "openai", "provider_model": "o3-mini"}
        if n % 10 == 9:
            changes |= {"status": "error", "http_status": 500, "cost_usd": 0.0}
        if n == 29:  # a request with no list price: it counts in the spend, not in the savings
            changes |= {"list_cost_usd": None, "list_model": None, "requested_model": "gpt-4o"}
        ledger.record(record(name, n, day1 if n < 15 else day2, **changes))
    # outside the window: must not count
    ledger.record(record(name, 99, day1 - timedelta(days=3)))
    await ledger.drain()
    await ledger.stop()
    assert ledger.stats.written == 31

    base = ["report", name, "--dsn", services.postgres_dsn, "--no-budgets"]
    window = ["--since", "2025-03-01", "--until", "2025-03-03"]
    assert main([*base, *window, "--format", "json", "--by", "project,key"]) == 0
    report = json.loads(capsys.readouterr().out)

    table = sql.Identifier(schema_name(name), "usage")
    (sums,) = _admin(
        services.postgres_dsn,
        sql.SQL(
            "SELECT count(*), sum(cost_usd), sum(coalesce(list_cost_usd, 0)),"
            " sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens),"
            " count(*) FILTER (WHERE status = 'error'),"
            " sum(cost_usd) FILTER (WHERE list_cost_usd IS NULL)"
            " FROM {} WHERE ts >= '2025-03-01' AND ts < '2025-03-03'"
        ).format(table),
    )
    count, cost, listed, tokens, errors, unpriced = sums
    total = report["total"]
    assert total["requests"] == count == 30
    assert total["errors"] == errors == 3
    assert Decimal(str(total["cost_usd"])) == pytest.approx(cost, abs=Decimal("1e-9"))
    assert Decimal(str(total["list_cost_usd"])) == pytest.approx(listed, abs=Decimal("1e-9"))
    assert Decimal(str(total["unpriced_cost_usd"])) == pytest.approx(unpriced, abs=Decimal("1e-9"))
    saved = listed - cost
    assert Decimal(str(total["savings_usd"])) == pytest.approx(saved, abs=Decimal("1e-9"))
    assert total["savings_pct"] == pytest.approx(float(100 * saved / listed), abs=0.01)
    by_tokens = sum(
        g["input_tokens"] + g["output_tokens"] + g["cache_read_tokens"] + g["cache_write_tokens"]
        for g in report["groups"]
    )
    assert by_tokens == tokens

    # per project and key: the labels column grouped like SQL groups it
    grouped = _admin(
        services.postgres_dsn,
        sql.SQL(
            "SELECT labels->>'project', key_name, count(*), sum(cost_usd) FROM {}"
            " WHERE ts >= '2025-03-01' AND ts < '2025-03-03' GROUP BY 1, 2"
        ).format(table),
    )
    got = {(g["project"], g["key"]): (g["requests"], g["cost_usd"]) for g in report["groups"]}
    assert got.keys() == {(p, k) for p, k, _, _ in grouped}
    for project, key, n, spent in grouped:
        assert got[(project, key)][0] == n
        assert Decimal(str(got[(project, key)][1])) == pytest.approx(spent, abs=Decimal("1e-9"))

    # A/B: fast-code and reasoning each had one arm; no comparison is invented
    assert report["ab"] == []

    # FOCUS: the sum of BilledCost is the ledger's spend, one charge per hour/key/alias/labels
    assert main([*base, *window, "--format", "focus"]) == 0
    charges = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sum(Decimal(c["BilledCost"]) for c in charges) == pytest.approx(
        cost, abs=Decimal("1e-9")
    )
    assert sum(int(c["x_Requests"]) for c in charges) == 30

    # --all-tenants includes this tenant with the same totals
    assert main(["report", "--all-tenants", "--dsn", services.postgres_dsn, *window,
                 "--format", "json", "--by", "tenant"]) == 0  # fmt: skip
    everyone = json.loads(capsys.readouterr().out)
    mine = next(g for g in everyone["groups"] if g["tenant"] == name)
    assert mine["requests"] == 30


def test_report_refuses_an_unknown_tenant_and_a_bad_dimension(services: Services) -> None:
    with pytest.raises(SystemExit, match="no usage ledger"):
        main(["report", f"nope-{uuid.uuid4().hex[:8]}", "--dsn", services.postgres_dsn])
    with pytest.raises(SystemExit, match="--by colour"):
        main(["report", "x", "--dsn", services.postgres_dsn, "--by", "colour"])
    with pytest.raises(SystemExit, match="ISO 8601"):
        main(["report", "x", "--dsn", services.postgres_dsn, "--since", "yesterday"])
