"""Every Kubernetes object of a tenant, in apply order: `render_tenant(inputs)`.

Pure: the same inputs give the same list, byte for byte once serialised. Each object carries
labels() and an owner reference to the Tenant; all but the Namespace live in the tenant's
namespace.
"""

from __future__ import annotations

from typing import Any

from tenantgw.render.access import render_access
from tenantgw.render.config import (
    configmap_data,
    render_configmap,
    render_gateway_secret,
    render_key_secrets,
)
from tenantgw.render.identity import service_account_annotations
from tenantgw.render.inputs import RenderInputs
from tenantgw.render.labels import labels, object_meta, owner_reference
from tenantgw.render.litellm_config import render_litellm_config
from tenantgw.render.monitoring import render_prometheus_rule, render_service_monitor
from tenantgw.render.names import (
    CONFIG_NAME,
    DISPLAY_NAME_ANNOTATION,
    GATEWAY_NAME,
    GATEWAY_PORT,
    KEY_SECRET_PREFIX,
    service_url,
    tenant_name,
)
from tenantgw.render.network import render_network_policy
from tenantgw.render.tls import render_certificate
from tenantgw.render.workload import (
    render_autoscaler,
    render_deployment,
    render_pod_disruption_budget,
    render_service,
)

__all__ = [
    "CONFIG_NAME",
    "GATEWAY_NAME",
    "GATEWAY_PORT",
    "KEY_SECRET_PREFIX",
    "render_namespace",
    "render_service_account",
    "render_tenant",
    "service_url",
]

POD_SECURITY_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def render_namespace(inputs: RenderInputs) -> dict[str, Any]:
    """The tenant's Namespace, enforcing the restricted Pod Security Standard.

    Owned by the Tenant (so the garbage collector may delete it) only with
    `deletionPolicy: Delete`: a retained namespace must survive any deletion propagation.
    """
    tenant = inputs.tenant
    name = tenant_name(tenant)
    metadata: dict[str, Any] = {
        "name": tenant.namespace_name(),
        "labels": {**labels(name), **POD_SECURITY_LABELS},
        "annotations": {DISPLAY_NAME_ANNOTATION: tenant.spec.display_name or name},
    }
    if tenant.spec.deletion_policy == "Delete":
        metadata["ownerReferences"] = [owner_reference(tenant)]
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}


def render_service_account(inputs: RenderInputs) -> dict[str, Any]:
    """ServiceAccount `gateway`: an identity with no token and no RBAC; with workload identity,
    annotated with the AWS role / Entra ID app it stands for (render.identity)."""
    metadata = object_meta(inputs.tenant, GATEWAY_NAME)
    annotations = service_account_annotations(inputs)
    if annotations:
        metadata["annotations"] = {**metadata.get("annotations", {}), **annotations}
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata,
        "automountServiceAccountToken": False,
    }


def render_tenant(inputs: RenderInputs) -> list[dict[str, Any]]:
    """All objects of the tenant, in the order they are applied.

    ServiceMonitor and PrometheusRule only when `inputs.monitoring` (their CRDs exist); the
    Role and RoleBindings of the tenant's principals only when it names any (render.access);
    cert-manager's Certificate only with TLS, an issuer and its CRDs (render.tls).
    """
    litellm = render_litellm_config(inputs)  # the ConfigMap's file and the pod's config hash
    data = configmap_data(inputs, litellm)
    objects = [
        render_namespace(inputs),
        render_service_account(inputs),
        render_gateway_secret(inputs),
        *render_key_secrets(inputs),
        render_configmap(inputs, data),
        render_deployment(inputs, litellm),
        render_service(inputs),
        render_network_policy(inputs),
        render_pod_disruption_budget(inputs),
        *render_access(inputs),
    ]
    autoscaler = render_autoscaler(inputs)
    if autoscaler is not None:
        objects.append(autoscaler)
    if inputs.monitoring:
        objects += [render_service_monitor(inputs), render_prometheus_rule(inputs)]
    certificate = render_certificate(inputs)
    if certificate is not None:
        # Before the Deployment would be nicer for a first start, but the kubelet waits for
        # the Secret either way; last keeps every other object's apply order unchanged.
        objects.append(certificate)
    return objects
