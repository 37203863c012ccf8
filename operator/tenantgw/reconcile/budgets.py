"""BudgetPolicy status: what the gateways have spent, read from their Redis counters.

The gateways count spend per policy and period (micro-USD, `t:<tenant>:budget:<policy>:<day>`);
the operator turns it into `spentUSD`, `utilization`, `state` and `firedThresholds`, and posts
an Event the first time each threshold is crossed in a period.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tenantgw.api import API_VERSION, BudgetPolicy
from tenantgw.api.periods import budget_counter_key, period_start
from tenantgw.kube.client import JSON, Kube, KubeError
from tenantgw.reconcile.conditions import condition, merge_conditions
from tenantgw.reconcile.events import post_event
from tenantgw.reconcile.settings import Settings
from tenantgw.tenancy import Provisioner, StorageError

MICRO = 1_000_000


def budget_status(
    policy: BudgetPolicy, spent_micro: int, now: datetime, old: dict[str, Any]
) -> dict[str, Any]:
    """The status fields of one policy for the period containing `now` (pure)."""
    start = period_start(policy.spec.period, now).strftime("%Y-%m-%dT%H:%M:%SZ")
    spent = spent_micro / MICRO
    limit = policy.spec.limit_usd
    utilization = round(100.0 * spent / limit, 2) if limit > 0 else 100.0
    fired = [t for t in policy.spec.alert_thresholds if utilization >= t]
    if utilization >= 100:
        state = "Exceeded"
    elif fired:
        state = "Warning"
    else:
        state = "Ok"
    return {
        "periodStart": start,
        "spentUSD": round(spent, 6),
        "utilization": utilization,
        "state": state,
        "firedThresholds": fired,
        "observedGeneration": policy.metadata.generation,
        "conditions": old.get("conditions") or [],
    }


async def sync_budget_status(
    kube: Kube,
    provisioner: Provisioner | None,
    tenant_name: str,
    namespace: str,
    policies: list[BudgetPolicy],
    bodies: list[JSON],
    settings: Settings,
) -> None:
    """Write each accepted policy's spend into its status when it changed."""
    if provisioner is None or not policies:
        return
    now = datetime.now(UTC)
    keys = [
        budget_counter_key(tenant_name, p.metadata.name or "", p.spec.period, now) for p in policies
    ]
    try:
        counters = await provisioner.read_counters(keys)
    except StorageError:
        return  # StorageReady already says what is wrong; spend shows up on the next pass
    by_name = {b["metadata"]["name"]: b for b in bodies if b.get("kind") == "BudgetPolicy"}
    for policy, spent in zip(policies, counters, strict=True):
        name = policy.metadata.name or ""
        body = by_name.get(name)
        if body is None:
            continue
        old = body.get("status") or {}
        status = budget_status(policy, spent, now, old)
        status["conditions"] = merge_conditions(
            old.get("conditions"),
            [
                condition(
                    "Accepted",
                    True,
                    "Accepted",
                    "the policy is enforced by the gateway",
                    policy.metadata.generation,
                )
            ],
        )
        if all(old.get(k) == v for k, v in status.items()):
            continue
        try:
            await kube.patch_status(API_VERSION, "BudgetPolicy", name, namespace, status)
        except KubeError as exc:
            if exc.status == 404:
                continue
            raise
        same_period = old.get("periodStart") == status["periodStart"]
        before = set(old.get("firedThresholds") or []) if same_period else set()
        for threshold in status["firedThresholds"]:
            if threshold not in before:
                await post_event(
                    kube,
                    settings,
                    body,
                    "Warning" if threshold >= 100 else "Normal",
                    "BudgetThresholdCrossed",
                    f"{name}: {status['utilization']:.1f}% of {policy.spec.limit_usd:g} USD "
                    f"spent this {policy.spec.period.removesuffix('ly')} "
                    f"(threshold {threshold}%, period from {status['periodStart']})",
                )
