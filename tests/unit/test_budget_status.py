"""BudgetPolicy spend status: what the spend loop computes and when it decides to write."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tenantgw.reconcile.budgets import PolicyEntry, budget_status, needs_write, newly_fired

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, 15, 4, 5, tzinfo=UTC)


def policy_body(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tenantgw.io/v1alpha1",
        "kind": "BudgetPolicy",
        "metadata": {"name": "daily", "namespace": "tenant-a", "uid": "u-1", "generation": 2},
        "spec": {"scope": {"kind": "Tenant"}, "period": "daily", "limitUSD": 10},
        "status": status,
    }


def test_spend_maps_to_utilization_state_and_fired_thresholds() -> None:
    status = budget_status("daily", 10, [50, 80, 100], 8_500_000, NOW)
    assert status == {
        "periodStart": "2026-11-28T00:00:00Z",
        "spentUSD": 8.5,
        "utilization": 85.0,
        "state": "Warning",
        "firedThresholds": [50, 80],
    }
    assert budget_status("monthly", 10, [50], 10_000_000, NOW)["state"] == "Exceeded"
    assert budget_status("weekly", 10, [50], 0, NOW)["periodStart"] == "2026-11-23T00:00:00Z"
    zero = budget_status("daily", 0, [50, 100], 0, NOW)
    assert (zero["utilization"], zero["state"]) == (100.0, "Exceeded")


def test_a_threshold_fires_once_per_period() -> None:
    old = budget_status("daily", 10, [50, 80, 100], 6_000_000, NOW)
    new = budget_status("daily", 10, [50, 80, 100], 8_500_000, NOW)
    assert newly_fired(old, new) == [80]
    assert newly_fired(new, new) == []
    next_day = budget_status("daily", 10, [50, 80, 100], 6_000_000, datetime(2026, 11, 29, 1))
    assert newly_fired(new, next_day) == [50]  # a new period fires again


def test_only_a_change_that_matters_is_written_at_once() -> None:
    old = budget_status("daily", 10, [50, 80], 1_000_000, NOW)
    grew = budget_status("daily", 10, [50, 80], 2_000_000, NOW)
    crossed = budget_status("daily", 10, [50, 80], 6_000_000, NOW)
    assert not needs_write(old, old, None, 60)  # nothing changed: never a write
    assert needs_write({}, old, 5, 60)  # a policy without spend status gets it at once
    assert needs_write(old, crossed, 5, 60)  # a threshold fired: at once
    assert not needs_write(old, grew, 5, 60)  # spend only moved: waits for the refresh
    assert needs_write(old, grew, 60, 60)
    assert needs_write(old, grew, None, 60)  # not written by this process yet


def test_the_index_entry_keeps_what_the_loop_needs() -> None:
    accepted = {"type": "Accepted", "status": "True", "reason": "Accepted"}
    entry = PolicyEntry.from_body(policy_body(conditions=[accepted], spentUSD=1.5, state="Ok"))
    assert entry is not None
    assert (entry.namespace, entry.name, entry.uid, entry.period) == (
        "tenant-a",
        "daily",
        "u-1",
        "daily",
    )
    assert entry.accepted
    assert entry.thresholds == (50, 80, 100)
    assert entry.live() == {"spentUSD": 1.5, "state": "Ok"}
    rejected = PolicyEntry.from_body(policy_body())
    assert rejected is not None
    assert not rejected.accepted
    broken = policy_body()
    broken["spec"]["limitUSD"] = -1
    assert PolicyEntry.from_body(broken) is None
