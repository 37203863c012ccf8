"""Fallbacks are checked like primaries: residency and budgets of the alias that actually serves.

LiteLLM's router falls back from a failing alias to its fallbacks, and from those to theirs
(`tenantgw.api.fallbacks`). The pre-call hook checks the alias routing chose; a fallback serves
without passing that hook again. Two steps close the gap:

* before the request (`drop_client_fallbacks`), the fallback lists a client may send in the
  body (`fallbacks`, `context_window_fallbacks`, `content_policy_fallbacks`, also inside
  `router_settings_override`) are dropped: where a tenant's request may go is the ModelAliases'
  `spec.fallbacks`, never the client's choice. Residency is checked over the whole fallback
  closure there too (`residency.check_residency`).
* when the router picks deployments for a model group other than the request's own alias
  (`admit_hop`, called from the plugin's `async_filter_deployments`, i.e. for each fallback hop,
  just before it serves): the hop is admitted only if that alias and its own fallback closure
  are inside the tenant's regions, it has a price or the Tenant serves it unpriced
  (`unpriced.py`), and every BudgetPolicy covering it (tenant, key, and that
  alias's own) admits it, with a reservation under those policies like a primary's. A hop that
  is not admitted gets no deployments: LiteLLM skips it and goes on to its fallbacks, or
  answers with the error of the last alias it tried. A budget downgrade is not applied to a
  fallback: an alias a downgrade policy would move is skipped.

Spend is charged to the alias that served (metering reads it from the deployment), so the
alias-scoped policy that admitted a hop is the one its cost lands on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from tenantgw.api.fallbacks import fallback_closure
from tenantgw.gateway import files, residency, unpriced
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.files import Rules
from tenantgw.gateway.storehealth import StoreUnavailable

log = logging.getLogger("tenantgw.gateway.fallbacks")

CLIENT_FALLBACK_PARAMS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")
"""Request parameters with which a LiteLLM client may choose its own fallback models."""


def closure(rules: Rules, alias: str) -> tuple[str, ...]:
    """The aliases a request for `alias` may be served by after it, in the order tried."""
    return fallback_closure(alias, lambda name: residency.fallbacks_of(rules, name))


def drop_client_fallbacks(data: dict[str, Any]) -> list[str]:
    """Remove client-chosen fallback lists from a request; the names of those removed."""
    dropped = [name for name in CLIENT_FALLBACK_PARAMS if data.pop(name, None) is not None]
    override = data.get("router_settings_override")
    if isinstance(override, Mapping) and any(name in override for name in CLIENT_FALLBACK_PARAMS):
        data["router_settings_override"] = {
            k: v for k, v in override.items() if k not in CLIENT_FALLBACK_PARAMS
        }
        dropped.append("router_settings_override")
    return dropped


def hop_refusal(rules: Rules, alias: str) -> str | None:
    """Why the static rules forbid `alias` to serve as a fallback (None: they allow it)."""
    if alias not in rules.aliases:
        return f"{alias!r} is not a model alias of tenant {rules.tenant}"
    outside = residency.violations(rules, alias)
    if outside:
        return f"outside the tenant's data residency: {'; '.join(outside)}"
    return None


async def admit_hop(
    guard: Any | None,
    model: str,
    deployments: Sequence[dict[str, Any]],
    ctx: RequestContext | None,
    rules: Rules | None = None,
) -> list[dict[str, Any]]:
    """The deployments of `model` the request may use now: all of them, or none for a refused
    fallback hop (see the module docstring). `ctx` is the request's server-side context (None:
    not a request the pre-call hook checked); its own alias passes untouched, the hook checked
    it. `rules` defaults to the gateway's current rules file."""
    if ctx is None or model == ctx.alias or not deployments:
        return list(deployments)
    if rules is None:
        try:
            rules = files.current_rules()
        except files.FileError as exc:
            log.error("fallback to %s of %s not used: no rules (%s)", model, ctx.request_id, exc)
            return []
    why = hop_refusal(rules, model)
    if why is None:
        refused = unpriced.refusal(rules, model, ctx.key_name, ctx.session_id)
        why = refused.message if refused is not None else None
    if why is None and guard is not None:
        why = await _budget_refusal(guard, rules, ctx, model)
    if why is not None:
        log.warning(
            "request %s of %s: fallback from %s to %s not used: %s",
            ctx.request_id,
            ctx.key_name,
            ctx.alias,
            model,
            why,
        )
        return []
    log.info(
        "request %s of %s falls back from %s to %s", ctx.request_id, ctx.key_name, ctx.alias, model
    )
    return list(deployments)


async def _budget_refusal(guard: Any, rules: Rules, ctx: RequestContext, alias: str) -> str | None:
    """Check (and reserve under) every BudgetPolicy covering `alias` for this request."""
    hop = dataclasses.replace(ctx, alias=alias, cost_tier=rules.aliases[alias].cost_tier)
    try:
        # The alias that failed is done: its reservation goes and the hop's is taken, in the
        # same call (the guard drops the reservation the request holds).
        decision = await guard.check(hop, rules)
    except StoreUnavailable as exc:
        if rules.enforcement.on_store_unavailable == "Open":
            log.warning("budgets of fallback %s not checked for %s: %s", alias, ctx.request_id, exc)
            return None  # the platform chose to serve while the store is down
        return f"its budgets cannot be checked right now ({exc.reason})"
    except Exception as exc:
        log.exception("budgets of fallback %s not checked for %s", alias, ctx.request_id)
        return f"its budgets could not be checked ({type(exc).__name__})"
    action = getattr(decision, "action", "allow")
    if action == "allow":
        return None
    await guard.release(hop)  # a downgrade reserved under its target
    message = str(getattr(decision, "message", "") or "")
    if action == "downgrade":
        return f"a budget would downgrade it ({message})"
    return message or "its budget is exhausted"
