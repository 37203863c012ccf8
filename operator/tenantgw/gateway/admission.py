"""Rate limits, then budgets, of a request whose context is attached (the pre-call hook's
last checks, also run for the auto-mode classifier's own calls), in one Redis round trip.

When Redis, which limits and budgets need, is unavailable or not configured, the Tenant's
`spec.enforcement.onStoreUnavailable` decides: Closed refuses with 503 and `retry-after`, Open
admits; both are counted in `tenantgw_enforcement_skipped_total`. A budget downgrade changes
the request's alias (and `data["model"]`) after checking the target's residency and price.
An alias with a model nobody prices is refused first when onUnpricedModel says so
(`unpriced.py`).
"""

from __future__ import annotations

import logging
from typing import Any

from tenantgw.gateway import files, refusals, residency, unpriced
from tenantgw.gateway.budget_policy import Decision, covering, policies, refuse_unenforceable
from tenantgw.gateway.context import RequestContext, Tracked
from tenantgw.gateway.errors import RateLimitError, ServiceUnavailableError
from tenantgw.gateway.ratelimit import RateLimited, has_limits
from tenantgw.gateway.runtime import GatewayRuntime
from tenantgw.gateway.storehealth import SKIP_AFTER_ERROR, StoreUnavailable

log = logging.getLogger("tenantgw.gateway")

_STEP_NAMES = {"ratelimit": "rate limits", "budget": "budgets"}


def unavailable(runtime: GatewayRuntime, rules: files.Rules, exc: StoreUnavailable) -> None:
    """Apply onStoreUnavailable to a step that could not run: refuse (Closed) or admit."""
    closed = rules.enforcement.on_store_unavailable == "Closed"
    runtime.store.skipped(exc, refused=closed)
    if closed:
        what = _STEP_NAMES.get(exc.step, exc.step)
        raise ServiceUnavailableError(
            f"tenant {runtime.tenant}'s {what} cannot be checked right now (their store is "
            "unavailable), so the gateway does not serve requests: retry shortly",
            retry_after=max(exc.retry_after, 1.0),
        )


async def admit(
    runtime: GatewayRuntime, tracked: Tracked, rules: files.Rules, data: dict[str, Any]
) -> None:
    """Rate limits and budgets of the request in one Redis call (`enforcer.Enforcer`): a
    RateLimitError when a limit is reached, a budget refusal when a budget blocks it, else
    the slot and reservation taken and a downgrade applied to `data`."""
    ctx = tracked.ctx
    # A model without a price: refused (onUnpricedModel) before anything is counted.
    unpriced_error = unpriced.refusal(rules, ctx.alias, ctx.key_name, ctx.session_id)
    if unpriced_error is not None:
        raise unpriced_error
    steps = []
    if has_limits(rules, ctx.key_name):
        steps.append("ratelimit")
    if policies(rules):
        steps.append("budget")
        # A policy the operator could not apply refuses, Redis or not (it needs no counter).
        refused = refuse_unenforceable(covering(rules, ctx.key_name, ctx.alias, ctx.session_id))
        if refused is not None:
            raise refusals.budget_refusal(refused, ctx.tenant)
    if not steps:
        return
    enforcer = runtime.enforcer
    if enforcer is None:
        for step in steps:
            unavailable(runtime, rules, not_configured(step))
        return
    try:
        admitted = await enforcer.admit(ctx, rules)
    except RateLimited as exc:
        raise RateLimitError(exc.message, retry_after=float(exc.retry_after)) from None
    except StoreUnavailable as exc:
        # One call for both steps: each that applies gets the Tenant's onStoreUnavailable.
        for step in steps:
            unavailable(runtime, rules, exc if step == exc.step else exc.for_step(step))
        return
    tracked.holds_slot = admitted.holds_slot
    apply_decision(rules, ctx, admitted.decision, data)


def apply_decision(
    rules: files.Rules, ctx: RequestContext, decision: Decision, data: dict[str, Any]
) -> None:
    """Refuse a request over budget, or downgrade it to the policy's cheaper alias."""
    if decision.action == "block":
        raise refusals.budget_refusal(decision, ctx.tenant)
    if decision.action != "downgrade":
        return
    target = decision.to_alias
    if not target or target == ctx.alias:
        return
    if target not in rules.aliases:
        log.error("budget downgrade of %s to unknown alias %r ignored", ctx.alias, target)
        return
    residency.check_residency(rules, target)
    unpriced_error = unpriced.refusal(rules, target, ctx.key_name, ctx.session_id)
    if unpriced_error is not None:
        raise unpriced_error
    ctx.downgraded_from, ctx.alias = ctx.alias, target
    ctx.cost_tier = rules.aliases[target].cost_tier
    data["model"] = target
    if decision.message:
        log.info("request %s downgraded: %s", ctx.request_id, decision.message)


def not_configured(step: str) -> StoreUnavailable:
    return StoreUnavailable(
        step, "not_configured", "TENANTGW_REDIS_URL is not set", retry_after=SKIP_AFTER_ERROR
    )
