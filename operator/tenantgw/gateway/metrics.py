"""The gateway's Prometheus metrics, registered once per process.

tenantgw's own series (`tenantgw_*`) and the request series the dashboard and the alert rules
read under the names LiteLLM's Prometheus exporter gives them (`litellm_proxy_*`, `litellm_*`),
counted here from the usage record of each request: the gateway does not load LiteLLM's
exporter, which builds some forty label sets of every request (about 1 ms of CPU a request,
docs/benchmarks.md) for series nobody reads. The labels are bounded: the tenant, its key names,
its aliases and its provider models, never a client-sent string.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import prometheus_client
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.usage import UsageRecord

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    420.0,
    600.0,
    float("inf"),
)
"""Seconds; LiteLLM 1.106.12's `LATENCY_BUCKETS`, so that queries written for its series hold."""
UNROUTED = "unrouted"
"""The alias label of a request refused before the routing chose an alias."""


def _collector(
    kind: type[Counter] | type[Gauge] | type[Histogram],
    name: str,
    doc: str,
    labels: list[str],
    **options: Any,
) -> Any:
    # A second import of this module (LiteLLM can load plugin files by path) must reuse the
    # registered collectors instead of failing on duplicates.
    existing = getattr(REGISTRY, "_names_to_collectors", {}).get(name)
    return existing if existing is not None else kind(name, doc, labels, **options)


