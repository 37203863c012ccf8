"""The soak's bookkeeping (e2e/bench/soak.py): outcomes, ledger matching, RSS statistics, and
its rows in the targets table. Made-up samples, so every number is exact; no server."""

from __future__ import annotations

from typing import Any

import pytest

from e2e.bench import soak, targets

pytestmark = pytest.mark.unit


def test_refusals_are_told_apart_from_errors() -> None:
    assert soak.classify(200, None, "dev1", None) == "ok"
    assert soak.classify(200, None, "dev1", "incomplete stream") == "error"
    assert soak.classify(503, "5", "dev1", "http 503") == "store_refused"
    assert soak.classify(503, None, "dev1", "http 503") == "error"  # no retry-after: not ours
    assert soak.classify(402, "3600", "capped", "http 402") == "budget_refused"
    assert soak.classify(402, "3600", "dev1", "http 402") == "error"  # its budget is not spent
    assert soak.classify(429, "5", "capped", "http 429") == "budget_held"
    assert soak.classify(429, "5", "dev1", "http 429") == "error"
    assert soak.classify(0, None, "dev1", "connection: ClientOSError") == "error"


def outcome(session: str, kind: str, tenant: str = "t") -> soak.Outcome:
    return soak.Outcome(0.0, tenant, "dev1", "chat", "claude", False, session, 200, kind)


def test_a_served_request_needs_exactly_one_success_row() -> None:
    outcomes = [
        outcome("s1", "ok"),
        outcome("s2", "ok"),  # no row: lost
        outcome("s3", "ok"),  # two rows: duplicated
        outcome("s4", "store_refused"),  # an error row, as the gateway writes for refusals
        outcome("s5", "error"),  # the client gave up, the gateway served it
        outcome("x1", "ok", tenant="other"),
    ]
    rows = [
        ("s1", "success", "dev1", 0.5),
        ("s3", "success", "dev1", 0.25),
        ("s3", "success", "dev1", 0.25),
        ("s4", "error", "dev1", 0.0),
        ("s5", "success", "capped", 1.0),
        ("zz", "success", "dev1", 0.125),
    ]
    check = soak.check_tenant("t", outcomes, rows)
    assert check["client_ok"] == 3
    assert check["lost"] == 1
    assert check["lost_sessions"] == ["s2"]
    assert check["duplicated"] == 1
    assert check["rows_without_a_client_request"] == 1
    assert check["served_but_client_saw_failure"] == 1
    assert check["ledger_cost_usd"] == 2.125
    assert check["capped_cost_usd"] == 1.0


def test_rss_after_warm_up_and_its_slope() -> None:
    # 300 MB at start, 400 after the warm-up (60 s), then +1 MB a minute; one spike.
    samples: list[dict[str, Any]] = [{"t": 0.0, "g": 300.0}, {"t": 30.0, "g": 380.0}]
    samples += [{"t": 60.0 + 60 * i, "g": 400.0 + i} for i in range(11)]
    samples[5]["g"] += 50
    summary = soak.rss_summary(samples, "g", warmup_s=60)
    assert summary["start_mb"] == 300.0
    assert summary["after_warmup_mb"] == 401.0  # median of 400, 401, 402
    assert summary["end_mb"] == 409.0  # median of 408, 409, 410
    assert summary["max_mb"] == 453.0
    assert summary["growth_after_warmup_mb"] == 8.0
    assert soak.slope_per_10min([(0, 1.0), (600, 2.0), (1200, 3.0)]) == pytest.approx(1.0)
    assert soak.slope_per_10min([(0, 1.0), (600, 2.0)]) is None


def soak_result(lost: int, errors: int, growth: float, within: bool) -> dict[str, Any]:
    tenant = {"lost": lost, "duplicated": 0, "client_ok": 900,
              "rss": {"growth_after_warmup_mb": growth}}  # fmt: skip
    return {
        "date": "2026-12-01 00:00 UTC",
        "args": {"minutes": 30.0, "rss_bound_mb": 20.0},
        "per_tenant": {"a": tenant, "b": tenant},
        "verdicts": {"rss_growth_within_bound": within},
        "kinds": {"ok": 1800, "error": errors, "store_refused": 40},
        "requests": 1840 + errors,
        "error_rate": errors / (1840 + errors),
    }


def test_the_soak_rows_of_the_targets_table() -> None:
    rows = targets.soak_rows(soak_result(lost=0, errors=0, growth=3.5, within=True))
    assert [r[2] for r in rows] == ["met", "met", "met"]
    assert rows[0][1] == "+3.5 MB, +3.5 MB (bound 20 MB; 30 min run)"
    assert rows[1][1] == "0 of 1800 served"
    rows = targets.soak_rows(soak_result(lost=2, errors=100, growth=30.0, within=False))
    assert [r[2] for r in rows] == ["not met", "not met", "not met"]
    assert [r[2] for r in targets.soak_rows(None)] == ["not measured"] * 3


def test_the_error_rate_leaves_out_refusals_by_design() -> None:
    res = {"requests": 1000, "kinds": {"ok": 700, "error": 3, "store_refused": 97,
                                       "budget_refused": 150, "budget_held": 50}}  # fmt: skip
    assert soak.error_rate(res) == 3 / 703


def test_where_the_rss_goes_flat() -> None:
    series = [(0.0, 300.0), (60.0, 410.0), (120.0, 419.0), (180.0, 425.0), (240.0, 424.0),
              (300.0, 425.5)]  # fmt: skip
    assert soak.flat_from(series, 425.0) == 180.0
    assert soak.flat_from([(0.0, 1.0), (60.0, 10.0)], 10.0) == 60.0
