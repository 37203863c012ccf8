"""Sessions through a real gateway process: the anthropic SDK sends `X-Claude-Code-Session-Id`,
the ledger row records it; malformed ids are served and not recorded; Session budgets refuse.

The gateway is tenant `eng`'s (e2e/gateway_process.py) with the session's Postgres (a
throwaway tenant role) for its ledger and the shared Redis for its budgets; the provider
simulator plays the model.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import psycopg
import pytest

from e2e.fixtures import Services, tenant_role
from e2e.gateway_launch import free_port
from e2e.gateway_process import run_gateway
from e2e.helpers import eventually
from e2e.test_gateway_process import ALICE_KEY

pytestmark = pytest.mark.e2e

HEADER = "X-Claude-Code-Session-Id"


@dataclass(frozen=True)
class SessionGateway:
    url: str
    metrics_url: str
    dsn: str
    rules_file: Path

    def anthropic(self, session: str | None = None) -> anthropic.Anthropic:
        headers = {HEADER: session} if session is not None else None
        return anthropic.Anthropic(
            base_url=self.url,
            api_key=ALICE_KEY,
            max_retries=0,
            timeout=60,
            default_headers=headers,
        )

    def rows(self, since: float) -> list[dict[str, Any]]:
        with psycopg.connect(self.dsn, connect_timeout=5) as conn:
            cur = conn.execute(
                "select request_id, key_name, session_id, status, http_status from usage"
                " where ts >= to_timestamp(%s) order by ts",
                (since,),
            )
            names = [c.name for c in cur.description or []]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def rejected(self) -> dict[str, float]:
        """tenantgw_session_ids_rejected_total by reason, from the metrics port."""
        found: dict[str, float] = {}
        for line in httpx.get(self.metrics_url, timeout=10).text.splitlines():
            if line.startswith("tenantgw_session_ids_rejected_total{"):
                reason = line.split('reason="', 1)[1].split('"', 1)[0]
                found[reason] = found.get(reason, 0) + float(line.rsplit(" ", 1)[1])
        return found


@pytest.fixture(scope="module")
def gateway(
    services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SessionGateway]:
    workdir: Path = tmp_path_factory.mktemp("sessions-gateway")
    metrics_port = free_port()
    (workdir / "prometheus").mkdir()
    with (
        tenant_role(services, "tg_sessions") as (_, dsn),
        run_gateway(
            workdir,
            args=("--metrics_port", str(metrics_port)),
            env={
                "TENANTGW_POSTGRES_DSN": dsn,
                "TENANTGW_REDIS_URL": services.redis_url,
                "TENANTGW_SPOOL_DIR": str(workdir / "spool"),
                "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus"),
            },
        ) as gw,
    ):
        yield SessionGateway(
            url=gw.url,
            metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
            dsn=dsn,
            rules_file=workdir / "config" / "tenantgw.json",
        )


def ask(client: anthropic.Anthropic, text: str) -> None:
    client.messages.create(
        model="fast-code", max_tokens=16, messages=[{"role": "user", "content": text}]
    )


def test_the_sdk_sessions_id_is_on_each_of_its_ledger_rows(gateway: SessionGateway) -> None:
    """Usage by session: every request of one SDK session is one row under that session."""
    started = time.time()
    first, second = f"sdk-{uuid.uuid4()}", f"sdk-{uuid.uuid4()}"
    for text in ("one", "two"):
        ask(gateway.anthropic(first), text)
    ask(gateway.anthropic(second), "three")
    ask(gateway.anthropic(None), "four")

    def all_rows() -> list[dict[str, Any]]:
        rows = gateway.rows(started)
        return rows if len(rows) >= 4 else []

    rows = eventually(all_rows, 30, "four usage rows")
    assert [r["session_id"] for r in rows] == [first, first, second, None]
    assert {r["key_name"] for r in rows} == {"alice"}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("a" * 10_000, "too_long"),
        ("x'); DROP TABLE usage; --", "invalid_characters"),
        ('"quoted" value', "invalid_characters"),
        ("t:eng:budget:*", "invalid_characters"),
        ("caf\xe9".encode("latin-1"), "invalid_characters"),
        ("", "empty"),
    ],
    ids=["10kB", "sql", "quotes", "redis-key", "latin-1", "empty"],
)
def test_a_malformed_session_id_is_served_not_recorded_and_counted(
    gateway: SessionGateway, value: str | bytes, reason: str
) -> None:
    """An odd header never breaks a request: it is answered, and the row has no session."""
    before = gateway.rejected().get(reason, 0)
    started = time.time()
    resp = httpx.post(
        f"{gateway.url}/v1/messages",
        headers={
            "x-api-key": ALICE_KEY,
            "anthropic-version": "2023-06-01",
            HEADER: value,  # type: ignore[dict-item]
        },
        json={
            "model": "fast-code",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}],
        },
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    rows = eventually(lambda: gateway.rows(started), 30, "the request's usage row")
    assert [(r["session_id"], r["status"]) for r in rows] == [(None, "success")]
    assert gateway.rejected().get(reason, 0) == before + 1


def test_rotating_session_ids_add_no_metric_series(gateway: SessionGateway) -> None:
    """Cardinality: a new id per request is one ledger value each, never a Prometheus label."""
    ids = [f"rot-{uuid.uuid4()}" for _ in range(8)]
    for sid in ids:
        ask(gateway.anthropic(sid), "rotate")
    text = httpx.get(gateway.metrics_url, timeout=10).text
    assert "tenantgw_requests_total" in text
    assert not [sid for sid in ids if sid in text]
    assert 'session_id="' not in text
    assert 'session="' not in text


def test_a_session_budget_refuses_the_session_with_402_naming_policy_and_session(
    gateway: SessionGateway,
) -> None:
    """Session cap: each session is capped; the refusal says which policy and which session."""
    policy = f"per-session-{uuid.uuid4().hex[:6]}"
    original = gateway.rules_file.read_text()
    rules = json.loads(original)
    rules["budgets"] = [
        {
            "name": policy,
            "scope": {"kind": "Session", "name": None},
            "period": "daily",
            "limit_usd": 0,
            "alert_thresholds": [100],
            "on_exceeded": {"action": "block", "to_cost_tier": None},
        }
    ]
    sid = str(uuid.uuid4())
    try:
        gateway.rules_file.write_text(json.dumps(rules))

        def refused() -> anthropic.APIStatusError | None:
            try:
                ask(gateway.anthropic(sid), "capped")
            except anthropic.APIStatusError as exc:
                return exc
            return None

        exc = eventually(refused, 30, "the Session budget to refuse")
        assert exc.status_code == 402
        assert f"budget {policy} (session {sid})" in exc.message
        ask(gateway.anthropic(None), "no session: not capped by Session policies")
    finally:
        gateway.rules_file.write_text(original)
