"""`python -m tenantgw.gateway --config F --host H --port P --num_workers N`: run a gateway.

Takes the flags the gateway container passes (the same as `litellm`'s), prepares the
environment the way `litellm --config` does for its workers, and serves
`tenantgw.gateway.app:create_app` (LiteLLM's proxy inside tenantgw's middleware) with uvicorn.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tenantgw.gateway.app import CONFIG_ENV, configure_logging
from tenantgw.gateway.drain import stream_grace_seconds

APP_FACTORY = "tenantgw.gateway.app:create_app"
OFFLINE_DEFAULTS = {
    # No fetches of LiteLLM's cost map and Anthropic beta headers from GitHub at start-up.
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
}
PROMETHEUS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The container's flags: exactly `litellm`'s --config, --host, --port, --num_workers."""
    parser = argparse.ArgumentParser(
        prog="python -m tenantgw.gateway",
        description="Serve a tenantgw gateway: LiteLLM's proxy with the tenantgw plugins.",
        allow_abbrev=False,
    )
    parser.add_argument("--config", required=True, help="LiteLLM config.yaml")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")  # noqa: S104
    parser.add_argument("--port", type=int, default=4000, help="port to listen on")
    parser.add_argument("--num_workers", type=int, default=1, help="worker processes")
    parser.add_argument(
        "--metrics_port",
        type=int,
        default=0,
        help="serve Prometheus metrics on this port too (0: only /metrics on --port)",
    )
    args = parser.parse_args(argv)
    if args.num_workers < 1:
        parser.error("--num_workers must be at least 1")
    if not Path(args.config).is_file():
        parser.error(f"--config {args.config}: no such file")
    return args


def prepare_environment(config: str, num_workers: int) -> None:
    """The environment every worker inherits (what `litellm --config` sets up before uvicorn)."""
    for name, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(name, value)
    config_file = Path(config).resolve()
    os.environ[CONFIG_ENV] = str(config_file)
    os.environ["NUM_WORKERS"] = str(num_workers)
    if num_workers > 1:
        # Workers write their samples to files that /metrics (of any worker, and of the
        # metrics port) reads back.
        directory = Path(
            os.environ.get(PROMETHEUS_DIR_ENV)
            or Path(tempfile.gettempdir()) / "litellm_prometheus_multiproc"
        )
        if directory.exists():
            shutil.rmtree(directory)  # samples of processes from before this start
        directory.mkdir(parents=True, exist_ok=True)
        os.environ[PROMETHEUS_DIR_ENV] = str(directory)


def start_metrics_server(host: str, port: int) -> None:
    """Serve every worker's metrics on `port`, apart from the API port.

    The NetworkPolicy lets the monitoring namespace reach this port only. With several workers
    the samples come from $PROMETHEUS_MULTIPROC_DIR; with one, the worker runs in this process
    and its registry is the default one.
    """
    import prometheus_client

    from tenantgw.gateway.metrics import scrape_registry

    prometheus_client.start_http_server(port, addr=host, registry=scrape_registry())


def _uvicorn_options(host: str, port: int, num_workers: int) -> dict[str, Any]:
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "workers": num_workers,
        "factory": True,
        "server_header": False,
        # After SIGTERM and the drain delay (`drain`): how long requests in flight may run on
        # before they are cut and the worker shuts down.
        "timeout_graceful_shutdown": stream_grace_seconds(),
    }
    try:
        import uvloop  # noqa: F401

        options["loop"] = "uvloop"
    except ImportError:
        pass
    level = os.environ.get("LITELLM_LOG")
    if level and level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        options["log_level"] = level.lower()
    return options


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    prepare_environment(args.config, args.num_workers)
    if args.metrics_port:
        start_metrics_server(args.host, args.metrics_port)
    import uvicorn

    uvicorn.run(APP_FACTORY, **_uvicorn_options(args.host, args.port, args.num_workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
