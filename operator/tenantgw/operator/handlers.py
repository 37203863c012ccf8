"""kopf handlers. Each is a few lines: whatever the event, it wakes the one reconcile."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from tenantgw.api import API_VERSION, GROUP, VERSION, Tenant
from tenantgw.kube.client import Kube, KubeError
from tenantgw.operator.waker import Waker
from tenantgw.reconcile.budgets import BudgetStatusSync, PolicyEntry, run_budget_loop
from tenantgw.reconcile.cache import ReconcileCache
from tenantgw.reconcile.cleanup import cleanup_tenant
from tenantgw.reconcile.settings import Settings
from tenantgw.reconcile.tenant import reconcile_tenant
from tenantgw.render.labels import MANAGED_BY, TENANT_LABEL
from tenantgw.tenancy import Provisioner, StorageError

log = logging.getLogger("tenantgw.operator")
SETTINGS = Settings.from_env()
TENANTS = (GROUP, VERSION, "tenants")
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # We post our own Events, only when something changed; kopf's would cost a write per handler.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # No worker limit: kopf indexes every Tenant before any handler runs, and a limit below
    # the number of Tenants would stall the operator at startup.
    kube = Kube()
    provisioner = Provisioner.from_env()
    if provisioner is None:
        log.warning("no TENANTGW_POSTGRES_DSN/TENANTGW_REDIS_URL: tenants get no storage")
    memo["kube"] = kube
    memo["provisioner"] = provisioner
    cache = ReconcileCache(storage_ttl=SETTINGS.resync_seconds)
    memo["cache"] = cache
    memo["waker"] = Waker(lambda name: _reconcile(kube, provisioner, cache, name))
    memo["generations"] = {}
    if provisioner is not None:
        # Both indexes are live views of the watch caches, filled as the watches list.
        policies: kopf.Index[str, PolicyEntry] = kwargs["budget_policies"]
        tenants: kopf.Index[str, str] = kwargs["tenant_by_namespace"]
        sync = BudgetStatusSync(
            kube, provisioner, SETTINGS, refresh=SETTINGS.budget_refresh_seconds
        )
        memo["budget_loop"] = asyncio.create_task(
            run_budget_loop(
                sync,
                lambda: [e for ns in list(policies) for e in policies.get(ns, [])],
                lambda ns: _tenant_of(ns, tenants),
                SETTINGS.budget_sync_seconds,
            ),
            name="budget-status",
        )


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("budget_loop")
    if task is not None:
        task.cancel()
    if memo.get("provisioner") is not None:
        await memo["provisioner"].close()


async def _reconcile(
    kube: Kube, provisioner: Provisioner | None, cache: ReconcileCache, name: str
) -> None:
    try:
        outcome = await reconcile_tenant(kube, name, SETTINGS, provisioner, cache)
    except KubeError as exc:
        if exc.status == 404 and await kube.get(API_VERSION, "Tenant", name) is None:
            return  # deleted while we reconciled it
        if exc.status in (400, 403, 422):
            log.error("tenant %s: the API server refused a write: %s", name, exc)
        raise kopf.TemporaryError(f"tenant {name}: {exc}", delay=10) from exc
    if outcome.storage_failed:
        raise kopf.TemporaryError(f"tenant {name}: storage not ready, retrying", delay=15)
    if outcome.applied or outcome.pruned or outcome.status_written:
        log.info(
            "tenant %s reconciled: ready=%s applied=%s pruned=%s",
            name,
            outcome.ready,
            outcome.applied,
            outcome.pruned,
        )


@kopf.index(*TENANTS)
def tenant_by_namespace(name: str, spec: kopf.Spec, **_: Any) -> dict[str, str]:
    return {spec.get("namespace") or f"tenant-{name}": name}


@kopf.on.create(*TENANTS, backoff=5)
@kopf.on.update(*TENANTS, backoff=5)
@kopf.on.resume(*TENANTS, backoff=5)
async def tenant_changed(name: str, memo: kopf.Memo, **_: Any) -> None:
    memo["waker"].allow(name)  # a Tenant created again under the name of a deleted one
    await memo["waker"].wake(name)


@kopf.timer(*TENANTS, interval=SETTINGS.resync_seconds, initial_delay=SETTINGS.resync_seconds)
async def tenant_resync(name: str, memo: kopf.Memo, **_: Any) -> None:
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


@kopf.on.event(GROUP, VERSION, "modelaliases")
async def child_resource_event(namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    tenant = _tenant_of(namespace, kwargs["tenant_by_namespace"])
    if tenant:
        await memo["waker"].wake(tenant)


@kopf.index(GROUP, VERSION, "budgetpolicies")
def budget_policies(namespace: str | None, body: kopf.Body, **_: Any) -> dict[str, PolicyEntry]:
    """What the budget status loop reads instead of listing BudgetPolicies."""
    entry = PolicyEntry.from_body(dict(body))
    return {namespace or "": entry} if entry else {}


@kopf.on.event(GROUP, VERSION, "budgetpolicies")
async def budget_policy_event(
    type: str | None, body: kopf.Body, namespace: str | None, memo: kopf.Memo, **kwargs: Any
) -> None:
    """Wake the tenant for a new, changed or deleted policy; spend-only status changes do not."""
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


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def gateway_deployment_event(labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    tenant = labels.get(TENANT_LABEL)
    if tenant:
        await memo["waker"].wake(tenant)


def _foreign_secret(labels: kopf.Labels, **_: Any) -> bool:
    return labels.get("app.kubernetes.io/managed-by") != MANAGED_BY


@kopf.on.event("v1", "secrets", when=_foreign_secret)
async def provider_secret_event(namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    """A provider credential Secret appeared or changed in a tenant namespace."""
    tenant = _tenant_of(namespace, kwargs["tenant_by_namespace"])
    if tenant:
        await memo["waker"].wake(tenant)
