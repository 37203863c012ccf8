"""What every benchmark shares: percentiles, tables, its section of docs/benchmarks.md, JSON.

Each benchmark owns one `## <Name>` section of the results page and rewrites only that one, so
benchmarks run at different times (the operator's, the gateway's) share the page.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"
# The page's sections, in order; a benchmark writing a missing section puts it in its place.
SECTIONS = ("Operator", "Gateway")
PAGE_HEAD = """# Benchmarks

Numbers measured on one machine by the benchmarks in `e2e/bench/`, each section by its own
command, which the section names. They are reported, never asserted: the targets come from
DESIGN.md ("Numbers this design must reach"), and a slow machine gives a slow number, not a
failed build. Re-running a benchmark rewrites its own section and keeps the others.
"""
NOT_MEASURED = "_Not measured yet._"

_HEADING = re.compile(r"^(#{1,2})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def percentile(values: Iterable[float], q: float) -> float:
    """The `q`th percentile (0-100), interpolating linearly between the two nearest ranks.

    This is numpy's default method, so p50 of an even count is the mean of the middle two.
    """
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values to take a percentile of")
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile is between 0 and 100, not {q}")
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class Summary:
    """The distribution of one measured quantity."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(values: Iterable[float]) -> Summary | None:
    """p50/p95/p99/max/mean of `values`; None when nothing was measured."""
    data = list(values)
    if not data:
        return None
    return Summary(
        count=len(data),
        p50=percentile(data, 50),
        p95=percentile(data, 95),
        p99=percentile(data, 99),
        max=max(data),
        mean=sum(data) / len(data),
    )


def fmt_seconds(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} s"


def fmt_mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MB"


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table, columns padded so the source reads as a table too."""
    body = [[_cell(c) for c in row] for row in rows]
    for row in body:
        if len(row) != len(headers):
            raise ValueError(f"row {row} has {len(row)} cells for {len(headers)} headers")
    widths = [max([len(h), 3, *(len(r[i]) for r in body)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in body)])


def text_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """The same table for a terminal: aligned columns, no pipes."""
    body = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(headers)]
    lines = [[*headers], ["-" * w for w in widths], *body]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in lines)


def _headings(lines: Sequence[str]) -> list[tuple[int, int, str]]:
    """(line index, level, title) of the level-1 and -2 headings outside code fences."""
    found, fenced = [], False
    for i, text in enumerate(lines):
        if _FENCE.match(text):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(text)
        if match:
            found.append((i, len(match.group(1)), match.group(2)))
    return found


def replace_section(document: str, name: str, body: str, order: Sequence[str] = SECTIONS) -> str:
    """`document` with the content of its `## name` section replaced by `body`.

    The section runs to the next level-1 or -2 heading (its `###` subsections go with it). A
    missing section is inserted before the first section that `order` puts after it, else at
    the end.
    """
    lines = document.splitlines()
    heads = _headings(lines)
    section = [f"## {name}", "", *body.strip("\n").splitlines(), ""]
    start = next((i for i, level, title in heads if level == 2 and title == name), None)
    if start is not None:
        end = next((i for i, _, _ in heads if i > start), len(lines))
        lines[start:end] = section
    else:
        later = set(order[order.index(name) + 1 :]) if name in order else set()
        at = next((i for i, level, title in heads if level == 2 and title in later), None)
        if at is None:
            if lines and lines[-1].strip():
                lines.append("")
            lines.extend(section)
        else:
            lines[at:at] = section
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines) + "\n"


def new_page(order: Sequence[str] = SECTIONS) -> str:
    """The results page before any benchmark ran: the head and one empty section each."""
    parts = [PAGE_HEAD.rstrip("\n")]
    parts += [f"## {name}\n\n{NOT_MEASURED}" for name in order]
    return "\n\n".join(parts) + "\n"


def write_section(name: str, body: str, path: Path = DOC) -> None:
    """Rewrite section `## name` of the results page at `path`, creating the page if needed."""
    document = path.read_text() if path.exists() else new_page()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_section(document, name, body))


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        mem_gb = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": mem_gb,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------- targets

TARGETS_DIR = ROOT / ".dev" / "bench"


@dataclass(frozen=True)
class TargetRow:
    """One target with its measured value, as each benchmark hands it to `make bench`'s table."""

    bench: str
    measure: str
    value: str
    target: str
    verdict: str
    """"meets", "misses" or "not measured"."""


def verdict(value: float | None, limit: float) -> str:
    """Whether `value` is at most `limit`."""
    return "not measured" if value is None else "meets" if value <= limit else "misses"


def write_targets(bench: str, rows: Sequence[TargetRow], directory: Path = TARGETS_DIR) -> Path:
    """Write `bench`'s target rows to `<directory>/targets-<bench>.json` (replacing its last)."""
    path = directory / f"targets-{bench}.json"
    write_json(path, [asdict(r) for r in rows])
    return path


def read_targets(directory: Path = TARGETS_DIR) -> list[TargetRow]:
    """Every benchmark's last target rows, benchmark by benchmark."""
    rows: list[TargetRow] = []
    for path in sorted(directory.glob("targets-*.json")):
        rows += [TargetRow(**r) for r in json.loads(path.read_text())]
    return rows
