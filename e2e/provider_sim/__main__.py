"""``python -m e2e.provider_sim --port 18080``: serve the provider simulator until interrupted.

Prints ``provider-sim listening on http://HOST:PORT/v1`` (with the bound port when ``--port 0``)
on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal

from e2e.provider_sim.server import SimConfig, Simulator, serve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m e2e.provider_sim", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18080, help="0 picks a free port")
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before any response")
    p.add_argument("--ttft-ms", type=float, default=0.0, help="delay before the first token")
    p.add_argument("--token-delay-ms", type=float, default=0.0, help="delay between tokens")
    p.add_argument("--reply", default=None, help='fixed reply text (default "Hello from <model>")')
    p.add_argument("--fail-next", default="", help='comma-separated faults, e.g. "500,429,timeout"')
    p.add_argument("--api-key", default=None, help="require exactly this key (default: any)")
    p.add_argument("--timeout-s", type=float, default=300.0, help='how long "timeout" hangs')
    p.add_argument("--models", default=None, help="comma-separated ids listed by GET /v1/models")
    p.add_argument(
        "--tool-plan",
        default=None,
        metavar="JSON",
        help='call only this tool: {"tool": "Read", "arguments": {"file_path": "/x"}}',
    )
    p.add_argument(
        "--judge-models",
        default=None,
        help="comma-separated models answered as a safety classifier (default sim-judge)",
    )
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    config = SimConfig(
        latency_ms=args.latency_ms,
        ttft_ms=args.ttft_ms,
        token_delay_ms=args.token_delay_ms,
        reply=args.reply,
        fail_next=[f.strip() for f in args.fail_next.split(",") if f.strip()],
        api_key=args.api_key,
        timeout_s=args.timeout_s,
    )
    if args.models:
        config.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.judge_models:
        config.judge_models = [m.strip() for m in args.judge_models.split(",") if m.strip()]
    if args.tool_plan:
        config.update({"tool_plan": json.loads(args.tool_plan)})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(Simulator(config), args.host, args.port) as (host, port):
        print(f"provider-sim listening on http://{host}:{port}/v1", flush=True)
        await stop.wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
