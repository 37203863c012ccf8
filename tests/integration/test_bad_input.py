"""Malformed Tenants, ModelAliases and BudgetPolicies are refused by the API server itself.

The CRDs carry the schema and the CEL rules generated from tenantgw.api, so a platform team
running `kubectl apply` sees the rule's message at once, before the operator ever looks.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
import yaml

from e2e.fixtures import ROOT, Cluster

pytestmark = pytest.mark.integration
NS = "tenant-badinput"


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> Cluster:
    cluster.run_kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.run_kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "-f", str(ROOT / "crds")
    )
    cluster.run_kubectl("create", "namespace", NS, check=False)
    return cluster


def good_tenant(name: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "tenantgw.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": name or f"bad-{uuid.uuid4().hex[:6]}"},
        "spec": {
            "providers": [
                {
                    "name": "openai",
                    "type": "openai",
                    "credentialsSecretRef": {"name": "openai", "key": "apiKey"},
                }
            ],
            "catalog": [{"provider": "openai", "model": "gpt-4o-mini", "costTier": "low"}],
            "keys": [{"name": "alice", "rpm": 10}],
            "routing": {
                "defaultAlias": "fast-code",
                "rules": [{"match": {"task": "thinking"}, "alias": "reasoning"}],
            },
            "gateway": {"replicas": 1},
        },
    }


def good_alias() -> dict[str, Any]:
    return {
        "apiVersion": "tenantgw.io/v1alpha1",
        "kind": "ModelAlias",
        "metadata": {"name": f"alias-{uuid.uuid4().hex[:6]}", "namespace": NS},
        "spec": {
            "targets": [{"provider": "openai", "model": "gpt-4o-mini", "weight": 1}],
        },
    }


def good_budget() -> dict[str, Any]:
    return {
        "apiVersion": "tenantgw.io/v1alpha1",
        "kind": "BudgetPolicy",
        "metadata": {"name": f"budget-{uuid.uuid4().hex[:6]}", "namespace": NS},
        "spec": {
            "scope": {"kind": "Tenant"},
            "period": "daily",
            "limitUSD": 100,
            "alertThresholds": [50, 80, 100],
        },
    }


def apply(cluster: Cluster, obj: dict[str, Any]) -> tuple[int, str]:
    proc = cluster.run_kubectl(
        "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(obj), check=False
    )
    return proc.returncode, proc.stderr


def mutate(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `obj` with the dotted `path` set to `value` (list indexes as numbers)."""
    out = copy.deepcopy(obj)
    node: Any = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return out


BAD_TENANTS = [
    ("unknown provider type", "spec.providers.0.type", "openia", 'Unsupported value: "openia"'),
    (
        "azure without apiBase",
        "spec.providers.0.type",
        "azure",
        "apiBase is required for providers of type azure",
    ),
    ("unknown spec field", "spec.providerz", [], ".spec.providerz: field not declared in schema"),
    (
        "empty routing match",
        "spec.routing.rules.0.match",
        {},
        "match needs at least one of model, promptPrefix or task",
    ),
    (
        "unknown task",
        "spec.routing.rules.0.match.task",
        "sleeping",
        'Unsupported value: "sleeping"',
    ),
    ("negative replicas", "spec.gateway.replicas", -1, "spec.gateway.replicas"),
    ("zero key rpm", "spec.keys.0.rpm", 0, "spec.keys[0].rpm"),
    ("key name not a DNS label", "spec.keys.0.name", "Alice_Admin", "spec.keys[0].name"),
    (
        "bad audit bodies",
        "spec.compliance",
        {"audit": {"bodies": "everything"}},
        'Unsupported value: "everything"',
    ),
    (
        "bad PII entity",
        "spec.compliance",
        {"piiRedaction": {"entities": ["PASSPORT"]}},
        'Unsupported value: "PASSPORT"',
    ),
    (
        "bad quantity",
        "spec.gateway.resources",
        {"limits": {"memory": "lots"}},
        "spec.gateway.resources.limits.memory",
    ),
    (
        "catalog entry of an unknown provider",
        "spec.catalog.0.provider",
        "azure",
        "spec.catalog: every entry's provider must be in spec.providers",
    ),
    (
        "catalog entry listed twice",
        "spec.catalog",
        [
            {"provider": "openai", "model": "gpt-4o-mini", "costTier": "low"},
            {"provider": "openai", "model": "gpt-4o-mini", "costTier": "high"},
        ],
        ".spec.catalog: duplicate entries for key",
    ),
    ("unknown cost tier", "spec.catalog.0.costTier", "cheap", 'Unsupported value: "cheap"'),
    (
        "negative price",
        "spec.catalog.0.pricing",
        {"inputPerMillion": -1, "outputPerMillion": 1},
        "inputPerMillion",
    ),
]


