"""Whether a Tenant may have the namespace it names: reserved, someone else's, or opted in.

Pure: the verdict is a function of the Tenant's name, the namespace, its live object and the
operator's own namespace. The CRD's CEL refuses kube-*, default and tenantgw-system already;
this also covers the namespace the operator was configured to run in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tenantgw.api.tenant import reserved_namespace
from tenantgw.render.labels import TENANT_LABEL

ADOPTED_ANNOTATION = "tenantgw.io/adopted-namespace"
"""Stamped by the operator on a namespace it adopted: labelled, never owned, never deleted."""
ADOPTABLE_ANNOTATION = "tenantgw.io/adoptable-by"
"""Set by whoever owns an existing namespace to the name of the one Tenant that may adopt it."""


def terminating_message(namespace: str) -> str:
    """Ready's message while the Tenant waits for its namespace's previous life to end."""
    return (
        f'namespace "{namespace}" is still terminating; the gateway is created again as soon '
        "as it is gone"
    )


@dataclass(frozen=True)
class NamespaceVerdict:
    """May the Tenant use the namespace, and is it adopted rather than created by the Tenant."""

    allowed: bool
    adopted: bool = False
    reason: str = ""
    message: str = ""


def judge_namespace(
    tenant: str, namespace: str, live: dict[str, Any] | None, operator_namespace: str
) -> NamespaceVerdict:
    """The verdict on `namespace` for Tenant `tenant`; `live` is the Namespace or None."""
    if namespace == operator_namespace or reserved_namespace(namespace):
        return NamespaceVerdict(
            False,
            reason="NamespaceReserved",
            message=(
                f'spec.namespace: namespace "{namespace}" belongs to the cluster or to the '
                "tenantgw operator and is never given to a Tenant; choose another spec.namespace "
                "(a new Tenant: spec.namespace is immutable)"
            ),
        )
    if live is None:
        return NamespaceVerdict(True)
    meta = live.get("metadata") or {}
    owner = (meta.get("labels") or {}).get(TENANT_LABEL)
    annotations = meta.get("annotations") or {}
    if owner == tenant:
        return NamespaceVerdict(True, adopted=annotations.get(ADOPTED_ANNOTATION) == "true")
    if owner is not None:
        return NamespaceVerdict(
            False,
            reason="NamespaceConflict",
            message=(
                f'spec.namespace: namespace "{namespace}" belongs to Tenant "{owner}"; '
                "choose another spec.namespace"
            ),
        )
    if annotations.get(ADOPTABLE_ANNOTATION) == tenant:
        return NamespaceVerdict(True, adopted=True)
    return NamespaceVerdict(
        False,
        reason="NamespaceConflict",
        message=(
            f'spec.namespace: namespace "{namespace}" already exists and was not created for '
            f'Tenant "{tenant}". To hand it over, annotate it: kubectl annotate namespace '
            f"{namespace} {ADOPTABLE_ANNOTATION}={tenant} (it is then labelled for the tenant, "
            "enforces the restricted Pod Security Standard and is never deleted with the "
            "Tenant); or delete the Tenant and choose another spec.namespace"
        ),
    )
