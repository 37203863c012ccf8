"""The platform owns money: prices and cost tiers come from the Tenant's catalog, never from a
ModelAlias, and a BudgetPolicy that cannot be applied fails closed in the gateway."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from tenantgw.api import ModelAlias, Tenant, alias_cost_tiers, catalog_entry
from tenantgw.gateway import files
from tenantgw.gateway.budgets import BudgetGuard, decide, policies
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.metrics import GatewayMetrics
from tenantgw.gateway.storehealth import StoreHealth
from tenantgw.reconcile.validate import (
    unenforceable_budgets,
    validate_aliases,
    validate_budgets,
)
from tenantgw.render import RenderInputs, render_litellm_config, render_rules

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, 15, 30, tzinfo=UTC)
CATALOG = [
    {
        "provider": "sim",
        "model": "sim-big",
        "costTier": "high",
        "pricing": {"inputPerMillion": 15, "outputPerMillion": 75},
    },
    {"provider": "sim", "model": "sim-mid", "costTier": "medium"},
    {"provider": "sim", "model": "sim-mini*", "costTier": "low"},
    {
        "provider": "sim",
        "model": "sim-mini-free",
        "costTier": "medium",
        "pricing": {"inputPerMillion": 0, "outputPerMillion": 0},
    },
]


def tenant(catalog: list[dict[str, Any]] | None = None, **spec: Any) -> Tenant:
    body = {
        "metadata": {"name": "money"},
        "spec": {
            "providers": [
                {"name": "sim", "type": "openai"},
                {"name": "other", "type": "openai"},
            ],
            "catalog": CATALOG if catalog is None else catalog,
            "keys": [{"name": "alice"}],
            **spec,
        },
    }
    return Tenant.model_validate(body)


def alias(
    name: str, *models: str, fallbacks: tuple[str, ...] = (), provider: str = "sim"
) -> ModelAlias:
    return ModelAlias.model_validate(
        {
            "metadata": {"name": name, "namespace": "tenant-money", "generation": 1},
            "spec": {
                "targets": [{"provider": provider, "model": m} for m in models],
                "fallbacks": list(fallbacks),
            },
        }
    )


def budget_body(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "tenant-money", "generation": 2},
        "spec": {"scope": {"kind": "Tenant"}, "period": "daily", "limitUSD": 10, **spec},
    }


# --------------------------------------------------------------------------- the catalog


def test_an_exact_catalog_entry_wins_over_a_glob() -> None:
    catalog = tenant().spec.catalog
    exact = catalog_entry(catalog, "sim", "sim-mini-free")
    assert exact is not None
    assert exact.cost_tier == "medium"
    glob = catalog_entry(catalog, "sim", "sim-mini-2")
    assert glob is not None
    assert glob.model == "sim-mini*"
    assert catalog_entry(catalog, "sim", "sim-huge") is None
    assert catalog_entry(catalog, "other", "sim-big") is None  # entries are per provider


def test_an_alias_costs_its_dearest_target_and_fallback() -> None:
    catalog = tenant().spec.catalog
    aliases = [
        alias("mini", "sim-mini-1"),
        alias("mixed", "sim-mini-1", "sim-mid"),
        alias("cheap-front", "sim-mini-1", fallbacks=("dear",)),
        alias("dear", "sim-big"),
        alias("chain", "sim-mini-1", fallbacks=("cheap-front",)),
        alias("loop-a", "sim-mini-1", fallbacks=("loop-b",)),
        alias("loop-b", "sim-mid", fallbacks=("loop-a",)),
    ]
    assert alias_cost_tiers(catalog, aliases) == {
        "mini": "low",
        "mixed": "medium",
        "cheap-front": "high",  # a fallback could serve sim-big: not a low alias
        "dear": "high",
        "chain": "high",
        "loop-a": "medium",
        "loop-b": "medium",
    }


# --------------------------------------------------------------------------- aliases


def test_a_target_outside_the_catalog_is_refused_naming_the_field() -> None:
    verdicts = validate_aliases(
        tenant(), [alias("ok", "sim-mini-7"), alias("rogue", "sim-mid", "sim-unlisted")]
    )
    by_name = {v.name: v for v in verdicts}
    assert by_name["ok"].accepted
    rogue = by_name["rogue"]
    assert (rogue.accepted, rogue.reason) == (False, "NotInCatalog")
    assert rogue.message.startswith(
        'spec.targets[1].model: model "sim-unlisted" of provider "sim" is not in spec.catalog '
        "of Tenant money"
    )
    assert "sim-big, sim-mid, sim-mini*, sim-mini-free" in rogue.message


def test_a_tenant_without_a_catalog_serves_no_alias() -> None:
    (verdict,) = validate_aliases(tenant(catalog=[]), [alias("any", "sim-mid")])
    assert (verdict.accepted, verdict.reason) == (False, "NotInCatalog")
    assert "it offers no model of sim" in verdict.message


def test_a_star_entry_opens_every_model_of_one_provider() -> None:
    t = tenant(catalog=[{"provider": "sim", "model": "*", "costTier": "medium"}])
    verdicts = validate_aliases(t, [alias("a", "anything"), alias("b", "x", provider="other")])
    assert [(v.name, v.accepted, v.reason) for v in verdicts] == [
        ("a", True, "Accepted"),
        ("b", False, "NotInCatalog"),
    ]


# --------------------------------------------------------------------------- rendering


def inputs(t: Tenant, aliases: list[ModelAlias], **kw: Any) -> RenderInputs:
    return RenderInputs(
        tenant=t,
        aliases=aliases,
        budgets=kw.pop("budgets", []),
        master_key="sk-master",
        keys={"alice": "sk-alice"},
        image="img",
        monitoring=False,
        **kw,
    )


def model_info(config: dict[str, Any], alias_name: str) -> list[dict[str, Any]]:
    return [m["model_info"] for m in config["model_list"] if m["model_name"] == alias_name]


def test_prices_and_tiers_are_the_catalogs_whatever_the_alias_says() -> None:
    """An alias edit changes routing only: the price and tier of a model stay the platform's."""
    t = tenant()
    before = render_litellm_config(inputs(t, [alias("docs", "sim-big")]))
    # The tenant moves sim-big behind a differently named alias, next to a cheap model.
    after = render_litellm_config(inputs(t, [alias("cheap", "sim-mini-1", "sim-big")]))
    (big_before,) = model_info(before, "docs")
    big_after = model_info(after, "cheap")[1]
    for info in (big_before, big_after):
        assert info["input_cost_per_token"] == pytest.approx(15e-6)
        assert info["output_cost_per_token"] == pytest.approx(75e-6)
        assert info["tenantgw"]["cost_tier"] == "high"
    assert "input_cost_per_token" not in model_info(after, "cheap")[0]  # LiteLLM's list price
    rules = render_rules(inputs(t, [alias("cheap", "sim-mini-1", "sim-big")]))
    assert rules["aliases"]["cheap"]["cost_tier"] == "high"


