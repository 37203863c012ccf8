"""Budget periods (UTC), shared with the operator: see tenantgw.api.periods."""

from tenantgw.api.periods import (
    PERIODS,
    Period,
    budget_counter_key,
    format_reset,
    period_bounds,
    period_end,
    period_label,
    period_start,
    session_spend_key,
)

__all__ = [
    "PERIODS",
    "Period",
    "budget_counter_key",
    "format_reset",
    "period_bounds",
    "period_end",
    "period_label",
    "period_start",
    "session_spend_key",
]