def scrape_registry() -> CollectorRegistry:
    """What a scrape reads: every worker's samples when they share $PROMETHEUS_MULTIPROC_DIR."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]


def metrics_app() -> ASGIApp:
    """The /metrics endpoint of the API port (the metrics port serves the same registry)."""
    app: ASGIApp = prometheus_client.make_asgi_app(scrape_registry())
    return app


@dataclass(frozen=True)
class GatewayMetrics:
    """Counters and gauges of one gateway process."""

    requests: Counter
    cost_usd: Counter
    list_cost_usd: Counter
    tokens: Counter
    budget_utilization: Gauge
    enforcement_skipped: Counter
    session_ids_rejected: Counter
    pii_entities: Counter
    proxy_requests: Counter
    proxy_failed_requests: Counter
    request_latency: Histogram
    time_to_first_token: Histogram
    spend: Counter
    total_tokens: Counter
    successful_fallbacks: Counter
    unpriced_requests: Counter
    unpriced_models: Gauge

    @classmethod
    def registered(cls) -> GatewayMetrics:
        """The process-wide collectors in prometheus_client's default registry."""
        return cls(
            requests=_collector(
                Counter,
                "tenantgw_requests",
                "Gateway requests by alias and status.",
                ["tenant", "alias", "status"],
            ),
            cost_usd=_collector(
                Counter, "tenantgw_cost_usd", "USD spent on providers.", ["tenant", "alias"]
            ),
            list_cost_usd=_collector(
                Counter,
                "tenantgw_list_cost_usd",
                "USD the same requests would cost at Anthropic's list price of the Claude "
                "model asked for.",
                ["tenant", "alias"],
            ),
            tokens=_collector(
                Counter,
                "tenantgw_tokens",
                "Tokens by direction: input, output, cache_read, cache_write.",
                ["tenant", "alias", "direction"],
            ),
            budget_utilization=_collector(
                Gauge,
                "tenantgw_budget_utilization_percent",
                "Spend of a BudgetPolicy in its current period, as a percentage of its limit.",
                ["tenant", "budget"],
            ),
            enforcement_skipped=_collector(
                Counter,
                "tenantgw_enforcement_skipped",
                "Requests whose rate-limit or budget step could not run because its store "
                "(Redis) was unavailable or not configured; action says whether the request "
                "was refused (onStoreUnavailable: Closed) or admitted unchecked (Open).",
                ["tenant", "step", "reason", "action"],
            ),
            session_ids_rejected=_collector(
                Counter,
                "tenantgw_session_ids_rejected",
                "Requests whose X-Claude-Code-Session-Id was malformed (reason: empty, "
                "too_long, invalid_characters) and so not recorded; the request is served "
                "without a session.",
                ["tenant", "reason"],
            ),
            pii_entities=_collector(
                Counter,
                "tenantgw_pii_entities",
                "PII entities found by the tenant's redaction policy, by direction (request: "
                "the prompt, response: the answer) and action (redacted, or blocked: the "
                "answer was withheld).",
                ["tenant", "direction", "entity", "action"],
            ),
            proxy_requests=_collector(
                Counter,
                "litellm_proxy_total_requests_metric",
                "Requests the gateway finished, by outcome (LiteLLM's series name).",
                ["tenant", "api_key_alias", "requested_model", "status_code"],
            ),
            proxy_failed_requests=_collector(
                Counter,
                "litellm_proxy_failed_requests_metric",
                "Requests that failed for good, refusals included (LiteLLM's series name).",
                [
                    "tenant",
                    "api_key_alias",
                    "requested_model",
                    "exception_status",
                    "exception_class",
                ],
            ),
            request_latency=_collector(
                Histogram,
                "litellm_request_total_latency_metric",
                "Seconds from the call to the provider's last byte, answered requests.",
                ["tenant", "requested_model", "model"],
                buckets=LATENCY_BUCKETS,
            ),
            time_to_first_token=_collector(
                Histogram,
                "litellm_llm_api_time_to_first_token_metric",
                "Seconds from the call to the first streamed token, answered streams.",
                ["tenant", "requested_model", "model"],
                buckets=LATENCY_BUCKETS,
            ),
            spend=_collector(
                Counter,
                "litellm_spend_metric",
                "USD spent on providers, by provider model (LiteLLM's series name).",
                ["tenant", "api_key_alias", "requested_model", "model"],
            ),
            total_tokens=_collector(
                Counter,
                "litellm_total_tokens_metric",
                "Tokens of answered requests, cached ones included (LiteLLM's series name).",
                ["tenant", "api_key_alias", "requested_model", "model"],
            ),
            successful_fallbacks=_collector(
                Counter,
                "litellm_deployment_successful_fallbacks",
                "Requests a fallback alias answered: requested_model is the alias the routing "
                "chose, fallback_model the one that answered.",
                ["tenant", "requested_model", "fallback_model"],
            ),
            unpriced_requests=_collector(
                Counter,
                "tenantgw_unpriced_requests",
                "Requests for an alias with a model nobody prices (no catalog pricing, none in "
                "LiteLLM's cost map), by action: refused, or served and charged $0 "
                "(spec.enforcement.onUnpricedModel).",
                ["tenant", "alias", "action"],
            ),
            unpriced_models=_collector(
                Gauge,
                "tenantgw_unpriced_models",
                "1 for each alias target the gateway has no price for, from the rules file it "
                "loaded: set spec.catalog[].pricing for it.",
                ["tenant", "alias", "model"],
                multiprocess_mode="livemax",
            ),
        )

    def observe(self, rec: UsageRecord) -> None:
        """Count a usage record."""
        self.requests.labels(rec.tenant, rec.alias, rec.status).inc()
        if rec.cost_usd > 0:
            self.cost_usd.labels(rec.tenant, rec.alias).inc(rec.cost_usd)
        if rec.list_cost_usd:
            self.list_cost_usd.labels(rec.tenant, rec.alias).inc(rec.list_cost_usd)
        for direction, count in (
            ("input", rec.input_tokens),
            ("output", rec.output_tokens),
            ("cache_read", rec.cache_read_tokens),
            ("cache_write", rec.cache_write_tokens),
        ):
            if count:
                self.tokens.labels(rec.tenant, rec.alias, direction).inc(count)

    def finished(self, rec: UsageRecord, ctx: RequestContext) -> None:
        """Count the outcome of one request: its final record (once per request)."""
        routed = ctx.alias or UNROUTED
        status = str(rec.http_status or (200 if rec.status == "success" else 500))
        self.proxy_requests.labels(rec.tenant, rec.key_name, routed, status).inc()
        if rec.status != "success":
            self.proxy_failed_requests.labels(
                rec.tenant, rec.key_name, routed, status, rec.error_type or "Error"
            ).inc()
            return
        model = rec.provider_model or rec.alias
        if rec.latency_ms is not None:
            self.request_latency.labels(rec.tenant, routed, model).observe(rec.latency_ms / 1000)
        if rec.stream and rec.ttft_ms is not None:
            self.time_to_first_token.labels(rec.tenant, routed, model).observe(rec.ttft_ms / 1000)
        if rec.cost_usd > 0:
            self.spend.labels(rec.tenant, rec.key_name, routed, model).inc(rec.cost_usd)
        if rec.total_tokens:
            self.total_tokens.labels(rec.tenant, rec.key_name, routed, model).inc(rec.total_tokens)
        if ctx.alias and rec.alias != ctx.alias:
            self.successful_fallbacks.labels(rec.tenant, ctx.alias, rec.alias).inc()

    def session_rejected(self, tenant: str, reason: str) -> None:
        """Count one request whose session header was dropped (`sessions.REJECT_REASONS`)."""
        self.session_ids_rejected.labels(tenant, reason).inc()

    def pii(self, tenant: str, direction: str, action: str, counts: dict[str, int]) -> None:
        """Count the PII entities one request's prompt or answer held."""
        for entity, count in counts.items():
            if count:
                self.pii_entities.labels(tenant, direction, entity, action).inc(count)

    def skipped(self, tenant: str, step: str, reason: str, action: str) -> None:
        """Count one request whose `step` (ratelimit | budget) could not run."""
        self.enforcement_skipped.labels(tenant, step, reason, action).inc()
