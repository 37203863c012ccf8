"""The one idempotent reconcile of a tenant: read everything, render, apply, prune, report.

Nothing here depends on which event woke it. Every call reads the Tenant, its ModelAliases and
BudgetPolicies fresh, renders the whole desired state, writes only what differs from the live
objects, and writes status only when it changed: an unchanged tenant costs zero API writes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from tenantgw.api import API_VERSION, KeySpec, Tenant
from tenantgw.kube.apply import ApplyResult, apply_objects, prune
from tenantgw.kube.client import JSON, Kube
from tenantgw.reconcile.cache import ReconcileCache
from tenantgw.reconcile.conditions import condition, find, merge_conditions
from tenantgw.reconcile.enforcement import enforcement_condition, observe_enforcement
from tenantgw.reconcile.events import post_event
from tenantgw.reconcile.material import load_material
from tenantgw.reconcile.namespace import ADOPTED_ANNOTATION, judge_namespace
from tenantgw.reconcile.settings import Settings
from tenantgw.reconcile.status import write_child_status, write_tenant_status
from tenantgw.reconcile.storage import StorageOutcome, ensure_storage
from tenantgw.reconcile.validate import (
    Verdict,
    describe_validation_error,
    parse_aliases,
    unenforceable_budgets,
    validate_aliases,
    validate_budgets,
)
from tenantgw.render.access import RBAC_API_VERSION
from tenantgw.render.inputs import RenderInputs
from tenantgw.render.labels import selector
from tenantgw.render.names import key_secret_name
from tenantgw.render.objects import render_tenant, service_url
from tenantgw.tenancy import Provisioner

log = logging.getLogger(__name__)

MONITORING_API = "monitoring.coreos.com/v1"
PRUNABLE_KINDS: list[tuple[str, str]] = [
    ("v1", "ServiceAccount"),
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("policy/v1", "PodDisruptionBudget"),
    (RBAC_API_VERSION, "Role"),
    (RBAC_API_VERSION, "RoleBinding"),
]
MONITORING_KINDS: list[tuple[str, str]] = [
    (MONITORING_API, "ServiceMonitor"),
    (MONITORING_API, "PrometheusRule"),
]


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


async def reconcile_tenant(
    kube: Kube,
    name: str,
    settings: Settings,
    provisioner: Provisioner | None = None,
    cache: ReconcileCache | None = None,
) -> Outcome:
    """Bring tenant `name` to its desired state; a missing Tenant is a no-op."""
    outcome = Outcome(tenant=name)
    body = await kube.get(API_VERSION, "Tenant", name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return outcome
    generation = body["metadata"].get("generation")
    old_status: dict[str, Any] = body.get("status") or {}

    try:
        tenant = Tenant.model_validate(body)
    except ValidationError as exc:
        message = describe_validation_error(exc)
        conds = [
            condition("ConfigValid", False, "InvalidSpec", message, generation),
            condition("Ready", False, "InvalidSpec", message, generation),
        ]
        outcome.status_written = await _write_status(kube, body, old_status, conds, {}, settings)
        return outcome

    ns = tenant.namespace_name()
    live_ns = await kube.get("v1", "Namespace", ns)
    ns_verdict = judge_namespace(name, ns, live_ns, settings.operator_namespace)
    if not ns_verdict.allowed:
        conds = [
            condition("ConfigValid", False, ns_verdict.reason, ns_verdict.message, generation),
            condition("Ready", False, ns_verdict.reason, ns_verdict.message, generation),
        ]
        outcome.status_written = await _write_status(kube, body, old_status, conds, {}, settings)
        return outcome
    if live_ns is not None and live_ns.get("status", {}).get("phase") == "Terminating":
        # Left by a deleted Tenant of the same name (Argo CD's prune-and-recreate) or deleted
        # by hand: nothing can be created in it. Say so and come back once it is gone.
        message = (
            f'namespace "{ns}" is still terminating; the gateway is created again as soon as '
            "it is gone"
        )
        conds = [condition("Ready", False, "NamespaceTerminating", message, generation)]
        outcome.status_written = await _write_status(kube, body, old_status, conds, {}, settings)
        outcome.requeue = True
        return outcome
    adopted = ns_verdict.adopted

    alias_bodies = await kube.list(API_VERSION, "ModelAlias", ns) if live_ns else []
    budget_bodies = await kube.list(API_VERSION, "BudgetPolicy", ns) if live_ns else []
    aliases, rejected = parse_aliases(alias_bodies)
    alias_verdicts = validate_aliases(tenant, aliases) + rejected
    accepted_names = {v.name for v in alias_verdicts if v.accepted}
    accepted = [a for a in aliases if a.metadata.name in accepted_names]
    budgets, budget_verdicts = validate_budgets(tenant, budget_bodies, accepted)

    monitoring = await kube.has_api(MONITORING_API, "ServiceMonitor")
    material = await load_material(kube, tenant, grace=settings.key_grace)
    storage = await ensure_storage(provisioner, tenant, material, generation, cache)
    outcome.storage_failed = storage.failed
    outcome.requeue = storage.failed
    inputs = RenderInputs(
        tenant=tenant,
        aliases=sorted(accepted, key=lambda a: a.metadata.name or ""),
        budgets=budgets,
        unenforceable_budgets=unenforceable_budgets(budget_verdicts),
        master_key=material.master_key,
        keys=material.keys,
        image=settings.gateway_image,
        monitoring=monitoring,
        monitoring_namespace=settings.monitoring_namespace,
        network=settings.network,
        storage=storage.endpoints,
        key_state=material.key_state,
    )
    objects = render_tenant(inputs)
    if adopted:
        _mark_adopted(objects)

    result = await apply_objects(kube, objects, material.live)
    kinds = PRUNABLE_KINDS + (MONITORING_KINDS if monitoring else [])
    rendered = frozenset((o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objects)
    if cache is None or cache.needs_prune(name, rendered):
        await prune(kube, ns, selector(name), kinds, objects, result)
        if cache is not None:
            cache.pruned(name, rendered)
    outcome.applied, outcome.pruned = result.applied, result.pruned
    outcome.requeue = outcome.requeue or bool(result.failed)

    # A BudgetPolicy's spend fields are the budget status loop's (reconcile/budgets.py).
    for verdict, kind in [(v, "ModelAlias") for v in alias_verdicts] + [
        (v, "BudgetPolicy") for v in budget_verdicts
    ]:
        await write_child_status(kube, kind, ns, verdict, alias_bodies + budget_bodies)
    enforcement = await observe_enforcement(provisioner, name)

    missing = await _missing_credentials(kube, tenant)
    conds = tenant_conditions(
        tenant,
        generation,
        alias_verdicts,
        budget_verdicts,
        missing,
        result,
        monitoring,
        storage,
    )
    conds.append(enforcement_condition(tenant, enforcement, generation))
    extra = _status_fields(tenant, inputs)
    ready = find(conds, "Ready")
    outcome.ready = bool(ready and ready["status"] == "True")
    outcome.status_written = await _write_status(kube, body, old_status, conds, extra, settings)
    for key in material.rotated:
        until = material.key_state[key].previous_valid_until
        await post_event(
            kube,
            settings,
            body,
            "Normal",
            "KeyRotated",
            f"key {key} has a new value in Secret {key_secret_name(key)}; "
            f"the previous value works until {until:%Y-%m-%dT%H:%M:%SZ}",
        )
    if result.changed:
        changes = ", ".join(result.applied + [f"-{p}" for p in result.pruned])
        await post_event(kube, settings, body, "Normal", "Applied", f"applied {changes}")
    return outcome


def _mark_adopted(objects: list[JSON]) -> None:
    """A namespace the Tenant did not create is labelled but never owned (so never deleted)."""
    for obj in objects:
        if obj["kind"] == "Namespace":
            obj["metadata"].pop("ownerReferences", None)
            obj["metadata"].setdefault("annotations", {})[ADOPTED_ANNOTATION] = "true"


async def _missing_credentials(kube: Kube, tenant: Tenant) -> list[str]:
    """Provider credential references whose Secret or key does not exist."""
    ns = tenant.namespace_name()
    missing = []
    for i, provider in enumerate(tenant.spec.providers):
        ref = provider.credentials_secret_ref
        if ref is None:
            continue
        secret = await kube.get("v1", "Secret", ref.name, ns)
        if secret is None:
            missing.append(
                f'spec.providers[{i}].credentialsSecretRef: Secret "{ref.name}" not found in '
                f"namespace {ns}; create it there with key {ref.key}"
            )
        elif ref.key not in (secret.get("data") or {}):
            missing.append(
                f'spec.providers[{i}].credentialsSecretRef: Secret "{ref.name}" in namespace '
                f'{ns} has no key "{ref.key}"'
            )
    return missing


def tenant_conditions(
    tenant: Tenant,
    generation: int | None,
    alias_verdicts: list[Verdict],
    budget_verdicts: list[Verdict],
    missing: list[str],
    result: ApplyResult,
    monitoring: bool,
    storage: StorageOutcome,
) -> list[dict[str, Any]]:
    """Ready means the gateway serves the tenant's valid configuration.

    A rejected ModelAlias or BudgetPolicy is left out of that configuration: ConfigValid says
    which and why, and Ready stays True with reason `Degraded` (the printer column shows it)
    while the rest keeps serving. Ready is False when nothing serves the current spec: a
    missing credential, an apply the API server refused, storage, or a gateway not available.
    """
    rejected = [f"ModelAlias {v.name}: {v.message}" for v in alias_verdicts if not v.accepted]
    rejected_budgets = [
        f"BudgetPolicy {v.name}: {v.message}" for v in budget_verdicts if not v.accepted
    ]
    if missing:
        config = condition(
            "ConfigValid", False, "ProviderCredentialsMissing", "; ".join(missing), generation
        )
    elif rejected or rejected_budgets:
        reason = (
            "ResourcesRejected"
            if rejected and rejected_budgets
            else "ModelAliasRejected"
            if rejected
            else "BudgetPolicyRejected"
        )
        detail = "; ".join(rejected + rejected_budgets)
        config = condition("ConfigValid", False, reason, detail, generation)
    else:
        config = condition("ConfigValid", True, "Valid", "the configuration is valid", generation)

    dep = result.live.get(("apps/v1", "Deployment", "gateway", tenant.namespace_name()))
    available = _deployment_available(dep)
    if available:
        gateway = condition(
            "GatewayAvailable",
            True,
            "DeploymentAvailable",
            "the gateway Deployment is available",
            generation,
        )
    else:
        gateway = condition(
            "GatewayAvailable",
            False,
            "DeploymentProgressing",
            "waiting for the gateway Deployment to become available",
            generation,
        )

    if monitoring:
        mon = condition(
            "MonitoringConfigured",
            True,
            "ServiceMonitorCreated",
            "ServiceMonitor and PrometheusRule are applied",
            generation,
        )
    else:
        mon = condition(
            "MonitoringConfigured",
            False,
            "MonitoringCRDsMissing",
            "the monitoring.coreos.com CRDs are not installed; "
            "no ServiceMonitor or PrometheusRule was created",
            generation,
        )
    store = storage.condition
    store_ok = store["status"] == "True" or store["reason"] == "NotConfigured"
    serves = f"the gateway serves {service_url(tenant)}"
    if result.failed:
        message = "the API server refused: " + "; ".join(f.describe() for f in result.failed)
        ready = condition("Ready", False, "ApplyFailed", message, generation)
    elif missing:
        ready = condition("Ready", False, config["reason"], config["message"], generation)
    elif not available:
        ready = condition("Ready", False, gateway["reason"], gateway["message"], generation)
    elif not store_ok:
        ready = condition("Ready", False, store["reason"], store["message"], generation)
    elif config["status"] == "False":
        left_out = [f"ModelAlias {v.name}" for v in alias_verdicts if not v.accepted] + [
            f"BudgetPolicy {v.name}" for v in budget_verdicts if not v.accepted
        ]
        message = f"{serves}; left out (see ConfigValid): {', '.join(left_out)}"
        ready = condition("Ready", True, "Degraded", message, generation)
    else:
        ready = condition("Ready", True, "Ready", serves, generation)
    return [ready, config, gateway, store, mon]


def _deployment_available(dep: JSON | None) -> bool:
    if not dep:
        return False
    status = dep.get("status", {})
    if status.get("observedGeneration", 0) < dep["metadata"].get("generation", 0):
        return False
    avail = find(status.get("conditions"), "Available")
    return bool(avail and avail.get("status") == "True")


def _status_fields(tenant: Tenant, inputs: RenderInputs) -> dict[str, Any]:
    models: set[str] = set()
    for alias in inputs.aliases:
        models.add(alias.metadata.name or "")
        models.update(n for n in alias.spec.aliases if "*" not in n)
    return {
        "url": service_url(tenant),
        "models": sorted(models),
        "keys": [_key_status(k, inputs) for k in tenant.spec.keys],
    }


def _stamp(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _key_status(key: KeySpec, inputs: RenderInputs) -> dict[str, Any]:
    state = inputs.key_state.get(key.name)
    rotates = (
        state.issued_at + timedelta(days=key.rotate_after_days)
        if state and key.rotate_after_days
        else None
    )
    fields = {
        "name": key.name,
        "secretName": key_secret_name(key.name),
        "expiresAt": _stamp(key.expires_at),
        "issuedAt": _stamp(state.issued_at if state else None),
        "rotatesAt": _stamp(rotates),
        "previousKeyValidUntil": _stamp(state.previous_valid_until if state else None),
    }
    return {k: v for k, v in fields.items() if v is not None}


async def _write_status(
    kube: Kube,
    body: JSON,
    old: dict[str, Any],
    conds: list[dict[str, Any]],
    extra: dict[str, Any],
    settings: Settings,
) -> bool:
    status = {
        "conditions": merge_conditions(old.get("conditions"), conds),
        "observedGeneration": body["metadata"].get("generation"),
        **extra,
    }
    written = await write_tenant_status(kube, body, old, status)
    if written:
        for cond in conds:
            before = find(old.get("conditions"), cond["type"])
            if cond["status"] == "False" and (
                before is None or before.get("message") != cond["message"]
            ):
                await post_event(kube, settings, body, "Warning", cond["reason"], cond["message"])
    return written
