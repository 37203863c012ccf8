"""The EnforcementAvailable condition: whether the gateways can enforce rate limits and budgets.

Gateways need Redis for both. What the operator observes, cheaply (one GET with its admin
Redis user per reconcile): whether Redis answers it, and the summary of the last outage a
gateway lived through, which a gateway writes to `t:{<tenant>}:enforcement` (an hour's TTL) once
Redis answers again. The condition says which `spec.enforcement.onStoreUnavailable` applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tenantgw.api import Tenant
from tenantgw.api.markers import enforcement_marker_key
from tenantgw.reconcile.conditions import condition
from tenantgw.tenancy import Provisioner, StorageError

CONDITION = "EnforcementAvailable"
"""True while the gateways can enforce limits and budgets (positive polarity, like Ready: a
False condition posts a Warning Event)."""


@dataclass(frozen=True)
class EnforcementObservation:
    """What the operator saw of the gateways' store."""

    configured: bool
    error: str | None = None
    last_outage: dict[str, Any] | None = None


async def observe_enforcement(
    provisioner: Provisioner | None, tenant_name: str
) -> EnforcementObservation:
    """Read the last outage summary of the tenant's gateways (admin Redis user)."""
    if provisioner is None:
        return EnforcementObservation(configured=False)
    try:
        raw = await provisioner.read_text(enforcement_marker_key(tenant_name))
    except StorageError as err:
        return EnforcementObservation(configured=True, error=str(err))
    try:
        summary = json.loads(raw) if raw else None
    except ValueError:
        summary = None
    return EnforcementObservation(
        configured=True, last_outage=summary if isinstance(summary, dict) else None
    )


def _consequence(mode: str) -> str:
    if mode == "Open":
        return "requests that need them are admitted unchecked (onStoreUnavailable: Open)"
    return "requests that need them are refused with 503 (onStoreUnavailable: Closed)"


def enforcement_condition(
    tenant: Tenant, seen: EnforcementObservation, generation: int | None
) -> dict[str, Any]:
    """EnforcementAvailable for what the operator saw (pure)."""
    mode = tenant.spec.enforcement.on_store_unavailable
    if not seen.configured:
        return condition(
            CONDITION,
            False,
            "StoreNotConfigured",
            "the operator has no Redis (TENANTGW_REDIS_URL in Secret tenantgw-admin): rate "
            f"limits and budgets cannot be enforced; {_consequence(mode)}",
            generation,
        )
    if seen.error is not None:
        return condition(
            CONDITION,
            False,
            "StoreUnavailable",
            f"Redis does not answer the operator ({seen.error}); the gateways cannot check "
            f"rate limits and budgets either, so {_consequence(mode)}",
            generation,
        )
    outage = seen.last_outage
    if outage is not None:
        applied = str(outage.get("mode") or mode)
        return condition(
            CONDITION,
            True,
            "Recovered",
            f"Redis was unavailable to a gateway from {outage.get('since')} to "
            f"{outage.get('until')} ({outage.get('reason')}); with onStoreUnavailable: "
            f"{applied}, {int(outage.get('refused') or 0)} requests were refused and "
            f"{int(outage.get('admitted') or 0)} admitted unchecked",
            generation,
        )
    return condition(
        CONDITION,
        True,
        "Enforced",
        f"rate limits and budgets are enforced; if Redis fails, {_consequence(mode)}",
        generation,
    )
