"""Prometheus scrapes a gateway on its own metrics port, apart from the API port.

The NetworkPolicy lets the monitoring namespace reach only the metrics port, so everything a
dashboard reads must be there: LiteLLM's series and tenantgw's, summed over every worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from e2e.provider_sim import start_simulator
from e2e.test_gateway_process import (
    ALICE_KEY,
    MASTER_KEY,
    PROVIDER_ENV,
    PROVIDER_KEY,
    ROOT,
    TENANT,
    _free_port,
    _wait_ready,
    write_gateway_files,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A gateway with two workers and a metrics port: (API URL, metrics URL)."""
    sim_url, sim = start_simulator(api_key=PROVIDER_KEY)
    workdir = tmp_path_factory.mktemp("metrics-gateway")
    config_file, rules_file, keys_file = write_gateway_files(workdir, sim_url)
    port, metrics_port = _free_port(), _free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(workdir),
        "PYTHONPATH": str(ROOT / "operator"),
        "LITELLM_MASTER_KEY": MASTER_KEY,
        PROVIDER_ENV: PROVIDER_KEY,
        "TENANTGW_TENANT": TENANT,
        "TENANTGW_RULES_FILE": str(rules_file),
        "TENANTGW_KEYS_FILE": str(keys_file),
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus"),
        "NO_PROXY": "*",
    }
    argv = [
        sys.executable,
        "-m",
        "tenantgw.gateway",
        "--config",
        str(config_file),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "2",
        "--metrics_port",
        str(metrics_port),
    ]
    log = workdir / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url, log)
        yield url, f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        sim.stop()


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
