"""kopf handlers. Each is a few lines: whatever the event, it wakes the one reconcile."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from typing import Any

import kopf

from tenantgw import jsonlog
from tenantgw.api import API_VERSION, GROUP, VERSION, Audit, Tenant
from tenantgw.kube.cache import LiveCache, index_key, trimmed
from tenantgw.kube.client import JSON, KINDS, Kube, KubeError
from tenantgw.operator import kopf_startup
from tenantgw.operator.heap import run_heap_trim_loop
from tenantgw.operator.login import login
from tenantgw.operator.waker import Waker, jittered, run_resync_loop
from tenantgw.reconcile.audit import load_signing_key, run_audit_loop
from tenantgw.reconcile.budgets import BudgetStatusSync, PolicyEntry, run_budget_loop
from tenantgw.reconcile.cache import ReconcileCache
from tenantgw.reconcile.cleanup import cleanup_tenant
from tenantgw.reconcile.notify import Notifier, run_notify_loop
from tenantgw.reconcile.settings import Settings
from tenantgw.reconcile.tenant import reconcile_tenant
from tenantgw.render.labels import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PART_OF,
    PART_OF_LABEL,
    TENANT_LABEL,
)
from tenantgw.tenancy import Provisioner, StorageError
from tenantgw.tenancy.notify_outbox import Outbox

log = logging.getLogger("tenantgw.operator")
# kopf configured the root logger's handler before loading this module (`kopf run
# --log-format`); $TENANTGW_LOG_FORMAT=json gives its lines and ours tenantgw's JSON schema.
if jsonlog.log_format() == "json":
    jsonlog.install("json")
SETTINGS = Settings.from_env()
kopf_startup.install()  # before kopf's orchestration builds its start-up toggles
TENANTS = (GROUP, VERSION, "tenants")
FINALIZER = f"{GROUP}/finalizer"
MANAGED = {MANAGED_BY_LABEL: MANAGED_BY}
# Every kind the operator creates for a tenant, watched so that drift is reverted within
# seconds: (group, version, plural). Each watch is filtered by the API server (see configure()),
# so the operator never lists or caches objects it does not manage.
OWNED: list[tuple[str, str, str]] = [
    ("", "v1", "namespaces"),
    ("", "v1", "serviceaccounts"),
    ("", "v1", "configmaps"),
    ("", "v1", "services"),
    ("apps", "v1", "deployments"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    ("rbac.authorization.k8s.io", "v1", "roles"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    ("monitoring.coreos.com", "v1", "servicemonitors"),
    ("monitoring.coreos.com", "v1", "prometheusrules"),
    ("cert-manager.io", "v1", "certificates"),
]
# Secrets are selected by part-of, which our own Secrets carry and which the platform puts on
# provider credential Secrets so that a rotated or newly created credential wakes its tenant at
# once (without the label, the next resync picks it up). A label selector cannot say "ours OR
# referenced by a Tenant", and a cluster-wide Secret watch would cache every Secret.
SECRETS_SELECTOR = f"{PART_OF_LABEL}={PART_OF}"
AUDIT_INTERVAL = float(os.environ.get("TENANTGW_AUDIT_CHECKPOINT_SECONDS", "60"))
"""Seconds between signed checkpoints (and retention passes) of the tenants' audit trails."""


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf keeps no last-handled configuration on Tenants (a write per new or changed Tenant).

    The reconcile decides from the whole state, never from a diff, and Tenants wake it through
    `tenant_event`; with nothing stored, kopf sees every event as a creation, for which there
    is no handler, and only runs `tenant_deleted` (under its finalizer).

    Nor does it build the essence it would compare and store: that is a deep copy of the whole
    body, made for every event of every watched kind, and no handler reads it.
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


# The kinds whose reads come from the watch caches (kube/cache.py): each gets a kopf index of
# its objects. kopf runs no other handler before every index is filled, so no reconcile reads a
# cache that has not listed yet. The kinds of optional CRDs (monitoring, cert-manager) are left
# out: a missing CRD would leave its index unfilled and every handler waiting.
OPTIONAL_GROUPS = frozenset({"monitoring.coreos.com", "cert-manager.io"})
CACHED: list[tuple[str, str, str]] = [
    *[w for w in OWNED if w[0] not in OPTIONAL_GROUPS],
    ("", "v1", "secrets"),
    (GROUP, VERSION, "tenants"),
    (GROUP, VERSION, "modelaliases"),
    (GROUP, VERSION, "budgetpolicies"),
]


