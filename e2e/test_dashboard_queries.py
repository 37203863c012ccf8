"""Every query of the Grafana dashboard returns data from a real Prometheus scraping a gateway.

A throwaway Prometheus (Debian's package, loopback, its own data directory) scrapes a running
gateway's metrics port every second, with the target labels the tenant's ServiceMonitor gives
in a cluster (namespace, service, pod). After some traffic (answers, a provider error, a
fallback, a stream, requests that name a Claude model), each panel query of
manifests/monitoring/tenantgw-gateways.json, with the dashboard's variables filled in for the
tenant, must return at least one number. A panel whose metric was renamed or never exported
fails here instead of showing "No data".
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
import yaml

from e2e.gateway_launch import free_port
from e2e.gateway_process import GatewayProcess, run_gateway
from e2e.helpers import eventually
from e2e.test_gateway_process import ALICE_KEY, TENANT

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "manifests" / "monitoring" / "tenantgw-gateways.json"
NAMESPACE = f"tenant-{TENANT}"
SCRAPE = "1s"
RATE_INTERVAL = "1m"
"""What Grafana puts for $__rate_interval: at least four scrape intervals."""


@dataclass
class Stack:
    gateway: GatewayProcess
    prometheus: str  # base URL


def start_prometheus(workdir: Path, target: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run `make setup` (Debian's prometheus package)")
    port = free_port()
    config = {
        "global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
        "scrape_configs": [
            {
                "job_name": "gateway",
                "static_configs": [
                    {
                        "targets": [target],
                        # What the ServiceMonitor's Kubernetes discovery labels a gateway with.
                        "labels": {"namespace": NAMESPACE, "service": "gateway", "pod": "gw-0"},
                    }
                ],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"prometheus exited:\n{(workdir / 'prometheus.log').read_text()[-3000:]}")
        try:
            return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    eventually(ready, 60, "Prometheus to be ready")
    return proc, url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("dashboard")
    metrics_port = free_port()
    (workdir / "multiproc").mkdir()
    with run_gateway(
        workdir,
        args=("--metrics_port", str(metrics_port)),
        env={"PROMETHEUS_MULTIPROC_DIR": str(workdir / "multiproc")},
    ) as gateway:
        proc, url = start_prometheus(workdir, f"127.0.0.1:{metrics_port}")
        try:
            yield Stack(gateway, url)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def query(stack: Stack, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": expr} if at is None else {"query": expr, "time": str(at)}
    resp = httpx.get(f"{stack.prometheus}/api/v1/query", params=params, timeout=10)
    body = resp.json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def numbers(result: list[dict[str, Any]]) -> list[float]:
    return [float(r["value"][1]) for r in result if not math.isnan(float(r["value"][1]))]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, variables filled in."""
    board = json.loads(DASHBOARD.read_text())
    found = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            expr = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$tenant", NAMESPACE)
            assert "$" not in expr, f"{panel['title']}: an unknown variable in {expr}"
            found.append((panel["title"], expr))
    return found


def traffic(gateway: GatewayProcess) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=ALICE_KEY, max_retries=0, timeout=60)
    for i in range(4):  # a Claude model name: priced at its list price too (savings)
        client.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=16,
            messages=[{"role": "user", "content": f"dashboard request {i}"}],
        )
    with client.messages.stream(
        model="fast-code", max_tokens=16, messages=[{"role": "user", "content": "stream"}]
    ) as stream:
        stream.until_done()  # time to first token
    gateway.sim.fail_next("500")
    with pytest.raises(anthropic.APIStatusError):  # no fallback: the error reaches the client
        client.messages.create(
            model="reasoning", max_tokens=16, messages=[{"role": "user", "content": "fails"}]
        )
    gateway.sim.fail_next("500")
    client.messages.create(  # documentation falls back to fast-code
        model="documentation", max_tokens=16, messages=[{"role": "user", "content": "falls back"}]
    )


def test_every_dashboard_query_returns_data_for_the_tenant(stack: Stack) -> None:
    """US: a platform engineer opens the dashboard for a tenant and every panel shows numbers."""
    eventually(lambda: query(stack, f'up{{namespace="{NAMESPACE}"}} == 1'), 30, "a first scrape")
    # Twice: a labelled series appears with its first request's value, so a rate sees only
    # what comes after a scrape has seen the series.
    traffic(stack.gateway)
    seen = time.time() + 2
    eventually(
        lambda: query(stack, f'timestamp(up{{namespace="{NAMESPACE}"}}) > {seen}'), 30, "a scrape"
    )
    traffic(stack.gateway)
    queries = dashboard_queries()
    assert len(queries) >= 12

    # Every query at one instant, a few scrapes after the traffic: rates over the last minute
    # then cover it (later, an idle gateway's ratios and quantiles are NaN, as in Grafana).
    at = time.time() + 3
    eventually(
        lambda: query(stack, f'timestamp(up{{namespace="{NAMESPACE}"}}) > {at}'), 30, "a scrape"
    )
    missing = [f"{title}: {expr}" for title, expr in queries if not numbers(query(stack, expr, at))]
    assert not missing, "panels without data:\n" + "\n".join(missing)

    # The tenant variable lists the tenant, from the query the dashboard runs for it.
    board = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in board["templating"]["list"] if v["name"] == "tenant"]
    metric = re.fullmatch(r"label_values\((\w+), namespace\)", variable["definition"])
    assert metric is not None, variable["definition"]
    values = httpx.get(
        f"{stack.prometheus}/api/v1/label/namespace/values",
        params={"match[]": metric.group(1)},
        timeout=10,
    ).json()["data"]
    assert NAMESPACE in values


def test_the_savings_panel_shows_list_price_minus_cost(stack: Stack) -> None:
    """US: a FinOps lead reads what the tenant saved against list price, in dollars."""
    board = json.loads(DASHBOARD.read_text())
    (panel,) = [p for p in board["panels"] if p["title"].startswith("Savings against list price")]
    expr = panel["targets"][0]["expr"].replace("$tenant", NAMESPACE)
    listed = numbers(query(stack, f'sum(tenantgw_list_cost_usd_total{{namespace="{NAMESPACE}"}})'))
    spent = numbers(query(stack, f'sum(tenantgw_cost_usd_total{{namespace="{NAMESPACE}"}})'))
    assert listed
    assert spent
    assert listed[0] > spent[0] > 0
    shown = numbers(query(stack, expr))
    assert shown
    assert shown[0] > 0
