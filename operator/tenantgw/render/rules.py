"""The tenantgw rules file (`tenantgw.json`): what the gateway plugins enforce for a tenant.

Plain JSON with snake_case keys and a fixed shape (unset values are null), so the gateway can
read it with the standard library. No key values and no key hashes: those live in the Secret
(`keys.json`), which the gateway reloads without a restart.
"""

from __future__ import annotations

from typing import Any

from tenantgw.api import BudgetPolicy, ModelAlias, Provider, RoutingRule, Tenant
from tenantgw.render.inputs import RenderInputs, alias_name
from tenantgw.render.litellm_config import deployment_id
from tenantgw.render.names import tenant_name


def _rule(rule: RoutingRule) -> dict[str, Any]:
    match = rule.match
    return {
        "match": {"model": match.model, "prompt_prefix": match.prompt_prefix, "task": match.task},
        "alias": rule.alias,
    }


def _alias(alias: ModelAlias, providers: dict[str, Provider]) -> dict[str, Any]:
    name = alias_name(alias)
    targets = []
    for index, target in enumerate(alias.spec.targets):
        provider = providers.get(target.provider)
        targets.append(
            {
                "id": deployment_id(name, index),
                "provider": target.provider,
                "provider_type": provider.type.value if provider is not None else None,
                "model": target.model,
                "region": provider.region if provider is not None else None,
                "weight": target.weight,
                "max_tokens": target.max_tokens,
            }
        )
    return {
        "cost_tier": alias.spec.cost_tier,
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


def render_rules(inputs: RenderInputs) -> dict[str, Any]:
    """The rules file of the tenant; json.dumps(..., sort_keys=True) makes it deterministic.

    Routing rules keep their order (first match wins); aliases are keyed by name.
    """
    tenant = inputs.tenant
    spec = tenant.spec
    providers = {provider.name: provider for provider in spec.providers}
    return {
        "tenant": tenant_name(tenant),
        "namespace": tenant.namespace_name(),
        "default_alias": spec.routing.default_alias,
        "rules": [_rule(rule) for rule in spec.routing.rules],
        "aliases": {
            alias_name(alias): _alias(alias, providers) for alias in inputs.sorted_aliases()
        },
        "keys": [
            {"name": key.name, "rpm": key.rpm, "tpm": key.tpm}
            for key in sorted(spec.keys, key=lambda key: key.name)
        ],
        "limits": {
            "rpm": spec.limits.rpm,
            "tpm": spec.limits.tpm,
            "max_parallel_requests": spec.limits.max_parallel_requests,
        },
        "compliance": _compliance(tenant),
        "enforcement": {"on_store_unavailable": spec.enforcement.on_store_unavailable},
        "budgets": [_budget(budget) for budget in inputs.sorted_budgets()],
    }
