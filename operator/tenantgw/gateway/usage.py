"""Usage records: one row of the tenant's ledger, built from what LiteLLM hands a callback.

`record_from_kwargs()` turns what LiteLLM hands its success/failure callbacks into a
`UsageRecord`; `refused()` is the record of a request that never reached a provider. Pure: no
I/O (the `metering.Meter` writes records to the ledger, the budgets and the metrics).

Sources, by field (LiteLLM 1.106.12, see docs/litellm-notes.md):
- alias, provider, provider_model, region: the deployment's `model_info["tenantgw"]`, written by
  the renderer (`kwargs["litellm_params"]["model_info"]`); this is the alias that *served* the
  call, which after a fallback differs from the one routing chose (`ctx.alias`).
- tokens: `response_obj.usage`, else `standard_logging_object` (its `metadata.usage_object`,
  then `prompt_tokens` / `completion_tokens`); cache reads and writes counted apart.
- cost: `kwargs["response_cost"]`; when LiteLLM priced the call at 0 or not at all, the
  deployment's pricing from model_info, else Anthropic's list price if it serves a Claude model.
- list_cost_usd: what the request would cost at Anthropic's list price of `list_model`: the
  Claude model the client asked for, else the Tenant's `spec.costBaseline` for the alias
  (`costlabels.list_model`); None when there is none. Cache reads and writes included.
- labels: the key's cost labels and the header's (`costlabels.request_labels`), as JSON.
- latency and TTFT: `standard_logging_object` `startTime`, `endTime` and `completionStartTime`
  (epoch seconds). For a non-streamed response the first token arrives with the last, so TTFT
  equals latency there.

LiteLLM calls the failure callback once per failed model group, then the success callback if a
fallback served the request. A failed attempt's record carries its own id,
`<request_id>:failed:<alias>:<attempt start, µs>`; the `Meter` decides which record becomes
the request's one ledger row.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tenantgw.gateway import safeguards
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.costlabels import labels_json
from tenantgw.gateway.credfail import STATUS as CREDENTIAL_FAILURE_STATUS
from tenantgw.gateway.credfail import credential_failure
from tenantgw.gateway.ledger import COLUMNS
from tenantgw.gateway.pricing import (
    TokenUsage,
    anthropic_list_cost,
    claude_family,
    cost_from_pricing,
    token_usage,
)


@dataclass(frozen=True)
class UsageRecord:
    """One row of the tenant's `usage` table (column for column, in order)."""

    request_id: str
    ts: datetime
    tenant: str
    key_name: str
    requested_model: str
    alias: str
    provider: str | None
    provider_model: str | None
    region: str | None
    input_tokens: int
    """Uncached prompt tokens (cache reads and writes are counted apart)."""
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
    list_cost_usd: float | None
    latency_ms: int | None
    ttft_ms: int | None
    status: str
    """success | error"""
    http_status: int | None
    error_type: str | None
    downgraded_from: str | None
    stream: bool
    parent_request_id: str | None = None
    """For a classifier call (auto mode): the request whose tool calls it judged."""
    safeguard_verdicts: str | None = None
    """For a classifier call: JSON {tool_use id: not_flagged | flagged | unavailable:<reason>}."""
    session_id: str | None = None
    """The client's well-formed `X-Claude-Code-Session-Id` (`sessions.py`), else None."""
    list_model: str | None = None
    """The Claude model `list_cost_usd` is priced at (`costlabels.list_model`)."""
    labels: str | None = None
    """JSON {label: value}: the key's cost labels and the header's (`costlabels.py`)."""
    failed_attempts: str | None = None
    """JSON list of the attempts that failed before this outcome (`attempts_json`), in order;
    None when the first attempt served."""

    def as_row(self) -> dict[str, Any]:
        # Not dataclasses.asdict(): it deep-copies every value, and this runs per request.
        return {column: getattr(self, column) for column in COLUMNS}

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


