"""Who may do what in a tenant's namespace: the Role and RoleBindings of its principals.

The Tenant's `spec.access.admins` are bound to the ClusterRole `tenantgw-tenant-admin` and to
Role `tenantgw-keys`, which reads exactly the tenant's key Secrets by name; `spec.access.viewers`
to `tenantgw-tenant-viewer`. No other Secret of the namespace (Secret `gateway` with the master
key and storage credentials, the provider credentials) is readable through them. RBAC cannot
match a name prefix and an empty `resourceNames` means every name, so the Role exists only while
the tenant has keys.
"""

from __future__ import annotations

from typing import Any

from tenantgw.api import Subject, Tenant
from tenantgw.render.inputs import RenderInputs
from tenantgw.render.labels import object_meta
from tenantgw.render.names import key_secret_name

RBAC_API = "rbac.authorization.k8s.io"
RBAC_API_VERSION = f"{RBAC_API}/v1"
KEYS_ROLE = "tenantgw-keys"
"""Role (and its RoleBinding) reading the tenant's gateway-key-<name> Secrets."""
ADMIN_CLUSTER_ROLE = "tenantgw-tenant-admin"
VIEWER_CLUSTER_ROLE = "tenantgw-tenant-viewer"
ADMINS_BINDING = "tenantgw-tenant-admins"
VIEWERS_BINDING = "tenantgw-tenant-viewers"


def rbac_subject(tenant: Tenant, subject: Subject) -> dict[str, Any]:
    """A RoleBinding subject; a ServiceAccount without a namespace is the tenant's own."""
    if subject.kind == "ServiceAccount":
        return {
            "kind": "ServiceAccount",
            "name": subject.name,
            "namespace": subject.namespace or tenant.namespace_name(),
        }
    return {"kind": subject.kind, "apiGroup": RBAC_API, "name": subject.name}


def _binding(
    tenant: Tenant, name: str, role_kind: str, role: str, subjects: list[Subject]
) -> dict[str, Any]:
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "RoleBinding",
        "metadata": object_meta(tenant, name),
        "roleRef": {"apiGroup": RBAC_API, "kind": role_kind, "name": role},
        "subjects": [rbac_subject(tenant, subject) for subject in subjects],
    }


def render_keys_role(inputs: RenderInputs) -> dict[str, Any] | None:
    """Role `tenantgw-keys`: get on each gateway-key-<name> Secret; None without keys."""
    tenant = inputs.tenant
    names = sorted(key_secret_name(key.name) for key in tenant.spec.keys)
    if not names:
        return None  # resourceNames: [] would grant every Secret of the namespace
    return {
        "apiVersion": RBAC_API_VERSION,
        "kind": "Role",
        "metadata": object_meta(tenant, KEYS_ROLE),
        "rules": [
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": names, "verbs": ["get"]}
        ],
    }


def render_access(inputs: RenderInputs) -> list[dict[str, Any]]:
    """The Role and RoleBindings of the tenant's principals, in apply order (Role first)."""
    tenant = inputs.tenant
    access = tenant.spec.access
    objects: list[dict[str, Any]] = []
    keys_role = render_keys_role(inputs)
    if keys_role is not None:
        objects.append(keys_role)
    if access.admins:
        objects.append(
            _binding(tenant, ADMINS_BINDING, "ClusterRole", ADMIN_CLUSTER_ROLE, access.admins)
        )
        if keys_role is not None:
            objects.append(_binding(tenant, KEYS_ROLE, "Role", KEYS_ROLE, access.admins))
    if access.viewers:
        objects.append(
            _binding(tenant, VIEWERS_BINDING, "ClusterRole", VIEWER_CLUSTER_ROLE, access.viewers)
        )
    return objects
