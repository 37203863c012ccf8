"""What a deleted Tenant leaves behind, by its `spec.deletionPolicy`.

Delete: nothing it created: the namespace it created (with everything in it), or every child it
labelled in an adopted one, and its PostgreSQL role and schema. Retain: the data, for as long as
the platform decides (audit retention, a Tenant re-created under the same name): the ledger and
audit schema stays, its role locked out; the namespace stays with what others put in it
(provider Secrets, ModelAliases, BudgetPolicies), labelled for the tenant so that a Tenant of the
same name takes it back. Either way the gateway, its credentials and the tenant's RBAC go, and
so do its Redis user and keys (budget counters are rebuilt from the ledger).
"""

from __future__ import annotations

from tenantgw.api import API_VERSION, Tenant
from tenantgw.kube.client import JSON, Kube
from tenantgw.reconcile.namespace import ADOPTED_ANNOTATION
from tenantgw.reconcile.tenant import (
    CERT_MANAGER_KINDS,
    MONITORING_API,
    MONITORING_KINDS,
    PRUNABLE_KINDS,
)
from tenantgw.render.labels import TENANT_LABEL, selector
from tenantgw.render.tls import CERT_MANAGER_API
from tenantgw.tenancy import Provisioner


async def cleanup_tenant(
    kube: Kube, tenant: Tenant, provisioner: Provisioner | None = None
) -> list[str]:
    """Remove what the Tenant's deletionPolicy says; returns what was deleted.

    Owner references would let the garbage collector delete the children too; doing it here
    also covers an adopted or retained namespace, which is never owned, and is what the
    finalizer waits for.
    """
    name = tenant.metadata.name or ""
    ns = tenant.namespace_name()
    retain = tenant.spec.deletion_policy == "Retain"
    if provisioner is not None:
        # Storage is keyed by the (cluster-unique) tenant name.
        await provisioner.remove(name, keep_data=retain)
    live = await kube.get("v1", "Namespace", ns)
    if live is None:
        return []
    meta = live["metadata"]
    if meta.get("labels", {}).get(TENANT_LABEL) != name:
        return []  # someone else's namespace: not ours to touch
    adopted = meta.get("annotations", {}).get(ADOPTED_ANNOTATION) == "true"
    if not retain and not adopted:
        await kube.delete("v1", "Namespace", ns)
        return [f"Namespace/{ns}"]
    if retain:
        await _disown(kube, live)
    deleted = []
    kinds = (
        PRUNABLE_KINDS
        + (MONITORING_KINDS if await kube.has_api(MONITORING_API, "ServiceMonitor") else [])
        + (CERT_MANAGER_KINDS if await kube.has_api(CERT_MANAGER_API, "Certificate") else [])
    )
    for api_version, kind in kinds:
        for obj in await kube.list(api_version, kind, ns, selector=selector(name)):
            if await kube.delete(api_version, kind, obj["metadata"]["name"], ns):
                deleted.append(f"{kind}/{obj['metadata']['name']}")
    return deleted


async def _disown(kube: Kube, namespace: JSON) -> None:
    """Drop the Tenant's owner reference, so that the garbage collector keeps the namespace.

    Rendered only with deletionPolicy Delete; one may remain from before a switch to Retain,
    and the collector deletes an object once all its owners are gone, whichever Tenant UID.
    """
    refs = namespace["metadata"].get("ownerReferences") or []
    kept = [
        ref
        for ref in refs
        if not (ref.get("apiVersion") == API_VERSION and ref.get("kind") == "Tenant")
    ]
    if len(kept) != len(refs):
        name = namespace["metadata"]["name"]
        await kube.merge_patch(
            "v1", "Namespace", name, None, {"metadata": {"ownerReferences": kept}}
        )