@pytest.mark.parametrize(
    ("case", "path", "value", "message"), BAD_TENANTS, ids=[c[0] for c in BAD_TENANTS]
)
def test_malformed_tenant_is_refused_with_the_rule_message(
    crds: Cluster, case: str, path: str, value: Any, message: str
) -> None:
    code, err = apply(crds, mutate(good_tenant(), path, value))
    assert code != 0, f"{case}: the API server accepted it"
    assert message in err, f"{case}: {err}"


def test_duplicate_provider_names_are_refused(crds: Cluster) -> None:
    tenant = good_tenant()
    tenant["spec"]["providers"].append(dict(tenant["spec"]["providers"][0]))
    code, err = apply(crds, tenant)
    assert code != 0
    assert 'duplicate entries for key [name="openai"]' in err


def test_tenant_name_too_long_for_its_namespace_is_refused(crds: Cluster) -> None:
    code, err = apply(crds, good_tenant("x" * 60))
    assert code != 0
    assert "metadata.name must be a DNS label of at most 56 characters" in err


def test_tenant_namespace_is_immutable(crds: Cluster) -> None:
    tenant = good_tenant()
    tenant["spec"]["namespace"] = f"ns-{uuid.uuid4().hex[:6]}"
    assert apply(crds, tenant)[0] == 0
    tenant["spec"]["namespace"] = "somewhere-else"
    code, err = apply(crds, tenant)
    crds.run_kubectl("delete", "tenant", tenant["metadata"]["name"], "--wait=false", check=False)
    assert code != 0
    assert "spec.namespace is immutable" in err


BAD_ALIASES = [
    ("zero weight", "spec.targets.0.weight", 0, "spec.targets[0].weight"),
    ("no targets", "spec.targets", [], "spec.targets"),
    ("repeated fallback", "spec.fallbacks", ["a", "a"], "fallbacks must not repeat a ModelAlias"),
    # Money is the platform's (the Tenant's spec.catalog): an alias can set neither.
    ("its own cost tier", "spec.costTier", "low", ".spec.costTier: field not declared in schema"),
    (
        "its own price",
        "spec.targets.0.pricing",
        {"inputPerMillion": 0, "outputPerMillion": 0},
        ".spec.targets[0].pricing: field not declared in schema",
    ),
]


@pytest.mark.parametrize(
    ("case", "path", "value", "message"), BAD_ALIASES, ids=[c[0] for c in BAD_ALIASES]
)
def test_malformed_model_alias_is_refused_with_the_rule_message(
    crds: Cluster, case: str, path: str, value: Any, message: str
) -> None:
    code, err = apply(crds, mutate(good_alias(), path, value))
    assert code != 0, f"{case}: the API server accepted it"
    assert message in err, f"{case}: {err}"


def test_alias_falling_back_to_itself_is_refused(crds: Cluster) -> None:
    alias = good_alias()
    alias["spec"]["fallbacks"] = [alias["metadata"]["name"]]
    code, err = apply(crds, alias)
    assert code != 0
    assert "spec.fallbacks must not name the ModelAlias itself" in err


BAD_BUDGETS = [
    (
        "descending thresholds",
        "spec.alertThresholds",
        [80, 50],
        "alertThresholds must be strictly ascending",
    ),
    ("threshold over 100", "spec.alertThresholds", [50, 150], "spec.alertThresholds[1]"),
    (
        "key scope without name",
        "spec.scope",
        {"kind": "Key"},
        "scope.name is required when scope.kind is Key",
    ),
    (
        "downgrade without tier",
        "spec.onExceeded",
        {"action": "downgrade"},
        "onExceeded.toCostTier is required",
    ),
    ("unknown period", "spec.period", "hourly", 'Unsupported value: "hourly"'),
]


@pytest.mark.parametrize(
    ("case", "path", "value", "message"), BAD_BUDGETS, ids=[c[0] for c in BAD_BUDGETS]
)
def test_malformed_budget_policy_is_refused_with_the_rule_message(
    crds: Cluster, case: str, path: str, value: Any, message: str
) -> None:
    code, err = apply(crds, mutate(good_budget(), path, value))
    assert code != 0, f"{case}: the API server accepted it"
    assert message in err, f"{case}: {err}"


def test_the_good_objects_used_above_are_accepted(crds: Cluster) -> None:
    """Guards the cases above: each starts from an object the API server accepts."""
    for obj in (good_tenant(), good_alias(), good_budget()):
        code, err = apply(crds, obj)
        assert code == 0, err
        kind = obj["kind"].lower()
        ns = ["-n", obj["metadata"]["namespace"]] if "namespace" in obj["metadata"] else []
        crds.run_kubectl("delete", kind, obj["metadata"]["name"], *ns, "--wait=false", check=False)
