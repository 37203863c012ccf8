"""Prometheus scrapes a gateway on its own metrics port, apart from the API port.

The NetworkPolicy lets the monitoring namespace reach only the metrics port, so everything a
dashboard reads must be there: LiteLLM's series and tenantgw's, summed over every worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest

from e2e.gateway_launch import free_port
from e2e.gateway_process import run_gateway
from e2e.test_gateway_process import ALICE_KEY

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A gateway with two workers and a metrics port: (API URL, metrics URL)."""
    workdir: Path = tmp_path_factory.mktemp("metrics-gateway")
    metrics_port = free_port()
    with run_gateway(
        workdir,
        workers=2,
        args=("--metrics_port", str(metrics_port)),
        env={"PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus")},
    ) as gateway:
        yield gateway.url, f"http://127.0.0.1:{metrics_port}/metrics"


def _sample(text: str, name: str) -> float:
    """Sum of a metric's samples in Prometheus text format (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in "{ "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_the_metrics_port_serves_every_workers_requests(two_workers: tuple[str, str]) -> None:
    url, metrics_url = two_workers
    client = anthropic.Anthropic(base_url=url, api_key=ALICE_KEY, max_retries=0, timeout=60)
    sent = 6
    for i in range(sent):
        client.messages.create(
            model="fast-code",
            max_tokens=16,
            messages=[{"role": "user", "content": f"metrics port request {i}"}],
        )
    text = httpx.get(metrics_url, timeout=10).text
    # tenantgw's own series and LiteLLM's, whichever worker served each request.
    assert _sample(text, "tenantgw_requests_total") == sent, text[-3000:]
    assert "\nlitellm_in_flight_requests" in text, text[-3000:]
