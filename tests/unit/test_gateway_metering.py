"""A usage record from what LiteLLM 1.106.12 hands the success and failure callbacks.

The kwargs below were captured from the real proxy (`litellm --config ...`) serving the Anthropic
SDK through `/v1/messages` from the provider simulator, with the deployment's `model_info`
rendered the way `render/litellm_config.py` renders it; only keys tenantgw does not read were cut.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.ledger import COLUMNS
from tenantgw.gateway.metering import Meter
from tenantgw.gateway.metrics import GatewayMetrics
from tenantgw.gateway.usage import UsageRecord, record_from_kwargs, refused

pytestmark = pytest.mark.unit

FAST_CODE_INFO = {
    "input_cost_per_token": 3e-07,
    "output_cost_per_token": 1.2e-06,
    "id": "fast-code-0",
    "db_model": False,
    "member_auto_router": False,
    "tenantgw": {
        "alias": "fast-code",
        "cost_tier": "medium",
        "provider": "openrouter",
        "provider_model": "qwen/qwen3-coder",
        "provider_type": "openrouter",
        "region": "us-east-1",
    },
}

USAGE_3_5 = {
    "completion_tokens": 5,
    "prompt_tokens": 3,
    "total_tokens": 8,
    "completion_tokens_details": {
        "accepted_prediction_tokens": 0,
        "audio_tokens": 0,
        "reasoning_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
    "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0},
}

# `claude-sonnet-4-5` sent by the client, served by alias fast-code (model_group_alias), no stream.
NON_STREAM: dict[str, Any] = {
    "model": "sim-fast",
    "call_type": "anthropic_messages",
    "stream": False,
    "response_cost": 6.9e-06,
    "litellm_call_id": "f0f2683e-a0b2-4602-8aaa-9e18002164c7",
    "custom_llm_provider": "openai",
    "litellm_params": {
        "model_info": FAST_CODE_INFO,
        "metadata": {
            "model_group": "claude-sonnet-4-5",
            "model_group_alias": "claude-sonnet-4-5",
            "deployment": "openai/sim-fast",
            "user_api_key_alias": "alice",
            "user_api_key_team_id": "tenant-smoke",
            "attempted_fallbacks": 0,
            "model_info": FAST_CODE_INFO,
        },
    },
    "standard_logging_object": {
        "id": "chatcmpl-313e208d99ce4d748e477d0d3a554e46",
        "trace_id": "d47a9504-3aa3-4d71-9bbe-43ad80830f82",
        "litellm_call_id": "f0f2683e-a0b2-4602-8aaa-9e18002164c7",
        "call_type": "anthropic_messages",
        "stream": None,
        "response_cost": 6.9e-06,
        "status": "success",
        "custom_llm_provider": "openai",
        "total_tokens": 8,
        "prompt_tokens": 3,
        "completion_tokens": 5,
        "startTime": 1795825001.024438,
        "endTime": 1795825001.771604,
        "completionStartTime": 1795825001.771604,
        "response_time": 0.7471661567687988,
        "model": "openai/sim-fast",
        "model_id": "fast-code-0",
        "model_group": "claude-sonnet-4-5",
        "api_base": "http://127.0.0.1:41187/v1",
        "error_str": None,
        "cache_hit": None,
        "metadata": {"usage_object": USAGE_3_5},
        "hidden_params": {
            "model_id": "fast-code-0",
            "api_base": "http://127.0.0.1:41187/v1",
            "response_cost": 6.9e-06,
            "litellm_overhead_time_ms": 231.1852,
            "litellm_model_name": "openai/sim-fast",
            "usage_object": None,
        },
        "error_information": {
            "error_code": "",
            "error_class": "",
            "llm_provider": "",
            "error_message": "",
        },
    },
}

# `fast-code` streamed: the first token came 466 ms before the end... of a 535 ms call.
STREAM = copy.deepcopy(NON_STREAM)
STREAM.update(stream=True, response_cost=7.2e-06, litellm_call_id="44cc7051")
STREAM["litellm_params"]["metadata"].update(model_group="fast-code", model_group_alias=None)
STREAM["standard_logging_object"].update(
    id="msg_16983e5f-8a2a-42c4-ab7b-ddc67f00458a",
    stream=True,
    response_cost=7.2e-06,
    prompt_tokens=4,
    total_tokens=9,
    startTime=1795825001.866517,
    endTime=1795825002.401667,
    completionStartTime=1795825002.33227,
    model_group="fast-code",
)
STREAM["standard_logging_object"]["metadata"]["usage_object"] = {
    **USAGE_3_5,
    "prompt_tokens": 4,
    "total_tokens": 9,
    "cost": 7.2e-06,
}

# Alias `free` (Ollama, no pricing in model_info): LiteLLM prices it at 0.
FREE = copy.deepcopy(NON_STREAM)
FREE_INFO = {
    "id": "free-0",
    "db_model": False,
    "member_auto_router": False,
    "tenantgw": {
        "alias": "free",
        "cost_tier": "low",
        "provider": "ollama",
        "provider_model": "llama3",
        "provider_type": "ollama",
    },
}
FREE["response_cost"] = 0.0
FREE["litellm_params"]["model_info"] = FREE_INFO
FREE["standard_logging_object"].update(response_cost=0.0, model_id="free-0", model_group="free")

# An upstream 500 on fast-code.
FAILURE: dict[str, Any] = copy.deepcopy(NON_STREAM)
FAILURE.update(response_cost=0, litellm_call_id="f4b48f65-4bbe-4488-b84b-8cfdaf5e0d66")
FAILURE["litellm_params"]["metadata"].update(model_group="fast-code", model_group_alias=None)
FAILURE["standard_logging_object"].update(
    id="f4b48f65-4bbe-4488-b84b-8cfdaf5e0d66",
    response_cost=0.0,
    status="failure",
    total_tokens=0,
    prompt_tokens=0,
    completion_tokens=0,
    startTime=1795825002.704094,
    endTime=1795825002.710504,
    completionStartTime=1795825002.710504,
    model_group="fast-code",
    error_str="litellm.InternalServerError: InternalServerError: OpenAIException - "
    "The server had an error while processing your request (simulated)",
    metadata={"usage_object": {}},
    error_information={
        "error_code": "500",
        "error_class": "InternalServerError",
        "llm_provider": "openai",
        "error_message": "litellm.InternalServerError: ...",
    },
)


class InternalServerError(Exception):
    """Stands in for litellm.InternalServerError (same name and status_code attribute)."""

    status_code = 500


def ctx(**changes: Any) -> RequestContext:
    base = RequestContext(
        tenant="smoke",
        key_name="alice",
        request_id="req-1",
        requested_model="claude-sonnet-4-5",
        alias="fast-code",
        cost_tier="medium",
        call_type="anthropic_messages",
        started_at=0.0,
        stream=False,
    )
    return dataclasses.replace(base, **changes)


def response(usage: dict[str, Any] | None) -> SimpleNamespace:
    """A ModelResponse as far as metering reads it: its `usage`."""
    return SimpleNamespace(usage=usage, model="sim-fast")


def when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_a_claude_request_served_by_another_model() -> None:
    rec = record_from_kwargs(
        ctx(), NON_STREAM, response(USAGE_3_5), None, None, ok=True
    )  # LiteLLM's start/end datetimes are not needed when the logging object has times
    assert rec == UsageRecord(
        request_id="req-1",
        ts=when(1795825001.771604),
        tenant="smoke",
        key_name="alice",
        requested_model="claude-sonnet-4-5",
        alias="fast-code",
        provider="openrouter",
        provider_model="qwen/qwen3-coder",
        region="us-east-1",
        input_tokens=3,
        output_tokens=5,
        cache_read_tokens=0,
        cache_write_tokens=0,
        cost_usd=6.9e-06,
        list_cost_usd=rec.list_cost_usd,
        latency_ms=747,
        ttft_ms=747,  # not streamed: the first token arrives with the last
        status="success",
        http_status=200,
        error_type=None,
        downgraded_from=None,
        stream=False,
        list_model="claude-sonnet-4-5",
    )
    assert rec.ts.tzinfo is UTC
    # 3 x $3/M + 5 x $15/M: what the same tokens cost on Anthropic's claude-sonnet-4-5.
    assert rec.list_cost_usd == pytest.approx(8.4e-05)


def test_a_streamed_request_has_its_time_to_first_token() -> None:
    rec = record_from_kwargs(
        ctx(requested_model="fast-code", stream=True), STREAM, response(None), None, None, ok=True
    )
    assert rec.stream is True
    assert rec.latency_ms == 535
    assert rec.ttft_ms == 466
    # Usage from the logging object when the response carries none.
    assert (rec.input_tokens, rec.output_tokens) == (4, 5)
    assert rec.cost_usd == pytest.approx(7.2e-06)
    assert rec.list_cost_usd is None  # fast-code is not a Claude name


def test_alias_and_provider_are_those_of_the_deployment_that_served() -> None:
    # After a fallback the serving deployment is `free`, whatever the routing chose.
    rec = record_from_kwargs(ctx(alias="fast-code"), FREE, response(USAGE_3_5), None, None, ok=True)
    assert (rec.alias, rec.provider, rec.provider_model, rec.region) == (
        "free",
        "ollama",
        "llama3",
        None,
    )
    assert rec.cost_usd == 0.0  # no pricing anywhere: free stays free


def test_cost_from_model_info_when_litellm_priced_it_at_zero() -> None:
    kwargs = copy.deepcopy(NON_STREAM)
    kwargs["response_cost"] = 0.0
    kwargs["standard_logging_object"]["response_cost"] = None
    rec = record_from_kwargs(ctx(), kwargs, response(USAGE_3_5), None, None, ok=True)
    assert rec.cost_usd == pytest.approx(3 * 3e-07 + 5 * 1.2e-06)


def test_a_response_from_litellms_cache_costs_nothing() -> None:
    kwargs = copy.deepcopy(NON_STREAM)
    kwargs["response_cost"] = 0.0
    kwargs["standard_logging_object"].update(response_cost=0.0, cache_hit=True)
    rec = record_from_kwargs(ctx(), kwargs, response(USAGE_3_5), None, None, ok=True)
    assert rec.cost_usd == 0.0


def test_cost_at_anthropic_list_price_for_an_unpriced_claude_deployment() -> None:
    kwargs = copy.deepcopy(FREE)
    kwargs["litellm_params"]["model_info"]["tenantgw"].update(
        provider="bedrock", provider_model="us.anthropic.claude-haiku-4-5-20251001-v1:0"
    )
    rec = record_from_kwargs(ctx(), kwargs, response(USAGE_3_5), None, None, ok=True)
    assert rec.cost_usd == pytest.approx((3 * 1.0 + 5 * 5.0) / 1e6)


def test_cache_tokens_are_counted_apart_and_priced() -> None:
    usage = {
        "prompt_tokens": 45_120,
        "completion_tokens": 800,
        "prompt_tokens_details": {"cached_tokens": 40_000, "cache_creation_tokens": 5_000},
        "cache_creation_input_tokens": 5_000,
        "cache_read_input_tokens": 40_000,
    }
    rec = record_from_kwargs(
        ctx(requested_model="claude-sonnet-4-5-20250929"),
        NON_STREAM,
        response(usage),
        None,
        None,
        ok=True,
    )
    assert (rec.input_tokens, rec.cache_read_tokens, rec.cache_write_tokens) == (120, 40_000, 5_000)
    assert rec.output_tokens == 800
    assert rec.total_tokens == 45_920
    assert rec.list_cost_usd == pytest.approx(
        (120 * 3 + 800 * 15 + 40_000 * 0.30 + 5_000 * 3.75) / 1e6
    )


def test_a_failure_gets_an_error_row_of_its_own() -> None:
    kwargs = {**FAILURE, "exception": InternalServerError("upstream 500")}
    rec = record_from_kwargs(ctx(), kwargs, None, None, None, ok=False)
    assert rec.request_id == "req-1:failed:fast-code:1795825002704094"
    assert rec.status == "error"
    assert rec.http_status == 500
    assert rec.error_type == "InternalServerError"
    assert rec.cost_usd == 0.0
    assert rec.ttft_ms is None
    assert rec.latency_ms == 6
    assert (rec.input_tokens, rec.output_tokens) == (0, 0)


def test_two_failed_fallbacks_of_one_request_get_two_rows() -> None:
    # LiteLLM keeps litellm_call_id across the fallbacks of a request.
    second = copy.deepcopy(FAILURE)
    second["litellm_params"]["model_info"] = FREE_INFO
    second["standard_logging_object"].update(startTime=1795825002.9, endTime=1795825003.0)
    first_id = record_from_kwargs(ctx(), FAILURE, None, None, None, ok=False).request_id
    second_id = record_from_kwargs(ctx(), second, None, None, None, ok=False).request_id
    assert second_id == "req-1:failed:free:1795825002900000"
    assert first_id != second_id


def test_a_failure_without_the_exception_reads_the_logging_object() -> None:
    rec = record_from_kwargs(ctx(), FAILURE, None, None, None, ok=False)
    assert (rec.http_status, rec.error_type) == (500, "InternalServerError")


def test_times_from_the_callback_arguments_when_the_logging_object_lacks_them() -> None:
    kwargs = copy.deepcopy(NON_STREAM)
    del kwargs["standard_logging_object"]
    start = datetime(2026, 11, 28, 0, 16, 41, 24438, tzinfo=UTC)
    end = datetime(2026, 11, 28, 0, 16, 41, 771604, tzinfo=UTC)
    rec = record_from_kwargs(ctx(), kwargs, response(USAGE_3_5), start, end, ok=True)
    assert rec.ts == end
    assert rec.latency_ms == 747
    assert rec.ttft_ms is None


def test_downgrade_is_recorded() -> None:
    rec = record_from_kwargs(
        ctx(downgraded_from="reasoning"), NON_STREAM, response(USAGE_3_5), None, None, ok=True
    )
    assert rec.downgraded_from == "reasoning"


def test_a_record_is_a_row_of_the_usage_table() -> None:
    rec = record_from_kwargs(ctx(), NON_STREAM, response(USAGE_3_5), None, None, ok=True)
    assert tuple(rec.as_row()) == COLUMNS


def test_a_real_litellm_model_response_with_prompt_caching(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from litellm.types.utils import ModelResponse, PromptTokensDetailsWrapper, Usage

    usage = Usage(
        prompt_tokens=1_150,
        completion_tokens=10,
        total_tokens=1_160,
        cache_creation_input_tokens=100,
        cache_read_input_tokens=1_000,
        prompt_tokens_details=PromptTokensDetailsWrapper(
            cached_tokens=1_000, cache_creation_tokens=100
        ),
    )
    reply = ModelResponse(model="sim-fast", usage=usage)
    rec = record_from_kwargs(ctx(), NON_STREAM, reply, None, None, ok=True)
    assert (rec.input_tokens, rec.cache_read_tokens, rec.cache_write_tokens) == (50, 1_000, 100)
    assert rec.output_tokens == 10


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def bare_meter() -> Meter:
    """A meter without ledger nor budgets: metrics only."""
    return Meter(ledger=None, enforcer=None, metrics=GatewayMetrics.registered())


async def test_callbacks_count_metrics_without_a_configured_gateway() -> None:
    meter = bare_meter()

    labels = {"tenant": "metrics-unit", "alias": "fast-code"}
    before_ok = _sample("tenantgw_requests_total", {**labels, "status": "success"})
    before_err = _sample("tenantgw_requests_total", {**labels, "status": "error"})
    before_cost = _sample("tenantgw_cost_usd_total", labels)
    before_out = _sample("tenantgw_tokens_total", {**labels, "direction": "output"})

    context = ctx(tenant="metrics-unit")
    rec = await meter.on_success(context, NON_STREAM, response(USAGE_3_5), None, None)
    assert rec is not None
    assert rec.status == "success"
    failed = await meter.on_failure(context, FAILURE, None, None, None)
    assert failed is not None
    assert failed.status == "error"

    assert _sample("tenantgw_requests_total", {**labels, "status": "success"}) == before_ok + 1
    assert _sample("tenantgw_requests_total", {**labels, "status": "error"}) == before_err + 1
    assert _sample("tenantgw_cost_usd_total", labels) == pytest.approx(before_cost + 6.9e-06)
    assert _sample("tenantgw_tokens_total", {**labels, "direction": "output"}) == before_out + 5


async def test_the_dashboards_series_count_each_request_once_by_outcome() -> None:
    """The series the dashboard and alerts read (LiteLLM's names) come from tenantgw's meter."""
    meter = bare_meter()
    tenant = "metrics-outcomes"
    key = {"tenant": tenant, "api_key_alias": "alice", "requested_model": "fast-code"}

    def total(status: str) -> float:
        return _sample("litellm_proxy_total_requests_metric_total", {**key, "status_code": status})

    def failed(status: str, cls: str) -> float:
        labels = {**key, "exception_status": status, "exception_class": cls}
        return _sample("litellm_proxy_failed_requests_metric_total", labels)

    # Answered after a failed attempt: one request, a success, served by a fallback.
    await meter.on_failure(ctx(tenant=tenant), FAILURE, None, None, None)
    await meter.on_success(ctx(tenant=tenant), FREE, response(USAGE_3_5), None, None)
    assert total("200") == 1
    assert total("500") == 0
    fallback = {"tenant": tenant, "requested_model": "fast-code", "fallback_model": "free"}
    assert _sample("litellm_deployment_successful_fallbacks_total", fallback) == 1
    served = {"tenant": tenant, "requested_model": "fast-code", "model": "llama3"}
    assert _sample("litellm_request_total_latency_metric_count", served) == 1
    assert _sample("litellm_total_tokens_metric_total", {**served, "api_key_alias": "alice"}) == 8
    # Not a stream: no time to first token.
    assert _sample("litellm_llm_api_time_to_first_token_metric_count", served) == 0

    # Refused before any call (a rate limit's 429), and failed for good after an attempt.
    class RefusedError(Exception):
        status_code = 429  # what LiteLLM's proxy hands the failure hook

    await meter.on_final_failure(ctx(tenant=tenant, request_id="req-r"), RefusedError("limited"))
    await meter.on_failure(ctx(tenant=tenant, request_id="req-f"), FAILURE, None, None, None)
    await meter.on_final_failure(ctx(tenant=tenant, request_id="req-f"), RuntimeError("gone"))
    assert total("429") == 1
    assert failed("429", "RefusedError") == 1
    assert total("500") == 1
    assert failed("500", "InternalServerError") == 1  # the failed attempt's class
    assert total("200") == 1  # failed attempts are not requests


async def test_a_stream_observes_its_time_to_first_token() -> None:
    meter = bare_meter()
    tenant = "metrics-ttft"
    await meter.on_success(ctx(tenant=tenant, stream=True), STREAM, response(USAGE_3_5), None, None)
    labels = {"tenant": tenant, "requested_model": "fast-code"}
    counts = [
        s.value
        for metric in REGISTRY.collect()
        if metric.name == "litellm_llm_api_time_to_first_token_metric"
        for s in metric.samples
        if s.name.endswith("_count") and labels.items() <= s.labels.items()
    ]
    assert counts == [1]


async def test_a_metering_bug_never_fails_the_request() -> None:
    broken: dict[str, Any] = {"standard_logging_object": "not a dict", "litellm_params": 7}
    rec = await bare_meter().on_success(ctx(), broken, object(), "x", "y")
    # Nothing usable in there, but a record still comes out with what the context knows.
    assert rec is not None
    assert rec.request_id == "req-1"
    assert rec.cost_usd == 0.0


class ListLedger:
    """Records what the meter writes (the real Ledger is tested in tests/integration)."""

    def __init__(self) -> None:
        self.rows: list[UsageRecord] = []

    def record(self, rec: UsageRecord) -> None:
        self.rows.append(rec)


async def test_one_ledger_row_per_request_whatever_happened() -> None:
    ledger = ListLedger()
    meter = Meter(ledger=ledger, enforcer=None, metrics=GatewayMetrics.registered())  # type: ignore[arg-type]
    # A failed attempt, then a fallback's success: the success is the row.
    await meter.on_failure(ctx(), FAILURE, None, None, None)
    assert ledger.rows == []
    await meter.on_success(ctx(), NON_STREAM, response(USAGE_3_5), None, None)
    assert [(r.request_id, r.status) for r in ledger.rows] == [("req-1", "success")]
    # A failed attempt and nothing else: the failure becomes the row, under the request's id.
    ledger.rows.clear()
    await meter.on_failure(ctx(request_id="req-2"), FAILURE, None, None, None)
    await meter.on_final_failure(ctx(request_id="req-2"), RuntimeError("all failed"))
    assert [(r.request_id, r.status, r.http_status) for r in ledger.rows] == [
        ("req-2", "error", 500)
    ]
    # Refused before any upstream call: a row without tokens or cost.
    ledger.rows.clear()
    await meter.on_final_failure(ctx(request_id="req-3"), RuntimeError("refused"))
    assert ledger.rows == [dataclasses.replace(ledger.rows[0], request_id="req-3")]
    assert (ledger.rows[0].cost_usd, ledger.rows[0].input_tokens) == (0.0, 0)


async def test_the_row_lists_the_attempts_that_failed_before_it() -> None:
    """A fallback's row names what served and every attempt that failed first, in order;
    a request nothing served lists them all on its (last) failure's row. Names and numbers
    only: the provider's error text never reaches the ledger."""
    ledger = ListLedger()
    meter = Meter(ledger=ledger, enforcer=None, metrics=GatewayMetrics.registered())  # type: ignore[arg-type]
    second = copy.deepcopy(FAILURE)
    second["litellm_params"]["model_info"] = FREE_INFO
    second["standard_logging_object"].update(startTime=1795825002.9, endTime=1795825003.0)
    second["exception"] = InternalServerError("upstream said: the secret prompt")
    await meter.on_failure(ctx(), FAILURE, None, None, None)
    await meter.on_failure(ctx(), second, None, None, None)
    await meter.on_success(ctx(), NON_STREAM, response(USAGE_3_5), None, None)
    (row,) = ledger.rows
    assert row.status == "success"
    attempts = json.loads(row.failed_attempts or "null")
    assert [(a["alias"], a["http_status"], a["error_type"]) for a in attempts] == [
        ("fast-code", 500, "InternalServerError"),
        ("free", 500, "InternalServerError"),
    ]
    assert set(attempts[0]) == {"alias", "provider", "provider_model", "http_status", "error_type"}
    assert "secret" not in (row.failed_attempts or "")
    # A request served at once lists none.
    ledger.rows.clear()
    await meter.on_success(ctx(request_id="req-2"), NON_STREAM, response(USAGE_3_5), None, None)
    assert ledger.rows[0].failed_attempts is None
    # Nothing served: the last failure is the row, every failure listed.
    ledger.rows.clear()
    await meter.on_failure(ctx(request_id="req-3"), FAILURE, None, None, None)
    await meter.on_failure(ctx(request_id="req-3"), second, None, None, None)
    await meter.on_final_failure(ctx(request_id="req-3"), RuntimeError("all failed"))
    (row,) = ledger.rows
    assert (row.request_id, row.alias) == ("req-3", "free")
    assert [a["alias"] for a in json.loads(row.failed_attempts or "[]")] == ["fast-code", "free"]


def test_a_refused_request_record() -> None:
    rec = refused(ctx(), RuntimeError("no"))
    assert (rec.status, rec.error_type, rec.cost_usd, rec.provider) == (
        "error",
        "RuntimeError",
        0.0,
        None,
    )
