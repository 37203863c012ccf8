"""HTTPS on a tenant's gateway (`spec.gateway.tls`): the Secret mount, the server's flags, and
cert-manager's Certificate when its CRDs exist and an issuer is known.

Without `spec.gateway.tls` nothing here renders anything and the gateway serves plain HTTP.
The Secret is never rendered by the operator: cert-manager writes it, or the platform does.
"""

from __future__ import annotations

from typing import Any

from tenantgw.api import IssuerRef
from tenantgw.render.inputs import RenderInputs
from tenantgw.render.labels import PART_OF, PART_OF_LABEL, TENANT_LABEL, object_meta
from tenantgw.render.names import (
    GATEWAY_NAME,
    PORT_NAME,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    TLS_MOUNT,
    TLS_PORT_NAME,
    service_host,
    tenant_name,
)

CERT_MANAGER_API = "cert-manager.io/v1"
CERTIFICATE_NAME = GATEWAY_NAME
TLS_VOLUME = "tls"
TLS_SECRET_MODE = 0o440
"""Readable by the pod's group (fsGroup) only, like the gateway's own Secret."""
TLS_HASH_ANNOTATION = "tenantgw.io/tls-hash"


def tls_enabled(inputs: RenderInputs) -> bool:
    return inputs.tenant.spec.gateway.tls is not None


def port_name(inputs: RenderInputs) -> str:
    """Name of the gateway's port in the container and the Service: https or http."""
    return TLS_PORT_NAME if tls_enabled(inputs) else PORT_NAME


def probe_scheme(inputs: RenderInputs) -> dict[str, str]:
    """The probes' scheme: HTTPS (the kubelet does not verify the certificate) or the default."""
    return {"scheme": "HTTPS"} if tls_enabled(inputs) else {}


def tls_args(inputs: RenderInputs) -> list[str]:
    """The gateway's flags for the certificate and key (LiteLLM's names for them)."""
    if not tls_enabled(inputs):
        return []
    return [
        "--ssl_certfile_path",
        f"{TLS_MOUNT}/{TLS_CERT_FILE}",
        "--ssl_keyfile_path",
        f"{TLS_MOUNT}/{TLS_KEY_FILE}",
    ]


def tls_annotations(inputs: RenderInputs) -> dict[str, str]:
    """The pod template's certificate digest: a renewal rolls the gateways onto it."""
    if not tls_enabled(inputs) or inputs.tls_digest is None:
        return {}
    return {TLS_HASH_ANNOTATION: inputs.tls_digest}


def tls_mounts(inputs: RenderInputs) -> list[dict[str, Any]]:
    if not tls_enabled(inputs):
        return []
    return [{"name": TLS_VOLUME, "mountPath": TLS_MOUNT, "readOnly": True}]


def tls_volumes(inputs: RenderInputs) -> list[dict[str, Any]]:
    """The Secret's tls.crt and tls.key only (never ca.crt or other keys), read-only.

    Not optional: while the Secret or one of its keys is missing the kubelet keeps the new pod
    in ContainerCreating (the old pods keep serving) and the TLSConfigured condition says why.
    """
    tls = inputs.tenant.spec.gateway.tls
    if tls is None:
        return []
    return [
        {
            "name": TLS_VOLUME,
            "secret": {
                "secretName": tls.secret_name,
                "items": [
                    {"key": TLS_CERT_FILE, "path": TLS_CERT_FILE},
                    {"key": TLS_KEY_FILE, "path": TLS_KEY_FILE},
                ],
                "defaultMode": TLS_SECRET_MODE,
            },
        }
    ]


def tls_issuer(inputs: RenderInputs) -> IssuerRef | None:
    """The issuer of the gateway's Certificate: the Tenant's, else the operator's default."""
    tls = inputs.tenant.spec.gateway.tls
    if tls is None:
        return None
    return tls.issuer_ref or inputs.default_issuer


def dns_names(inputs: RenderInputs) -> list[str]:
    """Every name clients reach the gateway Service by, inside the cluster."""
    host = service_host(inputs.tenant)  # gateway.<namespace>.svc
    short = host.removesuffix(".svc")
    return [short, host, f"{host}.{inputs.cluster_domain}", GATEWAY_NAME]


def render_certificate(inputs: RenderInputs) -> dict[str, Any] | None:
    """Certificate `gateway` (cert-manager.io/v1) into spec.gateway.tls.secretName.

    Only with TLS on, an issuer (the Tenant's or the operator's) and cert-manager's CRDs
    installed (`inputs.cert_manager`, found by discovery); None otherwise. The issued Secret is
    labelled part-of=tenantgw so that its issuance and renewals wake the tenant's reconcile.
    """
    tls = inputs.tenant.spec.gateway.tls
    issuer = tls_issuer(inputs)
    if tls is None or issuer is None or not inputs.cert_manager:
        return None
    return {
        "apiVersion": CERT_MANAGER_API,
        "kind": "Certificate",
        "metadata": object_meta(inputs.tenant, CERTIFICATE_NAME),
        "spec": {
            "secretName": tls.secret_name,
            "secretTemplate": {
                "labels": {PART_OF_LABEL: PART_OF, TENANT_LABEL: tenant_name(inputs.tenant)}
            },
            "dnsNames": dns_names(inputs),
            "usages": ["digital signature", "server auth"],
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "issuerRef": {"name": issuer.name, "kind": issuer.kind, "group": issuer.group},
        },
    }
