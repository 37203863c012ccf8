"""The one idempotent reconcile of a tenant, in three steps: observe → plan → act.

- `observe_tenant()` makes every read of the pass (the Tenant, its namespace, ModelAliases,
  BudgetPolicies, its own and its providers' Secrets, whether the monitoring CRDs exist, the
  gateways' enforcement marker in Redis) into one frozen `TenantSnapshot`.
- Storage (the tenant's PostgreSQL role and Redis user) is an external resource with its own
  observe-then-create contract (reconcile/storage.py). It runs as a step of its own between
  observe and plan, and only for a snapshot the plan can use, because the endpoints it returns
  are what the plan renders into the gateway's Secret; its outcome is a plan input.
- `plan_tenant()` (reconcile/plan.py) is pure: desired objects, what to prune, child statuses,
  and, with the apply's answer, the Tenant's conditions and Events (`conclude()`).
- `act_on_plan()` applies, prunes, patches child statuses, writes the Tenant status once (only
  when it changed: an unchanged tenant costs zero API writes), then posts the Events.

Nothing here depends on which event woke it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tenantgw.api import API_VERSION
from tenantgw.kube.apply import ApplyResult, apply_objects, prune
from tenantgw.kube.client import Kube
from tenantgw.reconcile.audit import change_record, record_change
from tenantgw.reconcile.cache import ReconcileCache
from tenantgw.reconcile.enforcement import observe_enforcement
from tenantgw.reconcile.events import post_event
from tenantgw.reconcile.material import new_key, read_material, stored_endpoints
from tenantgw.reconcile.plan import (
    CERT_MANAGER_KINDS,
    MONITORING_API,
    MONITORING_KINDS,
    PRUNABLE_KINDS,
    TenantPlan,
    TenantSnapshot,
    admit,
    conclude,
    plan_tenant,
    provider_secret_names,
)
from tenantgw.reconcile.settings import Settings
from tenantgw.reconcile.status import write_child_status, write_tenant_status
from tenantgw.reconcile.storage import StorageOutcome, ensure_storage
from tenantgw.render.tls import CERT_MANAGER_API
from tenantgw.tenancy import Provisioner

__all__ = [
    "CERT_MANAGER_KINDS",
    "MONITORING_API",
    "MONITORING_KINDS",
    "PRUNABLE_KINDS",
    "Outcome",
    "act_on_plan",
    "observe_tenant",
    "reconcile_tenant",
]

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What one reconcile did, for the handler's log line and for tests."""

    tenant: str
    ready: bool = False
    applied: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    status_written: bool = False
    storage_failed: bool = False
    requeue: bool = False
    """The tenant is not where its spec wants it for a reason that heals: try again soon."""
    status: dict[str, Any] | None = None
    """The Tenant status this pass concluded (for the control-plane audit record)."""


async def reconcile_tenant(
    kube: Kube,
    name: str,
    settings: Settings,
    provisioner: Provisioner | None = None,
    cache: ReconcileCache | None = None,
) -> Outcome:
    """Bring tenant `name` to its desired state; a missing Tenant is a no-op."""
    snapshot = await observe_tenant(kube, provisioner, name, settings)
    if snapshot is None:
        return Outcome(tenant=name)
    storage = await provision_storage(provisioner, snapshot, settings, cache)
    now = datetime.now(UTC).replace(microsecond=0)
    plan = plan_tenant(snapshot, settings, now=now, new_key=new_key, storage=storage)
    outcome = await act_on_plan(kube, settings, plan, cache)
    outcome.storage_failed = bool(storage and storage.failed)
    if (outcome.applied or outcome.pruned) and storage is not None and not storage.failed:
        # Only a pass that changed something leaves a control-plane record: an idle resync
        # writes nothing.
        tenant = admit(snapshot.body, snapshot.namespace, settings, namespace_read=True).tenant
        if tenant is not None and tenant.spec.compliance.audit.enabled:
            content = change_record(
                snapshot.body, plan.objects, outcome.applied, outcome.pruned, outcome.status
            )
            await record_change(provisioner, name, content)
    return outcome


async def observe_tenant(
    kube: Kube, provisioner: Provisioner | None, name: str, settings: Settings
) -> TenantSnapshot | None:
    """Read everything the plan uses, once; None when the Tenant is gone or being deleted."""
    body = await kube.get(API_VERSION, "Tenant", name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    tenant = admit(body, None, settings, namespace_read=False).tenant
    if tenant is None:
        return TenantSnapshot(body)
    ns = tenant.namespace_name()
    live_ns = await kube.get("v1", "Namespace", ns)
    if not admit(body, live_ns, settings, namespace_read=True).admitted:
        return TenantSnapshot(body, live_ns)
    return TenantSnapshot(
        body,
        live_ns,
        complete=True,
        aliases=tuple(await kube.list(API_VERSION, "ModelAlias", ns) if live_ns else []),
        budgets=tuple(await kube.list(API_VERSION, "BudgetPolicy", ns) if live_ns else []),
        monitoring=await kube.has_api(MONITORING_API, "ServiceMonitor"),
        secrets=await read_material(kube, tenant),
        provider_secrets={
            secret: await kube.get("v1", "Secret", secret, ns)
            for secret in provider_secret_names(tenant)
        },
        enforcement=await observe_enforcement(provisioner, name),
        cert_manager=await kube.has_api(CERT_MANAGER_API, "Certificate"),
        tls_secret=(
            await kube.get("v1", "Secret", tls.secret_name, ns)
            if (tls := tenant.spec.gateway.tls) is not None and live_ns
            else None
        ),
    )


async def provision_storage(
    provisioner: Provisioner | None,
    snapshot: TenantSnapshot,
    settings: Settings,
    cache: ReconcileCache | None,
) -> StorageOutcome | None:
    """The storage step, for a snapshot the plan renders objects from (None otherwise)."""
    if not snapshot.complete:
        return None
    tenant = admit(snapshot.body, snapshot.namespace, settings, namespace_read=True).tenant
    assert tenant is not None
    generation = snapshot.body["metadata"].get("generation")
    stored = stored_endpoints(tenant, snapshot.secrets)
    return await ensure_storage(provisioner, tenant, stored, generation, cache)


async def act_on_plan(
    kube: Kube, settings: Settings, plan: TenantPlan, cache: ReconcileCache | None = None
) -> Outcome:
    """Apply, prune, patch child statuses, write the Tenant status once, then post Events."""
    outcome = Outcome(tenant=plan.name)
    result = await apply_objects(kube, plan.objects, plan.known) if plan.objects else None
    if result is not None and plan.prune_namespace is not None:
        rendered = plan.rendered
        if cache is None or cache.needs_prune(plan.name, rendered):
            await prune(
                kube,
                plan.prune_namespace,
                plan.prune_selector,
                plan.prune_kinds,
                plan.objects,
                result,
            )
            if cache is not None:
                cache.pruned(plan.name, rendered)
        outcome.applied, outcome.pruned = result.applied, result.pruned
    for child in plan.child_statuses:
        await write_child_status(kube, child.kind, child.namespace, child.name, child.status)

    done = conclude(plan, result or ApplyResult())
    outcome.ready, outcome.requeue = done.ready, done.requeue
    outcome.status = done.status
    if done.status is not None:
        outcome.status_written = await write_tenant_status(
            kube, plan.body, plan.body.get("status") or {}, done.status
        )
    for event in done.events:
        await post_event(kube, settings, plan.body, event.type, event.reason, event.message)
    return outcome
