"""p99 of small requests while 10 MB prompts arrive, and count_tokens against the simulator.

    PYTHONPATH=operator:. .venv/bin/python -m e2e.bench.pii_load [--seconds 20] [--operator DIR]

Starts tenant `eng`'s gateway process (e2e/gateway_process.py, PII mode `redact`) in front of
the provider simulator, then, bounded in time and requests:

1. small `/v1/messages` requests at concurrency 4 for `--seconds`: p50 / p99 latency;
2. the same while one client keeps posting 10 MB prompts (at most `--big` of them);
3. count_tokens for a set of prompts against the input tokens the simulator reports when the
   same prompt is served (the simulator counts one token per four characters, plus one).

`--operator DIR` runs the gateway from another checkout's `operator/` (to compare with it).
Prints a Markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from e2e.gateway_process import run_gateway
from e2e.test_gateway_process import ALICE_KEY

HEADERS = {"x-api-key": ALICE_KEY, "anthropic-version": "2023-06-01"}
SMALL = {
    "model": "fast-code",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hello, small request, mail a@b.io"}],
}


def big_body(index: int) -> dict[str, Any]:
    line = "2024-05-01 12:00:00 worker-7 processed batch 1234 in 87 ms, queue depth 3\n"
    text = line * (10_000_000 // len(line)) + f"big-{index} contact oncall@corp.example"
    return {"model": "fast-code", "max_tokens": 16, "messages": [{"role": "user", "content": text}]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def small_load(client: httpx.AsyncClient, seconds: float, concurrency: int) -> list[float]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            response = await client.post("/v1/messages", json=SMALL, headers=HEADERS)
            latencies.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def big_load(client: httpx.AsyncClient, stop: asyncio.Event, limit: int) -> list[int]:
    statuses: list[int] = []
    bodies = [big_body(i) for i in range(2)]
    while not stop.is_set() and len(statuses) < limit:
        response = await client.post(
            "/v1/messages", json=bodies[len(statuses) % 2], headers=HEADERS
        )
        statuses.append(response.status_code)
    return statuses


async def latency_phases(url: str, seconds: float, big: int) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        await small_load(client, 2, 2)  # warm up
        quiet = await small_load(client, seconds, 4)
        stop = asyncio.Event()
        big_task = asyncio.create_task(big_load(client, stop, big))
        await asyncio.sleep(1)
        loaded = await small_load(client, seconds, 4)
        stop.set()
        statuses = await big_task
    for name, values in (("small requests alone", quiet), ("while 10 MB prompts arrive", loaded)):
        rows.append(
            (
                name,
                f"n={len(values)} p50={statistics.median(values):.0f} ms "
                f"p99={percentile(values, 0.99):.0f} ms max={max(values):.0f} ms",
            )
        )
    rows.append(("10 MB prompts sent (statuses)", f"{len(statuses)}: {sorted(set(statuses))}"))
    return rows


COUNT_PROMPTS: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "Hello, how are you today?"}]},
    {
        "system": "You are Claude Code, an interactive CLI tool that helps with software tasks.",
        "messages": [
            {"role": "user", "content": "Refactor utils.py so that parse_date handles ISO weeks."}
        ],
    },
    {
        "messages": [
            {
                "role": "user",
                "content": "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
                * 200,
            }
        ]
    },
    {
        "messages": [
            {
                "role": "user",
                "content": (
                    "The quick brown fox jumps over the lazy dog. Packing boxes with five dozen "
                    "liquor jugs is hard work for anyone. "
                )
                * 300,
            }
        ]
    },
]


def count_error(url: str) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    errors: list[float] = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for index, prompt in enumerate(COUNT_PROMPTS):
            body = {"model": "fast-code", **prompt}
            counted = client.post("/v1/messages/count_tokens", json=body, headers=HEADERS)
            counted.raise_for_status()
            served = client.post("/v1/messages", json={**body, "max_tokens": 8}, headers=HEADERS)
            served.raise_for_status()
            ours = counted.json()["input_tokens"]
            theirs = served.json()["usage"]["input_tokens"]
            errors.append((ours - theirs) / theirs)
            rows.append((f"prompt {index + 1}", f"count_tokens {ours}, simulator {theirs}"))
    rows.append(
        (
            "relative error vs simulator",
            f"mean {statistics.mean(errors):+.1%}, worst {max(errors, key=abs):+.1%}",
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--big", type=int, default=8, help="10 MB prompts at most")
    parser.add_argument("--operator", type=Path, help="operator/ directory to run instead")
    args = parser.parse_args()
    env = {"PYTHONPATH": str(args.operator.resolve())} if args.operator else None
    with (
        tempfile.TemporaryDirectory(prefix="tgw-pii-load-") as directory,
        run_gateway(Path(directory), max_body_bytes=12 * 1024 * 1024, env=env) as gw,
    ):
        rows = asyncio.run(latency_phases(gw.url, args.seconds, args.big))
        rows += count_error(gw.url)
    print("| measure | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
