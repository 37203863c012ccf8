"""What a client gets when a BudgetPolicy refuses its request.

A spent budget is final until its period resets: `BudgetExceededError`, 402 `billing_error`
with `x-should-retry: false` and `retry-after` at the reset, which no SDK and not Claude Code
retries (docs/operations.md, "Budget refusals", has the measurements). A budget that is full
only because of the reservations of requests still in progress may free up in seconds: that
is a 429 `rate_limit_error` with a short `retry-after`, which clients retry.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tenantgw.gateway.errors import BudgetExceededError, GatewayError, RateLimitError

HELD_RETRY_AFTER = 5.0
"""Seconds after which a request refused for reservations of requests in progress may retry."""


def budget_refusal(decision: Any, tenant: str, now: datetime | None = None) -> GatewayError:
    """The error for a budget `decision` that blocks a request of `tenant`."""
    message = str(getattr(decision, "message", "") or "") or f"tenant {tenant}'s budget is spent"
    if getattr(decision, "held", False):
        return RateLimitError(message, retry_after=HELD_RETRY_AFTER)
    resets_at = getattr(decision, "resets_at", None)
    retry_after = None
    if isinstance(resets_at, datetime):
        retry_after = max((resets_at - (now or datetime.now(UTC))).total_seconds(), 1.0)
    return BudgetExceededError(message, retry_after=retry_after)
