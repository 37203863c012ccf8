"""The gateway benchmark's load generator: its statistics and how it reads answers.

No server and no timing: the samples are made up, so every number below is exact.
"""

from __future__ import annotations

import pytest

from e2e.bench.load import (
    Endpoint,
    RunResult,
    Sample,
    StreamWatcher,
    Workload,
    added_latency,
    answer_problem,
    merge,
    ratio,
    request_body,
    request_headers,
)
from e2e.bench.report import summarize

pytestmark = pytest.mark.unit


def ok(latency: float, ttft: float | None = None) -> Sample:
    return Sample(start=0.0, latency=latency, ttft=ttft, status=200)


def failed(kind: str, status: int = 500) -> Sample:
    return Sample(start=0.0, latency=0.01, ttft=None, status=status, error=kind)


def run(samples: list[Sample], wall: float, not_sent: int = 0, **workload: object) -> RunResult:
    return RunResult(
        endpoint="proxy",
        workload=Workload(**workload),  # type: ignore[arg-type]
        samples=samples,
        wall=wall,
        not_sent=not_sent,
    )


def test_latency_percentiles_count_only_complete_answers() -> None:
    result = run([ok(0.1 * i) for i in range(1, 11)] + [failed("http 500")], wall=2.0)
    latency = result.latency()
    assert latency is not None
    assert latency.count == 10
    assert latency.p50 == pytest.approx(0.55)
    assert latency.p95 == pytest.approx(0.955)
    assert latency.p99 == pytest.approx(0.991)
    assert result.ttft() is None  # no stream, no time to first token


def test_rps_is_completed_requests_per_second_of_wall_time() -> None:
    result = run([ok(0.1)] * 30 + [failed("timeout")] * 2, wall=4.0, not_sent=3)
    assert result.rps == pytest.approx(7.5)
    assert result.errors == {"timeout": 2}
    assert result.error_count == 5  # failures plus requests the deadline kept from being sent
    assert run([], wall=0.0).rps == 0.0


def test_added_latency_subtracts_direct_percentile_by_percentile() -> None:
    direct = summarize([0.100, 0.100, 0.100, 0.200])
    proxy = summarize([0.130, 0.130, 0.130, 0.500])
    added = added_latency(proxy, direct)
    assert added is not None
    assert added["p50"] == pytest.approx(0.030)
    # Not the mean of per-request differences: p99 of each run, then the difference.
    assert added["p95"] == pytest.approx(0.4445 - 0.1850)
    assert added["p99"] == pytest.approx(0.4889 - 0.1970)
    assert added_latency(None, direct) is None
    assert added_latency(proxy, None) is None


def test_target_ratios_against_the_baseline() -> None:
    # tenantgw's added p99 against bare LiteLLM's, and RPS against bare's
    assert ratio(0.033, 0.030) == pytest.approx(1.1)
    assert ratio(90.0, 100.0) == pytest.approx(0.9)
    assert ratio(1.0, 0.0) is None  # a baseline that added nothing gives no ratio
    assert ratio(1.0, -0.002) is None
    assert ratio(None, 1.0) is None


def test_merged_rounds_pool_samples_and_add_wall_times() -> None:
    first = run([ok(0.1)] * 10, wall=1.0, concurrency=4, requests=10)
    second = run([ok(0.3)] * 10 + [failed("http 429", 429)], wall=3.0, concurrency=4, requests=11)
    merged = merge([first, second])
    assert len(merged.samples) == 21
    assert merged.wall == 4.0
    assert merged.rps == pytest.approx(5.0)
    assert merged.errors == {"http 429": 1}
    latency = merged.latency()
    assert latency is not None
    assert latency.p50 == pytest.approx(0.2)
    other = run([ok(0.1)], wall=1.0, concurrency=8)
    with pytest.raises(ValueError, match="one endpoint and workload"):
        merge([first, other])


def test_stream_watcher_finds_the_first_token_and_the_end_of_a_chat_stream() -> None:
    watcher = StreamWatcher("chat")
    watcher.feed(b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n', 1.0)
    watcher.feed(b"\n", 1.5)
    watcher.feed(b'data: {"choices":[{"delta":{"content":"Hello"}}]}\n', 2.0)
    watcher.feed(b'data: {"choices":[{"delta":{"content":" there"}}]}\n', 3.0)
    assert not watcher.done
    watcher.feed(b"data: [DONE]\n", 4.0)
    assert (watcher.first_token, watcher.done, watcher.error) == (2.0, True, None)


def test_stream_watcher_reads_anthropic_events_and_errors() -> None:
    watcher = StreamWatcher("messages")
    watcher.feed(b"event: message_start\n", 0.5)
    watcher.feed(b'data: {"type": "message_start", "message": {}}\n', 0.5)
    watcher.feed(b'data: {"type": "content_block_delta", "delta": {"text": "Hi"}}\n', 1.0)
    watcher.feed(b'data: {"type": "message_stop"}\n', 2.0)
    assert (watcher.first_token, watcher.done, watcher.error) == (1.0, True, None)

    broken = StreamWatcher("chat")
    broken.feed(b'data: {"error": {"message": "upstream failed"}}\n', 1.0)
    assert broken.error == "stream error event"
    anthropic_error = StreamWatcher("messages")
    anthropic_error.feed(b"event: error\n", 1.0)
    assert anthropic_error.error == "stream error event"


def test_non_streamed_answers_must_carry_text() -> None:
    assert answer_problem("chat", b'{"choices":[{"message":{"content":"hi"}}]}') is None
    assert answer_problem("chat", b'{"choices":[{"message":{"content":""}}]}') == "empty answer"
    assert answer_problem("messages", b'{"content":[{"type":"text","text":"hi"}]}') is None
    assert answer_problem("messages", b'{"error":{}}') == "answer without content"
    assert answer_problem("chat", b"not json") == "malformed answer"


def test_requests_carry_the_key_in_each_apis_header() -> None:
    endpoint = Endpoint("proxy", "http://127.0.0.1:1", "sk-test", "fast-code")
    assert request_headers(endpoint, "chat")["authorization"] == "Bearer sk-test"
    anthropic = request_headers(endpoint, "messages")
    assert anthropic["x-api-key"] == "sk-test"
    assert "anthropic-version" in anthropic
    body = request_body(endpoint, Workload(stream=True))
    assert b'"stream":true' in body
    assert b'"model":"fast-code"' in body
    with pytest.raises(ValueError, match="at least 1"):
        Workload(concurrency=0)
