"""Budget decisions from spend: which policies cover a request, when it is blocked or downgraded."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tenantgw.gateway.budget_policy import (
    ALLOW,
    Policy,
    Spend,
    alias_tier,
    decide,
    downgrade_alias,
    policies,
)
from tenantgw.gateway.files import Rules, parse_rules

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, 15, 30, tzinfo=UTC)
M = 1_000_000  # micro-USD per USD


def budget(name: str, kind: str = "Tenant", scope: str | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "scope": {"kind": kind, "name": scope},
        "period": kw.get("period", "daily"),
        "limit_usd": kw.get("limit_usd", 10.0),
        "alert_thresholds": [50, 80, 100],
        "on_exceeded": {
            "action": kw.get("action", "block"),
            "to_cost_tier": kw.get("to_cost_tier"),
        },
    }


def typed(raw: dict[str, Any]) -> Rules:
    """The rules file as the gateway reads it."""
    return Rules.model_validate({"tenant": "eng", **raw})


RAW: dict[str, Any] = {
    "tenant": "eng",
    "aliases": {
        "reasoning": {"cost_tier": "high", "targets": []},
        "fast-code": {"cost_tier": "medium", "targets": []},
        "docs-b": {"cost_tier": "low", "targets": []},
        "docs-a": {"cost_tier": "low", "targets": []},
    },
    "budgets": [
        budget("tenant-daily", limit_usd=100.0),
        budget("alice-weekly", "Key", "alice", period="weekly", limit_usd=20.0),
        budget(
            "reasoning-cap",
            "ModelAlias",
            "reasoning",
            period="monthly",
            limit_usd=5.0,
            action="downgrade",
            to_cost_tier="low",
        ),
    ],
}
RULES = typed(RAW)


def covering(key: str, alias: str) -> list[Policy]:
    return [p for p in policies(RULES) if p.matches(key, alias)]


def test_policies_cover_their_scope_only() -> None:
    assert [p.name for p in covering("alice", "reasoning")] == [
        "alice-weekly",
        "reasoning-cap",
        "tenant-daily",
    ]
    assert [p.name for p in covering("bob", "fast-code")] == ["tenant-daily"]
    assert [p.name for p in covering("bob", "reasoning")] == ["reasoning-cap", "tenant-daily"]


def test_policies_come_from_the_rules_file_as_written() -> None:
    import json

    parsed = parse_rules(json.dumps(RAW))
    assert policies(parsed) == policies(RULES)
    reasoning = next(p for p in policies(parsed) if p.name == "reasoning-cap")
    assert (reasoning.kind, reasoning.scope_name, reasoning.action) == (
        "ModelAlias",
        "reasoning",
        "downgrade",
    )


def test_within_budget_is_allowed() -> None:
    state = {"tenant-daily": (99 * M, 0), "alice-weekly": (19 * M, 0)}
    assert decide(RULES, covering("alice", "fast-code"), state, "fast-code", "medium", NOW) == ALLOW


def test_at_the_limit_is_blocked_with_what_when_and_how_much() -> None:
    state = {"tenant-daily": (100 * M + 431_000, 0)}
    decision = decide(RULES, covering("bob", "fast-code"), state, "fast-code", "medium", NOW)
    assert decision.action == "block"
    assert decision.policy == "tenant-daily"
    assert decision.resets_at == datetime(2026, 11, 29, tzinfo=UTC)
    assert not decision.held  # spent: final until the reset
    assert decision.message == (
        "budget tenant-daily (tenant) has reached its daily limit of $100.00 ($100.43 spent); "
        "it resets at 2026-11-29 00:00 UTC"
    )


def test_a_key_budget_names_the_key_and_resets_on_monday() -> None:
    state = {"alice-weekly": (20 * M, 0), "tenant-daily": (0, 0)}
    decision = decide(RULES, covering("alice", "fast-code"), state, "fast-code", "medium", NOW)
    assert (decision.action, decision.policy) == ("block", "alice-weekly")
    assert "key alice" in decision.message
    assert "weekly limit of $20.00" in decision.message
    assert decision.resets_at == datetime(2026, 11, 30, tzinfo=UTC)  # the next ISO Monday


def test_requests_in_progress_count_towards_the_limit() -> None:
    state = {"tenant-daily": (99 * M, 1 * M)}
    decision = decide(RULES, covering("bob", "fast-code"), state, "fast-code", "medium", NOW)
    assert decision.action == "block"
    assert "$99.00 spent and $1.00 held by requests in progress" in decision.message
    assert decision.held  # may lift when those requests finish


def test_an_exceeded_downgrade_policy_picks_the_first_alias_of_the_tier_by_name() -> None:
    state = {"reasoning-cap": (5 * M, 0), "tenant-daily": (0, 0)}
    decision = decide(RULES, covering("bob", "reasoning"), state, "reasoning", "high", NOW)
    assert decision.action == "downgrade"
    assert decision.policy == "reasoning-cap"
    assert decision.to_alias == "docs-a"
    assert decision.resets_at == datetime(2026, 12, 1, tzinfo=UTC)
    assert "reasoning is served by docs-a (cost tier low)" in decision.message


def test_an_alias_already_in_the_cheaper_tier_is_not_downgraded_again() -> None:
    rules = typed(
        {**RAW, "budgets": [budget("all", limit_usd=1.0, action="downgrade", to_cost_tier="low")]}
    )
    over = [p for p in policies(rules)]
    state = {"all": (2 * M, 0)}
    assert decide(rules, over, state, "docs-a", "low", NOW) == ALLOW
    medium = decide(rules, over, state, "fast-code", "medium", NOW)
    assert (medium.action, medium.to_alias) == ("downgrade", "docs-a")


def test_downgrade_without_an_alias_of_that_tier_blocks() -> None:
    rules = typed(
        {
            "aliases": {"reasoning": {"cost_tier": "high"}, "fast-code": {"cost_tier": "medium"}},
            "budgets": [budget("cap", limit_usd=1.0, action="downgrade", to_cost_tier="low")],
        }
    )
    decision = decide(rules, policies(rules), {"cap": (M, 0)}, "reasoning", "high", NOW)
    assert decision.action == "block"
    assert "no model alias has cost tier low to downgrade to" in decision.message


def test_block_wins_over_downgrade() -> None:
    state = {"reasoning-cap": (6 * M, 0), "tenant-daily": (100 * M, 0)}
    decision = decide(RULES, covering("bob", "reasoning"), state, "reasoning", "high", NOW)
    assert (decision.action, decision.policy) == ("block", "tenant-daily")


def test_the_cheapest_requested_tier_satisfies_every_exceeded_policy() -> None:
    rules = typed(
        {
            **RAW,
            "budgets": [
                budget("a-medium", limit_usd=1.0, action="downgrade", to_cost_tier="medium"),
                budget("b-low", limit_usd=1.0, action="downgrade", to_cost_tier="low"),
            ],
        }
    )
    state = {"a-medium": (M, 0), "b-low": (M, 0)}
    decision = decide(rules, policies(rules), state, "reasoning", "high", NOW)
    assert (decision.policy, decision.to_alias) == ("b-low", "docs-a")


def test_a_zero_limit_blocks_everything() -> None:
    rules = typed({"budgets": [budget("frozen", limit_usd=0)]})
    assert decide(rules, policies(rules), {"frozen": (0, 0)}, "x", None, NOW).action == "block"


def test_alias_helpers() -> None:
    assert alias_tier(RULES, "reasoning") == "high"
    assert alias_tier(RULES, "unknown") is None
    assert downgrade_alias(RULES, "low") == "docs-a"
    assert downgrade_alias(RULES, "low", exclude="docs-a") == "docs-b"
    assert downgrade_alias(RULES, "none") is None


def test_utilization() -> None:
    assert Spend("p", spent_usd=82.5, limit_usd=100).utilization_percent == pytest.approx(82.5)
    assert Spend("p", spent_usd=0, limit_usd=0).utilization_percent == 100.0
