"""Requests a model without a price would serve: refused, or served at $0 and shown.

The ledger charges a request at the catalog's `pricing`, else LiteLLM's cost map, else
Anthropic's list price of a Claude model (`prices.py`); a model none of them prices is charged
$0 and counts nothing against a budget. The Tenant's `spec.enforcement.onUnpricedModel`
decides (docs/money.md): Closed refuses every request such an alias would serve,
ClosedWhenBudgeted (the default) those a BudgetPolicy covers, Open none. A refusal is a 403
`permission_error` in the client's shape that names the alias, the model and the field the
platform sets; a request served unpriced is logged and counted in
`tenantgw_unpriced_requests_total`. When a rules file is loaded, the gateway logs each unpriced
target once and sets `tenantgw_unpriced_models` for it.

The primary alias is checked before the limits and budgets (`admission.py`), a budget
downgrade's target after it, and a fallback hop before it serves (`fallbacks.admit_hop`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from tenantgw.gateway import prices
from tenantgw.gateway.budget_policy import covering
from tenantgw.gateway.errors import PermissionDeniedError
from tenantgw.gateway.files import AliasTarget, Rules
from tenantgw.gateway.metrics import GatewayMetrics
from tenantgw.gateway.pricing import rate_per_million

log = logging.getLogger("tenantgw.gateway")

FIELD = "spec.catalog[].pricing"


def litellm_price(model: str) -> prices.Price | None:
    """The price of `model` in LiteLLM's local cost map; None when it has none (or zeros)."""
    import litellm

    try:
        info = litellm.get_model_info(model=model)
    except Exception:  # LiteLLM raises for a model it has not mapped
        return None
    rate_in = rate_per_million(info, "input_cost_per_token") or 0.0
    rate_out = rate_per_million(info, "output_cost_per_token") or 0.0
    if rate_in <= 0 and rate_out <= 0:
        return None  # mapped without a price: LiteLLM charges $0
    return prices.Price(rate_in, rate_out, "litellm")


def deployment_price(target: AliasTarget) -> prices.Price | None:
    """What LiteLLM bills `target` at: the price in its deployment's `model_info` (the router
    registers it in `litellm.model_cost` under the deployment id, which is the target's id),
    else its cost map's price for the model as the router calls it."""
    import litellm

    own = litellm.model_cost.get(target.id)
    if isinstance(own, Mapping):
        rate_in = rate_per_million(own, "input_cost_per_token")
        rate_out = rate_per_million(own, "output_cost_per_token")
        if rate_in is not None or rate_out is not None:  # set by the platform, zero included
            return prices.Price(rate_in or 0.0, rate_out or 0.0, "litellm")
    route = target.litellm_route or target.litellm_model
    return litellm_price(route) if route else None


_metrics: GatewayMetrics | None = None
_metrics_lock = threading.Lock()
_shown: dict[str, set[tuple[str, str]]] = {}
"""Per tenant, the (alias, model) gauges set to 1, so that a priced one goes back to 0."""


def _gauges() -> GatewayMetrics:
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            _metrics = GatewayMetrics.registered()
        return _metrics


def announce(rules: Rules, found: Mapping[str, prices.AliasPrice]) -> None:
    """Log every unpriced target of a newly loaded rules file, and set its gauge."""
    metrics = _gauges()
    now = {(alias, model) for alias, price in found.items() for model in price.unpriced}
    before = _shown.get(rules.tenant, set())
    for alias, model in sorted(before - now):
        metrics.unpriced_models.labels(rules.tenant, alias, model).set(0)
    for alias, model in sorted(now):
        metrics.unpriced_models.labels(rules.tenant, alias, model).set(1)
    _shown[rules.tenant] = now
    for alias, price in sorted(found.items()):
        if price.unpriced:
            log.warning(
                "model alias %s of tenant %s has no price for %s: neither the Tenant's %s nor "
                "LiteLLM's cost map prices it, so a request it serves would be charged $0; "
                "onUnpricedModel %s %s",
                alias,
                rules.tenant,
                ", ".join(price.unpriced),
                FIELD,
                rules.enforcement.on_unpriced_model,
                _what_happens(rules.enforcement.on_unpriced_model),
            )


def _what_happens(mode: str) -> str:
    if mode == "Closed":
        return "refuses its requests"
    if mode == "Open":
        return "serves them at $0"
    return "refuses those a BudgetPolicy covers and serves the others at $0"


prices.install(deployment_price, announce)


def load(rules: Rules) -> None:
    """Price the aliases of `rules` now (at start-up), so that the log shows unpriced ones."""
    prices.current(rules)


def refusal(
    rules: Rules, alias: str, key_name: str, session_id: str | None = None
) -> PermissionDeniedError | None:
    """The error for a request to `alias` that must not be served unpriced, else None.

    A request the Tenant lets through unpriced is logged and counted here.
    """
    price = prices.current(rules).get(alias)
    if price is None or not price.unpriced:
        return None
    mode = rules.enforcement.on_unpriced_model
    budgeted = bool(covering(rules, key_name, alias, session_id))
    refuse = mode == "Closed" or (mode == "ClosedWhenBudgeted" and budgeted)
    metrics = _gauges()
    metrics.unpriced_requests.labels(rules.tenant, alias, "refused" if refuse else "served").inc()
    models = ", ".join(price.unpriced)
    if not refuse:
        log.warning(
            "request of %s to model alias %s of tenant %s served without a price for %s: it "
            "may be charged $0 (onUnpricedModel: %s)",
            key_name,
            alias,
            rules.tenant,
            models,
            mode,
        )
        return None
    why = "a BudgetPolicy covers this request" if mode != "Closed" else "the Tenant says so"
    return PermissionDeniedError(
        f"model alias {alias!r} is not served: no price is set for {models}, so this request "
        f"could not be charged ({why}, spec.enforcement.onUnpricedModel: {mode}); the platform "
        f"team must set the Tenant's {FIELD} for it"
    )
