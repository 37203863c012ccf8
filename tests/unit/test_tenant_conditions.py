"""What the Tenant's conditions say: Ready means the gateway serves the valid configuration;
a rejected ModelAlias or BudgetPolicy degrades it without making it "not ready"."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tenantgw.api import AutoMode
from tenantgw.kube.apply import ApplyFailure, ApplyResult
from tenantgw.reconcile.conditions import condition, find
from tenantgw.reconcile.readiness import tenant_conditions
from tenantgw.reconcile.storage import StorageOutcome
from tenantgw.reconcile.validate import Verdict
from tenantgw.render import RenderInputs
from tenantgw.render.rules import render_rules

pytestmark = pytest.mark.unit

STORED = StorageOutcome(None, condition("StorageReady", True, "Provisioned", "ok", 3))


def applied(
    inputs: RenderInputs, *, available: bool = True, pods: tuple[int, int, int] = (1, 1, 1)
) -> ApplyResult:
    """`pods`: the Deployment's status replicas, updatedReplicas and availableReplicas."""
    ns = inputs.tenant.namespace_name()
    total, updated, ready = pods
    deployment = {
        "metadata": {"name": "gateway", "namespace": ns, "generation": 2},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 2,
            "replicas": total,
            "updatedReplicas": updated,
            "availableReplicas": ready,
            "conditions": [{"type": "Available", "status": "True" if available else "False"}],
        },
    }
    return ApplyResult(live={("apps/v1", "Deployment", "gateway", ns): deployment})


def conds(
    inputs: RenderInputs,
    *,
    aliases: list[Verdict] | None = None,
    budgets: list[Verdict] | None = None,
    missing: list[str] | None = None,
    result: ApplyResult | None = None,
) -> dict[str, dict[str, Any]]:
    out = tenant_conditions(
        inputs.tenant,
        3,
        aliases or [Verdict("fast-code", True, "Accepted", "ok", 1)],
        budgets or [],
        missing or [],
        result or applied(inputs),
        False,
        STORED,
    )
    return {c["type"]: c for c in out}


def test_a_serving_valid_tenant_is_ready(engineering_team: RenderInputs) -> None:
    got = conds(engineering_team)
    assert (got["Ready"]["status"], got["Ready"]["reason"]) == ("True", "Ready")
    assert got["ConfigValid"]["status"] == "True"


def test_a_rejected_alias_degrades_but_the_tenant_stays_ready(
    engineering_team: RenderInputs,
) -> None:
    bad = Verdict("euro", False, "ResidencyViolation", "spec.targets[0].provider: region", 1)
    got = conds(engineering_team, aliases=[Verdict("fast-code", True, "Accepted", "", 1), bad])
    assert (got["Ready"]["status"], got["Ready"]["reason"]) == ("True", "Degraded")
    assert "ModelAlias euro" in got["Ready"]["message"]
    assert (got["ConfigValid"]["status"], got["ConfigValid"]["reason"]) == (
        "False",
        "ModelAliasRejected",
    )
    assert "spec.targets[0].provider" in got["ConfigValid"]["message"]


def test_a_rejected_budget_policy_shows_on_config_valid(engineering_team: RenderInputs) -> None:
    bad = Verdict("daily", False, "UnknownKey", 'spec.scope.name: no key "bob"', 1)
    got = conds(engineering_team, budgets=[bad])
    assert (got["ConfigValid"]["status"], got["ConfigValid"]["reason"]) == (
        "False",
        "BudgetPolicyRejected",
    )
    assert 'BudgetPolicy daily: spec.scope.name: no key "bob"' in got["ConfigValid"]["message"]
    assert (got["Ready"]["status"], got["Ready"]["reason"]) == ("True", "Degraded")


def test_a_refused_apply_is_not_ready_with_the_servers_message(
    engineering_team: RenderInputs,
) -> None:
    message = 'Deployment.apps "gateway" is invalid: spec.template.spec.containers[0].resources'
    result = applied(engineering_team)  # the old gateway still runs
    result.failed.append(ApplyFailure("Deployment/gateway", 422, "Invalid", message))
    got = conds(engineering_team, result=result)
    assert (got["Ready"]["status"], got["Ready"]["reason"]) == ("False", "ApplyFailed")
    assert message in got["Ready"]["message"]
    assert "Deployment/gateway" in got["Ready"]["message"]


