"""Load generator of the gateway benchmark: a fixed number of requests at a fixed concurrency.

    python -m e2e.bench.load --url http://127.0.0.1:4000 --key sk-... --model fast-code \\
        --concurrency 32 --requests 640 --stream

asyncio and aiohttp, on loopback. `concurrency` workers share one request counter, so exactly
`requests` are sent unless the run's deadline passes first; each request waits at most
`timeout`. Per request it records the latency (send to last byte) and, for streams, the time to
the first token (the first chunk that carries text), and whether the answer was complete: a
non-200 status, a stream without its end marker or with an error event, or an empty answer is
an error, named by kind.

The client raises its own limits: aiohttp allows 100 connections per session by default (httpx
too), which would quietly cap a run at 100 in flight; here the connector allows `concurrency`,
and `raise_fd_limit()` lifts the process's open-file limit to its hard limit.

The statistics are pure functions (`RunResult`, `added_latency`, `ratio`), unit tested in
tests/unit/test_bench_load.py; nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from e2e.bench.report import Summary, summarize

try:  # LiteLLM depends on orjson; the standard library is the fallback
    import orjson

    def _loads(data: bytes) -> Any:
        return orjson.loads(data)

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value)

except ImportError:  # pragma: no cover

    def _loads(data: bytes) -> Any:
        return json.loads(data)

    def _dumps(value: Any) -> bytes:
        return json.dumps(value).encode()


Api = Literal["chat", "messages"]
PERCENTILES = ("p50", "p95", "p99")
ANTHROPIC_VERSION = "2023-06-01"
# A small code-review request: long enough that PII scanning and JSON handling have something
# to do, with no PII in it (the common case).
DEFAULT_PROMPT = (
    "Review this Python function and suggest one improvement.\n\n"
    "def merge_intervals(intervals):\n"
    "    intervals = sorted(intervals, key=lambda pair: pair[0])\n"
    "    merged = []\n"
    "    for start, end in intervals:\n"
    "        if merged and start <= merged[-1][1]:\n"
    "            merged[-1][1] = max(merged[-1][1], end)\n"
    "        else:\n"
    "            merged.append([start, end])\n"
    "    return merged\n\n"
    "Explain the complexity of the function, say whether it mutates its input, and keep the "
    "answer short: two or three sentences are enough for this review."
)


# --------------------------------------------------------------------------- what to send


@dataclass(frozen=True)
class Endpoint:
    """Where a run sends its requests: a base URL (no /v1), a key and a model name."""

    name: str
    base_url: str
    api_key: str
    model: str


@dataclass(frozen=True)
class Workload:
    """One run: API, streaming or not, concurrency, request count and time limits (seconds)."""

    api: Api = "chat"
    stream: bool = False
    concurrency: int = 1
    requests: int = 100
    prompt: str = DEFAULT_PROMPT
    max_tokens: int = 256
    timeout: float = 120.0
    """Longest a single request may take."""
    deadline: float = 300.0
    """No request is started after this many seconds of the run."""

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.requests < 1:
            raise ValueError("concurrency and requests must be at least 1")

    @property
    def label(self) -> str:
        return f"{self.api} {'stream' if self.stream else 'non-stream'} c={self.concurrency}"


def request_path(api: Api) -> str:
    return "/v1/messages" if api == "messages" else "/v1/chat/completions"


def request_body(endpoint: Endpoint, workload: Workload) -> bytes:
    """The JSON body every request of the run sends."""
    body: dict[str, Any] = {
        "model": endpoint.model,
        "max_tokens": workload.max_tokens,
        "messages": [{"role": "user", "content": workload.prompt}],
    }
    if workload.stream:
        body["stream"] = True
    return _dumps(body)


def request_headers(endpoint: Endpoint, api: Api) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if api == "messages":
        headers["x-api-key"] = endpoint.api_key
        headers["anthropic-version"] = ANTHROPIC_VERSION
    else:
        headers["authorization"] = f"Bearer {endpoint.api_key}"
    return headers


# --------------------------------------------------------------------------- what came back


class StreamWatcher:
    """Reads a server-sent event stream line by line: first token, end marker, error events.

    Chat completions: the first `data:` chunk whose `choices[0].delta.content` is non-empty is
    the first token; `data: [DONE]` ends the stream. Anthropic messages: the first
    `content_block_delta` with text (or tool input) is the first token; `message_stop` ends it.
    An `error` payload or event marks the stream failed.
    """

    def __init__(self, api: Api) -> None:
        self.api = api
        self.first_token: float | None = None
        self.done = False
        self.error: str | None = None

    def feed(self, line: bytes, now: float) -> None:
        line = line.strip()
        if line.startswith(b"event:"):
            if line[6:].strip() == b"error":
                self.error = self.error or "stream error event"
            return
        if not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            event = _loads(payload)
        except ValueError:
            self.error = self.error or "malformed stream chunk"
            return
        if not isinstance(event, dict):
            return
        if "error" in event and event.get("type") in (None, "error"):
            self.error = self.error or "stream error event"
            return
        if self.api == "messages":
            kind = event.get("type")
            if kind == "message_stop":
                self.done = True
            elif kind == "content_block_delta" and self.first_token is None:
                delta = event.get("delta") or {}
                if delta.get("text") or delta.get("partial_json"):
                    self.first_token = now
            return
        if self.first_token is None:
            choices = event.get("choices") or []
            delta = (choices[0].get("delta") or {}) if choices else {}
            if delta.get("content") or delta.get("tool_calls"):
                self.first_token = now


def answer_problem(api: Api, body: bytes) -> str | None:
    """What is wrong with a non-streamed answer, None when it carries text."""
    try:
        answer = _loads(body)
    except ValueError:
        return "malformed answer"
    try:
        if api == "messages":
            text = "".join(b.get("text") or "" for b in answer["content"])
        else:
            text = answer["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        return "answer without content"
    return None if text else "empty answer"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Sample:
    """One request: when it started (s into the run), latency, TTFT (streams), outcome."""

    start: float
    latency: float
    ttft: float | None
    status: int
    """HTTP status; 0 when no response arrived."""
    error: str | None = None
    """None for a complete answer, else the kind of failure."""


@dataclass
class RunResult:
    """The samples of one run and how long it took, from the first send to the last answer."""

    endpoint: str
    workload: Workload
    samples: list[Sample] = field(default_factory=list)
    wall: float = 0.0
    not_sent: int = 0
    """Requests the deadline kept from being sent."""

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None]

    @property
    def errors(self) -> Counter[str]:
        return Counter(s.error for s in self.samples if s.error is not None)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values()) + self.not_sent

    @property
    def rps(self) -> float:
        """Completed requests per second of wall time."""
        return len(self.ok) / self.wall if self.wall > 0 else 0.0

    def latency(self) -> Summary | None:
        return summarize(s.latency for s in self.ok)

    def ttft(self) -> Summary | None:
        return summarize(s.ttft for s in self.ok if s.ttft is not None)

    def as_dict(self) -> dict[str, Any]:
        latency, ttft = self.latency(), self.ttft()
        return {
            "endpoint": self.endpoint,
            "workload": {k: v for k, v in vars(self.workload).items() if k != "prompt"},
            "requests": len(self.samples),
            "ok": len(self.ok),
            "errors": dict(self.errors),
            "not_sent": self.not_sent,
            "wall_s": self.wall,
            "rps": self.rps,
            "latency_s": latency.as_dict() if latency else None,
            "ttft_s": ttft.as_dict() if ttft else None,
        }


def merge(results: Iterable[RunResult]) -> RunResult:
    """Several runs of one endpoint and workload (e.g. interleaved rounds) as one result.

    Samples are pooled and wall times added, so RPS stays completed requests per second spent.
    """
    runs = list(results)
    if not runs:
        raise ValueError("nothing to merge")
    first = runs[0]
    if any(r.endpoint != first.endpoint or r.workload.label != first.workload.label for r in runs):
        raise ValueError("only runs of one endpoint and workload can be merged")
    return RunResult(
        endpoint=first.endpoint,
        workload=first.workload,
        samples=[s for r in runs for s in r.samples],
        wall=sum(r.wall for r in runs),
        not_sent=sum(r.not_sent for r in runs),
    )


def added_latency(proxy: Summary | None, direct: Summary | None) -> dict[str, float] | None:
    """What a proxy adds over a direct call: its p50/p95/p99 minus direct's same percentile.

    Percentile by percentile, not request by request: the two runs are different requests.
    """
    if proxy is None or direct is None:
        return None
    return {p: getattr(proxy, p) - getattr(direct, p) for p in PERCENTILES}


def ratio(value: float | None, baseline: float | None) -> float | None:
    """value / baseline; None when either is unknown or the baseline is not positive."""
    if value is None or baseline is None or baseline <= 0:
        return None
    return value / baseline


# --------------------------------------------------------------------------- sending


def raise_fd_limit() -> int:
    """Lift the soft open-file limit to the hard one (a run holds a socket per request)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
    return soft


