"""count_tokens error per provider type, on requests Claude Code really sends.

    PYTHONPATH=operator:. .venv/bin/python -m e2e.bench.count_tokens_error

1. Capture: the pinned Claude Code CLI runs a short scripted session (`claude -p`, then
   `--continue` runs that Read files of 1k to 14k tokens) straight against the simulator's
   Anthropic Messages API, which records each `/v1/messages` body as Claude Code sent it
   (system prompt, tools, several turns).
2. Measure, per captured request, what the gateway's `/v1/messages/count_tokens` answers against
   what the upstream then reports as input tokens for the same request:
   - openai-compatible: a tenant gateway (e2e/compaction_gateway.py) in front of the
     simulator's chat completions. count_tokens is asked of the gateway; the same body is then
     sent to the gateway's `/v1/messages` (LiteLLM translates it to chat completions) and the
     upstream's `usage.prompt_tokens` is read from the simulator's answer. The simulator counts
     with tiktoken and OpenAI's published framing: this is what OpenAI would report.
   - anthropic: the gateway's count for a Claude target (`tokencount.count_request_tokens`,
     what the route answers for an alias whose target is a Claude model) against the
     simulator's Anthropic `usage.input_tokens`. Anthropic's tokenizer is not public: the
     simulator's number is an estimate (4 characters a token), so this row compares two
     estimates, not the gateway against Anthropic.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from e2e.claude import run_claude, seed_home
from e2e.compaction_gateway import ALIAS, MODEL, compaction_gateway
from e2e.fixtures import DEV, Services, _read_env
from e2e.provider_sim import start_simulator
from e2e.provider_sim.tokens import openai_prompt_tokens
from tenantgw.gateway import tokencount

CLAUDE_MODEL = "claude-sonnet-4-5"


def capture(workdir: Path, runs: int) -> list[dict[str, Any]]:
    """Claude Code's /v1/messages bodies of a short session, as it sent them."""
    _, sim = start_simulator()
    try:
        sim.configure(tool_plan={"tool": "NoSuchTool", "arguments": {}})
        project, home = workdir / "project", workdir / "home"
        project.mkdir(parents=True)
        seed_home(home, [project])
        env = {
            "ANTHROPIC_BASE_URL": sim.root_url,
            "ANTHROPIC_AUTH_TOKEN": "sk-capture",
            "ANTHROPIC_MODEL": CLAUDE_MODEL,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": CLAUDE_MODEL,
        }
        for run in range(runs):
            lines = 40 * 3**run if run < 4 else 600
            path = project / f"module{run}.py"
            path.write_text(
                "".join(
                    f"def f_{run}_{n}(x):\n    return x * {n}  # line {n}\n" for n in range(lines)
                )
            )
            prompt = f'Read module{run}.py [[sim:tool Read {{"file_path": "{path}"}}]]'
            run_claude(
                prompt,
                project=project,
                home=home,
                gateway_env=env,
                model=CLAUDE_MODEL,
                args=["--continue"] if run else [],
                max_retries=0,
                timeout=300,
            )
        return [
            r["body"]
            for r in sim.requests()
            if r["path"] == "/v1/messages" and isinstance(r["body"], dict)
        ]
    finally:
        sim.stop()


def describe(body: dict[str, Any]) -> str:
    return f"{len(body.get('messages') or [])} messages, {len(body.get('tools') or [])} tools"


def measure_openai(services: Services, workdir: Path, bodies: list[dict[str, Any]]) -> list[Any]:
    rows = []
    with compaction_gateway(services, workdir, 1_000_000) as gw:
        head = {"x-api-key": gw.key, "anthropic-version": "2023-06-01"}
        for body in bodies:
            request = {**body, "model": ALIAS, "stream": False, "max_tokens": 1024}
            request.pop("thinking", None)
            count = httpx.post(
                gw.url + "/v1/messages/count_tokens", json=request, headers=head, timeout=60
            )
            count.raise_for_status()
            before = len(gw.sim.requests())
            resp = httpx.post(gw.url + "/v1/messages", json=request, headers=head, timeout=120)
            resp.raise_for_status()
            upstream = gw.sim.requests()[before:]
            sent = [r for r in upstream if r["path"].endswith("/chat/completions")][-1]["body"]
            rows.append(
                (describe(body), count.json()["input_tokens"], openai_prompt_tokens(sent, MODEL))
            )
    return rows


def measure_anthropic(bodies: list[dict[str, Any]]) -> list[Any]:
    rows = []
    _, sim = start_simulator()
    try:
        sim.configure(tool_plan={"tool": "NoSuchTool", "arguments": {}})
        head = {"x-api-key": "sk-bench", "anthropic-version": "2023-06-01"}
        for body in bodies:
            request = {**body, "model": CLAUDE_MODEL, "stream": False}
            resp = httpx.post(sim.root_url + "/v1/messages", json=request, headers=head, timeout=60)
            resp.raise_for_status()
            usage = resp.json()["usage"]
            upstream = (
                usage["input_tokens"]
                + usage["cache_read_input_tokens"]
                + usage["cache_creation_input_tokens"]
            )
            rows.append(
                (describe(body), tokencount.count_request_tokens(body, CLAUDE_MODEL), upstream)
            )
    finally:
        sim.stop()
    return rows


def table(kind: str, rows: list[Any]) -> str:
    errors = [(counted - upstream) / upstream for _, counted, upstream in rows]
    out = [f"{kind}: {len(rows)} requests"]
    for (what, counted, upstream), error in zip(rows, errors, strict=True):
        out.append(f"  {what:<26} counted {counted:>7} upstream {upstream:>7} error {error:+.1%}")
    out.append(
        f"  mean error {statistics.mean(errors):+.1%}, mean |error| "
        f"{statistics.mean(abs(e) for e in errors):.1%}, worst {max(errors, key=abs):+.1%}"
    )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="claude -p runs to capture")
    args = parser.parse_args(argv)
    env = _read_env(DEV / "services.env")
    services = Services(
        postgres_dsn=env["TENANTGW_POSTGRES_DSN"], redis_url=env["TENANTGW_REDIS_URL"]
    )
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="count-tokens-") as tmp:
        bodies = capture(Path(tmp) / "capture", args.runs)
        print(f"captured {len(bodies)} Claude Code requests", file=sys.stderr)
        main_turns = [b for b in bodies if len(b.get("tools") or []) > 0]
        openai_rows = measure_openai(services, Path(tmp) / "gateway", main_turns)
        anthropic_rows = measure_anthropic(main_turns)
    print(table("openai-compatible (tiktoken counts, as OpenAI reports)", openai_rows))
    print(
        table(
            "anthropic (the simulator's estimate: Anthropic's tokenizer is not public)",
            anthropic_rows,
        )
    )
    print(f"({time.time() - started:.0f} s)")
    print(json.dumps({"openai": openai_rows, "anthropic": anthropic_rows}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
