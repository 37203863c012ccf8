"""The targets table of `make bench` (e2e.bench.targets): values and verdicts from the JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2e.bench import report, targets

pytestmark = pytest.mark.unit


def level(rps: float, p99: float, cpu: float) -> dict[str, Any]:
    bare = {"rps": 20.0, "added_latency_s": {"p99": 0.5}, "cpu_ms_per_request": 10.0}
    tenantgw = {
        "rps": 20.0 * rps,
        "rps_vs_bare": rps,
        "added_latency_s": {"p99": 0.5 * p99},
        "added_p99_vs_bare": p99,
        "cpu_ms_per_request": 10.0 * cpu,
    }
    return {
        "concurrency": 32,
        "api": "chat",
        "stream": False,
        "rows": {"bare": bare, "tenantgw": tenantgw},
    }


def gateway(
    rps: float, p99: float, cpu: float, trips: float, streams: int, errors: int
) -> dict[str, Any]:
    return {
        "date": "2026-12-01 20:00 UTC",
        "args": {"workers": 1},
        "levels": [level(rps, p99, cpu)],
        "profile": {
            "non-stream": {
                "tenantgw": {
                    "redis_per_request": {
                        # commandstats counts what scripts run too: not the round trips
                        "calls_per_request": {"evalsha": 2.0, "get": 3.0},
                        "round_trips_per_request": trips,
                        "round_trips_by_command": {"evalsha": trips},
                    }
                }
            }
        },
        "streams": [
            {
                "variant": "tenantgw",
                "streams": streams,
                "ok": streams - errors,
                "errors": {"http 500": errors} if errors else {},
                "not_sent": 0,
                "wall_s": 12.0,
            }
        ],
    }


def verdicts(res: dict[str, Any] | None) -> list[str]:
    return [row[2] for row in targets.gateway_rows(res)]


def test_each_gateway_target_is_met_at_its_bound() -> None:
    assert verdicts(gateway(1.2, 1.0, 1.0, 2.0, 1000, 0)) == ["met"] * 5


def test_each_gateway_target_is_missed_past_its_bound() -> None:
    assert verdicts(gateway(1.19, 1.01, 1.01, 2.01, 1000, 1)) == ["not met"] * 5


def test_fewer_streams_than_the_target_are_not_a_verdict() -> None:
    row = targets.gateway_rows(gateway(1.3, 0.9, 0.8, 2.0, 50, 0))[4]
    assert row[2] == "not measured"
    assert "only 50 streams" in row[1]


def test_the_redis_row_counts_the_commands_the_gateway_sent() -> None:
    row = targets.gateway_rows(gateway(1.3, 0.9, 0.8, 1.5, 1000, 0))[3]
    assert row[1].startswith("1.50 (EVALSHA 1.50;")
    assert row[2] == "met"


def test_the_redis_row_leaves_out_what_the_gateway_sends_on_timers() -> None:
    res = gateway(1.3, 0.9, 0.8, 2.3, 1000, 0)
    res["profile"]["non-stream"]["tenantgw"]["redis_per_request"] |= {
        "background_per_request": 0.25,
        "background_per_s": 1.0,
    }
    row = targets.gateway_rows(res)[3]
    assert row[1].startswith("2.05 (2.30 commands")
    assert row[2] == "not met"


def test_a_run_that_counted_server_wide_gives_no_redis_verdict() -> None:
    res = gateway(1.3, 0.9, 0.8, 1.5, 1000, 0)
    res["profile"]["non-stream"]["tenantgw"]["redis_per_request"] = {
        "calls_per_request": {"evalsha": 1.5}
    }
    assert targets.gateway_rows(res)[3][2] == "not measured"


def test_no_run_yet_gives_rows_saying_so(tmp_path: Path) -> None:
    assert targets.load(tmp_path / "missing.json") is None
    assert set(verdicts(None)) == {"not measured"}
    assert targets.operator_rows(None)[0][2] == "not measured"


def test_the_section_goes_first_on_the_page_and_keeps_the_others(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    report.write_section("Gateway", "gateway numbers", page)
    targets.main(["--gateway-json", str(tmp_path / "none.json"), "--operator-json",
                  str(tmp_path / "none.json"), "--out", str(page)])  # fmt: skip
    text = page.read_text()
    assert text.index("## Targets") < text.index("## Operator") < text.index("## Gateway")
    assert "gateway numbers" in text
    assert "| Target" in text
