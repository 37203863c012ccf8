"""The benchmark results page: percentiles, tables, and each benchmark owning one section."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.bench.report import (
    NOT_MEASURED,
    markdown_table,
    new_page,
    percentile,
    replace_section,
    summarize,
    text_table,
    write_section,
)

pytestmark = pytest.mark.unit


def test_percentiles_interpolate_between_the_nearest_ranks() -> None:
    values = [float(v) for v in range(10, 0, -1)]  # unsorted on purpose
    assert percentile(values, 0) == 1
    assert percentile(values, 50) == 5.5
    assert percentile(values, 95) == pytest.approx(9.55)
    assert percentile(values, 100) == 10
    assert percentile([0.42], 95) == 0.42


def test_a_percentile_of_nothing_or_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)


def test_summary_reports_the_distribution_and_none_when_nothing_was_measured() -> None:
    summary = summarize([0.2, 0.4, 0.1, 3.0])
    assert summary is not None
    assert (summary.count, summary.max) == (4, 3.0)
    assert summary.p50 == pytest.approx(0.3)
    assert summary.p95 == pytest.approx(2.61)
    assert summary.as_dict()["mean"] == pytest.approx(0.925)
    assert summarize([]) is None


def test_markdown_table_pads_columns_and_escapes_pipes() -> None:
    table = markdown_table(["Measure", "Result"], [["a|b", "1 s"], ["longer name", "2"]])
    assert table.splitlines() == [
        "| Measure     | Result |",
        "| ----------- | ------ |",
        "| a\\|b        | 1 s    |",
        "| longer name | 2      |",
    ]
    with pytest.raises(ValueError, match="2 headers"):
        markdown_table(["a", "b"], [["only one"]])


def test_text_table_aligns_columns_for_a_terminal() -> None:
    assert text_table(["a", "bb"], [["ccc", "d"]]).splitlines() == [
        "a    bb",
        "---  --",
        "ccc  d ",
    ]


PAGE = """# Benchmarks

Intro.

## Operator

Old operator numbers.

### A subsection of the operator

```
## not a heading: inside a code block
```

## Gateway

Gateway numbers stay.
"""


def test_rewriting_a_section_keeps_the_others_and_drops_its_own_subsections() -> None:
    page = replace_section(PAGE, "Operator", "New numbers.\n\n### Details\n\nMore.")
    assert page == (
        "# Benchmarks\n\nIntro.\n\n## Operator\n\nNew numbers.\n\n### Details\n\nMore.\n\n"
        "## Gateway\n\nGateway numbers stay.\n"
    )
    assert replace_section(page, "Operator", "New numbers.\n\n### Details\n\nMore.") == page


def test_a_missing_section_is_inserted_in_page_order() -> None:
    only_gateway = "# Benchmarks\n\n## Gateway\n\nG.\n"
    page = replace_section(only_gateway, "Operator", "O.")
    assert page == "# Benchmarks\n\n## Operator\n\nO.\n\n## Gateway\n\nG.\n"
    page = replace_section("# Benchmarks\n", "Gateway", "G.")
    assert page == "# Benchmarks\n\n## Gateway\n\nG.\n"


def test_the_first_write_creates_the_page_with_a_place_for_every_benchmark(
    tmp_path: Path,
) -> None:
    doc = tmp_path / "docs" / "benchmarks.md"
    write_section("Operator", "Operator numbers.", doc)
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n")
    assert "## Operator\n\nOperator numbers.\n\n## Gateway\n\n" + NOT_MEASURED + "\n" in text
    write_section("Gateway", "Gateway numbers.", doc)
    assert "Operator numbers." in doc.read_text()
    assert NOT_MEASURED not in doc.read_text()
    assert new_page().count("## ") == 2


def test_target_rows_round_trip_and_each_bench_replaces_only_its_own(tmp_path: Path) -> None:
    from e2e.bench.report import TargetRow, read_targets, verdict, write_targets

    assert (verdict(2.9, 3), verdict(3.1, 3), verdict(None, 3)) == (
        "meets",
        "misses",
        "not measured",
    )
    write_targets("operator", [TargetRow("operator", "idle writes", "0", "0", "meets")], tmp_path)
    write_targets("gateway", [TargetRow("gateway", "rps", "1.3x", "≥ 1.2x", "meets")], tmp_path)
    write_targets("operator", [TargetRow("operator", "idle writes", "3", "0", "misses")], tmp_path)
    assert [(r.bench, r.value) for r in read_targets(tmp_path)] == [
        ("gateway", "1.3x"),
        ("operator", "3"),
    ]


def test_the_operator_bench_states_each_target_with_its_verdict() -> None:
    from e2e.bench.operator_bench import target_rows

    summary = {"p50": 1.0, "p95": 2.5, "p99": 2.9, "max": 3.0, "mean": 1.2, "count": 50}
    res = {
        "latency": {
            "tenants": 50,
            "interval_s": 0.2,
            "outcome": "ready",
            "from_apply": {"available": summary},
            "operator_writes": 900,
        },
        "idle": {"tenants": 55, "writes": 0},
        "converge": [
            {
                "tenants": 1000,
                "seconds_to_all_ready": 130.0,
                "ready": 1000,
                "wall_seconds": 130.0,
                "memory": {"rss_mb": 240.0},
            }
        ],
    }
    got = {r.measure: (r.value, r.verdict) for r in target_rows(res)}
    assert got == {
        "operator: apply → Deployment Available, 50 tenants at 5/s, p95": ("2.50 s", "meets"),
        "operator: API writes per new tenant (paced tenants)": ("18.0", "meets"),
        "operator: API writes in an idle window (55 tenants)": ("0", "meets"),
        "operator: 1000 tenants from cold → all Ready": ("130 s", "misses"),
        "operator: RSS at 1000 tenants": ("240 MB", "meets"),
    }