def test_a_platform_price_of_zero_is_rendered_as_zero() -> None:
    (info,) = model_info(
        render_litellm_config(inputs(tenant(), [alias("free", "sim-mini-free")])), "free"
    )
    assert (info["input_cost_per_token"], info["output_cost_per_token"]) == (0, 0)
    assert info["tenantgw"]["cost_tier"] == "medium"


# --------------------------------------------------------------------------- budgets


def test_a_downgrade_with_no_alias_left_in_its_tier_fails_closed() -> None:
    """The tenant points its only low alias at a dear model: the policy is not dropped."""
    t = tenant()
    body = budget_body("team", onExceeded={"action": "downgrade", "toCostTier": "low"})
    ok, verdicts = validate_budgets(t, [body], [alias("docs", "sim-mini-1")])
    assert [p.metadata.name for p in ok] == ["team"]
    assert verdicts[0].accepted

    ok, verdicts = validate_budgets(t, [body], [alias("docs", "sim-big")])
    assert ok == []
    (verdict,) = verdicts
    assert (verdict.accepted, verdict.reason) == (False, "NoAliasInTier")
    assert "refuses the requests in its scope (the whole tenant)" in verdict.message
    (refused,) = unenforceable_budgets(verdicts)
    assert (refused.name, refused.scope_kind, refused.period) == ("team", "Tenant", "daily")


