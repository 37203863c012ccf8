"""plan_tenant() decides a whole reconcile from a snapshot, with no server: the objects, the
child statuses, the Tenant's conditions and the Events are data, checked here."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tenantgw.kube.apply import ApplyFailure, ApplyResult
from tenantgw.reconcile.conditions import condition
from tenantgw.reconcile.enforcement import EnforcementObservation
from tenantgw.reconcile.plan import (
    Conclusion,
    TenantPlan,
    TenantSnapshot,
    conclude,
    plan_tenant,
)
from tenantgw.reconcile.settings import Settings
from tenantgw.reconcile.storage import StorageOutcome
from tenantgw.render.inputs import StorageEndpoints
from tenantgw.render.labels import TENANT_LABEL

pytestmark = pytest.mark.unit

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
NS = "tenant-plan-solo"
SETTINGS = Settings(operator_namespace="platform-ops")
STORAGE = StorageOutcome(
    StorageEndpoints(
        postgres_dsn="postgresql://tgw_plan_solo:pw-0001@pg:5432/tenantgw",
        redis_url="redis://tgw:plan-solo:pw-0001@redis:6379/0",
    ),
    condition("StorageReady", True, "Provisioned", "ready", 4),
)
ENFORCED = EnforcementObservation(configured=True)

TENANT: dict[str, Any] = {
    "apiVersion": "tenantgw.io/v1alpha1",
    "kind": "Tenant",
    "metadata": {"name": "plan-solo", "uid": "u-1", "generation": 4},
    "spec": {
        "namespace": NS,
        "providers": [
            {
                "name": "anthropic",
                "type": "anthropic",
                "credentialsSecretRef": {"name": "anthropic", "key": "apiKey"},
            }
        ],
        "catalog": [{"provider": "anthropic", "model": "claude-sonnet-4-5*", "costTier": "medium"}],
        "keys": [{"name": "dev", "rotateAfterDays": 30}],
        "routing": {"defaultAlias": "default"},
    },
}


def alias(name: str, model: str) -> dict[str, Any]:
    return {
        "apiVersion": "tenantgw.io/v1alpha1",
        "kind": "ModelAlias",
        "metadata": {"name": name, "namespace": NS, "generation": 1},
        "spec": {"targets": [{"provider": "anthropic", "model": model}]},
    }


OWN_NS = {"metadata": {"name": NS, "labels": {TENANT_LABEL: "plan-solo"}}}
PROVIDER_SECRET = {"metadata": {"name": "anthropic"}, "data": {"apiKey": "c2stYW50LXg="}}


def keys() -> Callable[[], str]:
    counter: Iterator[int] = iter(range(1, 1000))
    return lambda: f"sk-tgw-GEN-{next(counter):04d}"


def snapshot(
    body: dict[str, Any] | None = None,
    *,
    namespace: dict[str, Any] | None = OWN_NS,
    aliases: tuple[dict[str, Any], ...] = (alias("default", "claude-sonnet-4-5-20250929"),),
    provider_secrets: dict[str, Any] | None = None,
    secrets: dict[Any, Any] | None = None,
    complete: bool = True,
) -> TenantSnapshot:
    return TenantSnapshot(
        body=copy.deepcopy(body or TENANT),
        namespace=namespace,
        complete=complete,
        aliases=aliases,
        monitoring=False,
        secrets=secrets or {},
        provider_secrets=(
            {"anthropic": PROVIDER_SECRET} if provider_secrets is None else provider_secrets
        ),
        enforcement=ENFORCED,
    )


def plan(snap: TenantSnapshot) -> TenantPlan:
    storage = STORAGE if snap.complete else None
    return plan_tenant(snap, SETTINGS, now=NOW, new_key=keys(), storage=storage)


def served(available: bool = True) -> ApplyResult:
    deployment = {
        "metadata": {"name": "gateway", "namespace": NS, "generation": 2},
        "status": {
            "observedGeneration": 2,
            "conditions": [{"type": "Available", "status": "True" if available else "False"}],
        },
    }
    return ApplyResult(
        applied=["Deployment/gateway"],
        live={("apps/v1", "Deployment", "gateway", NS): deployment},
    )


def conds(done: Conclusion) -> dict[str, dict[str, Any]]:
    assert done.status is not None
    return {c["type"]: c for c in done.status["conditions"]}


def secret_value(p: TenantPlan, name: str, field: str) -> str:
    obj = next(o for o in p.objects if o["kind"] == "Secret" and o["metadata"]["name"] == name)
    data = obj.get("data") or {}
    if field in data:
        return base64.b64decode(data[field]).decode()
    return str(obj["stringData"][field])


def test_a_terminating_namespace_plans_nothing_and_comes_back() -> None:
    terminating = {**OWN_NS, "status": {"phase": "Terminating"}}
    p = plan(snapshot(namespace=terminating, complete=False))
    assert p.objects == ()
    assert p.child_statuses == ()
    done = conclude(p, ApplyResult())
    got = conds(done)
    assert list(got) == ["Ready"]
    assert (got["Ready"]["status"], got["Ready"]["reason"]) == ("False", "NamespaceTerminating")
    assert f'namespace "{NS}" is still terminating' in got["Ready"]["message"]
    assert done.requeue is True
    assert done.ready is False
    assert [(e.type, e.reason) for e in done.events] == [("Warning", "NamespaceTerminating")]


def test_a_namespace_of_another_tenant_is_refused_without_objects() -> None:
    theirs = {"metadata": {"name": NS, "labels": {TENANT_LABEL: "someone-else"}}}
    p = plan(snapshot(namespace=theirs, complete=False))
    assert p.objects == ()
    done = conclude(p, ApplyResult())
    got = conds(done)
    for kind in ("ConfigValid", "Ready"):
        assert (got[kind]["status"], got[kind]["reason"]) == ("False", "NamespaceConflict")
        assert 'belongs to Tenant "someone-else"' in got[kind]["message"]
    assert done.requeue is False
    # Both conditions say it; one Warning Event says it once.
    assert [e.reason for e in done.events] == ["NamespaceConflict"]
    # The status keeps only the condition fields: nothing about keys or models is claimed.
    assert done.status is not None
    assert set(done.status) == {"conditions", "observedGeneration"}


def test_an_existing_namespace_not_handed_over_is_a_conflict() -> None:
    foreign = {"metadata": {"name": NS}}
    got = conds(conclude(plan(snapshot(namespace=foreign, complete=False)), ApplyResult()))
    assert got["Ready"]["reason"] == "NamespaceConflict"
    assert "kubectl annotate namespace" in got["Ready"]["message"]


def test_the_operators_own_namespace_is_reserved() -> None:
    body = copy.deepcopy(TENANT)
    body["spec"]["namespace"] = "platform-ops"  # where this operator runs
    got = conds(conclude(plan(snapshot(body, namespace=None, complete=False)), ApplyResult()))
    assert (got["ConfigValid"]["status"], got["ConfigValid"]["reason"]) == (
        "False",
        "NamespaceReserved",
    )


def test_an_invalid_spec_names_the_field() -> None:
    body = copy.deepcopy(TENANT)
    body["spec"]["keys"] = [{"name": "dev", "rotateAfterDays": 0}]
    got = conds(conclude(plan(snapshot(body, namespace=None, complete=False)), ApplyResult()))
    assert got["Ready"]["reason"] == "InvalidSpec"
    assert "rotateAfterDays" in got["Ready"]["message"] or "rotate" in got["Ready"]["message"]


def test_an_incomplete_snapshot_of_an_admitted_tenant_is_an_error() -> None:
    with pytest.raises(ValueError, match="incomplete"):
        plan(snapshot(complete=False))


def test_the_happy_path_renders_everything_and_is_ready() -> None:
    p = plan(snapshot())
    kinds = {(o["kind"], o["metadata"]["name"]) for o in p.objects}
    assert {("Namespace", NS), ("Deployment", "gateway"), ("Secret", "gateway")} <= kinds
    assert p.prune_namespace == NS
    assert ("apps/v1", "Deployment") in p.prune_kinds
    assert not any(k[0].startswith("monitoring") for k in p.prune_kinds)
    # New keys come from the plan's generator, in order: the master key, then key dev.
    assert secret_value(p, "gateway-key-dev", "apiKey") == "sk-tgw-GEN-0002"
    # The alias gets Accepted.
    [child] = p.child_statuses
    assert (child.kind, child.name) == ("ModelAlias", "default")
    assert child.status["conditions"][0]["reason"] == "Accepted"

    done = conclude(p, served())
    got = conds(done)
    assert (got["Ready"]["status"], got["Ready"]["reason"]) == ("True", "Ready")
    assert got["ConfigValid"]["reason"] == "Valid"
    assert got["StorageReady"]["reason"] == "Provisioned"
    assert got["EnforcementAvailable"]["reason"] == "Enforced"
    assert done.ready is True
    assert done.requeue is False
    assert done.status is not None
    assert done.status["models"] == ["default"]
    assert done.status["keys"][0]["issuedAt"] == "2026-05-01T12:00:00Z"
    # Creating the tenant's objects is routine: the status says it, and no Applied Event costs
    # one more write per new tenant. Nor does the cluster's lack of monitoring CRDs, which is
    # the same for every tenant (MonitoringConfigured says it).
    assert conds(done)["MonitoringConfigured"]["reason"] == "MonitoringCRDsMissing"
    assert done.events == ()


def test_an_apply_to_a_tenant_already_ready_is_reported() -> None:
    """A hand edit reverted on a serving Tenant is news: one Applied Event naming it."""
    first = conclude(plan(snapshot()), served())
    body = copy.deepcopy(TENANT)
    body["status"] = first.status
    reverted = ApplyResult(applied=["NetworkPolicy/gateway"], live=served().live)
    again = conclude(plan(snapshot(body)), reverted)
    assert again.status is None
    assert [(e.type, e.reason, e.message) for e in again.events] == [
        ("Normal", "Applied", "applied NetworkPolicy/gateway")
    ]


def test_an_apply_for_a_new_generation_posts_no_applied_event() -> None:
    """A spec edit rolls out: observedGeneration and the conditions report it, not an Event."""
    first = conclude(plan(snapshot()), served())
    body = copy.deepcopy(TENANT)
    body["status"] = first.status
    body["metadata"]["generation"] = 5
    edited = conclude(plan(snapshot(body)), served())
    assert edited.status is not None
    assert edited.status["observedGeneration"] == 5
    assert [e.reason for e in edited.events] == []


def test_an_unchanged_tenant_plans_no_status_write_and_no_event() -> None:
    first = conclude(plan(snapshot()), served())
    body = copy.deepcopy(TENANT)
    body["status"] = first.status
    again = conclude(plan(snapshot(body)), ApplyResult(live=served().live))
    assert again.status is None
    assert again.events == ()
    assert again.ready is True


def test_a_rejected_alias_keeps_the_tenant_ready_but_degraded() -> None:
    bad = alias("bad", "gpt-4o")  # not in the catalog
    p = plan(snapshot(aliases=(alias("default", "claude-sonnet-4-5-20250929"), bad)))
    rejected = next(c for c in p.child_statuses if c.name == "bad")
    accepted = rejected.status["conditions"][0]
    assert (accepted["status"], accepted["reason"]) == ("False", "NotInCatalog")
    got = conds(conclude(p, served()))
    assert (got["ConfigValid"]["status"], got["ConfigValid"]["reason"]) == (
        "False",
        "ModelAliasRejected",
    )
    assert (got["Ready"]["status"], got["Ready"]["reason"]) == ("True", "Degraded")
    assert "left out (see ConfigValid): ModelAlias bad" in got["Ready"]["message"]


def test_missing_credentials_are_not_ready() -> None:
    p = plan(snapshot(provider_secrets={}))
    done = conclude(p, served())
    got = conds(done)
    for kind in ("ConfigValid", "Ready"):
        assert (got[kind]["status"], got[kind]["reason"]) == ("False", "ProviderCredentialsMissing")
        assert 'Secret "anthropic" not found' in got[kind]["message"]
    assert done.ready is False
    assert [(e.type, e.reason) for e in done.events] == [("Warning", "ProviderCredentialsMissing")]
    wrong_key = {"anthropic": {"metadata": {"name": "anthropic"}, "data": {"other": "eA=="}}}
    got = conds(conclude(plan(snapshot(provider_secrets=wrong_key)), served()))
    assert 'has no key "apiKey"' in got["ConfigValid"]["message"]


def test_a_refused_apply_is_not_ready_and_comes_back() -> None:
    refused = ApplyResult(failed=[ApplyFailure("Deployment/gateway", 422, "Invalid", "no")])
    done = conclude(plan(snapshot()), refused)
    assert conds(done)["Ready"]["reason"] == "ApplyFailed"
    assert done.requeue is True


def test_a_storage_outage_comes_back() -> None:
    down = StorageOutcome(
        None, condition("StorageReady", False, "StorageUnavailable", "pg down", 4), True
    )
    p = plan_tenant(snapshot(), SETTINGS, now=NOW, new_key=keys(), storage=down)
    done = conclude(p, served())
    assert conds(done)["Ready"]["reason"] == "StorageUnavailable"
    assert done.requeue is True


def test_a_key_due_for_rotation_gets_a_new_value_and_an_event() -> None:
    old_key = {
        "metadata": {
            "name": "gateway-key-dev",
            "annotations": {"tenantgw.io/issued-at": "2026-03-01T00:00:00Z"},
        },
        "data": {"apiKey": base64.b64encode(b"sk-tgw-OLD").decode()},
    }
    gateway = {
        "metadata": {"name": "gateway"},
        "data": {"masterKey": base64.b64encode(b"sk-tgw-MASTER").decode()},
    }
    secrets = {
        ("v1", "Secret", "gateway", NS): gateway,
        ("v1", "Secret", "gateway-key-dev", NS): old_key,
    }
    p = plan(snapshot(secrets=secrets))
    assert secret_value(p, "gateway-key-dev", "apiKey") == "sk-tgw-GEN-0001"
    assert p.known[("v1", "Secret", "gateway-key-dev", NS)] == old_key
    done = conclude(p, served())
    rotated = [e for e in done.events if e.reason == "KeyRotated"]
    assert len(rotated) == 1
    assert "key dev has a new value in Secret gateway-key-dev" in rotated[0].message
    assert "sk-tgw-OLD" not in rotated[0].message
