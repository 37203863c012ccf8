"""Budget periods start and end on UTC boundaries: midnight, ISO Monday, the 1st of the month."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tenantgw.gateway.periods import (
    format_reset,
    period_bounds,
    period_end,
    period_label,
    period_start,
)

pytestmark = pytest.mark.unit


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "when", "start", "end"),
    [
        ("daily", utc(2026, 11, 28, 15, 4, 5), utc(2026, 11, 28), utc(2026, 11, 29)),
        ("daily", utc(2026, 12, 31, 23, 59, 59), utc(2026, 12, 31), utc(2027, 1, 1)),
        ("daily", utc(2026, 3, 1), utc(2026, 3, 1), utc(2026, 3, 2)),
        # 2026-11-28 is a Saturday: its ISO week started on Monday the 23rd.
        ("weekly", utc(2026, 11, 28, 12), utc(2026, 11, 23), utc(2026, 11, 30)),
        ("weekly", utc(2026, 11, 23), utc(2026, 11, 23), utc(2026, 11, 30)),
        ("weekly", utc(2026, 11, 29, 23, 59), utc(2026, 11, 23), utc(2026, 11, 30)),
        # A week that spans New Year.
        ("weekly", utc(2027, 1, 1, 8), utc(2026, 12, 28), utc(2027, 1, 4)),
        ("monthly", utc(2026, 11, 28, 9), utc(2026, 11, 1), utc(2026, 12, 1)),
        ("monthly", utc(2026, 12, 15), utc(2026, 12, 1), utc(2027, 1, 1)),
        ("monthly", utc(2028, 2, 29, 23), utc(2028, 2, 1), utc(2028, 3, 1)),
    ],
)
def test_period_bounds(period: str, when: datetime, start: datetime, end: datetime) -> None:
    assert period_start(period, when) == start
    assert period_end(period, when) == end
    assert period_bounds(period, when) == (start, end)
    assert start <= when < end


def test_an_aware_time_elsewhere_is_placed_in_its_utc_period() -> None:
    # 01:30 on Dec 1st in UTC+2 is still Nov 30th in UTC.
    plus_two = timezone(timedelta(hours=2))
    when = datetime(2026, 12, 1, 1, 30, tzinfo=plus_two)
    assert period_start("daily", when) == utc(2026, 11, 30)
    assert period_start("monthly", when) == utc(2026, 11, 1)


def test_a_naive_time_is_taken_as_utc() -> None:
    assert period_start("daily", datetime(2026, 11, 28, 23, 59)) == utc(2026, 11, 28)


def test_the_boundary_belongs_to_the_new_period() -> None:
    end = period_end("daily", utc(2026, 11, 28, 10))
    assert period_start("daily", end) == end
    assert period_start("daily", end - timedelta(microseconds=1)) == utc(2026, 11, 28)


def test_labels_and_reset_text() -> None:
    assert period_label("weekly", utc(2026, 11, 28)) == "2026-11-23"
    assert period_label("monthly", utc(2026, 11, 28)) == "2026-11-01"
    assert format_reset(utc(2026, 12, 1)) == "2026-12-01 00:00 UTC"


def test_an_unknown_period_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown budget period 'hourly'"):
        period_start("hourly", utc(2026, 1, 1))