assert tuple(f.name for f in dataclasses.fields(UsageRecord)) == COLUMNS


# --------------------------------------------------------------------------- reading kwargs


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _utc(value: Any) -> datetime | None:
    if isinstance(value, datetime):  # LiteLLM passes naive local times
        return value.astimezone(UTC)
    seconds = _float(value)
    return datetime.fromtimestamp(seconds, UTC) if seconds else None


def _model_info(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    params = _map(kwargs.get("litellm_params"))
    info = _map(params.get("model_info"))
    return info or _map(_map(params.get("metadata")).get("model_info"))


def _usage(response_obj: Any, slo: Mapping[str, Any]) -> TokenUsage:
    response_usage = getattr(response_obj, "usage", None)
    if response_usage is None and isinstance(response_obj, Mapping):
        response_usage = response_obj.get("usage")
    for candidate in (
        response_usage,
        _map(slo.get("metadata")).get("usage_object"),
        _map(slo.get("hidden_params")).get("usage_object"),
    ):
        usage = token_usage(candidate)
        if usage is not None:
            return usage
    prompt, completion = _float(slo.get("prompt_tokens")), _float(slo.get("completion_tokens"))
    return TokenUsage(input_tokens=int(prompt or 0), output_tokens=int(completion or 0))


def _http_status(exc: Any, slo: Mapping[str, Any]) -> int | None:
    for value in (
        getattr(exc, "status_code", None),
        _map(slo.get("error_information")).get("error_code"),
    ):
        status = _float(value)
        if status is not None and 100 <= status < 600:
            return int(status)
    return None


def _millis(start: float | None, end: float | None) -> int | None:
    if start is None or end is None or end < start:
        return None
    return round((end - start) * 1000)


def record_from_kwargs(
    ctx: RequestContext,
    kwargs: Mapping[str, Any],
    response_obj: Any,
    start_time: Any,
    end_time: Any,
    *,
    ok: bool,
) -> UsageRecord:
    """The usage record of one LiteLLM success (`ok=True`) or failure callback."""
    slo = _map(kwargs.get("standard_logging_object"))
    info = _model_info(kwargs)
    tg = _map(info.get("tenantgw"))
    usage = _usage(response_obj, slo)

    started, ended = _float(slo.get("startTime")), _float(slo.get("endTime"))
    if started is None or ended is None:
        start_dt, end_dt = _utc(start_time), _utc(end_time)
        started = start_dt.timestamp() if start_dt else None
        ended = end_dt.timestamp() if end_dt else None
    first_token = _float(slo.get("completionStartTime")) if ok else None

    provider_model = _str(tg.get("provider_model")) or _str(slo.get("model"))
    cost = _float(kwargs.get("response_cost"))
    if not cost:
        cost = _float(slo.get("response_cost"))
    if not cost and ok and not slo.get("cache_hit"):  # a cache hit is free
        cost = cost_from_pricing(info, usage)
        if cost is None and claude_family(provider_model):
            cost = anthropic_list_cost(provider_model, usage)

    exc = kwargs.get("exception")
    error_info = _map(slo.get("error_information"))
    alias = _str(tg.get("alias")) or ctx.alias
    request_id = ctx.request_id
    if not ok:
        # LiteLLM keeps the call id across fallbacks; the served alias and the start time
        # of the attempt tell two failures of one request apart.
        request_id = f"{ctx.request_id}:failed:{alias}:{round((started or 0) * 1e6)}"

    return UsageRecord(
        request_id=request_id,
        ts=datetime.fromtimestamp(ended, UTC) if ended else datetime.now(UTC),
        tenant=ctx.tenant,
        key_name=ctx.key_name,
        requested_model=ctx.requested_model,
        alias=alias,
        provider=_str(tg.get("provider")) or _str(slo.get("custom_llm_provider")),
        provider_model=provider_model,
        region=_str(tg.get("region")),
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cost_usd=max(cost or 0.0, 0.0),
        list_cost_usd=anthropic_list_cost(_list_model(ctx), usage),
        latency_ms=_millis(started, ended),
        ttft_ms=_millis(started, first_token),
        status="success" if ok else "error",
        http_status=200 if ok else _http_status(exc, slo),
        error_type=None
        if ok
        else (type(exc).__name__ if exc is not None else _str(error_info.get("error_class"))),
        downgraded_from=ctx.downgraded_from,
        stream=bool(ctx.stream or slo.get("stream") or kwargs.get("stream")),
        parent_request_id=ctx.parent_request_id,
        safeguard_verdicts=_verdicts(ctx, response_obj if ok else None),
        session_id=ctx.session_id,
        list_model=_list_model(ctx),
        labels=labels_json(ctx.labels),
    )


def _list_model(ctx: RequestContext) -> str | None:
    """The context's list model; a context built without one: the Claude model asked for."""
    if ctx.list_model is not None:
        return ctx.list_model
    return ctx.requested_model if claude_family(ctx.requested_model) else None


def _verdicts(ctx: RequestContext, response_obj: Any) -> str | None:
    """The verdicts of a classifier call: read from its answer, else those it was given."""
    if ctx.judged is None:
        return None
    verdicts = ctx.verdicts
    if response_obj is not None:
        judged = safeguards.parse_verdicts(safeguards.response_text(response_obj), ctx.judged)
        verdicts = safeguards.ledger_summary(judged)
    return verdicts_json(verdicts)


def attempts_json(failures: Sequence[UsageRecord]) -> str | None:
    """The ledger's `failed_attempts` of failed-attempt records: what served, and how it failed.

    Only names and numbers: never a message, a body or a credential (a provider's error text
    may echo the prompt).
    """
    if not failures:
        return None
    return json.dumps(
        [
            {
                "alias": f.alias,
                "provider": f.provider,
                "provider_model": f.provider_model,
                "http_status": f.http_status,
                "error_type": f.error_type,
            }
            for f in failures
        ]
    )


def verdicts_json(verdicts: Mapping[str, str] | None) -> str | None:
    return json.dumps(dict(verdicts), sort_keys=True) if verdicts is not None else None


def refused(ctx: RequestContext, exc: BaseException) -> UsageRecord:
    """The record of a request that never reached a provider (no tokens, no cost)."""
    latency = round((time.monotonic() - ctx.started_at) * 1000) if ctx.started_at else None
    return UsageRecord(
        request_id=ctx.request_id,
        ts=datetime.now(UTC),
        tenant=ctx.tenant,
        key_name=ctx.key_name,
        requested_model=ctx.requested_model,
        alias=ctx.alias or ctx.requested_model,
        provider=None,
        provider_model=None,
        region=None,
        input_tokens=0,
        output_tokens=0,
        cache_read_tokens=0,
        cache_write_tokens=0,
        cost_usd=0.0,
        list_cost_usd=None,
        latency_ms=latency if latency is None or latency >= 0 else None,
        ttft_ms=None,
        status="error",
        http_status=status_of(exc),
        error_type=type(exc).__name__,
        downgraded_from=ctx.downgraded_from,
        stream=bool(ctx.stream),
        parent_request_id=ctx.parent_request_id,
        safeguard_verdicts=verdicts_json(ctx.verdicts) if ctx.judged is not None else None,
        session_id=ctx.session_id,
        list_model=_list_model(ctx),
        labels=labels_json(ctx.labels),
    )


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (`status_code` or `code`), None when it has none;
    502 for a failure to obtain the provider's credential (`credfail`)."""
    if credential_failure(exc) is not None:
        return CREDENTIAL_FAILURE_STATUS
    for attr in ("status_code", "code"):
        value = getattr(exc, attr, None)
        try:
            if value is not None:
                return int(value)
        except (TypeError, ValueError):
            continue
    return None
