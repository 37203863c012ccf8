"""A Tenant's namespace and data over its life: which namespace it may take, and what its
deletion keeps, against the real control plane, operator and PostgreSQL."""

from __future__ import annotations

import functools
import uuid
from typing import Any

import psycopg
import pytest
from kubernetes.client.exceptions import ApiException

from e2e.fixtures import Services
from e2e.helpers import K8s, eventually, secret_body, tenant_body
from e2e.operator_fixture import RunningOperator

pytestmark = pytest.mark.e2e

TENANT_API = "tenantgw.io/v1alpha1"
ADOPTABLE = "tenantgw.io/adoptable-by"


@pytest.fixture(scope="module")
def k8s(kube: Any) -> K8s:
    return K8s(kube)


def exists(read: Any, *args: str) -> bool:
    try:
        read(*args)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def catalog(admin_dsn: str, name: str) -> tuple[bool | None, bool]:
    """(role can log in, or None without a role; the schema exists) for tenant `name`."""
    ident = name.replace("-", "_")
    with psycopg.connect(admin_dsn, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT (SELECT rolcanlogin FROM pg_roles WHERE rolname = %s),"
            " EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)",
            (f"tgw_{ident}", f"t_{ident}"),
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_the_api_server_refuses_a_tenant_in_kube_system(k8s: K8s) -> None:
    """No Tenant may own the cluster's namespaces: the CRD refuses it before any operator."""
    for namespace in ("kube-system", "default", "tenantgw-system"):
        with pytest.raises(ApiException) as info:
            k8s.apply(tenant_body(f"e2e-res-{uuid.uuid4().hex[:6]}", namespace=namespace))
        assert info.value.status == 422
        assert "spec.namespace must not be default, tenantgw-system or start with kube-" in str(
            info.value.body
        )


def test_an_existing_namespace_is_adopted_only_when_its_owner_opts_in(
    k8s: K8s, operator: RunningOperator
) -> None:
    """An unlabelled namespace is left alone until annotated for this one Tenant."""
    name = f"e2e-adopt-{uuid.uuid4().hex[:6]}"
    ns = f"team-{name}"
    k8s.core.create_namespace({"metadata": {"name": ns, "labels": {"owner": "someone"}}})
    try:
        k8s.apply(tenant_body(name, namespace=ns, providers=[], keys=[{"name": "ci"}]))
        cond = k8s.wait_condition(lambda: k8s.tenant(name), "Ready", "False", timeout=30)
        assert cond["reason"] == "NamespaceConflict"
        assert f"kubectl annotate namespace {ns} {ADOPTABLE}={name}" in cond["message"]
        live = k8s.core.read_namespace(ns).metadata
        assert "tenantgw.io/tenant" not in (live.labels or {})
        assert "pod-security.kubernetes.io/enforce" not in (live.labels or {})
        assert not exists(k8s.core.read_namespaced_secret, "gateway", ns)

        k8s.core.patch_namespace(ns, {"metadata": {"annotations": {ADOPTABLE: name}}})
        eventually(
            lambda: exists(k8s.core.read_namespaced_secret, "gateway-key-ci", ns),
            30,
            "the adopted namespace to get the tenant's objects",
        )
        live = k8s.core.read_namespace(ns).metadata
        assert live.labels["tenantgw.io/tenant"] == name
        assert live.labels["pod-security.kubernetes.io/enforce"] == "restricted"
        assert live.annotations["tenantgw.io/adopted-namespace"] == "true"
        assert not live.owner_references, "an adopted namespace must never be owned"

        k8s.delete(TENANT_API, "Tenant", name)  # deletionPolicy Delete (tenant_body's default)
        eventually(lambda: not k8s.tenant_exists(name), 30, f"Tenant {name} to be gone")
        assert k8s.namespace_exists(ns), "deleting the Tenant removed a namespace it adopted"
        assert not exists(k8s.core.read_namespaced_secret, "gateway-key-ci", ns)
    finally:
        k8s.delete(TENANT_API, "Tenant", name)
        k8s.core.delete_namespace(ns)


def test_retain_keeps_the_ledger_schema_locked_and_delete_drops_it(
    k8s: K8s, operator: RunningOperator, services: Services
) -> None:
    """Compliance: deleting a Retain tenant keeps its ledger and data, and no one can log in
    with its credentials; re-created, it gets them back; Delete then drops everything."""
    name = f"e2e-keep-{uuid.uuid4().hex[:6]}"
    ns = f"tenant-{name}"
    spec: dict[str, Any] = {
        "providers": [],
        "keys": [{"name": "alice"}],
        "deletionPolicy": "Retain",
        "access": {"admins": [{"kind": "Group", "name": f"{name}-admins"}]},
    }
    k8s.apply(tenant_body(name, **spec))
    try:
        k8s.wait_condition(lambda: k8s.tenant(name), "StorageReady", "True", timeout=30)
        assert k8s.tenant(name)["spec"]["deletionPolicy"] == "Retain"
        dsn = k8s.secret_value(ns, "gateway", "postgresDsn")
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("CREATE TABLE audit_marker (note text)")
            conn.execute("INSERT INTO audit_marker VALUES ('kept for the auditors')")
        k8s.apply(secret_body(ns, "provider-creds", {"apiKey": "platform-owned"}))
        assert not k8s.core.read_namespace(ns).metadata.owner_references

        k8s.delete(TENANT_API, "Tenant", name)
        eventually(lambda: not k8s.tenant_exists(name), 60, f"Tenant {name} to be gone")
        assert catalog(services.postgres_dsn, name) == (False, True)
        with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
            psycopg.connect(dsn, connect_timeout=5)
        with psycopg.connect(services.postgres_dsn, connect_timeout=5) as conn:
            row = conn.execute(
                f"SELECT note FROM t_{name.replace('-', '_')}.audit_marker"  # noqa: S608
            ).fetchone()
        assert row == ("kept for the auditors",)
        assert k8s.namespace_exists(ns)
        assert exists(k8s.core.read_namespaced_secret, "provider-creds", ns)

        def removed(read: Any, obj: str) -> bool:
            return not exists(read, obj, ns)

        for read, obj in [
            (k8s.core.read_namespaced_secret, "gateway"),
            (k8s.core.read_namespaced_secret, "gateway-key-alice"),
            (k8s.core.read_namespaced_config_map, "gateway-config"),
        ]:
            eventually(functools.partial(removed, read, obj), 30, f"{obj} to be removed")
        assert not exists(k8s.apps.read_namespaced_deployment, "gateway", ns)
        rbac = k8s.dyn.resources.get(api_version="rbac.authorization.k8s.io/v1", kind="RoleBinding")
        eventually(lambda: not rbac.get(namespace=ns).items, 30, "the tenant's RoleBindings to go")

        # Re-created under the same name, the tenant gets its namespace and data back.
        spec["deletionPolicy"] = "Delete"
        k8s.apply(tenant_body(name, **spec))
        k8s.wait_condition(lambda: k8s.tenant(name), "StorageReady", "True", timeout=30)
        new_dsn = k8s.secret_value(ns, "gateway", "postgresDsn")
        with psycopg.connect(new_dsn, connect_timeout=5) as conn:
            again = conn.execute("SELECT note FROM audit_marker").fetchone()
        assert again == ("kept for the auditors",)
        assert k8s.core.read_namespace(ns).metadata.owner_references[0].name == name

        k8s.delete(TENANT_API, "Tenant", name)
        eventually(lambda: not k8s.tenant_exists(name), 60, f"Tenant {name} to be gone")
        assert catalog(services.postgres_dsn, name) == (None, False)
        eventually(lambda: not k8s.namespace_exists(ns), 60, f"namespace {ns} to be deleted")
    finally:
        if k8s.tenant_exists(name):
            k8s.custom.patch_cluster_custom_object(
                "tenantgw.io", "v1alpha1", "tenants", name, {"spec": {"deletionPolicy": "Delete"}}
            )
            k8s.delete(TENANT_API, "Tenant", name)
        eventually(lambda: not k8s.tenant_exists(name), 60, f"Tenant {name} to be gone")
        if catalog(services.postgres_dsn, name)[1]:
            with psycopg.connect(services.postgres_dsn, autocommit=True) as conn:
                ident = name.replace("-", "_")
                conn.execute(f"DROP SCHEMA IF EXISTS t_{ident} CASCADE")
                conn.execute(f"DROP ROLE IF EXISTS tgw_{ident}")
        if k8s.namespace_exists(ns):
            k8s.core.delete_namespace(ns)
