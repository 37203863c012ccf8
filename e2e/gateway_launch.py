"""Start `python -m tenantgw.gateway` from files on disk, wait until it is ready, stop it.

The one launcher of the end-to-end tests that run a gateway process without the operator: each
test writes its config.yaml, rules and keys, and hands the environment its pod would get.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 120.0


class GatewayStartError(RuntimeError):
    """The gateway process exited or did not become ready; the message holds its log's tail."""


@dataclass
class LaunchedGateway:
    url: str
    log: Path
    process: subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, ca: Path | None = None) -> None:
    """Until /health/readiness answers 200; GatewayStartError with the log's tail otherwise.

    An https `url` is checked against the CA certificate `ca`.
    """
    deadline = time.monotonic() + STARTUP_TIMEOUT
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca) if ca else True
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:]
            raise GatewayStartError(f"gateway exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health/readiness", timeout=2, verify=verify).status_code == 200:
                return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-4000:]
    raise GatewayStartError(f"gateway not ready after {STARTUP_TIMEOUT:.0f} s:\n{tail}")


@contextlib.contextmanager
def launch_gateway(
    workdir: Path,
    config_file: Path,
    env: Mapping[str, str],
    *,
    workers: int = 1,
    args: tuple[str, ...] = (),
    ca: Path | None = None,
) -> Iterator[LaunchedGateway]:
    """A gateway process on a free loopback port with `env` (plus PATH, HOME, PYTHONPATH).

    With `ca` the gateway serves HTTPS (`args` carry its certificate and key) and the URL is
    https://127.0.0.1:<port>, checked against that CA certificate.
    """
    port = free_port()
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(workdir),
        "PYTHONPATH": str(ROOT / "operator"),
        "NO_PROXY": "*",
        **env,
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
        str(workers),
        *args,
    ]
    log = workdir / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=environment, cwd=workdir, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"{'https' if ca is not None else 'http'}://127.0.0.1:{port}"
    try:
        wait_ready(proc, url, log, ca)
        yield LaunchedGateway(url=url, log=log, process=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
