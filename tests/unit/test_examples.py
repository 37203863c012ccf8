"""The examples are the brief's engineering-team tenant, and the operator would accept all of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tenantgw.api import BudgetPolicy, ModelAlias, Tenant, alias_cost_tiers, catalog_entry
from tenantgw.reconcile.validate import validate_aliases, validate_budgets

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMESPACE = "tenant-engineering-team"


def load(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((EXAMPLES / name).read_text()) if doc]


def tenant() -> Tenant:
    (body,) = load("tenant.yaml")
    return Tenant.model_validate(body)


def aliases() -> dict[str, ModelAlias]:
    parsed = [ModelAlias.model_validate(body) for body in load("model-aliases.yaml")]
    return {alias.metadata.name or "": alias for alias in parsed}


def test_kustomization_lists_every_example() -> None:
    kustomization = yaml.safe_load((EXAMPLES / "kustomization.yaml").read_text())
    on_disk = {p.name for p in EXAMPLES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(on_disk)


def test_tenant_is_the_briefs_engineering_team() -> None:
    t = tenant()
    assert t.metadata.name == "engineering-team"
    assert t.namespace_name() == NAMESPACE
    providers = {p.name: p for p in t.spec.providers}
    assert set(providers) == {"openrouter", "openai", "azure", "bedrock", "ollama", "anthropic"}
    assert providers["azure"].api_base == "https://engineering.openai.azure.com"
    assert providers["bedrock"].region == "us-west-2"
    assert providers["ollama"].credentials_secret_ref is None
    assert all(p.credentials_secret_ref for n, p in providers.items() if n != "ollama")
    alice = next(k for k in t.spec.keys if k.name == "alice")
    assert (alice.rotate_after_days, alice.rpm, alice.tpm) == (30, 120, 400000)
    assert t.spec.routing.default_alias == "fast-code"
    compliance = t.spec.compliance
    assert compliance.pii_redaction.mode == "redact"
    assert len(compliance.pii_redaction.entities) == 7
    assert (compliance.audit.enabled, compliance.audit.bodies) == (True, "redacted")
    assert compliance.audit.retention_days == 365
    assert compliance.data_residency is not None
    assert compliance.data_residency.allowed_regions == ["us-east-1", "us-west-2"]
    assert t.spec.gateway.replicas == 2
    assert t.spec.access.allowed_namespaces == ["eng-ci"]


def test_routing_rules_point_at_aliases_that_exist() -> None:
    t, names = tenant(), set(aliases())
    assert t.spec.routing.default_alias in names
    assert [r.alias for r in t.spec.routing.rules] == [
        "documentation",
        "refactoring",
        "security-analysis",
        "reasoning",
    ]
    assert {r.alias for r in t.spec.routing.rules} <= names


def test_auto_mode_is_judged_by_a_low_tier_alias_of_the_example() -> None:
    t, names = tenant(), set(aliases())
    assert t.spec.auto_mode.classifier_alias == "safety-review"
    assert t.spec.auto_mode.classifier_alias in names


def test_every_provider_credential_has_its_secret() -> None:
    secrets = {s["metadata"]["name"]: s for s in load("provider-secrets.yaml")}
    assert all(s["metadata"]["namespace"] == NAMESPACE for s in secrets.values())
    for provider in tenant().spec.providers:
        ref = provider.credentials_secret_ref
        if ref is not None:
            assert ref.name in secrets, f"no Secret {ref.name} for provider {provider.name}"
            assert ref.key in secrets[ref.name]["stringData"]


@pytest.mark.parametrize(
    ("alias", "primary", "fallback", "tier"),
    [
        ("fast-code", ("openrouter", "qwen/qwen3-coder"), ("openai", "gpt-5-codex"), "medium"),
        ("reasoning", ("openai", "o3-pro"), ("azure", "gpt-4"), "high"),
        (
            "refactoring",
            ("ollama", "qwen2.5-coder:14b"),
            ("openrouter", "deepseek/deepseek-chat"),
            "low",
        ),
        ("documentation", ("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5"), "low"),
        (
            "security-analysis",
            ("azure", "gpt-4"),
            ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
            "high",
        ),
    ],
)
def test_aliases_follow_the_briefs_routing_table(
    alias: str, primary: tuple[str, str], fallback: tuple[str, str], tier: str
) -> None:
    by_name = aliases()
    spec = by_name[alias].spec
    heaviest = max(spec.targets, key=lambda t: t.weight)
    assert (heaviest.provider, heaviest.model) == primary
    # The tier comes from the platform's catalog in the Tenant, not from the alias.
    assert alias_cost_tiers(tenant().spec.catalog, list(by_name.values()))[alias] == tier
    (fallback_name,) = spec.fallbacks
    fallback_targets = by_name[fallback_name].spec.targets
    assert [(t.provider, t.model) for t in fallback_targets] == [fallback]


def test_fast_code_serves_claude_codes_default_models() -> None:
    spec = aliases()["fast-code"].spec
    assert [(t.model, t.weight) for t in spec.targets] == [
        ("qwen/qwen3-coder", 80),
        ("gpt-4o-mini", 20),
    ]
    assert {"claude-opus-5-5", "claude-sonnet-5-5", "claude-sonnet-4-5-*"} <= set(spec.aliases)


def test_every_alias_target_is_in_the_platforms_catalog() -> None:
    """Prices and tiers live in the Tenant: the aliases only pick catalogued models."""
    catalog = tenant().spec.catalog
    for alias in aliases().values():
        for target in alias.spec.targets:
            assert catalog_entry(catalog, target.provider, target.model) is not None, target
    priced = {(e.provider, e.model): e.pricing for e in catalog if e.pricing is not None}
    assert priced[("openrouter", "qwen/qwen3-coder")].input_per_million == 0.30
    assert priced[("ollama", "qwen2.5-coder:14b")].output_per_million == 0


def test_the_operator_accepts_every_alias_and_the_budget() -> None:
    """The cross-object checks: providers exist, regions are allowed, no fallback cycles."""
    t, parsed = tenant(), list(aliases().values())
    assert all(a.metadata.namespace == NAMESPACE for a in parsed)
    verdicts = validate_aliases(t, parsed)
    assert [(v.name, v.reason) for v in verdicts if not v.accepted] == []
    budgets, budget_verdicts = validate_budgets(t, load("budget.yaml"), parsed)
    assert [(v.name, v.reason, v.message) for v in budget_verdicts if not v.accepted] == []
    assert [b.metadata.name for b in budgets] == ["engineering-daily"]


def test_budget_is_a_daily_tenant_limit_that_downgrades() -> None:
    (body,) = load("budget.yaml")
    policy = BudgetPolicy.model_validate(body)
    spec = policy.spec
    assert policy.metadata.namespace == NAMESPACE
    assert (spec.scope.kind, spec.period, spec.limit_usd) == ("Tenant", "daily", 100)
    assert 80 in spec.alert_thresholds
    assert (spec.on_exceeded.action, spec.on_exceeded.to_cost_tier) == ("downgrade", "low")
