"""Run tenant `eng`'s gateway process (`python -m tenantgw.gateway`) in front of the simulator.

The files are the hand-written ones of e2e/test_gateway_process.py (the shapes the operator
renders); this module lets other tests and benchmarks start such a gateway with their own
settings (body limit, extra environment).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from e2e.provider_sim import SimulatorHandle, start_simulator
from e2e.test_gateway_process import (
    MASTER_KEY,
    PROVIDER_ENV,
    PROVIDER_KEY,
    ROOT,
    STARTUP_TIMEOUT,
    TENANT,
    write_gateway_files,
)


class GatewayStartError(RuntimeError):
    """The gateway process exited or did not become ready; the message holds its log's tail."""


@dataclass
class GatewayProcess:
    url: str
    sim: SimulatorHandle
    log: Path
    process: subprocess.Popen[bytes]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:]
            raise GatewayStartError(f"gateway exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health/readiness", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-4000:]
    raise GatewayStartError(f"gateway not ready after {STARTUP_TIMEOUT:.0f} s:\n{tail}")


@contextlib.contextmanager
def run_gateway(
    workdir: Path,
    *,
    max_body_bytes: int | None = None,
    env: dict[str, str] | None = None,
    workers: int = 1,
    args: tuple[str, ...] = (),
) -> Iterator[GatewayProcess]:
    """A gateway for tenant `eng` with its own simulator, stopped on exit.

    `max_body_bytes` sets $TENANTGW_MAX_BODY_BYTES (else the gateway's default), `workers` its
    uvicorn workers, `args` more flags of `python -m tenantgw.gateway`.
    """
    sim_url, sim = start_simulator(api_key=PROVIDER_KEY)
    config_file, rules_file, keys_file = write_gateway_files(workdir, sim_url)
    port = _free_port()
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(workdir),
        "PYTHONPATH": str(ROOT / "operator"),
        "LITELLM_MASTER_KEY": MASTER_KEY,
        PROVIDER_ENV: PROVIDER_KEY,
        "TENANTGW_TENANT": TENANT,
        "TENANTGW_RULES_FILE": str(rules_file),
        "TENANTGW_KEYS_FILE": str(keys_file),
        "NO_PROXY": "*",
        **(env or {}),
    }
    if max_body_bytes is not None:
        environment["TENANTGW_MAX_BODY_BYTES"] = str(max_body_bytes)
    log = workdir / "gateway.log"
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
        str(workers),
        *args,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=environment, cwd=workdir, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url, log)
        yield GatewayProcess(url=url, sim=sim, log=log, process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        sim.stop()
