"""Tenant principals and namespaces: the Role and bindings rendered for spec.access, the
namespaces a Tenant may never have, and the opt-in that lets it adopt an existing one."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import ValidationError

from tenantgw.api import Tenant
from tenantgw.reconcile.namespace import ADOPTABLE_ANNOTATION, ADOPTED_ANNOTATION, judge_namespace
from tenantgw.render import RenderInputs
from tenantgw.render.access import KEYS_ROLE, render_access
from tenantgw.render.labels import TENANT_LABEL
from tenantgw.render.objects import render_tenant

pytestmark = pytest.mark.unit


def with_spec(inputs: RenderInputs, **changes: Any) -> RenderInputs:
    body = inputs.tenant.model_dump(by_alias=True, mode="json", exclude_none=True)
    body["spec"].update(changes)
    return dataclasses.replace(inputs, tenant=Tenant.model_validate(body))


def by_name(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_admins_read_exactly_their_key_secrets(engineering_team: RenderInputs) -> None:
    objects = by_name(render_access(engineering_team))
    (rule,) = objects[("Role", KEYS_ROLE)]["rules"]
    assert rule == {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": ["gateway-key-alice", "gateway-key-ci"],
        "verbs": ["get"],
    }
    binding = objects[("RoleBinding", KEYS_ROLE)]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": KEYS_ROLE,
    }
    admins = objects[("RoleBinding", "tenantgw-tenant-admins")]
    assert admins["roleRef"]["name"] == "tenantgw-tenant-admin"
    assert admins["subjects"] == binding["subjects"]
    viewers = objects[("RoleBinding", "tenantgw-tenant-viewers")]
    assert viewers["roleRef"]["name"] == "tenantgw-tenant-viewer"
    assert viewers["subjects"] == [
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "dana@example.com"}
    ]


def test_a_tenant_without_keys_gets_no_keys_role(engineering_team: RenderInputs) -> None:
    """resourceNames: [] would mean every Secret of the namespace, the gateway's included."""
    inputs = with_spec(engineering_team, keys=[])
    inputs = dataclasses.replace(inputs, keys={})
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render_access(inputs)}
    assert kinds == {
        ("RoleBinding", "tenantgw-tenant-admins"),
        ("RoleBinding", "tenantgw-tenant-viewers"),
    }
    for obj in render_tenant(inputs):
        for rule in obj.get("rules", []):
            assert rule.get("resourceNames"), obj


def test_no_principals_no_bindings(minimal_tenant: RenderInputs) -> None:
    """Without spec.access.admins the key Role is there for the platform to bind, unbound."""
    objects = render_access(minimal_tenant)
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [("Role", KEYS_ROLE)]


def test_a_service_account_without_namespace_is_the_tenants_own(
    minimal_tenant: RenderInputs,
) -> None:
    inputs = with_spec(
        minimal_tenant, access={"admins": [{"kind": "ServiceAccount", "name": "ci"}]}
    )
    binding = by_name(render_access(inputs))[("RoleBinding", "tenantgw-tenant-admins")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ci", "namespace": "tenant-solo"}
    ]


@pytest.mark.parametrize(
    ("subject", "message"),
    [
        ({"kind": "Group", "name": "system:authenticated"}, "every client"),
        ({"kind": "User", "name": "system:anonymous"}, "every client"),
        ({"kind": "User", "name": "bob", "namespace": "x"}, "only set for subjects of kind"),
        ({"kind": "Role", "name": "bob"}, "Group"),
    ],
)
def test_principals_that_would_open_the_tenant_are_refused(
    subject: dict[str, str], message: str
) -> None:
    body = {"metadata": {"name": "t"}, "spec": {"access": {"admins": [subject]}}}
    with pytest.raises(ValidationError, match=message):
        Tenant.model_validate(body)


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "default", "tenantgw-system"])
def test_reserved_namespaces_are_refused_by_the_model(namespace: str) -> None:
    with pytest.raises(ValidationError, match=r"spec\.namespace must not be default"):
        Tenant.model_validate({"metadata": {"name": "t"}, "spec": {"namespace": namespace}})


def test_deletion_policy_defaults_to_retain() -> None:
    assert Tenant.model_validate({"metadata": {"name": "t"}, "spec": {}}).spec.deletion_policy == (
        "Retain"
    )


def ns(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> Any:
    return {"metadata": {"name": "n", "labels": labels or {}, "annotations": annotations or {}}}


def test_the_operators_configured_namespace_is_refused() -> None:
    verdict = judge_namespace("eng", "platform-ops", None, operator_namespace="platform-ops")
    assert (verdict.allowed, verdict.reason) == (False, "NamespaceReserved")
    assert "spec.namespace" in verdict.message


def test_a_new_namespace_is_created_and_owned() -> None:
    verdict = judge_namespace("eng", "team-eng", None, "tenantgw-system")
    assert (verdict.allowed, verdict.adopted) == (True, False)


def test_an_existing_namespace_without_the_opt_in_is_not_adopted() -> None:
    verdict = judge_namespace("eng", "team-eng", ns(), "tenantgw-system")
    assert (verdict.allowed, verdict.reason) == (False, "NamespaceConflict")
    assert f"kubectl annotate namespace team-eng {ADOPTABLE_ANNOTATION}=eng" in verdict.message


def test_the_opt_in_names_the_one_tenant_that_may_adopt() -> None:
    opted = ns(annotations={ADOPTABLE_ANNOTATION: "eng"})
    assert judge_namespace("eng", "team-eng", opted, "tenantgw-system").adopted
    assert not judge_namespace("other", "team-eng", opted, "tenantgw-system").allowed
    assert not judge_namespace(
        "eng", "team-eng", ns({TENANT_LABEL: "other"}, {ADOPTABLE_ANNOTATION: "eng"}), "x"
    ).allowed


def test_a_namespace_labelled_for_the_tenant_stays_its_own() -> None:
    own = judge_namespace("eng", "team-eng", ns({TENANT_LABEL: "eng"}), "tenantgw-system")
    assert (own.allowed, own.adopted) == (True, False)
    adopted = ns({TENANT_LABEL: "eng"}, {ADOPTED_ANNOTATION: "true"})
    assert judge_namespace("eng", "team-eng", adopted, "tenantgw-system").adopted
