"""Run tenant `eng`'s gateway process (`python -m tenantgw.gateway`) in front of the simulator.

The files are the hand-written ones of e2e/test_gateway_process.py (the shapes the operator
renders); this module lets other tests and benchmarks start such a gateway with their own
settings (body limit, extra environment).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from e2e.gateway_launch import GatewayStartError, launch_gateway
from e2e.provider_sim import SimulatorHandle, start_simulator
from e2e.test_gateway_process import (
    MASTER_KEY,
    PROVIDER_ENV,
    PROVIDER_KEY,
    TENANT,
    write_gateway_files,
)

__all__ = ["GatewayProcess", "GatewayStartError", "run_gateway"]


@dataclass
class GatewayProcess:
    url: str
    sim: SimulatorHandle
    log: Path
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def run_gateway(
    workdir: Path,
    *,
    max_body_bytes: int | None = None,
    env: dict[str, str] | None = None,
    workers: int = 1,
    args: tuple[str, ...] = (),
    litellm_callbacks: tuple[str, ...] = (),
) -> Iterator[GatewayProcess]:
    """A gateway for tenant `eng` with its own simulator, stopped on exit.

    `max_body_bytes` sets $TENANTGW_MAX_BODY_BYTES (else the gateway's default), `workers` its
    uvicorn workers, `args` more flags of `python -m tenantgw.gateway`, `litellm_callbacks`
    LiteLLM's own callbacks added to tenantgw's (e.g. "prometheus", which the operator does not
    render).
    """
    sim_url, sim = start_simulator(api_key=PROVIDER_KEY)
    config_file, rules_file, keys_file = write_gateway_files(workdir, sim_url)
    if litellm_callbacks:
        config = yaml.safe_load(config_file.read_text())
        config["litellm_settings"]["callbacks"] += list(litellm_callbacks)
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    environment = {
        "LITELLM_MASTER_KEY": MASTER_KEY,
        PROVIDER_ENV: PROVIDER_KEY,
        "TENANTGW_TENANT": TENANT,
        "TENANTGW_RULES_FILE": str(rules_file),
        "TENANTGW_KEYS_FILE": str(keys_file),
        **(env or {}),
    }
    if max_body_bytes is not None:
        environment["TENANTGW_MAX_BODY_BYTES"] = str(max_body_bytes)
    try:
        with launch_gateway(
            workdir, config_file, environment, workers=workers, args=args
        ) as launched:
            yield GatewayProcess(
                url=launched.url, sim=sim, log=launched.log, process=launched.process
            )
    finally:
        sim.stop()
