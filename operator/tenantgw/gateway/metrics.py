"""The gateway's Prometheus metrics (tenantgw_*), registered once per process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge

from tenantgw.gateway.usage import UsageRecord


def _collector(kind: type[Counter] | type[Gauge], name: str, doc: str, labels: list[str]) -> Any:
    # A second import of this module (LiteLLM can load plugin files by path) must reuse the
    # registered collectors instead of failing on duplicates.
    existing = getattr(REGISTRY, "_names_to_collectors", {}).get(name)
    return existing if existing is not None else kind(name, doc, labels)


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
