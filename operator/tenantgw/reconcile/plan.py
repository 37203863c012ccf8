"""Plan: what one reconcile of a tenant should do, decided from a snapshot without any I/O.

`plan_tenant(snapshot, settings, now=..., new_key=...)` parses and validates what was observed,
judges the namespace, plans the key material (new keys and rotations come from `new_key`,
rotation times from `now`) and renders the desired objects. Some conditions (ApplyFailed, the
gateway Deployment's availability) are about what the apply itself answered, so the plan ends
with `conclude(plan, result)`, equally pure: the Tenant status to write (None when nothing a
reader would notice changed: the zero-write idle resync) and the Events to post after it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from tenantgw.api import KeySpec, Tenant
from tenantgw.kube.apply import ApplyResult, Ref
from tenantgw.kube.client import JSON
from tenantgw.reconcile.conditions import condition, find, merge_conditions
from tenantgw.reconcile.enforcement import EnforcementObservation, enforcement_condition
from tenantgw.reconcile.material import plan_material
from tenantgw.reconcile.namespace import (
    ADOPTED_ANNOTATION,
    judge_namespace,
    terminating_message,
)
from tenantgw.reconcile.readiness import missing_credentials, tenant_conditions
from tenantgw.reconcile.settings import Settings
from tenantgw.reconcile.status import child_status
from tenantgw.reconcile.storage import StorageOutcome
from tenantgw.reconcile.tls import TlsJudgement, judge_tls
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
from tenantgw.render.tls import CERT_MANAGER_API, render_certificate, tls_issuer

MONITORING_API = "monitoring.coreos.com/v1"
PRUNABLE_KINDS: list[tuple[str, str]] = [
    ("v1", "ServiceAccount"),
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    (RBAC_API_VERSION, "Role"),
    (RBAC_API_VERSION, "RoleBinding"),
]
MONITORING_KINDS: list[tuple[str, str]] = [
    (MONITORING_API, "ServiceMonitor"),
    (MONITORING_API, "PrometheusRule"),
]
CERT_MANAGER_KINDS: list[tuple[str, str]] = [(CERT_MANAGER_API, "Certificate")]

# False conditions that every new tenant and every rollout passes through, or that say the same
# of every tenant of the cluster (no Prometheus Operator; kopf logs the missing CRDs once at
# start): the condition says so; a Warning Event for each would be noise, and an API write per
# tenant.
QUIET_REASONS = frozenset({"DeploymentProgressing", "MonitoringCRDsMissing"})


@dataclass(frozen=True)
class TenantSnapshot:
    """Everything one reconcile read, read once, before deciding anything.

    Only the Tenant and its namespace are read when the Tenant is invalid or may not use the
    namespace (refused, or still terminating): nothing else would be used, and another
    tenant's Secrets are never read. Otherwise `complete` is True and the rest is filled in.
    """

    body: JSON
    namespace: JSON | None = None
    complete: bool = False
    aliases: tuple[JSON, ...] = ()
    budgets: tuple[JSON, ...] = ()
    monitoring: bool = False
    secrets: Mapping[Ref, JSON | None] = field(default_factory=dict)
    """The tenant's own Secrets (`material.material_refs`), None when missing."""
    provider_secrets: Mapping[str, JSON | None] = field(default_factory=dict)
    """The provider credential Secrets in the tenant's namespace, by name."""
    enforcement: EnforcementObservation = field(
        default_factory=lambda: EnforcementObservation(configured=False)
    )
    cert_manager: bool = False
    """Whether cert-manager's Certificate CRD is served (discovery)."""
    tls_secret: JSON | None = None
    """The Secret spec.gateway.tls names, None when missing or without TLS."""


@dataclass(frozen=True)
class Admission:
    """Whether the snapshot's Tenant may be reconciled in full, and if not the conditions why."""

    tenant: Tenant | None
    conditions: tuple[dict[str, Any], ...] = ()
    requeue: bool = False
    adopted: bool = False

    @property
    def admitted(self) -> bool:
        return self.tenant is not None and not self.conditions


def admit(
    body: JSON, live_ns: JSON | None, settings: Settings, *, namespace_read: bool
) -> Admission:
    """Parse the Tenant and judge its namespace (pure; also what observe reads further by).

    With `namespace_read` False only the parse is judged (observe has not read the namespace).
    """
    generation = body["metadata"].get("generation")
    try:
        tenant = Tenant.model_validate(body)
    except ValidationError as exc:
        message = describe_validation_error(exc)
        return Admission(
            None,
            (
                condition("ConfigValid", False, "InvalidSpec", message, generation),
                condition("Ready", False, "InvalidSpec", message, generation),
            ),
        )
    if not namespace_read:
        return Admission(tenant)
    name = tenant.metadata.name or ""
    ns = tenant.namespace_name()
    verdict = judge_namespace(name, ns, live_ns, settings.operator_namespace)
    if not verdict.allowed:
        return Admission(
            tenant,
            (
                condition("ConfigValid", False, verdict.reason, verdict.message, generation),
                condition("Ready", False, verdict.reason, verdict.message, generation),
            ),
        )
    if live_ns is not None and live_ns.get("status", {}).get("phase") == "Terminating":
        # Left by a deleted Tenant of the same name (Argo CD's prune-and-recreate) or deleted
        # by hand: nothing can be created in it. Say so and come back once it is gone.
        message = terminating_message(ns)
        return Admission(
            tenant,
            (condition("Ready", False, "NamespaceTerminating", message, generation),),
            requeue=True,
        )
    return Admission(tenant, adopted=verdict.adopted)


