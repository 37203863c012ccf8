"""Metering: every usage record into the ledger, the budget counters and the metrics.

`Meter` is built once per gateway process (`runtime.GatewayRuntime`) with the ledger, the budget
guard and the metrics it writes to; records come from `usage.record_from_kwargs()`.

One ledger row per request, whatever happened to it. LiteLLM reports a request in pieces: a
failure event for each model group that failed, then a success event if a fallback answered, or
the proxy's final failure hook if nothing did (also for requests refused before any upstream
call: rate limits, budgets, PII blocks). Failed attempts are metered at once (metrics, budget
reservations) but their ledger row waits for the request's outcome: the success row replaces
them, or the last failure becomes the request's row. So the `usage` table holds exactly one row
per request id. That row lists the attempts that failed before it (`failed_attempts`: alias,
provider, provider model, HTTP status, error class), so a fallback's row names the provider
that served and the one that failed. The request's access line (`access`) is written with its
row's record, once.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from tenantgw.gateway.access import access_log
from tenantgw.gateway.budgets import BudgetGuard
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.files import Rules
from tenantgw.gateway.ledger import Ledger
from tenantgw.gateway.metrics import GatewayMetrics
from tenantgw.gateway.usage import (
    UsageRecord,
    attempts_json,
    record_from_kwargs,
    refused,
    status_of,
    verdicts_json,
)

__all__ = ["PENDING_TTL_SECONDS", "Meter", "UsageRecord"]

log = logging.getLogger("tenantgw.gateway.metering")

PENDING_TTL_SECONDS = 900.0
"""A failed attempt whose request never reports an outcome is forgotten after this long."""


class Meter:
    """Writes usage records to the ledger, the budget counters and the metrics."""

    def __init__(
        self,
        *,
        ledger: Ledger | None,
        budgets: BudgetGuard | None,
        metrics: GatewayMetrics,
        rules: Callable[[], Rules | None] = lambda: None,
    ) -> None:
        self.ledger = ledger
        self.budgets = budgets
        self.metrics = metrics
        self._rules = rules
        self._pending: dict[str, tuple[list[UsageRecord], float]] = {}
        """Per request id: its failed attempts so far, oldest first, and when the last came."""

    # ------------------------------------------------------------------ one record

    def write_row(self, rec: UsageRecord) -> None:
        """Queue the record's row in the tenant's ledger (when it has one)."""
        if self.ledger is not None:
            self.ledger.record(rec)

    async def record(
        self, rec: UsageRecord, ctx: RequestContext, *, ok: bool, ledger: bool = True
    ) -> None:
        """Metrics, budget spend and, unless `ledger` is False, the ledger row of one record."""
        self.metrics.observe(rec)
        if ledger:
            self.write_row(rec)
        if self.budgets is None:
            return
        rules = self.budgets.rules or self._current_rules()
        if rules is None:
            return
        # Spend counts against the alias that served the call, as in the ledger (reconciliation
        # compares the two).
        spends = await self.budgets.add_spend(
            dataclasses.replace(ctx, alias=rec.alias), rec.cost_usd, rules, update_estimate=ok
        )
        for spend in spends:
            if spend.session_id is not None:
                # One session's spend is not the policy's; a session label would be unbounded.
                # The BudgetPolicy's status shows the top session.
                continue
            self.metrics.budget_utilization.labels(rec.tenant, spend.policy).set(
                spend.utilization_percent
            )

    def _current_rules(self) -> Rules | None:
        try:
            return self._rules()
        except Exception:  # no rules file (yet): budgets count nothing
            return None

    # ------------------------------------------------------------------ outcomes

    async def on_success(
        self,
        ctx: RequestContext,
        kwargs: Mapping[str, Any],
        response_obj: Any,
        start_time: Any,
        end_time: Any,
    ) -> UsageRecord | None:
        """The request succeeded (perhaps on a fallback): its row is the success.

        Never raises (a metering bug must not fail a request that succeeded); the caller
        releases the rate limiter with `record.total_tokens`.
        """
        pending = self._pending.pop(ctx.request_id, None)
        try:
            rec = record_from_kwargs(ctx, kwargs, response_obj, start_time, end_time, ok=True)
            if pending is not None:
                rec = dataclasses.replace(rec, failed_attempts=attempts_json(pending[0]))
            self.metrics.finished(rec, ctx)
            access_log.metered(rec, ctx)
            await self.record(rec, ctx, ok=True)
        except Exception:
            log.exception("metering of request %s failed", ctx.request_id)
            return None
        return rec

    async def on_failure(
        self,
        ctx: RequestContext,
        kwargs: Mapping[str, Any],
        response_obj: Any,
        start_time: Any,
        end_time: Any,
    ) -> UsageRecord | None:
        """One model group failed; a fallback may still answer, so the row waits."""
        try:
            rec = record_from_kwargs(ctx, kwargs, response_obj, start_time, end_time, ok=False)
            await self.record(rec, ctx, ok=False, ledger=False)
        except Exception:
            log.exception("metering of a failed attempt of %s failed", ctx.request_id)
            return None
        now = time.monotonic()
        self._sweep(now)
        failures = self._pending.get(ctx.request_id, ([], now))[0]
        failures.append(dataclasses.replace(rec, request_id=ctx.request_id))
        self._pending[ctx.request_id] = (failures, now)
        return rec

    async def on_final_failure(self, ctx: RequestContext, exc: BaseException) -> UsageRecord | None:
        """Nothing answered the request, or it was refused before going upstream: its row."""
        pending = self._pending.pop(ctx.request_id, None)
        try:
            if pending is not None:
                rec = dataclasses.replace(pending[0][-1], failed_attempts=attempts_json(pending[0]))
                status = status_of(exc)
                if status is not None and status != rec.http_status:
                    rec = dataclasses.replace(rec, http_status=status)
                if ctx.judged is not None:  # a failed classifier call: what it answered instead
                    rec = dataclasses.replace(rec, safeguard_verdicts=verdicts_json(ctx.verdicts))
                self.metrics.finished(rec, ctx)
                access_log.metered(rec, ctx)
                self.write_row(rec)
            else:
                rec = refused(ctx, exc)
                self.metrics.finished(rec, ctx)
                access_log.metered(rec, ctx)
                await self.record(rec, ctx, ok=False)
        except Exception:
            log.exception("metering of failed request %s failed", ctx.request_id)
            return None
        return rec

    def _sweep(self, now: float) -> None:
        stale = [r for r, (_, seen) in self._pending.items() if now - seen > PENDING_TTL_SECONDS]
        for request_id in stale:
            del self._pending[request_id]
