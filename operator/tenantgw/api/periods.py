"""Budget periods: where a daily, weekly or monthly period starts and ends, in UTC; counter keys.

Pure functions. A period is the half-open interval [start, end); weeks start on ISO Monday.
A naive datetime is taken to be UTC, an aware one is converted to UTC first.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from tenantgw.api.markers import tenant_key

Period = Literal["daily", "weekly", "monthly"]
PERIODS: tuple[str, ...] = get_args(Period)


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _check(period: str) -> None:
    if period not in PERIODS:
        raise ValueError(f"unknown budget period {period!r}: expected one of {', '.join(PERIODS)}")


def period_start(period: str, when: datetime) -> datetime:
    """The first instant (UTC midnight) of the period that contains `when`."""
    _check(period)
    midnight = _utc(when).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return midnight
    if period == "weekly":
        return midnight - timedelta(days=midnight.weekday())
    return midnight.replace(day=1)


def period_end(period: str, when: datetime) -> datetime:
    """The first instant after the period that contains `when` (the next period's start)."""
    start = period_start(period, when)
    if period == "daily":
        return start + timedelta(days=1)
    if period == "weekly":
        return start + timedelta(weeks=1)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def period_bounds(period: str, when: datetime) -> tuple[datetime, datetime]:
    """(start, end) of the period that contains `when`."""
    return period_start(period, when), period_end(period, when)


def period_label(period: str, when: datetime) -> str:
    """The period's start as `YYYY-MM-DD`, the suffix of its budget counter key in Redis."""
    return period_start(period, when).strftime("%Y-%m-%d")


def format_reset(when: datetime) -> str:
    """A period boundary for people: `2026-12-01 00:00 UTC`."""
    return _utc(when).strftime("%Y-%m-%d %H:%M UTC")


def budget_counter_key(tenant: str, policy: str, period: str, when: datetime) -> str:
    """`t:{<tenant>}:budget:<policy>:<YYYY-MM-DD>`: micro-USD spent under a policy in a period.

    The gateway increments it; the operator reads it for the BudgetPolicy's status.
    """
    return tenant_key(tenant, "budget", policy, period_label(period, when))


def session_spend_key(counter_key: str) -> str:
    """`<counter key>:sessions`: the sorted set of a Session policy's spend per session.

    Members are session ids, scores micro-USD. The gateway adds to it; the operator reads its
    top member and how many reach the limit for the BudgetPolicy's status.
    """
    return f"{counter_key}:sessions"