@dataclass(frozen=True)
class ChildStatus:
    """A status patch for one ModelAlias or BudgetPolicy (its Accepted condition)."""

    kind: str
    name: str
    namespace: str
    status: dict[str, Any]


@dataclass(frozen=True)
class Findings:
    """What the full plan found, for the conditions that also need the apply's answer."""

    tenant: Tenant
    alias_verdicts: list[Verdict]
    budget_verdicts: list[Verdict]
    missing: list[str]
    monitoring: bool
    storage: StorageOutcome
    enforcement: dict[str, Any]
    fields: dict[str, Any]
    rotated: list[tuple[str, datetime | None]]
    """Keys rotated by this plan, with the time their previous value stops working."""
    tls: TlsJudgement | None = None


@dataclass(frozen=True)
class TenantPlan:
    """What to do: objects to apply, what to prune, child statuses, and the Tenant's status."""

    name: str
    body: JSON
    now: datetime
    objects: tuple[JSON, ...] = ()
    known: Mapping[Ref, JSON | None] = field(default_factory=dict)
    """Live objects the snapshot already holds, so the apply does not read them again."""
    prune_namespace: str | None = None
    prune_selector: str = ""
    prune_kinds: tuple[tuple[str, str], ...] = ()
    child_statuses: tuple[ChildStatus, ...] = ()
    conditions: tuple[dict[str, Any], ...] = ()
    """The Tenant's conditions when they do not depend on an apply (nothing is applied)."""
    findings: Findings | None = None
    requeue: bool = False

    @property
    def rendered(self) -> frozenset[tuple[str, str, str]]:
        return frozenset((o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in self.objects)


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class Conclusion:
    """The Tenant status to write (None: unchanged) and the Events to post after it."""

    status: dict[str, Any] | None
    events: tuple[Event, ...]
    ready: bool
    requeue: bool


def plan_tenant(
    snapshot: TenantSnapshot,
    settings: Settings,
    *,
    now: datetime,
    new_key: Callable[[], str],
    storage: StorageOutcome | None = None,
) -> TenantPlan:
    """The plan for `snapshot` (pure).

    `storage` is the outcome of the storage step (see reconcile/storage.py), required for a
    complete snapshot: the endpoints it returns are rendered into the gateway's Secret.
    """
    name = snapshot.body["metadata"]["name"]
    admission = admit(snapshot.body, snapshot.namespace, settings, namespace_read=True)
    if admission.admitted and not snapshot.complete:
        raise ValueError(f"tenant {name}: the snapshot of an admitted Tenant is incomplete")
    if not admission.admitted:
        return TenantPlan(
            name, snapshot.body, now, conditions=admission.conditions, requeue=admission.requeue
        )
    tenant = admission.tenant
    if tenant is None or storage is None:
        raise ValueError(f"tenant {name}: a complete snapshot is planned with a storage outcome")
    generation = snapshot.body["metadata"].get("generation")
    ns = tenant.namespace_name()

    alias_bodies, budget_bodies = list(snapshot.aliases), list(snapshot.budgets)
    aliases, rejected = parse_aliases(alias_bodies)
    alias_verdicts = validate_aliases(tenant, aliases) + rejected
    accepted_names = {v.name for v in alias_verdicts if v.accepted}
    accepted = [a for a in aliases if a.metadata.name in accepted_names]
    budgets, budget_verdicts = validate_budgets(tenant, budget_bodies, accepted)

    material = plan_material(
        tenant, snapshot.secrets, grace=settings.key_grace, now=now, generate=new_key
    )
    inputs = RenderInputs(
        tenant=tenant,
        aliases=sorted(accepted, key=lambda a: a.metadata.name or ""),
        budgets=budgets,
        unenforceable_budgets=unenforceable_budgets(budget_verdicts),
        master_key=material.master_key,
        keys=material.keys,
        image=settings.gateway_image,
        monitoring=snapshot.monitoring,
        monitoring_namespace=settings.monitoring_namespace,
        network=settings.network,
        storage=storage.endpoints,
        key_state=material.key_state,
        cert_manager=snapshot.cert_manager,
        default_issuer=settings.tls_issuer,
        cluster_domain=settings.cluster_domain,
        log_format=settings.gateway_log_format,
    )
    tls = judge_tls(
        tenant,
        snapshot.tls_secret,
        tls_issuer(inputs),
        render_certificate(inputs) is not None,
        generation,
    )
    if tls is not None and tls.digest is not None:
        inputs = replace(inputs, tls_digest=tls.digest)
    objects = render_tenant(inputs)
    if admission.adopted:
        _mark_adopted(objects)

    # A BudgetPolicy's spend fields are the budget status loop's (reconcile/budgets.py).
    children = []
    for verdict, kind in [(v, "ModelAlias") for v in alias_verdicts] + [
        (v, "BudgetPolicy") for v in budget_verdicts
    ]:
        status = child_status(kind, verdict, alias_bodies + budget_bodies, now)
        if status is not None:
            children.append(ChildStatus(kind, verdict.name, ns, status))

    findings = Findings(
        tenant=tenant,
        alias_verdicts=alias_verdicts,
        budget_verdicts=budget_verdicts,
        missing=missing_credentials(tenant, snapshot.provider_secrets),
        monitoring=snapshot.monitoring,
        storage=storage,
        enforcement=enforcement_condition(tenant, snapshot.enforcement, generation),
        fields=_status_fields(tenant, inputs),
        rotated=[(k, material.key_state[k].previous_valid_until) for k in material.rotated],
        tls=tls,
    )
    return TenantPlan(
        name,
        snapshot.body,
        now,
        objects=tuple(objects),
        known=material.live,
        prune_namespace=ns,
        prune_selector=selector(name),
        prune_kinds=tuple(
            PRUNABLE_KINDS
            + (MONITORING_KINDS if snapshot.monitoring else [])
            + (CERT_MANAGER_KINDS if snapshot.cert_manager else [])
        ),
        child_statuses=tuple(children),
        findings=findings,
        requeue=storage.failed,
    )


def conclude(plan: TenantPlan, result: ApplyResult) -> Conclusion:
    """The Tenant status and Events once the plan's objects were applied (pure)."""
    body = plan.body
    generation = body["metadata"].get("generation")
    old: dict[str, Any] = body.get("status") or {}
    found = plan.findings
    extra: dict[str, Any] = {}
    if found is None:
        conds = list(plan.conditions)
    else:
        conds = tenant_conditions(
            found.tenant,
            generation,
            found.alias_verdicts,
            found.budget_verdicts,
            found.missing,
            result,
            found.monitoring,
            found.storage,
            found.tls.condition if found.tls else None,
        )
        conds.append(found.enforcement)
        extra = found.fields
    status = {
        "conditions": merge_conditions(old.get("conditions"), conds, plan.now),
        "observedGeneration": generation,
        **extra,
    }
    changed = not all(old.get(k) == v for k, v in status.items())
    events: list[Event] = []
    if changed:
        for cond in conds:
            before = find(old.get("conditions"), cond["type"])
            warning = Event("Warning", cond["reason"], cond["message"])
            if (
                cond["status"] == "False"
                and cond["reason"] not in QUIET_REASONS
                and (before is None or before.get("message") != cond["message"])
                and warning not in events  # Ready repeating ConfigValid's reason: one Event
            ):
                events.append(warning)
    if found is not None:
        for key, until in found.rotated:
            events.append(
                Event(
                    "Normal",
                    "KeyRotated",
                    f"key {key} has a new value in Secret {key_secret_name(key)}; "
                    f"the previous value works until {until:%Y-%m-%dT%H:%M:%SZ}",
                )
            )
        if result.changed and serving(old, generation):
            changes = ", ".join(result.applied + [f"-{p}" for p in result.pruned])
            events.append(Event("Normal", "Applied", f"applied {changes}"))
    ready = find(conds, "Ready")
    return Conclusion(
        status=status if changed else None,
        events=tuple(events),
        ready=bool(ready and ready["status"] == "True"),
        requeue=plan.requeue or bool(result.failed),
    )


def serving(status: Mapping[str, Any], generation: Any) -> bool:
    """Whether `status` says the gateway already served this generation (Ready True).

    Only then is an apply news worth an Event: a hand edit reverted, a key rotated, a changed
    ModelAlias written to the ConfigMap. While a Tenant comes up or rolls out a spec edit, its
    conditions and observedGeneration say what happened, and an Event each time would be one
    more API write per new tenant.
    """
    ready = find(status.get("conditions"), "Ready")
    return (
        status.get("observedGeneration") == generation
        and ready is not None
        and ready.get("status") == "True"
    )


def _mark_adopted(objects: list[JSON]) -> None:
    """A namespace the Tenant did not create is labelled but never owned (so never deleted)."""
    for obj in objects:
        if obj["kind"] == "Namespace":
            obj["metadata"].pop("ownerReferences", None)
            obj["metadata"].setdefault("annotations", {})[ADOPTED_ANNOTATION] = "true"


def provider_secret_names(tenant: Tenant) -> list[str]:
    """The Secrets the tenant's provider credentials reference, in its namespace."""
    refs = [p.credentials_secret_ref for p in tenant.spec.providers]
    return list(dict.fromkeys(r.name for r in refs if r is not None))


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
