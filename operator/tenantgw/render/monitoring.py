"""ServiceMonitor and PrometheusRule of a tenant's gateway (when the Prometheus Operator is there).

Alerts use LiteLLM's Prometheus metric names (`litellm_proxy_*`, from the `prometheus`
callback) and the gateway's budget gauge; Prometheus adds the `namespace` label from the
scrape target, which is what scopes every expression to one tenant.
"""

from __future__ import annotations

from typing import Any

from tenantgw.render.inputs import RenderInputs
from tenantgw.render.labels import gateway_selector, object_meta
from tenantgw.render.names import GATEWAY_NAME, METRICS_PORT_NAME, tenant_name

MONITORING_API_VERSION = "monitoring.coreos.com/v1"
SCRAPE_INTERVAL = "30s"
# The gateway's own exporter on the metrics port (LiteLLM's and tenantgw's collectors).
METRICS_PATH = "/metrics"
# Counters exported by LiteLLM's PrometheusLogger (prometheus_client appends _total).
TOTAL_REQUESTS_METRIC = "litellm_proxy_total_requests_metric_total"
FAILED_REQUESTS_METRIC = "litellm_proxy_failed_requests_metric_total"
BUDGET_UTILIZATION_METRIC = "tenantgw_budget_utilization_percent"
"""Gauge the gateway exports per BudgetPolicy (label `budget`): spend as % of the limit."""
ERROR_RATE_THRESHOLD = 0.05


def render_service_monitor(inputs: RenderInputs) -> dict[str, Any]:
    """ServiceMonitor `gateway`: scrape /metrics on the Service's metrics port."""
    return {
        "apiVersion": MONITORING_API_VERSION,
        "kind": "ServiceMonitor",
        "metadata": object_meta(inputs.tenant, GATEWAY_NAME),
        "spec": {
            "selector": {"matchLabels": gateway_selector(tenant_name(inputs.tenant))},
            "endpoints": [
                {"port": METRICS_PORT_NAME, "path": METRICS_PATH, "interval": SCRAPE_INTERVAL}
            ],
        },
    }


def _alert(
    name: str,
    expr: str,
    duration: str | None,
    severity: str,
    labels: dict[str, str],
    summary: str,
) -> dict[str, Any]:
    alert: dict[str, Any] = {"alert": name, "expr": expr}
    if duration is not None:
        alert["for"] = duration
    alert["labels"] = {"severity": severity, **labels}
    alert["annotations"] = {"summary": summary}
    return alert


def _budget_alerts(inputs: RenderInputs, selector: str, tenant: str) -> list[dict[str, Any]]:
    alerts = []
    for budget in inputs.sorted_budgets():
        name = budget.metadata.name or ""
        utilization = f'max({BUDGET_UTILIZATION_METRIC}{{{selector},budget="{name}"}})'
        for threshold in budget.spec.alert_thresholds:
            alerts.append(
                _alert(
                    "TenantBudgetThresholdCrossed",
                    f"{utilization} >= {threshold}",
                    None,  # spend does not flap: alert at once
                    "critical" if threshold >= 100 else "warning",
                    {"tenant": tenant, "budget": name, "threshold": str(threshold)},
                    f"Tenant {tenant}: BudgetPolicy {name} reached {threshold}% of "
                    f"{budget.spec.limit_usd:g} USD ({budget.spec.period})",
                )
            )
    return alerts


def render_prometheus_rule(inputs: RenderInputs) -> dict[str, Any]:
    """PrometheusRule `gateway`: gateway down, high error rate, budget thresholds crossed."""
    tenant = tenant_name(inputs.tenant)
    namespace = inputs.tenant.namespace_name()
    selector = f'namespace="{namespace}"'
    rules: list[dict[str, Any]] = []
    if inputs.tenant.spec.gateway.serves():  # zero replicas is a choice, not an outage
        rules.append(
            _alert(
                "TenantGatewayDown",
                f'absent(up{{{selector},service="{GATEWAY_NAME}"}} == 1)',
                "5m",
                "critical",
                {"tenant": tenant},
                f"Tenant {tenant}: no gateway pod has answered a scrape for 5 minutes",
            )
        )
    rules.append(
        _alert(
            "TenantGatewayHighErrorRate",
            f"sum(rate({FAILED_REQUESTS_METRIC}{{{selector}}}[5m]))"
            f" / sum(rate({TOTAL_REQUESTS_METRIC}{{{selector}}}[5m]))"
            f" > {ERROR_RATE_THRESHOLD:g}",
            "10m",
            "warning",
            {"tenant": tenant},
            f"Tenant {tenant}: more than {ERROR_RATE_THRESHOLD:.0%} of gateway requests fail",
        )
    )
    rules.extend(_budget_alerts(inputs, selector, tenant))
    return {
        "apiVersion": MONITORING_API_VERSION,
        "kind": "PrometheusRule",
        "metadata": object_meta(inputs.tenant, GATEWAY_NAME),
        "spec": {"groups": [{"name": f"tenantgw-{tenant}", "rules": rules}]},
    }
