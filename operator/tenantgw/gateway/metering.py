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
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.enforcer import Enforcer
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
        enforcer: Enforcer | None,
        metrics: GatewayMetrics,
        rules: Callable[[], Rules | None] = lambda: None,
    ) -> None:
        self.ledger = ledger
        self.enforcer = enforcer
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
        self,
        rec: UsageRecord,
        ctx: RequestContext,
        *,
        ok: bool,
        ledger: bool = True,
        free_slot: bool = False,
        attempt: bool = False,
    ) -> None:
        """Metrics, the ledger row (unless `ledger` is False) and, in one Redis call, the
        budget spend of one record and the end of the request's rate-limit slot (`free_slot`).

        `attempt`: a failed attempt that a fallback may follow; only a cost is settled then
        (its reservation stays until the hop's admission or the request's end moves it).
        """
        self.metrics.observe(rec)
        if ledger:
            self.write_row(rec)
        if attempt and rec.cost_usd <= 0:
            return
        await self.settle(
            # Spend counts against the alias that served the call, as in the ledger
            # (reconciliation compares the two).
            dataclasses.replace(ctx, alias=rec.alias),
            rec.cost_usd,
            tokens=rec.total_tokens,
            free_slot=free_slot,
            update_estimate=ok,
        )

    async def settle(
        self,
        ctx: RequestContext,
        cost_usd: float | None,
        *,
        tokens: int = 0,
        free_slot: bool = False,
        update_estimate: bool = False,
    ) -> None:
        """The request's SETTLE (`enforcer.Enforcer.settle`); the budget gauges it updates."""
        if self.enforcer is None:
            return
        rules = self.enforcer.rules or self._current_rules()
        spends = await self.enforcer.settle(
            ctx,
            rules,
            cost_usd=cost_usd,
            tokens=tokens,
            free_slot=free_slot,
            update_estimate=update_estimate,
        )
        for spend in spends:
            if spend.session_id is not None:
                # One session's spend is not the policy's; a session label would be unbounded.
                # The BudgetPolicy's status shows the top session.
                continue
            self.metrics.budget_utilization.labels(ctx.tenant, spend.policy).set(
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
        *,
        free_slot: bool = False,
    ) -> UsageRecord | None:
        """The request succeeded (perhaps on a fallback): its row is the success.

        Never raises (a metering bug must not fail a request that succeeded). With
        `free_slot`, the same Redis call frees the request's rate-limit slot and counts
        `record.total_tokens`; None means nothing was settled (the caller frees the slot).
        """
        pending = self._pending.pop(ctx.request_id, None)
        try:
            rec = record_from_kwargs(ctx, kwargs, response_obj, start_time, end_time, ok=True)
            if pending is not None:
                rec = dataclasses.replace(rec, failed_attempts=attempts_json(pending[0]))
            self.metrics.finished(rec, ctx)
            access_log.metered(rec, ctx)
        except Exception:
            log.exception("metering of request %s failed", ctx.request_id)
            return None
        try:
            await self.record(rec, ctx, ok=True, free_slot=free_slot)
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
            await self.record(rec, ctx, ok=False, ledger=False, attempt=True)
        except Exception:
            log.exception("metering of a failed attempt of %s failed", ctx.request_id)
            return None
        now = time.monotonic()
        self._sweep(now)
        failures = self._pending.get(ctx.request_id, ([], now))[0]
        failures.append(dataclasses.replace(rec, request_id=ctx.request_id))
        self._pending[ctx.request_id] = (failures, now)
        return rec

    async def on_final_failure(
        self, ctx: RequestContext, exc: BaseException, *, free_slot: bool = False
    ) -> UsageRecord | None:
        """Nothing answered the request, or it was refused before going upstream: its row,
        and in one Redis call its slot freed (`free_slot`) and its reservation dropped."""
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
                # Its attempts' costs are counted already.
                await self.settle(ctx, None, free_slot=free_slot)
            else:
                rec = refused(ctx, exc)
                self.metrics.finished(rec, ctx)
                access_log.metered(rec, ctx)
                await self.record(rec, ctx, ok=False, free_slot=free_slot)
        except Exception:
            log.exception("metering of failed request %s failed", ctx.request_id)
            await self.settle(ctx, None, free_slot=free_slot)
            return None
        return rec

    def _sweep(self, now: float) -> None:
        stale = [r for r, (_, seen) in self._pending.items() if now - seen > PENDING_TTL_SECONDS]
        for request_id in stale:
            del self._pending[request_id]
