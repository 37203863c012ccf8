"""A model nobody prices is never charged $0 by accident, and a downgrade goes to the cheapest
alias of its tier: the gateway prices every alias when it loads the rules file (catalog, then
LiteLLM's cost map as the router calls the model, then Anthropic's list price), refuses what it
cannot charge unless the Tenant chose otherwise, and compares aliases by that price."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tenantgw.api import BudgetPolicy, ModelAlias, Tenant
from tenantgw.gateway import files, prices, unpriced
from tenantgw.gateway.budget_policy import decide, downgrade_alias, policies
from tenantgw.gateway.errors import PermissionDeniedError
from tenantgw.render import RenderInputs, render_rules

pytestmark = pytest.mark.unit

CATALOG = [
    # In LiteLLM's cost map (openai/gpt-4o-mini: 0.15 + 0.60 per million).
    {"provider": "openai", "model": "gpt-4o-mini", "costTier": "low"},
    # Not in LiteLLM's cost map under openrouter/: nobody prices it.
    {"provider": "openrouter", "model": "deepseek/deepseek-chat", "costTier": "low"},
    # In the map with zeros: LiteLLM would charge $0, so it is no price either.
    {"provider": "openrouter", "model": "google/gemini-2.5-flash", "costTier": "low"},
    # Priced by the platform, dearer than gpt-4o-mini.
    {
        "provider": "openrouter",
        "model": "qwen/qwen3-coder",
        "costTier": "low",
        "pricing": {"inputPerMillion": 0.30, "outputPerMillion": 1.20},
    },
    # A Claude model on OpenRouter: the map says 0, Anthropic's list price is charged.
    {"provider": "openrouter", "model": "anthropic/claude-haiku-4.5", "costTier": "low"},
    # Free because the platform says so (a local model).
    {
        "provider": "ollama",
        "model": "qwen2.5-coder:14b",
        "costTier": "low",
        "pricing": {"inputPerMillion": 0, "outputPerMillion": 0},
    },
    {"provider": "openai", "model": "o3-pro", "costTier": "high"},
]


def tenant(**enforcement: Any) -> Tenant:
    return Tenant.model_validate(
        {
            "metadata": {"name": "unpriced"},
            "spec": {
                "providers": [
                    {"name": "openai", "type": "openai"},
                    {"name": "openrouter", "type": "openrouter"},
                    {"name": "ollama", "type": "ollama", "apiBase": "http://ollama:11434"},
                ],
                "catalog": CATALOG,
                "keys": [{"name": "alice"}, {"name": "bob"}],
                "enforcement": enforcement,
            },
        }
    )


def alias(name: str, *targets: tuple[str, str], fallbacks: tuple[str, ...] = ()) -> ModelAlias:
    return ModelAlias.model_validate(
        {
            "metadata": {"name": name, "namespace": "tenant-unpriced", "generation": 1},
            "spec": {
                "targets": [{"provider": p, "model": m} for p, m in targets],
                "fallbacks": list(fallbacks),
            },
        }
    )


def key_budget(name: str, key: str) -> BudgetPolicy:
    return BudgetPolicy.model_validate(
        {
            "metadata": {"name": name, "namespace": "tenant-unpriced", "generation": 1},
            "spec": {
                "scope": {"kind": "Key", "name": key},
                "period": "daily",
                "limitUSD": 10,
            },
        }
    )


ALIASES = [
    alias("mini", ("openai", "gpt-4o-mini")),
    alias("deepseek", ("openrouter", "deepseek/deepseek-chat")),
    alias("gemini", ("openrouter", "google/gemini-2.5-flash")),
    alias("qwen", ("openrouter", "qwen/qwen3-coder")),
    alias("haiku", ("openrouter", "anthropic/claude-haiku-4.5")),
    alias("local", ("ollama", "qwen2.5-coder:14b")),
    alias("mixed", ("openai", "gpt-4o-mini"), ("openrouter", "deepseek/deepseek-chat")),
    alias("reasoning", ("openai", "o3-pro")),
]


def rules_of(
    t: Tenant, aliases: list[ModelAlias], budgets: Sequence[BudgetPolicy] = ()
) -> files.Rules:
    rendered = render_rules(
        RenderInputs(
            tenant=t,
            aliases=aliases,
            budgets=list(budgets),
            master_key="sk-master",
            keys={"alice": "sk-alice", "bob": "sk-bob"},
            image="img",
            monitoring=False,
        )
    )
    # Through JSON, as the gateway reads the mounted file.
    return files.parse_rules(json.dumps(rendered))


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --------------------------------------------------------------------------- prices


def test_every_alias_is_priced_from_the_catalog_litellm_or_anthropic_at_load() -> None:
    found = prices.current(rules_of(tenant(), ALIASES))
    assert found["mini"].blended == pytest.approx(0.75)  # LiteLLM's map, as openai/gpt-4o-mini
    assert found["qwen"].blended == pytest.approx(1.50)  # the catalog
    assert found["haiku"].blended == pytest.approx(6.0)  # Anthropic's list price, 1 + 5
    assert found["local"].blended == 0.0  # the platform said free: priced, not unpriced
    assert found["local"].unpriced == ()
    assert found["deepseek"] == prices.AliasPrice(None, ("openrouter/deepseek/deepseek-chat",))
    assert found["gemini"].unpriced == ("openrouter/google/gemini-2.5-flash",)  # map zeros
    # One unpriced target makes the alias unpriced: a request may land on it.
    assert found["mixed"].unpriced == ("openrouter/deepseek/deepseek-chat",)
    assert found["mixed"].blended is None


def test_the_lookup_uses_the_model_as_the_router_calls_it() -> None:
    assert unpriced.litellm_price("openai/gpt-4o-mini") is not None
    assert unpriced.litellm_price("openrouter/deepseek/deepseek-chat") is None
    assert unpriced.litellm_price("deepseek/deepseek-chat") is not None  # DeepSeek's own API
    target = files.AliasTarget(
        id="x-0",
        provider="cohere",
        model="command-r-plus",
        litellm_model="cohere_chat/command-r-plus",
        litellm_route="openai/command-r-plus",
    )
    assert unpriced.deployment_price(target) is None  # LiteLLM would charge $0
    assert unpriced.litellm_price("openai/command-r-plus") is None
    assert unpriced.litellm_price("openai/gpt-4o-mini") is not None
    routed = target.model_copy(
        update={"model": "gpt-4o-mini", "litellm_route": "openai/gpt-4o-mini"}
    )
    found = unpriced.deployment_price(routed)
    assert found is not None
    assert found.blended == pytest.approx(0.75)


def test_a_deployments_own_price_counts_as_litellm_bills_it() -> None:
    """The router registers a deployment's model_info price under its id: that is the price
    LiteLLM charges first, so a target whose deployment carries one is priced."""
    import litellm

    target = files.AliasTarget(
        id="unpriced-test-own-0",
        provider="sim",
        model="sim-unknown",
        litellm_route="openai/sim-unknown",
    )
    assert unpriced.deployment_price(target) is None
    litellm.register_model(
        {
            target.id: {
                "input_cost_per_token": 3e-7,
                "output_cost_per_token": 1.2e-6,
                "litellm_provider": "openai",
                "mode": "chat",
            }
        }
    )
    found = unpriced.deployment_price(target)
    assert found is not None
    assert found.blended == pytest.approx(1.5)


def test_the_gateway_logs_and_shows_each_unpriced_model_when_it_loads_the_rules(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rules = rules_of(tenant(), ALIASES)
    with caplog.at_level(logging.WARNING, logger="tenantgw.gateway"):
        unpriced.load(rules)
    lines = [r.getMessage() for r in caplog.records if "has no price" in r.getMessage()]
    assert len(lines) == 3, lines  # deepseek, gemini, mixed
    assert any(
        "model alias deepseek" in line
        and "openrouter/deepseek/deepseek-chat" in line
        and "spec.catalog[].pricing" in line
        for line in lines
    ), lines
    labels = {
        "tenant": "unpriced",
        "alias": "deepseek",
        "model": "openrouter/deepseek/deepseek-chat",
    }
    assert sample("tenantgw_unpriced_models", labels) == 1
    assert sample("tenantgw_unpriced_models", {**labels, "alias": "mini"}) == 0


# --------------------------------------------------------------------------- refusals


def test_by_default_a_budgeted_request_to_an_unpriced_model_is_refused_naming_the_fix() -> None:
    rules = rules_of(tenant(), ALIASES, [key_budget("alice-daily", "alice")])
    error = unpriced.refusal(rules, "deepseek", "alice")
    assert isinstance(error, PermissionDeniedError)
    assert error.status == 403
    assert "'deepseek'" in error.message
    assert "openrouter/deepseek/deepseek-chat" in error.message
    assert "spec.catalog[].pricing" in error.message
    assert "onUnpricedModel: ClosedWhenBudgeted" in error.message
    # A priced alias and a platform-free one are served under the same budget.
    assert unpriced.refusal(rules, "mini", "alice") is None
    assert unpriced.refusal(rules, "local", "alice") is None


def test_by_default_an_unbudgeted_request_is_served_and_counted() -> None:
    rules = rules_of(tenant(), ALIASES, [key_budget("alice-daily", "alice")])
    labels = {"tenant": "unpriced", "alias": "deepseek", "action": "served"}
    before = sample("tenantgw_unpriced_requests_total", labels)
    assert unpriced.refusal(rules, "deepseek", "bob") is None  # no policy covers bob
    assert sample("tenantgw_unpriced_requests_total", labels) == before + 1


def test_closed_refuses_without_a_budget_and_open_serves_with_one() -> None:
    closed = rules_of(tenant(onUnpricedModel="Closed"), ALIASES)
    error = unpriced.refusal(closed, "gemini", "bob")
    assert error is not None
    assert "onUnpricedModel: Closed" in error.message
    opened = rules_of(tenant(onUnpricedModel="Open"), ALIASES, [key_budget("alice-daily", "alice")])
    assert unpriced.refusal(opened, "mixed", "alice") is None


def test_a_tenant_admin_cannot_make_a_model_free() -> None:
    """Prices are the platform's: a ModelAlias (the tenant's) has no field for one, and the
    mode is on the cluster-scoped Tenant, which only platform principals edit."""
    with pytest.raises(ValueError, match="pricing"):
        ModelAlias.model_validate(
            {
                "metadata": {"name": "free", "namespace": "tenant-unpriced"},
                "spec": {
                    "targets": [
                        {
                            "provider": "openrouter",
                            "model": "deepseek/deepseek-chat",
                            "pricing": {"inputPerMillion": 0, "outputPerMillion": 0},
                        }
                    ]
                },
            }
        )
    with pytest.raises(ValueError, match=r"onUnpricedModel|on_unpriced_model"):
        tenant(onUnpricedModel="Free")


# --------------------------------------------------------------------------- downgrades


def test_a_downgrade_goes_to_the_cheapest_alias_of_the_tier_not_the_first_by_name() -> None:
    rules = rules_of(tenant(), ALIASES)
    # By name "deepseek" (unpriced) then "gemini", "haiku" ($6), "local" ($0) come first;
    # by price the platform's free local model is the cheapest low-tier alias.
    assert downgrade_alias(rules, "low") == "local"
    assert downgrade_alias(rules, "low", exclude="local") == "mini"  # $0.75 < qwen $1.50
    without_free = rules_of(tenant(), [a for a in ALIASES if a.metadata.name != "local"])
    assert downgrade_alias(without_free, "low", exclude="mini") == "qwen"
    # Only unpriced aliases left: the first by name, which the refusal then stops.
    only_unpriced = rules_of(tenant(), [ALIASES[1], ALIASES[2], ALIASES[7]])
    assert downgrade_alias(only_unpriced, "low") == "deepseek"


def test_ties_go_by_name_and_decide_uses_the_cheapest() -> None:
    twins = [
        alias("zeta", ("openai", "gpt-4o-mini")),
        alias("alpha", ("openai", "gpt-4o-mini")),
        alias("haiku", ("openrouter", "anthropic/claude-haiku-4.5")),
        alias("reasoning", ("openai", "o3-pro")),
    ]
    downgrade = BudgetPolicy.model_validate(
        {
            "metadata": {"name": "cap", "namespace": "tenant-unpriced", "generation": 1},
            "spec": {
                "scope": {"kind": "Tenant"},
                "period": "daily",
                "limitUSD": 1,
                "onExceeded": {"action": "downgrade", "toCostTier": "low"},
            },
        }
    )
    rules = rules_of(tenant(), twins, [downgrade])
    assert downgrade_alias(rules, "low") == "alpha"
    decision = decide(
        rules, policies(rules), {"cap": (2_000_000, 0)}, "reasoning", "high", datetime.now(UTC)
    )
    assert (decision.action, decision.to_alias) == ("downgrade", "alpha")
