"""Fallbacks are checked like primaries: the closure, residency over it (gateway and operator),
client-sent fallback lists, the per-hop check, and what a budget refusal looks like."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tenantgw.api import ModelAlias, Tenant
from tenantgw.api.fallbacks import fallback_closure, fallback_paths
from tenantgw.gateway import fallbacks, residency
from tenantgw.gateway.budgets import Decision
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.errors import (
    BudgetExceededError,
    PermissionDeniedError,
    RateLimitError,
    proxy_exception,
    reshape_error,
)
from tenantgw.gateway.files import Enforcement, Rules
from tenantgw.gateway.refusals import HELD_RETRY_AFTER, budget_refusal
from tenantgw.gateway.storehealth import StoreUnavailable
from tenantgw.reconcile.validate import validate_aliases

pytestmark = pytest.mark.unit

GRAPH = {"a": ["b", "d"], "b": ["c"], "c": ["a"], "d": ["c", "e"], "e": []}


def test_the_closure_is_walked_in_the_order_litellm_tries_it() -> None:
    # a fails -> b; b fails -> b's own c (before a's next, d); c's fallback a is the start.
    assert fallback_closure("a", lambda n: GRAPH.get(n, [])) == ("b", "c", "d", "e")
    paths = fallback_paths("a", lambda n: GRAPH.get(n, []))
    assert paths["c"] == ("a", "b", "c")
    assert paths["e"] == ("a", "d", "e")
    assert fallback_closure("e", lambda n: GRAPH.get(n, [])) == ()
    assert fallback_closure("unknown", lambda n: GRAPH.get(n, [])) == ()


# --------------------------------------------------------------------------- gateway rules


def _target(name: str, region: str) -> dict[str, Any]:
    return {"id": f"{name}-0", "provider": f"p-{region}", "model": f"m-{name}", "region": region}


def rules(
    chain: dict[str, list[str]],
    regions: dict[str, str] | None = None,
    budgets: list[dict[str, Any]] | None = None,
) -> Rules:
    regions = regions or {}
    return Rules.model_validate(
        {
            "tenant": "fb",
            "namespace": "tenant-fb",
            "aliases": {
                name: {
                    "cost_tier": "medium",
                    "fallbacks": fbs,
                    "targets": [_target(name, regions.get(name, "us-east-1"))],
                }
                for name, fbs in chain.items()
            },
            "compliance": {"data_residency": {"allowed_regions": ["us-east-1"]}},
            "budgets": budgets or [],
        }
    )


NESTED = {"edge": ["mid"], "mid": ["far"], "far": [], "ok": []}


def test_residency_refuses_an_alias_whose_fallback_of_a_fallback_is_outside() -> None:
    r = rules(NESTED, {"far": "eu-west-1"})
    assert fallbacks.closure(r, "edge") == ("mid", "far")
    for alias in ("edge", "mid", "far"):
        with pytest.raises(PermissionDeniedError) as caught:
            residency.check_residency(r, alias)
        assert "eu-west-1" in caught.value.message
    assert residency.violations(r, "edge") == [
        "edge -> mid -> far: p-eu-west-1/m-far (region eu-west-1)"
    ]
    residency.check_residency(r, "ok")


def test_client_sent_fallback_lists_are_dropped() -> None:
    data: dict[str, Any] = {
        "model": "ok",
        "fallbacks": ["far"],
        "context_window_fallbacks": [{"ok": ["far"]}],
        "content_policy_fallbacks": [{"ok": ["far"]}],
        "router_settings_override": {"fallbacks": [{"ok": ["far"]}], "timeout": 3},
    }
    dropped = fallbacks.drop_client_fallbacks(data)
    assert set(dropped) == {
        "fallbacks",
        "context_window_fallbacks",
        "content_policy_fallbacks",
        "router_settings_override",
    }
    assert data == {"model": "ok", "router_settings_override": {"timeout": 3}}
    assert fallbacks.drop_client_fallbacks({"model": "ok"}) == []


# --------------------------------------------------------------------------- per hop


@dataclass
class FakeGuard:
    """Blocks the aliases in `blocked`; records what it was asked."""

    blocked: set[str] = field(default_factory=set)
    checked: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    fail: bool = False

    async def check(self, ctx: RequestContext, rules: Any) -> Decision:
        self.checked.append(ctx.alias)
        if self.fail:
            raise ConnectionError("redis down")
        if ctx.alias in self.blocked:
            return Decision("block", policy=f"{ctx.alias}-daily", message=f"{ctx.alias} spent")
        return Decision("allow")

    async def release(self, ctx: RequestContext) -> None:
        self.released.append(ctx.alias)


def ctx_for(alias: str) -> RequestContext:
    return RequestContext(
        tenant="fb", key_name="alice", request_id="r1", requested_model=alias, alias=alias
    )


DEPLOYMENTS = [{"model_name": "x", "model_info": {"id": "x-0"}}]


async def test_the_requests_own_alias_is_not_checked_again() -> None:
    guard = FakeGuard(blocked={"a"})
    r = rules({"a": ["b"], "b": []})
    got = await fallbacks.admit_hop(guard, "a", DEPLOYMENTS, ctx_for("a"), r)
    assert got == DEPLOYMENTS
    assert guard.checked == []


async def test_a_call_without_tenantgw_context_is_left_alone() -> None:
    guard = FakeGuard(blocked={"b"})
    got = await fallbacks.admit_hop(guard, "b", DEPLOYMENTS, None, rules({"b": []}))
    assert got == DEPLOYMENTS
    assert guard.checked == []


async def test_a_fallback_over_its_budget_gets_no_deployments() -> None:
    guard = FakeGuard(blocked={"b"})
    r = rules({"a": ["b"], "b": ["c"], "c": []})
    got = await fallbacks.admit_hop(guard, "b", DEPLOYMENTS, ctx_for("a"), r)
    assert got == []
    # The failed alias's reservation goes in the hop's own check (one call); a refused hop
    # holds nothing, and whatever it might hold is given back.
    assert guard.released == ["b"]
    # Its own fallback is checked when the router gets there, and admitted.
    assert await fallbacks.admit_hop(guard, "c", DEPLOYMENTS, ctx_for("a"), r) == DEPLOYMENTS
    assert guard.checked == ["b", "c"]


async def test_a_fallback_outside_residency_or_unknown_gets_no_deployments() -> None:
    guard = FakeGuard()
    r = rules({"a": [], "far": []}, {"far": "eu-west-1"})
    assert await fallbacks.admit_hop(guard, "far", DEPLOYMENTS, ctx_for("a"), r) == []
    assert await fallbacks.admit_hop(guard, "nope", DEPLOYMENTS, ctx_for("a"), r) == []
    assert guard.checked == []


async def test_a_fallback_whose_budgets_cannot_be_checked_is_not_used() -> None:
    guard = FakeGuard(fail=True)
    r = rules({"a": ["b"], "b": []})
    assert await fallbacks.admit_hop(guard, "b", DEPLOYMENTS, ctx_for("a"), r) == []


@pytest.mark.parametrize(("mode", "served"), [("Closed", False), ("Open", True)])
async def test_a_fallback_while_redis_is_down_follows_on_store_unavailable(
    mode: str, served: bool
) -> None:
    class Unavailable(FakeGuard):
        async def check(self, ctx: RequestContext, rules: Any) -> Decision:
            raise StoreUnavailable("budget", "connection", "redis down", 5.0)

    r = rules({"a": ["b"], "b": []}).model_copy(
        update={"enforcement": Enforcement(on_store_unavailable=mode)}
    )
    got = await fallbacks.admit_hop(Unavailable(), "b", DEPLOYMENTS, ctx_for("a"), r)
    assert got == (DEPLOYMENTS if served else [])


async def test_a_fallback_a_budget_would_downgrade_is_not_used() -> None:
    class Downgrading(FakeGuard):
        async def check(self, ctx: RequestContext, rules: Any) -> Decision:
            return Decision("downgrade", policy="p", message="too dear", to_alias="cheap")

    guard = Downgrading()
    r = rules({"a": ["b"], "b": []})
    assert await fallbacks.admit_hop(guard, "b", DEPLOYMENTS, ctx_for("a"), r) == []
    assert guard.released == ["b"]  # the reservation a downgrade made under its target


# --------------------------------------------------------------------------- operator side


def _tenant() -> Tenant:
    return Tenant.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": "fb"},
            "spec": {
                "providers": [
                    {"name": "home", "type": "openai", "region": "us-east-1",
                     "credentialsSecretRef": {"name": "home", "key": "apiKey"}},
                    {"name": "abroad", "type": "openai", "region": "eu-west-1",
                     "credentialsSecretRef": {"name": "abroad", "key": "apiKey"}},
                ],
                "catalog": [
                    {"provider": "home", "model": "*", "costTier": "medium"},
                    {"provider": "abroad", "model": "*", "costTier": "medium"},
                ],
                "compliance": {"dataResidency": {"allowedRegions": ["us-east-1"]}},
            },
        }
    )  # fmt: skip


def _alias(name: str, provider: str, fallbacks: list[str]) -> ModelAlias:
    return ModelAlias.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "ModelAlias",
            "metadata": {"name": name, "namespace": "tenant-fb"},
            "spec": {"targets": [{"provider": provider, "model": "m"}], "fallbacks": fallbacks},
        }
    )


def test_the_operator_rejects_an_alias_whose_nested_fallback_is_outside_residency() -> None:
    aliases = [
        _alias("edge", "home", ["ok", "mid"]),
        _alias("mid", "home", ["far"]),
        _alias("far", "abroad", []),
        _alias("ok", "home", []),
    ]
    verdicts = {v.name: v for v in validate_aliases(_tenant(), aliases)}
    assert verdicts["ok"].accepted
    for name in ("far", "mid", "edge"):
        assert not verdicts[name].accepted
        assert verdicts[name].reason == "ResidencyViolation"
    assert verdicts["edge"].message.startswith(
        'spec.fallbacks[1]: falls back through edge -> mid -> far, whose provider "abroad" '
        'has region "eu-west-1"'
    )
    # The gateway's check agrees: the same walk, over the rules the operator would render.
    r = rules({"edge": ["ok", "mid"], "mid": ["far"], "far": [], "ok": []}, {"far": "eu-west-1"})
    gateway_refuses = {name for name in r.aliases if residency.violations(r, name)}
    operator_refuses = {name for name, v in verdicts.items() if not v.accepted}
    assert gateway_refuses == operator_refuses


# --------------------------------------------------------------------------- refusals


def test_a_spent_budget_is_a_final_402_until_its_reset() -> None:
    now = datetime(2026, 3, 4, 22, 0, tzinfo=UTC)
    decision = Decision(
        "block",
        policy="daily",
        message="budget daily (key alice) has reached its daily limit; it resets at ...",
        resets_at=now + timedelta(hours=2),
    )
    error = budget_refusal(decision, "fb", now)
    assert isinstance(error, BudgetExceededError)
    assert (error.status, error.type_, error.retry_after) == (402, "billing_error", 7200.0)
    exc = proxy_exception(error)
    assert getattr(exc, "code", None) == "402"
    assert getattr(exc, "headers", None) == {"retry-after": "7200", "x-should-retry": "false"}


def test_a_budget_full_of_reservations_is_a_429_to_retry_soon() -> None:
    decision = Decision("block", policy="daily", message="held by requests", held=True)
    error = budget_refusal(decision, "fb")
    assert isinstance(error, RateLimitError)
    assert error.retry_after == HELD_RETRY_AFTER
    assert getattr(proxy_exception(error), "headers", None) == {"retry-after": "5"}


def test_litellms_api_error_type_on_a_402_becomes_billing_error() -> None:
    # LiteLLM's Anthropic error mapping knows no 402 and says api_error, a 5xx type.
    body = json.dumps(
        {"type": "error", "error": {"type": "api_error", "message": "budget x spent"}}
    ).encode()
    shaped = reshape_error("anthropic", 402, body, "application/json")
    assert shaped is not None
    assert json.loads(shaped) == {
        "type": "error",
        "error": {"type": "billing_error", "message": "budget x spent"},
    }
    assert reshape_error("anthropic", 500, body, "application/json") is None
    fine = json.dumps({"type": "error", "error": {"type": "billing_error", "message": "m"}})
    assert reshape_error("anthropic", 402, fine.encode(), "application/json") is None
