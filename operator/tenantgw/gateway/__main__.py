"""`python -m tenantgw.gateway --config F --host H --port P --num_workers N`: run a gateway.

With `--ssl_certfile_path` and `--ssl_keyfile_path` (LiteLLM's own flags) it serves HTTPS: the
pair is loaded once before anything starts, so a bad certificate or key stops the process
with a message naming the flag instead of a worker crash.

Takes the flags the gateway container passes (the same as `litellm`'s), prepares the
environment the way `litellm --config` does for its workers, and serves
`tenantgw.gateway.app:create_app` (LiteLLM's proxy inside tenantgw's middleware) with uvicorn.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import ssl
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tenantgw import jsonlog
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
    parser.add_argument("--ssl_certfile_path", default=None, help="PEM certificate chain: HTTPS")
    parser.add_argument("--ssl_keyfile_path", default=None, help="PEM private key of the chain")
    args = parser.parse_args(argv)
    if args.num_workers < 1:
        parser.error("--num_workers must be at least 1")
    if not Path(args.config).is_file():
        parser.error(f"--config {args.config}: no such file")
    problem = tls_problem(args.ssl_certfile_path, args.ssl_keyfile_path)
    if problem:
        parser.error(problem)
    return args


def tls_problem(certfile: str | None, keyfile: str | None) -> str | None:
    """Why the certificate and key cannot serve HTTPS, None when they can (or neither is set)."""
    if certfile is None and keyfile is None:
        return None
    if certfile is None or keyfile is None:
        return "--ssl_certfile_path and --ssl_keyfile_path go together: set both or neither"
    for flag, path in (("--ssl_certfile_path", certfile), ("--ssl_keyfile_path", keyfile)):
        if not Path(path).is_file():
            return f"{flag} {path}: no such file"
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError, ValueError) as exc:
        return (
            f"--ssl_certfile_path {certfile} / --ssl_keyfile_path {keyfile}: not a PEM "
            f"certificate chain and its private key ({exc})"
        )
    return None


def prepare_environment(config: str, num_workers: int) -> None:
    """The environment every worker inherits (what `litellm --config` sets up before uvicorn)."""
    for name, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if jsonlog.log_format() == "json":
        # LiteLLM's own JSON mode (read when it is imported): its exception hooks and the
        # code paths that log differently for JSON; the lines get tenantgw's schema
        # (app.litellm_logs_as_json).
        os.environ["JSON_LOGS"] = "True"
        os.environ.setdefault("LITELLM_DONT_SHOW_FEEDBACK_BOX", "true")
    config_file = Path(config).absolute()  # not resolved: `modelsync` follows the kubelet's swaps
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


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's loggers in tenantgw's JSON lines (its access log is off: ours is `access`)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "tenantgw.jsonlog.JsonFormatter"}},
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["json"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
        },
    }


def _uvicorn_options(
    host: str,
    port: int,
    num_workers: int,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> dict[str, Any]:
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "workers": num_workers,
        "factory": True,
        "server_header": False,
        # One access line per request, the gateway's own (tenantgw.gateway.access).
        "access_log": False,
        # After SIGTERM and the drain delay (`drain`): how long requests in flight may run on
        # before they are cut and the worker shuts down.
        "timeout_graceful_shutdown": stream_grace_seconds(),
    }
    if certfile and keyfile:
        options["ssl_certfile"] = certfile
        options["ssl_keyfile"] = keyfile
    # The C event loop and HTTP parser (both in the gateway's lock file), as uvicorn's
    # `standard` extra brings them; without them uvicorn falls back to asyncio's loop and h11.
    for option, module in (("loop", "uvloop"), ("http", "httptools")):
        if importlib.util.find_spec(module) is not None:
            options[option] = module
    level = os.environ.get("LITELLM_LOG")
    if level and level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        options["log_level"] = level.lower()
    if jsonlog.log_format() == "json":
        options["log_config"] = uvicorn_log_config(str(options.get("log_level", "info")).upper())
    return options


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    prepare_environment(args.config, args.num_workers)
    if args.metrics_port:
        start_metrics_server(args.host, args.metrics_port)
    import uvicorn

    options = _uvicorn_options(
        args.host, args.port, args.num_workers, args.ssl_certfile_path, args.ssl_keyfile_path
    )
    uvicorn.run(APP_FACTORY, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
