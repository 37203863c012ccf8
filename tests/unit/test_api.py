"""The typed API: the design's example resources parse, invalid ones fail naming the field."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pydantic
import pytest
import yaml

from tenantgw.api import (
    API_VERSION,
    BudgetPolicy,
    ModelAlias,
    PiiEntity,
    ProviderType,
    Tenant,
)

pytestmark = pytest.mark.unit

# The examples of the design ("Custom resources" in DESIGN.md), completed where it elides.
TENANT_YAML = """
apiVersion: tenantgw.io/v1alpha1
kind: Tenant
metadata:
  name: engineering-team
  uid: 0d6b4b1e-0000-4000-8000-000000000001
  generation: 3
  resourceVersion: "4711"
  creationTimestamp: "2025-01-01T00:00:00Z"
  managedFields: [{manager: kubectl, operation: Apply}]
spec:
  displayName: Engineering
  namespace: tenant-engineering-team
  providers:
    - name: openrouter
      type: openrouter
      apiBase: https://openrouter.ai/api/v1
      region: us-east-1
      credentialsSecretRef: {name: openrouter, key: apiKey}
  catalog:
    - {provider: openrouter, model: qwen/qwen3-coder, costTier: medium,
       pricing: {inputPerMillion: 0.30, outputPerMillion: 1.20}}
    - {provider: openrouter, model: "openai/*", costTier: high}
  keys:
    - {name: alice, rotateAfterDays: 30, rpm: 120, tpm: 400000}
  limits: {rpm: 2000, tpm: 5000000, maxParallelRequests: 200}
  routing:
    defaultAlias: fast-code
    rules:
      - {match: {model: "claude-haiku-*"}, alias: documentation}
      - {match: {promptPrefix: "refactor"}, alias: refactoring}
      - {match: {task: thinking}, alias: reasoning}
  compliance:
    piiRedaction:
      mode: redact
      entities: [EMAIL, PHONE, CREDIT_CARD, US_SSN, IBAN, IP_ADDRESS, SECRET]
    audit: {enabled: true, bodies: redacted, retentionDays: 365}
    dataResidency: {allowedRegions: [us-east-1, us-west-2]}
  gateway:
    replicas: 2
    workers: 1
    resources: {requests: {cpu: 500m, memory: 1Gi}, limits: {cpu: 2}}
  access: {allowedNamespaces: [eng-ci]}
status:
  conditions:
    - {type: Ready, status: "True", reason: Reconciled, message: "", observedGeneration: 3,
       lastTransitionTime: "2025-01-01T00:00:00Z"}
  observedGeneration: 3
  url: http://gateway.tenant-engineering-team.svc:4000
  models: [fast-code, reasoning, claude-sonnet-4-5]
  keys: [{name: alice, secretName: gateway-key-alice, expiresAt: "2025-02-01T00:00:00Z"}]
"""

MODEL_ALIAS_YAML = """
apiVersion: tenantgw.io/v1alpha1
kind: ModelAlias
metadata: {name: fast-code, namespace: tenant-engineering-team}
spec:
  aliases: ["claude-sonnet-4-5", "claude-sonnet-4-5-*"]
  targets:
    - {provider: openrouter, model: qwen/qwen3-coder, weight: 80, maxTokens: 8192}
    - {provider: openai, model: gpt-4o-mini, weight: 20}
  fallbacks: [reasoning]
status: {conditions: [{type: Accepted, status: "True"}], observedGeneration: 1}
"""

BUDGET_POLICY_YAML = """
apiVersion: tenantgw.io/v1alpha1
kind: BudgetPolicy
metadata: {name: daily, namespace: tenant-engineering-team}
spec:
  scope: {kind: Tenant}
  period: daily
  limitUSD: 100
  alertThresholds: [50, 80, 100]
  onExceeded: {action: block}
  notify: {webhookSecretRef: {name: alerts, key: url}}
status:
  periodStart: "2025-01-01T00:00:00Z"
  spentUSD: 82.5
  utilization: 82.5
  state: Warning
  firedThresholds: [50, 80]
  conditions: []