def test_creates_refused_in_a_terminating_namespace_say_so_not_apply_failed(
    engineering_team: RenderInputs,
) -> None:
    """Planned from a cache that had not yet seen the namespace's deletion (a Tenant recreated
    by Argo CD's prune-and-recreate): the API server's refusal names the cause."""
    ns = engineering_team.tenant.namespace_name()
    message = (
        f'configmaps "gateway-config" is forbidden: unable to create new content in namespace '
        f"{ns} because it is being terminated"
    )
    result = ApplyResult()
    cause = ("NamespaceTerminating",)
    for obj in ("ConfigMap/gateway-config", "Service/gateway"):
        result.failed.append(ApplyFailure(obj, 403, "Forbidden", message, cause))
    got = conds(engineering_team, result=result)
    assert (got["Ready"]["status"], got["Ready"]["reason"]) == ("False", "NamespaceTerminating")
    assert f'namespace "{ns}" is still terminating' in got["Ready"]["message"]
    # Any other refusal among them is still the server's own words.
    result.failed.append(ApplyFailure("Deployment/gateway", 422, "Invalid", "bad"))
    got = conds(engineering_team, result=result)
    assert (got["Ready"]["status"], got["Ready"]["reason"]) == ("False", "ApplyFailed")


def test_missing_credentials_and_an_unavailable_gateway_are_not_ready(
    engineering_team: RenderInputs,
) -> None:
    got = conds(engineering_team, missing=['Secret "openai" not found'])
    assert (got["Ready"]["status"], got["Ready"]["reason"]) == (
        "False",
        "ProviderCredentialsMissing",
    )
    got = conds(engineering_team, result=applied(engineering_team, available=False))
    assert got["Ready"]["status"] == "False"
    assert find(list(got.values()), "GatewayAvailable")["status"] == "False"  # type: ignore[index]


def test_an_auto_mode_classifier_that_is_not_served_is_named_on_config_valid(
    engineering_team: RenderInputs,
) -> None:
    spec = engineering_team.tenant.spec.model_copy(
        update={"auto_mode": AutoMode(classifier_alias="judge")}
    )
    tenant = engineering_team.tenant.model_copy(update={"spec": spec})
    inputs = dataclasses.replace(engineering_team, tenant=tenant)
    got = conds(inputs)
    assert (got["ConfigValid"]["status"], got["ConfigValid"]["reason"]) == (
        "False",
        "AutoModeClassifierNotServed",
    )
    assert "spec.autoMode.classifierAlias" in got["ConfigValid"]["message"]
    assert (got["Ready"]["status"], got["Ready"]["reason"]) == ("True", "Degraded")
    assert render_rules(inputs)["auto_mode"]["classifier_alias"] is None
    served = conds(inputs, aliases=[Verdict("judge", True, "Accepted", "ok", 1)])
    assert served["ConfigValid"]["status"] == "True"


def test_an_available_gateway_still_rolling_out_is_not_ready_yet(
    engineering_team: RenderInputs,
) -> None:
    """Pods of the previous config (without the alias just added) still answer until the
    rollout ends: Ready waits for it, as `kubectl rollout status` does. Every step of the
    rollout says the same, so that the steps cost no Tenant status write each."""
    steps = [
        (2, 1, 2),  # the new pod is up, the old one not gone
        (1, 0, 1),  # the new ReplicaSet has no pod yet
        (1, 1, 0),  # every pod updated, not yet available
    ]
    readies = []
    for pods in steps:
        got = conds(engineering_team, result=applied(engineering_team, pods=pods))
        assert (got["Ready"]["status"], got["Ready"]["reason"]) == (
            "False",
            "DeploymentProgressing",
        )
        assert got["GatewayAvailable"]["status"] == "True"  # it answers meanwhile
        readies.append(got["Ready"]["message"])
    ns = engineering_team.tenant.namespace_name()
    assert readies == [readies[0]] * len(steps)
    assert f"kubectl rollout status deployment/gateway -n {ns}" in readies[0]


def test_a_template_change_not_yet_observed_is_rolling_while_the_old_pods_serve(
    engineering_team: RenderInputs,
) -> None:
    """The apply's answer right after a config change: the Deployment controller has not yet
    observed the new generation. The old pods still answer (GatewayAvailable stays True, no
    flip and back), and Ready waits for the rollout."""
    result = applied(engineering_team)
    ns = engineering_team.tenant.namespace_name()
    result.live[("apps/v1", "Deployment", "gateway", ns)]["metadata"]["generation"] = 3
    got = conds(engineering_team, result=result)
    assert got["GatewayAvailable"]["status"] == "True"
    assert (got["Ready"]["status"], got["Ready"]["reason"]) == ("False", "DeploymentProgressing")
    new = conds(engineering_team, result=applied(engineering_team, available=False))
    assert new["GatewayAvailable"]["status"] == "False"
