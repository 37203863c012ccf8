"""What a deleted Tenant leaves behind: nothing it created."""

from __future__ import annotations

from tenantgw.api import Tenant
from tenantgw.kube.client import Kube
from tenantgw.reconcile.tenant import (
    ADOPTED_ANNOTATION,
    MONITORING_API,
    MONITORING_KINDS,
    PRUNABLE_KINDS,
)
from tenantgw.render.labels import TENANT_LABEL, selector
from tenantgw.tenancy import Provisioner


async def cleanup_tenant(
    kube: Kube, tenant: Tenant, provisioner: Provisioner | None = None
) -> list[str]:
    """Delete the tenant's namespace if the Tenant created it, else every child it labelled.

    Owner references would let the garbage collector do this too; doing it explicitly also
    covers an adopted namespace, which is never owned, and is what the finalizer waits for.
    """
    name = tenant.metadata.name or ""
    ns = tenant.namespace_name()
    if provisioner is not None:
        await provisioner.remove(name)  # storage is keyed by the (cluster-unique) tenant name
    live = await kube.get("v1", "Namespace", ns)
    if live is None:
        return []
    meta = live["metadata"]
    if meta.get("labels", {}).get(TENANT_LABEL) != name:
        return []  # someone else's namespace: not ours to touch
    if meta.get("annotations", {}).get(ADOPTED_ANNOTATION) != "true":
        await kube.delete("v1", "Namespace", ns)
        return [f"Namespace/{ns}"]
    deleted = []
    kinds = PRUNABLE_KINDS + (
        MONITORING_KINDS if await kube.has_api(MONITORING_API, "ServiceMonitor") else []
    )
    for api_version, kind in kinds:
        for obj in await kube.list(api_version, kind, ns, selector=selector(name)):
            if await kube.delete(api_version, kind, obj["metadata"]["name"], ns):
                deleted.append(f"{kind}/{obj['metadata']['name']}")
    return deleted
