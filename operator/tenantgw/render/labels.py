"""Labels, selectors and owner references every object of a tenant carries."""

from __future__ import annotations

from typing import Any

from tenantgw.api import API_VERSION, Tenant
from tenantgw.render.names import GATEWAY_NAME, tenant_name

MANAGED_BY = "tenantgw-operator"
TENANT_LABEL = "tenantgw.io/tenant"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
PART_OF_LABEL = "app.kubernetes.io/part-of"
NAME_LABEL = "app.kubernetes.io/name"
PART_OF = "tenantgw"


def labels(tenant_name: str) -> dict[str, str]:
    """Labels of every object the operator creates for a tenant (prune selects on them)."""
    return {MANAGED_BY_LABEL: MANAGED_BY, TENANT_LABEL: tenant_name, PART_OF_LABEL: PART_OF}


def selector(tenant_name: str) -> str:
    """Label selector matching every object of a tenant, for list and prune."""
    return f"{MANAGED_BY_LABEL}={MANAGED_BY},{TENANT_LABEL}={tenant_name}"


def gateway_selector(tenant_name: str) -> dict[str, str]:
    """matchLabels of the gateway pods (Deployment, Service, NetworkPolicy, PDB, ServiceMonitor).

    Immutable once a Deployment exists, so it holds only what never changes.
    """
    return {NAME_LABEL: GATEWAY_NAME, TENANT_LABEL: tenant_name}


def gateway_labels(tenant_name: str) -> dict[str, str]:
    """labels() plus the gateway's name: on the pods, and on the Service the monitor selects."""
    return {**labels(tenant_name), NAME_LABEL: GATEWAY_NAME}


def owner_reference(tenant: Tenant) -> dict[str, Any]:
    """Owner reference to the Tenant: the garbage collector deletes children with it."""
    if not tenant.metadata.uid:
        raise ValueError(f"Tenant {tenant.metadata.name} has no metadata.uid")
    return {
        "apiVersion": API_VERSION,
        "kind": "Tenant",
        "name": tenant_name(tenant),
        "uid": tenant.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(
    tenant: Tenant, name: str, object_labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """metadata of a namespaced child: name, tenant namespace, labels, owner reference."""
    return {
        "name": name,
        "namespace": tenant.namespace_name(),
        "labels": object_labels if object_labels is not None else labels(tenant_name(tenant)),
        "ownerReferences": [owner_reference(tenant)],
    }
