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


def applied(inputs: RenderInputs, *, available: bool = True) -> ApplyResult:
    ns = inputs.tenant.namespace_name()
    deployment = {
        "metadata": {"name": "gateway", "namespace": ns, "generation": 2},
        "status": {
            "observedGeneration": 2,
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