def test_a_policy_whose_scope_is_gone_covers_the_whole_tenant() -> None:
    """Renaming or breaking the alias a policy caps does not make the policy stop applying."""
    t = tenant()
    bodies = [
        budget_body("reasoning-cap", scope={"kind": "ModelAlias", "name": "reasoning"}),
        budget_body("bob-cap", scope={"kind": "Key", "name": "bob"}),
        budget_body("broken", limitUSD=-5),
        budget_body(
            "mid-cap",
            scope={"kind": "ModelAlias", "name": "mid"},
            onExceeded={"action": "downgrade", "toCostTier": "low"},
        ),
    ]
    _, verdicts = validate_budgets(t, bodies, [alias("mid", "sim-mid")])
    refused = {u.name: u for u in unenforceable_budgets(verdicts)}
    assert {n: (u.reason, u.scope_kind, u.scope_name) for n, u in refused.items()} == {
        "bob-cap": ("UnknownKey", "Tenant", None),
        "broken": ("InvalidSpec", "Tenant", None),
        "mid-cap": ("NoAliasInTier", "ModelAlias", "mid"),
        "reasoning-cap": ("UnknownModelAlias", "Tenant", None),
    }
    rules = render_rules(
        inputs(t, [alias("mid", "sim-mid")], unenforceable_budgets=tuple(refused.values()))
    )
    assert [b["name"] for b in rules["budgets"]] == [
        "bob-cap",
        "broken",
        "mid-cap",
        "reasoning-cap",
    ]
    assert rules["budgets"][3]["unenforceable"]["reason"] == "UnknownModelAlias"
    # The gateway's own parser keeps the mark.
    parsed = files.parse_rules(json.dumps(rules))
    assert parsed.budgets[3].unenforceable is not None


def rules_with(budgets: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "tenant": "money",
        "aliases": {"mid": {"cost_tier": "medium"}, "mini": {"cost_tier": "low"}},
        "budgets": budgets,
    }


def gateway_budget(name: str, kind: str = "Tenant", scope: str | None = None, **kw: Any) -> Any:
    return {
        "name": name,
        "scope": {"kind": kind, "name": scope},
        "period": "daily",
        "limit_usd": 10.0,
        "on_exceeded": {"action": "block", "to_cost_tier": None},
        "unenforceable": kw.get("unenforceable"),
    }


MARK = {"reason": "NoAliasInTier", "message": 'spec.onExceeded.toCostTier: no alias "low"'}


def test_the_gateway_refuses_an_unenforceable_policys_scope_whatever_the_spend() -> None:
    rules = files.Rules.model_validate(
        rules_with(
            [
                gateway_budget("ok"),
                gateway_budget("mid-cap", "ModelAlias", "mid", unenforceable=MARK),
            ]
        )
    )
    every = policies(rules)
    covering = [p for p in every if p.matches("alice", "mid")]
    decision = decide(rules, covering, {}, "mid", "medium", NOW)
    assert (decision.action, decision.policy) == ("block", "mid-cap")
    assert decision.message.startswith(
        "budget mid-cap (model alias mid) cannot be enforced (NoAliasInTier: "
    )
    assert "refused until the BudgetPolicy is fixed" in decision.message
    others = [p for p in every if p.matches("alice", "mini")]
    assert decide(rules, others, {}, "mini", "low", NOW).action == "allow"


def test_the_refusal_needs_no_redis() -> None:
    """Fail closed even while the counters' store is down (the guard fails open for those)."""

    async def run() -> None:
        dead = aioredis.Redis(host="127.0.0.1", port=9, socket_connect_timeout=0.2)
        guard = BudgetGuard(dead, "money", StoreHealth("money", GatewayMetrics.registered()))
        rules = rules_with([gateway_budget("team", unenforceable=MARK)])
        ctx = RequestContext(
            tenant="money", key_name="alice", request_id="r1", requested_model="mid", alias="mid"
        )
        decision = await guard.check(ctx, files.Rules.model_validate(rules))
        assert (decision.action, decision.policy) == ("block", "team")
        await dead.aclose()

    asyncio.run(run())


def test_rendering_is_unchanged_for_a_tenant_without_rejected_policies(
    engineering_team: RenderInputs,
) -> None:
    plain = dataclasses.replace(engineering_team, unenforceable_budgets=())
    assert all(b["unenforceable"] is None for b in render_rules(plain)["budgets"])