"""


def load(text: str) -> dict[str, Any]:
    body = yaml.safe_load(text)
    assert isinstance(body, dict)
    return body


def test_design_tenant_parses() -> None:
    tenant = Tenant.model_validate(load(TENANT_YAML))

    assert tenant.namespace_name() == "tenant-engineering-team"
    assert tenant.spec.providers[0].type is ProviderType.OPENROUTER
    assert tenant.spec.providers[0].credentials_secret_ref is not None
    assert tenant.spec.providers[0].credentials_secret_ref.key == "apiKey"
    assert tenant.spec.keys[0].rotate_after_days == 30
    assert tenant.spec.limits.max_parallel_requests == 200
    assert [rule.alias for rule in tenant.spec.routing.rules] == [
        "documentation",
        "refactoring",
        "reasoning",
    ]
    assert tenant.spec.routing.rules[2].match.task == "thinking"
    assert tenant.spec.compliance.pii_redaction.entities == list(PiiEntity)
    assert tenant.spec.compliance.data_residency is not None
    assert tenant.spec.gateway.resources.limits == {"cpu": "2"}
    assert tenant.metadata.generation == 3
    assert tenant.metadata.resource_version == "4711"
    assert tenant.status is not None
    assert tenant.status.keys[0].secret_name == "gateway-key-alice"
    assert [(m.model, m.cost_tier) for m in tenant.spec.catalog] == [
        ("qwen/qwen3-coder", "medium"),
        ("openai/*", "high"),
    ]
    assert tenant.spec.catalog[0].pricing is not None
    assert tenant.spec.catalog[0].pricing.output_per_million == pytest.approx(1.2)


def test_design_model_alias_parses() -> None:
    alias = ModelAlias.model_validate(load(MODEL_ALIAS_YAML))

    assert [t.weight for t in alias.spec.targets] == [80, 20]
    assert alias.spec.targets[1].max_tokens is None
    assert alias.spec.fallbacks == ["reasoning"]


def test_design_budget_policy_parses() -> None:
    policy = BudgetPolicy.model_validate(load(BUDGET_POLICY_YAML))

    assert policy.spec.limit_usd == 100
    assert policy.spec.notify is not None
    assert policy.spec.notify.webhook_secret_ref.name == "alerts"
    assert policy.status is not None
    assert policy.status.spent_usd == pytest.approx(82.5)
    assert policy.status.state == "Warning"


def test_round_trip_is_camel_case_and_lossless() -> None:
    for model, text in (
        (Tenant, TENANT_YAML),
        (ModelAlias, MODEL_ALIAS_YAML),
        (BudgetPolicy, BUDGET_POLICY_YAML),
    ):
        parsed = model.model_validate(load(text))
        dumped = parsed.k8s_dict()
        assert model.model_validate(dumped) == parsed
        assert dumped["apiVersion"] == API_VERSION

    dumped = Tenant.model_validate(load(TENANT_YAML)).k8s_dict()
    assert dumped["spec"]["keys"][0]["rotateAfterDays"] == 30
    assert dumped["metadata"]["creationTimestamp"] == "2025-01-01T00:00:00Z"


def test_defaults_of_a_minimal_tenant() -> None:
    # kopf hands out read-only Mapping views, not dicts.
    body = MappingProxyType({"metadata": MappingProxyType({"name": "data"}), "spec": {}})
    tenant = Tenant.model_validate(body)

    assert tenant.namespace_name() == "tenant-data"
    assert tenant.spec.gateway.replicas is None
    assert tenant.spec.gateway.fixed_replicas() == 2
    assert tenant.spec.gateway.autoscaling is None
    assert tenant.spec.gateway.workers == 1
    assert tenant.spec.compliance.pii_redaction.mode == "off"
    assert tenant.spec.routing.rules == []
    assert tenant.status is None


def test_autoscaling_leaves_the_replicas_to_the_autoscaler() -> None:
    body = {"metadata": {"name": "data"}, "spec": {"gateway": {"autoscaling": {"maxReplicas": 6}}}}
    gateway = Tenant.model_validate(body).spec.gateway
    assert gateway.autoscaling is not None
    assert (gateway.autoscaling.min_replicas, gateway.autoscaling.max_replicas) == (2, 6)
    assert gateway.autoscaling.target_cpu_utilization == 70
    assert gateway.fixed_replicas() is None
    assert gateway.serves()


@pytest.mark.parametrize(
    ("gateway", "message"),
    [
        (
            {"replicas": 3, "autoscaling": {"maxReplicas": 6}},
            "spec.gateway: replicas and autoscaling are both set",
        ),
        (
            {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}},
            "spec.gateway.autoscaling: minReplicas (5) is more than maxReplicas (3)",
        ),
        (
            {"autoscaling": {"minReplicas": 2}},
            "spec.gateway.autoscaling.maxReplicas: Field required",
        ),
    ],
)
def test_invalid_autoscaling_names_the_field(gateway: dict[str, Any], message: str) -> None:
    from tenantgw.reconcile.validate import describe_validation_error

    with pytest.raises(pydantic.ValidationError) as caught:
        Tenant.model_validate({"metadata": {"name": "data"}, "spec": {"gateway": gateway}})
    assert describe_validation_error(caught.value).startswith(message)


def test_budget_policy_defaults() -> None:
    policy = BudgetPolicy.model_validate({"spec": {"scope": {"kind": "Tenant"}, "limitUSD": 5}})

    assert policy.spec.alert_thresholds == [50, 80, 100]
    assert policy.spec.period == "monthly"
    assert policy.spec.on_exceeded.action == "block"


def test_snake_case_names_populate_too() -> None:
    policy = BudgetPolicy.model_validate(
        {"spec": {"scope": {"kind": "Key", "name": "alice"}, "limit_usd": 5}}
    )
    assert policy.spec.limit_usd == 5


def test_provider_types_cover_the_design() -> None:
    assert len(ProviderType) >= 10
    assert {"openai", "azure", "openrouter", "bedrock", "ollama", "openai-compatible"} <= {
        p.value for p in ProviderType
    }


def tenant(spec: dict[str, Any], name: str = "eng") -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": spec}


def budget(**spec: Any) -> dict[str, Any]:
    return {"spec": {"scope": {"kind": "Tenant"}, "limitUSD": 10, **spec}}


def alias(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "fast-code"},
        "spec": {"targets": [{"provider": "openai", "model": "gpt-4o"}], **spec},
    }


INVALID: list[tuple[type[pydantic.BaseModel], dict[str, Any], str, str]] = [
    (Tenant, tenant({"namespace": "Not_A_Label"}), "spec.namespace", "pattern"),
    (Tenant, tenant({}, name="x" * 57), "metadata", "at most 56 characters"),
    (Tenant, tenant({"providers": [{"name": "p", "type": "nope"}]}), "spec.providers.0.type", ""),
    (
        Tenant,
        tenant({"providers": [{"name": "az", "type": "azure"}]}),
        "spec.providers.0",
        "apiBase is required",
    ),
    (
        Tenant,
        tenant({"keys": [{"name": "alice"}, {"name": "alice"}]}),
        "spec.keys",
        "duplicate name 'alice'",
    ),
    (Tenant, tenant({"keys": [{"name": "a", "rpm": 0}]}), "spec.keys.0.rpm", ""),
    (
        Tenant,
        tenant({"routing": {"rules": [{"match": {}, "alias": "a"}]}}),
        "spec.routing.rules.0.match",
        "at least one of model, promptPrefix or task",
    ),
    (
        Tenant,
        tenant({"routing": {"rules": [{"match": {"task": "chat"}, "alias": "a"}]}}),
        "spec.routing.rules.0.match.task",
        "",
    ),
    (
        Tenant,
        tenant({"compliance": {"audit": {"bodies": "everything"}}}),
        "spec.compliance.audit.bodies",
        "",
    ),
    (
        Tenant,
        tenant({"gateway": {"resources": {"requests": {"cpu": "lots"}}}}),
        "spec.gateway.resources.requests.cpu",
        "quantity",
    ),
    (Tenant, tenant({"displayNme": "typo"}), "spec.displayNme", "Extra inputs"),
    (ModelAlias, alias(targets=[]), "spec.targets", ""),
    (
        ModelAlias,
        alias(targets=[{"provider": "openai", "model": "m", "weight": 0}]),
        "spec.targets.0.weight",
        "greater than or equal to 1",
    ),
    (ModelAlias, alias(fallbacks=["a", "a"]), "spec.fallbacks", "must not repeat"),
    (ModelAlias, alias(fallbacks=["fast-code"]), "", "must not name the ModelAlias itself"),
    # Money is the platform's: a ModelAlias carries no price and no cost tier.
    (ModelAlias, alias(costTier="low"), "spec.costTier", "Extra inputs"),
    (
        ModelAlias,
        alias(
            targets=[
                {
                    "provider": "openai",
                    "model": "m",
                    "pricing": {"inputPerMillion": 0, "outputPerMillion": 0},
                }
            ]
        ),
        "spec.targets.0.pricing",
        "Extra inputs",
    ),
    (
        Tenant,
        tenant({"catalog": [{"provider": "nowhere", "model": "m", "costTier": "low"}]}),
        "spec",
        'catalog[0].provider: no provider "nowhere" in spec.providers',
    ),
    (
        Tenant,
        tenant(
            {
                "providers": [{"name": "openai", "type": "openai"}],
                "catalog": [
                    {"provider": "openai", "model": "m", "costTier": "low"},
                    {"provider": "openai", "model": "m", "costTier": "high"},
                ],
            }
        ),
        "spec",
        'catalog[1]: duplicate entry for model "m"',
    ),
    (
        Tenant,
        tenant(
            {
                "providers": [{"name": "openai", "type": "openai"}],
                "catalog": [{"provider": "openai", "model": "m", "costTier": "free"}],
            }
        ),
        "spec.catalog.0.costTier",
        "",
    ),
    (
        Tenant,
        tenant(
            {
                "providers": [{"name": "openai", "type": "openai"}],
                "catalog": [
                    {
                        "provider": "openai",
                        "model": "m",
                        "costTier": "low",
                        "pricing": {"inputPerMillion": -1, "outputPerMillion": 0},
                    }
                ],
            }
        ),
        "spec.catalog.0.pricing.inputPerMillion",
        "",
    ),
    (BudgetPolicy, budget(alertThresholds=[80, 50]), "spec.alertThresholds", "ascending"),
    (BudgetPolicy, budget(alertThresholds=[50, 50]), "spec.alertThresholds", "ascending"),
    (BudgetPolicy, budget(alertThresholds=[0, 50]), "spec.alertThresholds.0", ""),
    (BudgetPolicy, budget(alertThresholds=[50, 101]), "spec.alertThresholds.1", ""),
    (
        BudgetPolicy,
        budget(scope={"kind": "Key"}),
        "spec.scope",
        "scope.name is required",
    ),
    (
        BudgetPolicy,
        budget(scope={"kind": "Tenant", "name": "x"}),
        "spec.scope",
        "must be omitted for Tenant",
    ),
    (
        BudgetPolicy,
        budget(onExceeded={"action": "downgrade"}),
        "spec.onExceeded",
        "toCostTier is required",
    ),
    (BudgetPolicy, budget(limitUSD=-1), "spec.limitUSD", ""),
    (BudgetPolicy, budget(period="hourly"), "spec.period", ""),
]


@pytest.mark.parametrize(
    ("model", "body", "field", "message"),
    INVALID,
    ids=[f"{case[0].__name__}:{case[2] or 'root'}:{case[3]}" for case in INVALID],
)
def test_invalid_values_name_the_field(
    model: type[pydantic.BaseModel], body: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(pydantic.ValidationError) as raised:
        model.model_validate(body)

    locations = [".".join(str(part) for part in error["loc"]) for error in raised.value.errors()]
    assert field in locations, f"{field!r} not among {locations}"
    assert message in str(raised.value)


def test_namespace_name_needs_a_name() -> None:
    with pytest.raises(ValueError, match=r"metadata\.name"):
        Tenant.model_validate({"spec": {}}).namespace_name()
