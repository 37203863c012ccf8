"""The tenantgw rules file (`tenantgw.json`): what the gateway plugins enforce for a tenant.

Plain JSON with snake_case keys and a fixed shape (unset values are null), so the gateway can
read it with the standard library. No key values and no key hashes: those live in the Secret
(`keys.json`), which the gateway reloads without a restart.
"""

from __future__ import annotations

from typing import Any

from tenantgw.api import (
    BudgetPolicy,
    CatalogModel,
    CostTier,
    ModelAlias,
    Provider,
    RoutingRule,
    Tenant,
    alias_cost_tiers,
    catalog_entry,
)
from tenantgw.render.inputs import RenderInputs, UnenforceableBudget, alias_name
from tenantgw.render.litellm_config import PROVIDER_PREFIX, deployment_id, litellm_route
from tenantgw.render.names import tenant_name


def _rule(rule: RoutingRule) -> dict[str, Any]:
    match = rule.match
    return {
        "match": {"model": match.model, "prompt_prefix": match.prompt_prefix, "task": match.task},
        "alias": rule.alias,
    }


def _alias(
    alias: ModelAlias,
    providers: dict[str, Provider],
    catalog: list[CatalogModel],
    tier: CostTier,
) -> dict[str, Any]:
    name = alias_name(alias)
    targets = []
    for index, target in enumerate(alias.spec.targets):
        provider = providers.get(target.provider)
        entry = catalog_entry(catalog, target.provider, target.model)
        targets.append(
            {
                "id": deployment_id(name, index),
                "provider": target.provider,
                "provider_type": provider.type.value if provider is not None else None,
                "model": target.model,
                "region": provider.region if provider is not None else None,
                "weight": target.weight,
                "max_tokens": target.max_tokens,
                # The gateway looks the window up in LiteLLM's model map under this name
                # unless the platform's catalog sets it.
                "litellm_model": (
                    f"{PROVIDER_PREFIX[provider.type]}/{target.model}"
                    if provider is not None
                    else None
                ),
                "context_window": entry.context_window if entry is not None else None,
                # The platform's price; null: LiteLLM's cost map prices the model as the
                # router calls it (litellm_route), or nothing does (docs/money.md).
                "pricing": (
                    {
                        "input_per_million": entry.pricing.input_per_million,
                        "output_per_million": entry.pricing.output_per_million,
                    }
                    if entry is not None and entry.pricing is not None
                    else None
                ),
                "litellm_route": (
                    litellm_route(provider, target) if provider is not None else None
                ),
            }
        )
    return {
        "display_name": alias.spec.display_name,
        "description": alias.spec.description,
        "created_at": (alias.metadata.model_extra or {}).get("creationTimestamp"),
        "cost_tier": tier,
        "client_names": list(alias.spec.aliases),
        "fallbacks": list(alias.spec.fallbacks),
        "targets": targets,
    }


def _budget(budget: BudgetPolicy) -> dict[str, Any]:
    spec = budget.spec
    return {
        "name": budget.metadata.name,
        "scope": {"kind": spec.scope.kind, "name": spec.scope.name},
        "period": spec.period,
        "limit_usd": spec.limit_usd,
        "alert_thresholds": list(spec.alert_thresholds),
        "on_exceeded": {
            "action": spec.on_exceeded.action,
            "to_cost_tier": spec.on_exceeded.to_cost_tier,
        },
        "unenforceable": None,
    }


def _unenforceable(budget: UnenforceableBudget) -> dict[str, Any]:
    """A policy the gateway cannot apply: it refuses every request in the scope instead."""
    return {
        "name": budget.name,
        "scope": {"kind": budget.scope_kind, "name": budget.scope_name},
        "period": budget.period,
        "limit_usd": 0,
        "alert_thresholds": [],
        "on_exceeded": {"action": "block", "to_cost_tier": None},
        "unenforceable": {"reason": budget.reason, "message": budget.message},
    }


def _compliance(tenant: Tenant) -> dict[str, Any]:
    compliance = tenant.spec.compliance
    residency = compliance.data_residency
    return {
        "pii_redaction": {
            "mode": compliance.pii_redaction.mode,
            "entities": [entity.value for entity in compliance.pii_redaction.entities],
        },
        "audit": {
            "enabled": compliance.audit.enabled,
            "bodies": compliance.audit.bodies,
            "retention_days": compliance.audit.retention_days,
        },
        "data_residency": (
            {"allowed_regions": list(residency.allowed_regions)} if residency is not None else None
        ),
    }


def _auto_mode(inputs: RenderInputs) -> dict[str, Any]:
    """Claude Code auto mode: the classifier alias, only when the tenant serves it (else null,
    and the Tenant's ConfigValid condition names spec.autoMode.classifierAlias)."""
    auto_mode = inputs.tenant.spec.auto_mode
    served = {alias_name(alias) for alias in inputs.aliases}
    alias = auto_mode.classifier_alias
    return {
        "classifier_alias": alias if alias in served else None,
        "timeout_seconds": auto_mode.timeout_seconds,
    }


def render_rules(inputs: RenderInputs) -> dict[str, Any]:
    """The rules file of the tenant; json.dumps(..., sort_keys=True) makes it deterministic.

    Routing rules keep their order (first match wins); aliases are keyed by name. An alias's
    cost tier comes from the Tenant's catalog (tenantgw.api.catalog); rejected BudgetPolicies
    are listed with `unenforceable` set, so that the gateway fails closed on them.
    """
    tenant = inputs.tenant
    spec = tenant.spec
    providers = {provider.name: provider for provider in spec.providers}
    tiers = alias_cost_tiers(spec.catalog, inputs.aliases)
    budgets = [_budget(budget) for budget in inputs.sorted_budgets()]
    budgets += [_unenforceable(budget) for budget in inputs.unenforceable_budgets]
    return {
        "tenant": tenant_name(tenant),
        "namespace": tenant.namespace_name(),
        "default_alias": spec.routing.default_alias,
        "rules": [_rule(rule) for rule in spec.routing.rules],
        "aliases": {
            alias_name(alias): _alias(alias, providers, spec.catalog, tiers[alias_name(alias)])
            for alias in inputs.sorted_aliases()
        },
        "keys": [
            {"name": key.name, "rpm": key.rpm, "tpm": key.tpm, "labels": dict(key.labels)}
            for key in sorted(spec.keys, key=lambda key: key.name)
        ],
        "limits": {
            "rpm": spec.limits.rpm,
            "tpm": spec.limits.tpm,
            "max_parallel_requests": spec.limits.max_parallel_requests,
        },
        "compliance": _compliance(tenant),
        "enforcement": {
            "on_store_unavailable": spec.enforcement.on_store_unavailable,
            "on_unpriced_model": spec.enforcement.on_unpriced_model,
        },
        "budgets": sorted(budgets, key=lambda budget: str(budget["name"])),
        "auto_mode": _auto_mode(inputs),
        "cost": _cost(tenant),
    }


def _cost(tenant: Tenant) -> dict[str, Any]:
    """The savings baseline and the header that may set a cost label (docs/money.md)."""
    baseline, header = tenant.spec.cost_baseline, tenant.spec.cost_labels
    return {
        "baseline": {"default": baseline.default, "aliases": dict(baseline.aliases)},
        "label_header": (
            {
                "header": header.header.lower(),
                "label": header.label,
                "allowed_values": list(header.allowed_values),
            }
            if header is not None
            else None
        ),
    }