def _kind(group: str, version: str, plural: str) -> tuple[str, str]:
    api_version = f"{group}/{version}" if group else version
    for k in KINDS.values():
        if (k.api_version, k.plural) == (api_version, plural):
            return api_version, k.kind
    raise ValueError(f"tenantgw.kube.client has no kind for {api_version} {plural}")


# Index functions are coroutines although they never await: kopf runs a plain function in a
# thread pool, a hop to another thread (and a GIL hand-over) for every event of every kind.
async def _live(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[str, JSON]:
    return {index_key(namespace, name): trimmed(body)}


for _group, _version, _plural in CACHED:
    kopf.index(_group, _version, _plural, id=f"live_{_plural}")(_live)


def live_cache(indexes: dict[str, Any]) -> LiveCache:
    """The reads cache over the indexes kopf passes to handlers as keyword arguments."""
    return LiveCache(
        indexes={_kind(*w): indexes[f"live_{w[2]}"] for w in CACHED},
        selected=frozenset(_kind(*w) for w in CACHED if w[0] != GROUP),
    )


def select_watches(settings: kopf.OperatorSettings) -> None:
    """Have the API server filter every watch of a kind tenantgw does not define, by label."""
    managed = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
    for group, version, plural in OWNED:
        settings.watching.label_selectors[group, version, plural] = managed
    settings.watching.label_selectors["", "v1", "secrets"] = SECRETS_SELECTOR


class QuietWakeUps(logging.Filter):
    """Drops kopf's line for each event handler that ran ("Handler 'owned_object_event'
    succeeded."): every event of every child logged one, about twenty per new tenant, and all
    they said is that a wake-up was queued. The reconcile logs what it did; a handler that
    fails still logs at WARNING or above."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.INFO
            and getattr(record, "k8s_skip", False)  # kopf's logger of event handlers
            and str(record.msg).endswith(" succeeded.")
        )


kopf.on.login()(login)  # kopf's own login, in a session of bounded connections


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, QuietWakeUps) for f in objects.filters):
        objects.addFilter(QuietWakeUps())
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    # We post our own Events, only when something changed; kopf's would cost a write per handler.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    select_watches(settings)
    # No worker limit: kopf indexes every Tenant before any handler runs, and a limit below
    # the number of Tenants would stall the operator at startup.
    kube = Kube()
    kube.cache = live_cache(kwargs)
    provisioner = Provisioner.from_env()
    if provisioner is None:
        log.warning("no TENANTGW_POSTGRES_DSN/TENANTGW_REDIS_URL: tenants get no storage")
    memo["kube"] = kube
    memo["provisioner"] = provisioner
    cache = ReconcileCache(storage_ttl=SETTINGS.resync_seconds)
    memo["cache"] = cache
    waker = Waker(
        lambda name: _reconcile(kube, provisioner, cache, name),
        concurrency=SETTINGS.concurrent_reconciles,
    )
    waker.resync = jittered(SETTINGS.resync_seconds)
    memo["waker"] = waker
    memo["generations"] = {}
    memo["tenants_seen"] = {}
    by_namespace: kopf.Index[str, str] = kwargs["tenant_by_namespace"]
    memo["resync_loop"] = asyncio.create_task(
        run_resync_loop(
            waker,
            lambda: [t for ns in list(by_namespace) for t in by_namespace.get(ns, [])],
            tick=min(1.0, SETTINGS.resync_seconds / 10),
        ),
        name="tenant-resync",
    )
    memo["heap_trim_loop"] = asyncio.create_task(run_heap_trim_loop(waker), name="heap-trim")
    if provisioner is not None:
        # Both indexes are live views of the watch caches, filled as the watches list.
        policies: kopf.Index[str, PolicyEntry] = kwargs["budget_policies"]
        tenants: kopf.Index[str, str] = kwargs["tenant_by_namespace"]

        def entries() -> list[PolicyEntry]:
            return [e for ns in list(policies) for e in policies.get(ns, [])]

        notifier = Notifier(
            kube,
            Outbox(provisioner),
            lambda: {(e.namespace, e.name): e.notify for e in entries() if e.notify},
            retry_seconds=SETTINGS.notify_retry_seconds,
        )
        sync = BudgetStatusSync(
            kube,
            provisioner,
            SETTINGS,
            refresh=SETTINGS.budget_refresh_seconds,
            notifier=notifier,
        )
        memo["budget_loop"] = asyncio.create_task(
            run_budget_loop(
                sync, entries, lambda ns: _tenant_of(ns, tenants), SETTINGS.budget_sync_seconds
            ),
            name="budget-status",
        )
        memo["notify_stop"] = asyncio.Event()
        memo["notify_loop"] = asyncio.create_task(
            run_notify_loop(notifier, min(5.0, SETTINGS.notify_retry_seconds), memo["notify_stop"]),
            name="budget-notify",
        )
        audit: kopf.Index[str, Audit] = kwargs["tenant_audit"]
        try:
            key = await load_signing_key(kube, SETTINGS.operator_namespace)
        except KubeError as exc:
            # Tenants are still served and audited; only checkpoints and retention wait.
            log.error(
                "audit signing key not available in namespace %s (%s): no checkpoints or "
                "retention until the operator restarts with it",
                SETTINGS.operator_namespace,
                exc,
            )
        else:
            memo["audit_loop"] = asyncio.create_task(
                run_audit_loop(
                    provisioner,
                    key,
                    lambda: {name: a for name in list(audit) for a in audit.get(name, [])},
                    AUDIT_INTERVAL,
                ),
                name="audit-checkpoints",
            )


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    for loop in ("budget_loop", "audit_loop", "resync_loop", "heap_trim_loop"):
        task = memo.get(loop)
        if task is not None:
            task.cancel()
    notify = memo.get("notify_loop")
    if notify is not None:
        # Let a delivery pass finish: a sent message gets its Redis record and its status.
        memo["notify_stop"].set()
        try:
            await asyncio.wait_for(notify, 30)
        except TimeoutError:
            log.warning("budget notifications: the last pass did not finish in 30 s")
    if memo.get("provisioner") is not None:
        await memo["provisioner"].close()


async def _reconcile(
    kube: Kube, provisioner: Provisioner | None, cache: ReconcileCache, name: str
) -> bool:
    """One reconcile; False asks the Waker to requeue it with backoff."""
    try:
        outcome = await reconcile_tenant(kube, name, SETTINGS, provisioner, cache)
    except KubeError as exc:
        if exc.status == 404 and await kube.get(API_VERSION, "Tenant", name) is None:
            return True  # deleted while we reconciled it
        log.warning("tenant %s: reconcile failed, will retry: %s", name, exc)
        return False
    if outcome.applied or outcome.pruned or outcome.status_written:
        log.info(
            "tenant %s reconciled: ready=%s applied=%s pruned=%s",
            name,
            outcome.ready,
            outcome.applied,
            outcome.pruned,
        )
    if outcome.requeue:
        log.info("tenant %s: not converged yet (storage, apply or namespace), requeued", name)
    return not outcome.requeue


@kopf.index(*TENANTS)
async def tenant_audit(name: str, spec: kopf.Spec, **_: Any) -> dict[str, Audit]:
    """Each Tenant's audit settings, for the checkpoint and retention loop."""
    try:
        audit = Audit.model_validate((spec.get("compliance") or {}).get("audit") or {})
    except ValueError:
        return {}  # an invalid Tenant: its reconcile reports it
    return {name: audit}


@kopf.index(*TENANTS)
async def tenant_by_namespace(name: str, spec: kopf.Spec, **_: Any) -> dict[str, str]:
    return {spec.get("namespace") or f"tenant-{name}": name}


@kopf.on.event(*TENANTS)
async def tenant_event(
    type: str | None, body: kopf.Body, name: str, memo: kopf.Memo, **_: Any
) -> None:
    """A new Tenant, a changed spec, or every Tenant at start: reconcile it.

    Status writes (ours) and kopf's finalizer leave the generation as it was and wake nothing;
    the reconcile's own resync, watches and requeues cover the rest.
    """
    _saw(memo, type, body)
    meta = body.get("metadata", {})
    if type == "DELETED" or meta.get("deletionTimestamp"):
        return  # tenant_deleted runs
    if FINALIZER not in (meta.get("finalizers") or []):
        return  # kopf adds it first, so that nothing is created that its deletion would miss
    seen: dict[str, tuple[str, int | None]] = memo["tenants_seen"]
    mark = (meta.get("uid", ""), meta.get("generation"))
    if seen.get(name) == mark:
        return
    seen[name] = mark
    memo["waker"].allow(name)  # a Tenant created again under the name of a deleted one
    await memo["waker"].wake(name)


@kopf.on.delete(*TENANTS)
async def tenant_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    try:
        tenant = Tenant.model_validate(body)
    except ValueError:
        return  # an invalid Tenant never got anything created
    name = tenant.metadata.name or ""
    # No reconcile may run during or after the cleanup: it would recreate what is removed.
    await memo["waker"].stop(name)
    memo["cache"].forget(name)
    memo["tenants_seen"].pop(name, None)
    try:
        deleted = await cleanup_tenant(memo["kube"], tenant, memo["provisioner"])
    except StorageError as err:
        raise kopf.TemporaryError(f"tenant {tenant.metadata.name}: {err}", delay=10) from err
    if deleted:
        log.info("tenant %s deleted: removed %s", tenant.metadata.name, deleted)


def _tenant_of(namespace: str | None, index: kopf.Index[str, str]) -> str | None:
    for tenant in index.get(namespace or "", []):
        return tenant
    return None


def _saw(memo: kopf.Memo, event: str | None, body: kopf.Body) -> bool:
    """Tell the reads cache what the watch brought (kube/cache.py, `LiveCache.observed`);
    True when it is only the echo of the operator's own write."""
    cache = memo["kube"].cache
    return cache is not None and cache.observed(event, body)


@kopf.on.event(GROUP, VERSION, "modelaliases")
async def child_resource_event(
    type: str | None, body: kopf.Body, namespace: str | None, memo: kopf.Memo, **kwargs: Any
) -> None:
    """Wake the tenant for a new, changed or deleted alias; the echo of the Accepted status
    the reconcile itself wrote does not (it saw its answer)."""
    if _saw(memo, type, body):
        return
    tenant = _tenant_of(namespace, kwargs["tenant_by_namespace"])
    if tenant:
        await memo["waker"].wake(tenant)


@kopf.index(GROUP, VERSION, "budgetpolicies")
async def budget_policies(
    namespace: str | None, body: kopf.Body, **_: Any
) -> dict[str, PolicyEntry]:
    """What the budget status loop reads instead of listing BudgetPolicies."""
    entry = PolicyEntry.from_body(dict(body))
    return {namespace or "": entry} if entry else {}


@kopf.on.event(GROUP, VERSION, "budgetpolicies")
async def budget_policy_event(
    type: str | None, body: kopf.Body, namespace: str | None, memo: kopf.Memo, **kwargs: Any
) -> None:
    """Wake the tenant for a new, changed or deleted policy; spend-only status changes do not."""
    _saw(memo, type, body)
    meta = body.get("metadata", {})
    uid, generation = meta.get("uid", ""), meta.get("generation")
    seen: dict[str, int | None] = memo["generations"]
    if type == "DELETED":
        seen.pop(uid, None)
    elif uid in seen and seen[uid] == generation:
        return
    else:
        seen[uid] = generation
    tenant = _tenant_of(namespace, kwargs["tenant_by_namespace"])
    if tenant:
        await memo["waker"].wake(tenant)


@kopf.on.event("v1", "namespaces", labels=MANAGED)
@kopf.on.event("v1", "serviceaccounts", labels=MANAGED)
@kopf.on.event("v1", "secrets", labels=MANAGED)
@kopf.on.event("v1", "configmaps", labels=MANAGED)
@kopf.on.event("v1", "services", labels=MANAGED)
@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=MANAGED)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=MANAGED)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=MANAGED)
@kopf.on.event("rbac.authorization.k8s.io", "v1", "roles", labels=MANAGED)
@kopf.on.event("rbac.authorization.k8s.io", "v1", "rolebindings", labels=MANAGED)
@kopf.on.event("monitoring.coreos.com", "v1", "servicemonitors", labels=MANAGED)
@kopf.on.event("monitoring.coreos.com", "v1", "prometheusrules", labels=MANAGED)
@kopf.on.event("cert-manager.io", "v1", "certificates", labels=MANAGED)
async def owned_object_event(
    type: str | None, body: kopf.Body, labels: kopf.Labels, memo: kopf.Memo, **_: Any
) -> None:
    """An object the operator applied changed or went away: revert drift now, not at resync.

    The echo of the operator's own write (the version its apply answered) wakes nothing. A
    tenant namespace that finished terminating wakes a Tenant re-created meanwhile.
    """
    if _saw(memo, type, body):
        return  # the echo of our own apply: the reconcile that made it saw its answer
    tenant = labels.get(TENANT_LABEL)
    if tenant:
        await memo["waker"].wake(tenant)


def _foreign_secret(labels: kopf.Labels, **_: Any) -> bool:
    return labels.get(MANAGED_BY_LABEL) != MANAGED_BY


@kopf.on.event("v1", "secrets", when=_foreign_secret)
async def provider_secret_event(
    type: str | None, body: kopf.Body, namespace: str | None, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A provider credential Secret (labelled part-of tenantgw) changed in a tenant namespace."""
    _saw(memo, type, body)
    tenant = _tenant_of(namespace, kwargs["tenant_by_namespace"])
    if tenant:
        await memo["waker"].wake(tenant)
