"""Start `python -m tenantgw.gateway` from files on disk, wait until it is ready, stop it.

The one launcher of the end-to-end tests that run a gateway without the operator: each test
writes its config.yaml, rules and keys, and hands the environment its pod would get. The
gateway runs as a local process (`launch_gateway`) or from its image as a container
(`launch_gateway_container`, the rendered pod spec's own command, env and mounts).
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from e2e.containers import give_to, remove_container, start_container
from e2e.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 120.0


class GatewayStartError(RuntimeError):
    """The gateway process exited or did not become ready; the message holds its log's tail."""


@dataclass
class LaunchedGateway:
    url: str
    log: Path
    process: subprocess.Popen[bytes]


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
    with _stopped_at_exit(proc):
        url = f"{'https' if ca is not None else 'http'}://127.0.0.1:{port}"
        wait_ready(proc, url, log, ca)
        yield LaunchedGateway(url=url, log=log, process=proc)


@contextlib.contextmanager
def launch_gateway_container(
    image: str,
    workdir: Path,
    pod: Mapping[str, Any],
    mounts: Mapping[str, Path],
    env: Mapping[str, str],
) -> Iterator[LaunchedGateway]:
    """The gateway IMAGE run as the rendered `pod`'s container, in the foreground of podman.

    The container gets the pod's command, env (`env`, secrets resolved) and volumes (`mounts`:
    mount path -> local directory, handed to the pod's user as fsGroup would), a read-only root
    filesystem and the pod's securityContext (e2e.containers.podman_run_argv). On the host
    network, the rendered `--host 0.0.0.0 --port 4000 --metrics_port 9464` become loopback and
    free ports; every other argument is the pod's.
    """
    container = pod["containers"][0]
    security = pod.get("securityContext", {})
    for directory in mounts.values():
        give_to(directory, int(security.get("runAsUser", 0)), int(security.get("fsGroup", 0)))
    port = free_port()
    replace = {"--host": "127.0.0.1", "--port": str(port), "--metrics_port": str(free_port())}
    args = list(container["args"])
    for option, value in replace.items():
        if option in args:
            args[args.index(option) + 1] = value
    name, proc, log = start_container(
        image, workdir, role="gateway", pod=pod, container=container, env=env, mounts=mounts,
        args=args,
    )  # fmt: skip
    try:
        with _stopped_at_exit(proc):
            url = f"http://127.0.0.1:{port}"
            wait_ready(proc, url, log)
            yield LaunchedGateway(url=url, log=log, process=proc)
    finally:
        remove_container(name)


@contextlib.contextmanager
def _stopped_at_exit(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """SIGTERM at exit (podman passes it on to the container), SIGKILL after 15 s."""
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