def new_session(concurrency: int, timeout: float) -> aiohttp.ClientSession:
    """A session whose connector allows `concurrency` connections (aiohttp's default: 100)."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0, force_close=False)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout),
        auto_decompress=False,
    )


async def send_one(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    workload: Workload,
    t0: float,
) -> Sample:
    """Send one request and read its whole answer; never raises for a failed request."""
    clock = time.perf_counter
    start = clock()
    ttft: float | None = None
    status = 0
    error: str | None = None
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            status = resp.status
            if status != 200:
                await resp.read()
                error = f"http {status}"
            elif workload.stream:
                watcher = StreamWatcher(workload.api)
                async for line in resp.content:
                    watcher.feed(line, clock())
                if watcher.first_token is not None:
                    ttft = watcher.first_token - start
                if watcher.error:
                    error = watcher.error
                elif not watcher.done:
                    error = "incomplete stream"
                elif watcher.first_token is None:
                    error = "stream without text"
            else:
                error = answer_problem(workload.api, await resp.read())
    except TimeoutError:
        error = "timeout"
    except aiohttp.ClientError as exc:
        error = f"connection: {type(exc).__name__}"
    except OSError as exc:
        error = f"os: {type(exc).__name__}"
    end = clock()
    return Sample(start=start - t0, latency=end - start, ttft=ttft, status=status, error=error)


async def run_load(
    endpoint: Endpoint, workload: Workload, session: aiohttp.ClientSession | None = None
) -> RunResult:
    """Send `workload.requests` requests with `workload.concurrency` in flight."""
    own = session is None
    if session is None:
        session = new_session(workload.concurrency, workload.timeout)
    url = endpoint.base_url.rstrip("/") + request_path(workload.api)
    body = request_body(endpoint, workload)
    headers = request_headers(endpoint, workload.api)
    samples: list[Sample] = []
    issued = 0
    t0 = time.perf_counter()
    stop_at = t0 + workload.deadline

    async def worker() -> None:
        nonlocal issued
        while issued < workload.requests and time.perf_counter() < stop_at:
            issued += 1
            samples.append(await send_one(session, url, body, headers, workload, t0))

    try:
        await asyncio.gather(
            *(worker() for _ in range(min(workload.concurrency, workload.requests)))
        )
    finally:
        wall = time.perf_counter() - t0
        if own:
            await session.close()
    return RunResult(
        endpoint=endpoint.name,
        workload=workload,
        samples=samples,
        wall=wall,
        not_sent=workload.requests - issued,
    )


# --------------------------------------------------------------------------- command line


def describe(result: RunResult) -> str:
    """One line for a terminal: RPS, latency and TTFT percentiles in ms, errors."""

    def ms(summary: Summary | None) -> str:
        if summary is None:
            return "n/a"
        return "/".join(f"{getattr(summary, p) * 1000:.1f}" for p in PERCENTILES)

    errors = ", ".join(f"{n} {kind}" for kind, n in result.errors.most_common()) or "none"
    if result.not_sent:
        errors += f"; {result.not_sent} not sent (deadline)"
    return (
        f"{result.endpoint:<9} {result.workload.label:<26} {result.rps:8.1f} req/s  "
        f"latency p50/p95/p99 {ms(result.latency())} ms  ttft {ms(result.ttft())} ms  "
        f"errors: {errors}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m e2e.bench.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:4000")
    p.add_argument("--key", default="sk-bench", help="API key")
    p.add_argument("--model", required=True)
    p.add_argument("--api", choices=["chat", "messages"], default="chat")
    p.add_argument("--stream", action="store_true")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--timeout", type=float, default=120.0, help="per request (s)")
    p.add_argument("--deadline", type=float, default=300.0, help="whole run (s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    endpoint = Endpoint("target", args.url, args.key, args.model)
    workload = Workload(
        api=args.api,
        stream=args.stream,
        concurrency=args.concurrency,
        requests=args.requests,
        timeout=args.timeout,
        deadline=args.deadline,
    )
    result = asyncio.run(run_load(endpoint, workload))
    print(json.dumps(result.as_dict(), indent=2) if args.json else describe(result))
    return 1 if result.error_count else 0


if __name__ == "__main__":
    sys.exit(main())
