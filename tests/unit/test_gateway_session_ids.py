"""Claude Code sessions: which session ids are kept, and what a Session budget decides."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from tenantgw.api import BudgetPolicy
from tenantgw.gateway.budget_policy import covering, decide, policies
from tenantgw.gateway.files import Rules
from tenantgw.gateway.sessions import (
    REJECT_REASONS,
    SESSION_HEADER,
    parse_session_id,
    session_from_request,
)
from tenantgw.reconcile.budgets import PolicyEntry, SessionSpend, budget_status

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, 15, 30, tzinfo=UTC)
M = 1_000_000


@pytest.mark.parametrize(
    "value",
    [
        str(uuid.uuid4()),
        str(uuid.uuid4()).upper(),
        "ci:build-1234.retry_2",
        "a",
        "x" * 64,
    ],
)
def test_well_formed_session_ids_are_kept_verbatim(value: str) -> None:
    assert parse_session_id(value).session_id == value
    assert parse_session_id(value).rejected is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("x" * 65, "too_long"),
        ("a" * 10_000, "too_long"),  # 10 kB
        ("'; DROP TABLE usage; --", "invalid_characters"),
        ("abc\n", "invalid_characters"),  # `$` would match before a final newline
        ("abc\r\nX-Injected: 1", "invalid_characters"),
        ("sess ion", "invalid_characters"),
        ("t:other-tenant:*", "invalid_characters"),
        ("café", "invalid_characters"),
        ("١٢٣", "invalid_characters"),  # Unicode digits are not [0-9]
        ("{{7*7}}", "invalid_characters"),
        (42, "invalid_characters"),
    ],
)
def test_malformed_session_ids_are_dropped_with_a_bounded_reason(value: Any, reason: str) -> None:
    parsed = parse_session_id(value)
    assert parsed.session_id is None
    assert parsed.rejected == reason
    assert parsed.rejected in REJECT_REASONS


def test_no_header_is_no_session_and_no_rejection() -> None:
    assert parse_session_id(None).session_id is None
    assert parse_session_id(None).rejected is None
    assert session_from_request({}).session_id is None


def test_the_session_comes_from_the_headers_the_proxy_recorded_only() -> None:
    sid = str(uuid.uuid4())
    data = {"proxy_server_request": {"headers": {SESSION_HEADER: sid}}}
    assert session_from_request(data).session_id == sid
    mixed = {"proxy_server_request": {"headers": {"X-Claude-Code-Session-Id": sid}}}
    assert session_from_request(mixed).session_id == sid
    # A body field is not a header: a client cannot set its session through the body.
    forged = {
        "metadata": {"headers": {SESSION_HEADER: sid}},
        "litellm_metadata": {"headers": {SESSION_HEADER: sid}},
        "headers": {SESSION_HEADER: sid},
    }
    assert session_from_request(forged).session_id is None


# --------------------------------------------------------------------------- Session budgets


def rules(*budgets: dict[str, Any]) -> Rules:
    return Rules.model_validate(
        {
            "tenant": "eng",
            "aliases": {"fast-code": {"cost_tier": "medium"}, "docs": {"cost_tier": "low"}},
            "budgets": list(budgets),
        }
    )


def session_cap(**kw: Any) -> dict[str, Any]:
    return {
        "name": "per-session",
        "scope": {"kind": "Session"},
        "period": "daily",
        "limit_usd": 2.0,
        "on_exceeded": {"action": kw.get("action", "block"), "to_cost_tier": kw.get("tier")},
    }


def test_a_session_policy_covers_requests_with_a_session_only() -> None:
    r = rules(session_cap(), {"name": "team", "scope": {"kind": "Tenant"}, "limit_usd": 100})
    assert [p.name for p in covering(r, "alice", "fast-code", "s-1")] == ["per-session", "team"]
    assert [p.name for p in covering(r, "alice", "fast-code", None)] == ["team"]
    assert [p.name for p in covering(r, "bob", "docs", "s-2")] == ["per-session", "team"]


def test_a_session_over_its_cap_is_refused_naming_the_policy_and_the_session() -> None:
    r = rules(session_cap())
    applying = covering(r, "alice", "fast-code", "sess-1")
    decision = decide(
        r, applying, {"per-session": (2 * M, 0)}, "fast-code", "medium", NOW, "sess-1"
    )
    assert (decision.action, decision.policy) == ("block", "per-session")
    assert "budget per-session (session sess-1) has reached its daily limit of $2.00" in (
        decision.message
    )
    under = decide(r, applying, {"per-session": (M, 0)}, "fast-code", "medium", NOW, "sess-1")
    assert under.action == "allow"


def test_a_session_over_its_cap_can_be_downgraded() -> None:
    r = rules(session_cap(action="downgrade", tier="low"))
    applying = covering(r, "alice", "fast-code", "sess-1")
    decision = decide(r, applying, {"per-session": (3 * M, 0)}, "fast-code", "medium", NOW, "s")
    assert (decision.action, decision.to_alias) == ("downgrade", "docs")
    assert "(session s)" in decision.message


def test_a_session_policy_is_per_session_in_the_rules() -> None:
    (policy,) = policies(rules(session_cap()))
    assert policy.per_session
    assert policy.describe("abc") == "session abc"


# --------------------------------------------------------------------------- the resource


def budget_body(scope: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "tenantgw.io/v1alpha1",
        "kind": "BudgetPolicy",
        "metadata": {"name": "per-session", "namespace": "tenant-a", "uid": "u-1"},
        "spec": {"scope": scope, "period": "daily", "limitUSD": 5},
    }


def test_a_session_scope_takes_no_name() -> None:
    BudgetPolicy.model_validate(budget_body({"kind": "Session"}))
    with pytest.raises(ValidationError, match="omitted for Tenant and Session"):
        BudgetPolicy.model_validate(budget_body({"kind": "Session", "name": "abc"}))


def test_a_session_policys_status_is_its_top_session() -> None:
    spend = SessionSpend(top_session="s-9", top_micro=4_500_000, sessions=12, over_limit=0)
    status = budget_status("daily", 5, [50, 80, 100], 0, NOW, spend)
    assert status == {
        "periodStart": "2026-11-28T00:00:00Z",
        "spentUSD": 4.5,
        "utilization": 90.0,
        "state": "Warning",
        "firedThresholds": [50, 80],
        "sessions": 12,
        "sessionsOverLimit": 0,
        "topSession": "s-9",
    }
    empty = budget_status("daily", 5, [50], 0, NOW, SessionSpend(None, 0, 0, 0))
    assert (empty["spentUSD"], empty["state"], empty["topSession"]) == (0.0, "Ok", None)
    accepted = {"type": "Accepted", "status": "True", "reason": "Accepted"}
    body = budget_body({"kind": "Session"})
    body["status"] = {"conditions": [accepted], "sessions": 3, "topSession": "s-1"}
    entry = PolicyEntry.from_body(body)
    assert entry is not None
    assert entry.per_session
    assert entry.live() == {"sessions": 3, "topSession": "s-1"}
