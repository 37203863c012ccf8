"""Status writes: only when something a reader would notice changed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tenantgw.api import API_VERSION
from tenantgw.kube.client import JSON, Kube, KubeError
from tenantgw.reconcile.conditions import condition, merge_conditions
from tenantgw.reconcile.validate import Verdict


async def write_tenant_status(
    kube: Kube, body: JSON, old: dict[str, Any], status: dict[str, Any]
) -> bool:
    """Patch the Tenant's status if any of our fields differ; True when a write was made."""
    if all(old.get(k) == v for k, v in status.items()):
        return False
    await kube.patch_status(API_VERSION, "Tenant", body["metadata"]["name"], None, status)
    return True


def child_status(
    kind: str, verdict: Verdict, bodies: list[JSON], now: datetime | None = None
) -> dict[str, Any] | None:
    """The status a ModelAlias or BudgetPolicy should get for `verdict`; None: unchanged (pure)."""
    body = next(
        (b for b in bodies if b.get("kind") == kind and b["metadata"].get("name") == verdict.name),
        None,
    )
    if body is None:
        return None
    old = body.get("status") or {}
    accepted = condition(
        "Accepted", verdict.accepted, verdict.reason, verdict.message, verdict.generation
    )
    conds = merge_conditions(old.get("conditions"), [accepted], now)
    others = [c for c in old.get("conditions") or [] if c.get("type") != "Accepted"]
    status = {"conditions": conds + others, "observedGeneration": verdict.generation}
    if all(old.get(k) == v for k, v in status.items()):
        return None
    return status


async def write_child_status(
    kube: Kube, kind: str, namespace: str, name: str, status: dict[str, Any]
) -> bool:
    """Patch a ModelAlias's or BudgetPolicy's status (see `child_status`); False if it is gone."""
    try:
        await kube.patch_status(API_VERSION, kind, name, namespace, status)
    except KubeError as exc:
        if exc.status == 404:  # deleted meanwhile
            return False
        raise
    return True
