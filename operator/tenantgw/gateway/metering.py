"""Metering: one usage record per LiteLLM call, into the ledger, the budgets and the metrics.

`record_from_kwargs()` turns what LiteLLM hands its success/failure callbacks into a
`UsageRecord`. Sources, by field (LiteLLM 1.106.12, see docs/litellm-notes.md):
- alias, provider, provider_model, region: the deployment's `model_info["tenantgw"]`, written by
  the renderer (`kwargs["litellm_params"]["model_info"]`); this is the alias that *served* the
  call, which after a fallback differs from the one routing chose (`ctx.alias`).
- tokens: `response_obj.usage`, else `standard_logging_object` (its `metadata.usage_object`,
  then `prompt_tokens` / `completion_tokens`); cache reads and writes counted apart.
- cost: `kwargs["response_cost"]`; when LiteLLM priced the call at 0 or not at all, the
  deployment's pricing from model_info, else Anthropic's list price if it serves a Claude model.
- list_cost_usd: what the request would cost at Anthropic's list price of the Claude model the
  client asked for (None when it asked for something else).
- latency and TTFT: `standard_logging_object` `startTime`, `endTime` and `completionStartTime`
  (epoch seconds). For a non-streamed response the first token arrives with the last, so TTFT
  equals latency there.

LiteLLM calls the failure callback once per failed model group, then the success callback if a
fallback served the request. A failed attempt's record carries its own id,
`<request_id>:failed:<alias>:<attempt start, µs>`; `tenantgw.gateway.outcomes` decides which
record becomes the request's one ledger row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import REGISTRY, Counter, Gauge
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from tenantgw.gateway.budgets import BudgetGuard
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.ledger import COLUMNS, Ledger
from tenantgw.gateway.pricing import (
    TokenUsage,
    anthropic_list_cost,
    claude_family,
    cost_from_pricing,
    token_usage,
)
from tenantgw.gateway.ratelimit import RateLimiter
from tenantgw.gateway.spool import DEFAULT_SPOOL_DIR

log = logging.getLogger("tenantgw.gateway.metering")

POSTGRES_DSN_ENV = "TENANTGW_POSTGRES_DSN"
REDIS_URL_ENV = "TENANTGW_REDIS_URL"
TENANT_ENV = "TENANTGW_TENANT"
SPOOL_DIR_ENV = "TENANTGW_SPOOL_DIR"


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
        list_cost_usd=anthropic_list_cost(ctx.requested_model, usage),
        latency_ms=_millis(started, ended),
        ttft_ms=_millis(started, first_token),
        status="success" if ok else "error",
        http_status=200 if ok else _http_status(exc, slo),
        error_type=None
        if ok
        else (type(exc).__name__ if exc is not None else _str(error_info.get("error_class"))),
        downgraded_from=ctx.downgraded_from,
        stream=bool(ctx.stream or slo.get("stream") or kwargs.get("stream")),
    )


# --------------------------------------------------------------------------- metrics


def _collector(kind: type[Counter] | type[Gauge], name: str, doc: str, labels: list[str]) -> Any:
    # A second import of this module (LiteLLM can load plugin files by path) must reuse the
    # registered collectors instead of failing on duplicates.
    existing = getattr(REGISTRY, "_names_to_collectors", {}).get(name)
    return existing if existing is not None else kind(name, doc, labels)


REQUESTS: Counter = _collector(
    Counter,
    "tenantgw_requests",
    "Gateway requests by alias and status.",
    ["tenant", "alias", "status"],
)
COST_USD: Counter = _collector(
    Counter, "tenantgw_cost_usd", "USD spent on providers.", ["tenant", "alias"]
)
LIST_COST_USD: Counter = _collector(
    Counter,
    "tenantgw_list_cost_usd",
    "USD the same requests would cost at Anthropic's list price of the Claude model asked for.",
    ["tenant", "alias"],
)
TOKENS: Counter = _collector(
    Counter,
    "tenantgw_tokens",
    "Tokens by direction: input, output, cache_read, cache_write.",
    ["tenant", "alias", "direction"],
)
BUDGET_UTILIZATION: Gauge = _collector(
    Gauge,
    "tenantgw_budget_utilization_percent",
    "Spend of a BudgetPolicy in its current period, as a percentage of its limit.",
    ["tenant", "budget"],
)


def observe(rec: UsageRecord) -> None:
    """Count a usage record in the Prometheus metrics."""
    REQUESTS.labels(rec.tenant, rec.alias, rec.status).inc()
    if rec.cost_usd > 0:
        COST_USD.labels(rec.tenant, rec.alias).inc(rec.cost_usd)
    if rec.list_cost_usd:
        LIST_COST_USD.labels(rec.tenant, rec.alias).inc(rec.list_cost_usd)
    for direction, count in (
        ("input", rec.input_tokens),
        ("output", rec.output_tokens),
        ("cache_read", rec.cache_read_tokens),
        ("cache_write", rec.cache_write_tokens),
    ):
        if count:
            TOKENS.labels(rec.tenant, rec.alias, direction).inc(count)


# --------------------------------------------------------------------------- process-wide state


class GatewayState:
    """The gateway process's Redis client, ledger, rate limiter and budget guard.

    Parts are None when their store is not configured (no Redis: no limits nor budgets; no
    Postgres: no ledger). The budget guard reconciles from the ledger when both exist.
    """

    def __init__(
        self,
        tenant: str,
        *,
        redis: aioredis.Redis | None = None,
        ledger: Ledger | None = None,
        limiter: RateLimiter | None = None,
        budgets: BudgetGuard | None = None,
        owns_redis: bool = False,
    ) -> None:
        self.tenant = tenant
        self.redis = redis
        self.ledger = ledger
        if limiter is None and redis is not None:
            limiter = RateLimiter(redis, tenant)
        if budgets is None and redis is not None:
            budgets = BudgetGuard(redis, tenant, ledger_reader=ledger)
        if budgets is not None and budgets.ledger_reader is None:
            budgets.ledger_reader = ledger
        self.limiter = limiter
        self.budgets = budgets
        self._owns_redis = owns_redis
        self._started = False
        self._lock = asyncio.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewayState | None:
        """From TENANTGW_TENANT, TENANTGW_REDIS_URL, TENANTGW_POSTGRES_DSN, TENANTGW_SPOOL_DIR.

        None when the tenant is unknown or neither store is configured.
        """
        env = os.environ if env is None else env
        dsn, url = env.get(POSTGRES_DSN_ENV), env.get(REDIS_URL_ENV)
        tenant = env.get(TENANT_ENV) or _tenant_from_rules()
        if not tenant or not (dsn or url):
            return None
        client = None
        if url:
            # Fail fast: a request waits about 2 s at most for Redis before the guards let it
            # through (redis-py's default retries back off for seconds).
            client = aioredis.Redis.from_url(
                url,
                socket_timeout=2.0,
                socket_connect_timeout=2.0,
                health_check_interval=30,
                retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), 1),
            )
        spool_dir = env.get(SPOOL_DIR_ENV) or DEFAULT_SPOOL_DIR
        # Rows Postgres cannot take wait in the tenant's Redis stream, which outlives the pod.
        ledger = Ledger(dsn, spool_dir, redis=client, tenant=tenant) if dsn else None
        return cls(tenant, redis=client, ledger=ledger, owns_redis=True)

    async def started(self) -> GatewayState:
        """Start the ledger writer once (lazily, on the event loop of the first request)."""
        if not self._started:
            async with self._lock:
                if not self._started:
                    if self.ledger is not None:
                        await self.ledger.start()
                    self._started = True
        return self

    def rules(self) -> Mapping[str, Any] | None:
        """The rules the budget guard saw last, else the mounted rules file, else None."""
        if self.budgets is not None and self.budgets.rules is not None:
            return self.budgets.rules
        try:
            from tenantgw.gateway import files

            return files.current_rules().model_dump()
        except Exception:  # no rules file here (tests, dev): budgets then count nothing
            return None

    async def aclose(self) -> None:
        """Flush the ledger and close everything (shutdown and tests)."""
        if self.budgets is not None:
            await self.budgets.aclose()
        if self.ledger is not None:
            await self.ledger.stop()
        if self.redis is not None and self._owns_redis:
            await self.redis.aclose()


def _tenant_from_rules() -> str | None:
    try:
        from tenantgw.gateway import files

        name = files.tenant_name()
    except Exception:
        return None
    return name if name and name != "unknown" else None


_state: GatewayState | None = None


def state() -> GatewayState | None:
    """The process-wide GatewayState, built on first use; None when the env lacks its settings."""
    global _state
    if _state is None:
        _state = GatewayState.from_env()
    return _state


def configure(
    *,
    ledger: Ledger | None = None,
    guard: BudgetGuard | None = None,
    limiter: RateLimiter | None = None,
    tenant: str | None = None,
) -> GatewayState | None:
    """Meter with these parts (those the callbacks built); parts not given are kept.

    The guard that checks a request must be the one that adds its spend (it holds the
    request's reservation), hence this hand-over. Parts that are already the process state's
    change nothing.
    """
    global _state
    current = state()
    if current is None and tenant is None:
        return None
    ledger = ledger if ledger is not None else (current.ledger if current else None)
    guard = guard if guard is not None else (current.budgets if current else None)
    limiter = limiter if limiter is not None else (current.limiter if current else None)
    if current is not None and (ledger, guard, limiter) == (
        current.ledger,
        current.budgets,
        current.limiter,
    ):
        return current
    redis = current.redis if current else None
    _state = GatewayState(
        tenant or (current.tenant if current else ""),
        redis=redis,
        ledger=ledger,
        limiter=limiter,
        budgets=guard,
        owns_redis=bool(current and current._owns_redis),
    )
    return _state


async def reset_state(new: GatewayState | None = None) -> None:
    """Close the process-wide state and replace it (tests)."""
    global _state
    old, _state = _state, new
    if old is not None:
        await old.aclose()


async def record_row(rec: UsageRecord) -> None:
    """Write one row to the tenant's ledger (when it has one)."""
    current = state()
    if current is None:
        return
    await current.started()
    if current.ledger is not None:
        current.ledger.record(rec)


async def meter(rec: UsageRecord, ctx: RequestContext, *, ok: bool, ledger: bool = True) -> None:
    """Metrics, budget spend and, unless `ledger` is False, the ledger row of one record."""
    await _meter(rec, ctx, ok=ok, ledger=ledger)


async def _meter(rec: UsageRecord, ctx: RequestContext, *, ok: bool, ledger: bool = True) -> None:
    observe(rec)
    current = state()
    if current is None:
        return
    await current.started()
    if ledger and current.ledger is not None:
        current.ledger.record(rec)
    if current.budgets is None:
        return
    # Spend counts against the alias that served the call, as in the ledger (reconciliation
    # compares the two).
    spends = await current.budgets.add_spend(
        dataclasses.replace(ctx, alias=rec.alias),
        rec.cost_usd,
        current.rules(),
        update_estimate=ok,
    )
    for spend in spends:
        BUDGET_UTILIZATION.labels(rec.tenant, spend.policy).set(spend.utilization_percent)


async def on_success(
    ctx: RequestContext,
    kwargs: Mapping[str, Any],
    response_obj: Any,
    start_time: Any,
    end_time: Any,
) -> UsageRecord | None:
    """Meter a successful call: ledger row, budget spend, metrics. Returns the record.

    Never raises (a metering bug must not fail a request that succeeded); the caller releases
    the rate limiter with `record.total_tokens`.
    """
    try:
        rec = record_from_kwargs(ctx, kwargs, response_obj, start_time, end_time, ok=True)
        await _meter(rec, ctx, ok=True)
    except Exception:
        log.exception("metering of request %s failed", ctx.request_id)
        return None
    return rec


async def on_failure(
    ctx: RequestContext,
    kwargs: Mapping[str, Any],
    response_obj: Any,
    start_time: Any,
    end_time: Any,
) -> UsageRecord | None:
    """Meter a failed call (an error row, cost normally 0; drops the budget reservation)."""
    try:
        rec = record_from_kwargs(ctx, kwargs, response_obj, start_time, end_time, ok=False)
        await _meter(rec, ctx, ok=False)
    except Exception:
        log.exception("metering of failed request %s failed", ctx.request_id)
        return None
    return rec
