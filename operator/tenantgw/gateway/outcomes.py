"""One ledger row per request, whatever happened to it.

LiteLLM reports a request in pieces: a failure event for each model group that failed, then a
success event if a fallback answered, or the proxy's final failure hook if nothing did (also
for requests refused before any upstream call: rate limits, budgets, PII blocks). Failed
attempts are metered at once (metrics, budget reservations) but their ledger row waits for the
request's outcome: the success row replaces them, or the last failure becomes the request's
row. So the `usage` table holds exactly one row per request id.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tenantgw.gateway import metering
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.metering import UsageRecord

log = logging.getLogger(__name__)

PENDING_TTL_SECONDS = 900.0
"""A failed attempt whose request never reports an outcome is forgotten after this long."""

_pending: dict[str, tuple[UsageRecord, float]] = {}


def _sweep(now: float) -> None:
    for request_id in [r for r, (_, seen) in _pending.items() if now - seen > PENDING_TTL_SECONDS]:
        del _pending[request_id]


async def on_success(
    ctx: RequestContext, kwargs: Mapping[str, Any], response_obj: Any, start: Any, end: Any
) -> UsageRecord | None:
    """The request succeeded (perhaps on a fallback): its row is the success."""
    _pending.pop(ctx.request_id, None)
    return await metering.on_success(ctx, kwargs, response_obj, start, end)


async def on_failure(
    ctx: RequestContext, kwargs: Mapping[str, Any], response_obj: Any, start: Any, end: Any
) -> UsageRecord | None:
    """One model group failed; a fallback may still answer, so the row waits."""
    try:
        rec = metering.record_from_kwargs(ctx, kwargs, response_obj, start, end, ok=False)
        await metering.meter(rec, ctx, ok=False, ledger=False)
    except Exception:
        log.exception("metering of a failed attempt of %s failed", ctx.request_id)
        return None
    now = time.monotonic()
    _sweep(now)
    _pending[ctx.request_id] = (dataclasses.replace(rec, request_id=ctx.request_id), now)
    return rec


async def on_final_failure(ctx: RequestContext, exc: BaseException) -> UsageRecord | None:
    """Nothing answered the request, or it was refused before going upstream: write its row."""
    pending = _pending.pop(ctx.request_id, None)
    try:
        if pending is not None:
            rec = pending[0]
            status = _status_of(exc)
            if status is not None and status != rec.http_status:
                rec = dataclasses.replace(rec, http_status=status)
            await metering.record_row(rec)
        else:
            rec = refused(ctx, exc)
            await metering.meter(rec, ctx, ok=False)
    except Exception:
        log.exception("metering of failed request %s failed", ctx.request_id)
        return None
    return rec


def refused(ctx: RequestContext, exc: BaseException) -> UsageRecord:
    """The row of a request that never reached a provider (no tokens, no cost)."""
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
        http_status=_status_of(exc),
        error_type=type(exc).__name__,
        downgraded_from=ctx.downgraded_from,
        stream=bool(ctx.stream),
    )


def _status_of(exc: BaseException) -> int | None:
    for attr in ("status_code", "code"):
        value = getattr(exc, attr, None)
        try:
            if value is not None:
                return int(value)
        except (TypeError, ValueError):
            continue
    return None
