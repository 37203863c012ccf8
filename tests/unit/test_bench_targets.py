"""The targets table of `make bench` (e2e.bench.targets): values and verdicts from the JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from e2e.bench import report, targets

pytestmark = pytest.mark.unit


def level(rps: float, p99: float, cpu: float, *, stream: bool = False) -> dict[str, Any]:
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
        "stream": stream,
        "rows": {"bare": bare, "tenantgw": tenantgw},
    }


def gateway(
    rps: float,
    p99: float,
    cpu: float,
    trips: float,
    streams: int,
    errors: int,
    *,
    stream_rps: float = 1.1,
    overshoot: float = 0.3,
) -> dict[str, Any]:
    return {
        "date": "2026-12-01 20:00 UTC",
        "args": {"workers": 1},
        "levels": [level(rps, p99, cpu), level(stream_rps, p99, cpu, stream=True)],
        "overshoot": {
            "clients": 50,
            "limit_usd": 0.05,
            "replicas": 1,
            "overshoot_requests": overshoot,
            "ledger": {"spend_usd": 0.05 + overshoot * 0.003},
        },
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


def row(res: dict[str, Any], starts: str) -> list[str]:
    (found,) = [r for r in targets.gateway_rows(res) if r[0].startswith(starts)]
    return found


def test_each_gateway_target_is_met_at_its_bound() -> None:
    res = gateway(1.2, 1.0, 1.0, 2.0, 1000, 0, stream_rps=1.0, overshoot=1.0)
    assert verdicts(res) == ["met"] * 7


def test_each_gateway_target_is_missed_past_its_bound() -> None:
    res = gateway(1.19, 1.01, 1.01, 2.01, 1000, 1, stream_rps=0.99, overshoot=1.01)
    assert verdicts(res) == ["not met"] * 7


def test_the_rps_rows_show_how_far_the_rounds_spread() -> None:
    res = gateway(1.25, 0.9, 0.8, 2.0, 1000, 0)
    res["levels"][0]["rows"]["tenantgw"]["rps_vs_bare_by_round"] = [1.4, 0.98, 1.31, 1.12]
    measured = row(res, "tenantgw RPS ≥ 1.2x")[1]
    assert measured.endswith("4 rounds, each 0.98x to 1.40x)")
    assert "rounds" not in row(res, "tenantgw RPS ≥ 1.0x")[1]  # none recorded: no spread


def test_fewer_streams_than_the_target_are_not_a_verdict() -> None:
    found = row(gateway(1.3, 0.9, 0.8, 2.0, 50, 0), "1000 concurrent streams")
    assert found[2] == "not measured"
    assert "only 50 streams" in found[1]


def test_a_run_without_the_overshoot_phase_gives_no_overshoot_verdict() -> None:
    res = gateway(1.3, 0.9, 0.8, 2.0, 1000, 0)
    del res["overshoot"]
    assert row(res, "budget overshoot")[2] == "not measured"


def test_the_redis_row_counts_the_commands_the_gateway_sent() -> None:
    found = row(gateway(1.3, 0.9, 0.8, 1.5, 1000, 0), "Redis round trips")
    assert found[1].startswith("1.50 (EVALSHA 1.50;")
    assert found[2] == "met"


def test_the_redis_row_leaves_out_what_the_gateway_sends_on_timers() -> None:
    res = gateway(1.3, 0.9, 0.8, 2.3, 1000, 0)
    res["profile"]["non-stream"]["tenantgw"]["redis_per_request"] |= {
        "background_per_request": 0.25,
        "background_per_s": 1.0,
    }
    found = row(res, "Redis round trips")
    assert found[1].startswith("2.05 (2.30 commands")
    assert found[2] == "not met"


def test_a_run_that_counted_server_wide_gives_no_redis_verdict() -> None:
    res = gateway(1.3, 0.9, 0.8, 1.5, 1000, 0)
    res["profile"]["non-stream"]["tenantgw"]["redis_per_request"] = {
        "calls_per_request": {"evalsha": 1.5}
    }
    assert row(res, "Redis round trips")[2] == "not measured"


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
