"""The provider x capability matrix of docs/providers.md, generated from what the suite observed.

`e2e/test_provider_conformance.py` marks each cell test with `conformance_cell(COLUMN)` and
parametrizes it by `provider` (a provider type). This plugin (loaded by the root conftest)
records each cell's outcome as it runs:

* the test passed: `pass`, or `n/s` (not supported by the provider) when the test proved the
  provider refuses the capability and said so with `not_supported(request, reason)`; a note
  the test attached with `note(request, text)` goes with it;
* the test failed: `fail`, noted with the exception's type (a stable text, no random values);
* an expected failure (`xfail`, strict): `fail` noted with the xfail's reason.

A setup error or a skip records nothing: the cell was not observed.

At the end of the session the observed cells are compared with the committed table between
the markers in docs/providers.md; only the cells that ran are compared, so `-k`, `-x` and
`-m "not claude_cli"` runs check what they ran. A difference fails the session (exit status
1) and the summary names each cell and the command that regenerates the table. With
`--update-matrix` the observed cells are written into the table instead (cells that did not
run keep their committed value).
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from tenantgw.api import ProviderType

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "providers.md"
BEGIN = "<!-- conformance-matrix:begin -->"
END = "<!-- conformance-matrix:end -->"
REGENERATE = ".venv/bin/pytest e2e/test_provider_conformance.py --update-matrix"

PROVIDER_TYPES = tuple(t.value for t in ProviderType)
"""Every provider type a Tenant accepts, in the table's order."""

COLUMNS: dict[str, str] = {
    "litellm": "LiteLLM model (rendered)",
    "anthropic_plain": "anthropic SDK plain",
    "anthropic_stream": "anthropic SDK streamed",
    "anthropic_tools": "anthropic SDK tool round trip",
    "count_tokens": "count_tokens",
    "thinking": "thinking requested",
    "openai_plain": "openai SDK plain",
    "openai_stream": "openai SDK streamed",
    "openai_tools": "openai SDK tools",
    "ledger": "ledger row (tokens, cost)",
    "claude_code": "Claude Code tool turn",
    "needs": "LiteLLM setting / tenantgw repair",
}
"""Column key -> header. `litellm` and `needs` hold text, every other column an outcome."""

TEXT_COLUMNS = ("litellm", "needs")
OUTCOMES = ("pass", "fail", "n/s")
_KEY = pytest.StashKey[dict[tuple[str, str], "Cell"]]()
_DRIFT = pytest.StashKey[list[str]]()
_PROPERTY = "conformance"


@dataclass(frozen=True)
class Cell:
    """One cell: an outcome (or a text column's text) and an optional note."""

    value: str
    note: str = ""

    def describe(self) -> str:
        return f"{self.value} ({self.note})" if self.note else self.value


Matrix = dict[tuple[str, str], Cell]


# --------------------------------------------------------------------------- recording


def note(request: pytest.FixtureRequest, text: str) -> None:
    """Attach `text` to the cell of the running test (shown as a note of its outcome)."""
    request.node.user_properties.append((_PROPERTY, ("note", text)))


def not_supported(request: pytest.FixtureRequest, reason: str) -> None:
    """Record the running cell as not supported by the provider, for `reason`.

    Call it only after the test has shown the refusal (a clean error in the client's shape).
    """
    request.node.user_properties.append((_PROPERTY, ("n/s", reason)))


def record_text(config: pytest.Config, provider: str, column: str, text: str) -> None:
    """Record a text column (`litellm`) observed by a fixture."""
    config.stash.setdefault(_KEY, {})[(provider, column)] = Cell(text)


def _cell_of(item: pytest.Item) -> tuple[str, str] | None:
    marker = item.get_closest_marker("conformance_cell")
    callspec = getattr(item, "callspec", None)
    if marker is None or callspec is None:
        return None
    return str(callspec.params["provider"]), str(marker.args[0])


def _observed(report: pytest.TestReport, call: pytest.CallInfo[None]) -> Cell | None:
    notes: list[tuple[str, str]] = [
        cast("tuple[str, str]", v) for k, v in report.user_properties if k == _PROPERTY
    ]
    if hasattr(report, "wasxfail"):
        return (
            Cell("fail", str(report.wasxfail).removeprefix("reason: ")) if report.skipped else None
        )
    if report.passed:
        unsupported = [text for kind, text in notes if kind == "n/s"]
        if unsupported:
            return Cell("n/s", unsupported[0])
        return Cell("pass", "; ".join(text for kind, text in notes if kind == "note"))
    if report.failed and call.excinfo is None:  # XPASS(strict): declared failing, passed
        return Cell("pass")
    if report.failed and call.excinfo is not None:
        return Cell("fail", call.excinfo.type.__name__)
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    cell = _cell_of(item)
    if cell is None or report.when != "call":
        return
    observed = _observed(report, call)
    if observed is not None:
        item.config.stash.setdefault(_KEY, {})[cell] = observed


# --------------------------------------------------------------------------- the table


def _note_refs(matrix: Matrix) -> dict[str, int]:
    refs: dict[str, int] = {}
    for provider in PROVIDER_TYPES:
        for column in COLUMNS:
            cell = matrix.get((provider, column))
            if cell is not None and cell.note and cell.note not in refs:
                refs[cell.note] = len(refs) + 1
    return refs


def render(matrix: Matrix) -> str:
    """The table and its numbered notes, as written between the markers."""
    refs = _note_refs(matrix)
    lines = [
        "| provider type | " + " | ".join(COLUMNS.values()) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for provider in PROVIDER_TYPES:
        cells = []
        for column in COLUMNS:
            cell = matrix.get((provider, column), Cell("not run"))
            text = cell.value.replace("|", "\\|")
            if cell.note:
                text += f" [{refs[cell.note]}]"
            cells.append(text)
        lines.append(f"| `{provider}` | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"[{n}] {text}  " for text, n in refs.items()]
    return "\n".join(lines).rstrip() + "\n"


_ROW = re.compile(r"^\| `(?P<provider>[^`]+)` \| (?P<cells>.*) \|$")
_REF = re.compile(r"^(?P<value>.*?)(?: \[(?P<ref>\d+)\])?$")
_NOTE = re.compile(r"^\[(?P<ref>\d+)\] (?P<text>.*?)\s*$")


def parse(block: str) -> Matrix:
    """The cells of a table written by `render` (ValueError if it is not one)."""
    notes = {m["ref"]: m["text"] for m in map(_NOTE.match, block.splitlines()) if m}
    matrix: Matrix = {}
    for line in block.splitlines():
        row = _ROW.match(line)
        if row is None:
            continue
        values = re.split(r"(?<!\\) \| ", row["cells"])
        if len(values) != len(COLUMNS):
            raise ValueError(f"row {row['provider']}: {len(values)} cells, not {len(COLUMNS)}")
        for column, raw in zip(COLUMNS, values, strict=True):
            m = _REF.match(raw.replace("\\|", "|"))
            assert m is not None  # the pattern matches any text
            ref = m["ref"]
            if ref is not None and ref not in notes:
                raise ValueError(f"row {row['provider']}: note [{ref}] is not listed")
            matrix[(row["provider"], column)] = Cell(m["value"], notes[ref] if ref else "")
    return matrix


def committed_block(doc: str) -> str:
    """The text between the markers of docs/providers.md (ValueError without them)."""
    start, end = doc.find(BEGIN), doc.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{DOC.name} has no {BEGIN} ... {END} block")
    return doc[start + len(BEGIN) : end].strip("\n")


def splice(doc: str, matrix: Matrix) -> str:
    """`doc` with the block between the markers replaced by `render(matrix)`."""
    committed_block(doc)  # the markers must be there
    start, end = doc.find(BEGIN) + len(BEGIN), doc.find(END)
    return doc[:start] + "\n" + render(matrix) + doc[end:]


def drift(committed: Matrix, observed: Mapping[tuple[str, str], Cell]) -> list[str]:
    """One line per observed cell whose committed value differs."""
    lines = []
    for provider, column in sorted(observed):
        want = committed.get((provider, column))
        got = observed[(provider, column)]
        if want != got:
            shown = want.describe() if want is not None else "missing"
            lines.append(
                f"{provider} x {COLUMNS[column]}: table says {shown!r}, ran {got.describe()!r}"
            )
    return lines


def incomplete(matrix: Matrix) -> Iterable[str]:
    """What a committed table lacks: rows, cells, valid outcomes."""
    for provider in PROVIDER_TYPES:
        for column in COLUMNS:
            cell = matrix.get((provider, column))
            if cell is None:
                yield f"{provider} x {COLUMNS[column]}: missing"
            elif column not in TEXT_COLUMNS and cell.value not in OUTCOMES:
                yield f"{provider} x {COLUMNS[column]}: {cell.value!r} is not one of {OUTCOMES}"


# --------------------------------------------------------------------------- session end


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-matrix",
        action="store_true",
        default=False,
        help="write the provider cells this run observed into docs/providers.md's matrix",
    )
    parser.addoption(
        "--matrix-doc",
        default=str(DOC),
        help="the document holding the provider matrix (default: docs/providers.md)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "conformance_cell(column): a cell of docs/providers.md's provider matrix"
    )
    config.addinivalue_line(
        "markers",
        "claude_cli: runs the real Claude Code CLI (slow; CI may run -m 'not claude_cli')",
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    observed = session.config.stash.get(_KEY, {})
    if not observed:
        return
    path = Path(session.config.getoption("--matrix-doc"))
    doc = path.read_text()
    committed = parse(committed_block(doc))
    if session.config.getoption("--update-matrix"):
        path.write_text(splice(doc, {**committed, **observed}))
        return
    lines = drift(committed, observed)
    session.config.stash[_DRIFT] = lines
    if lines and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(_DRIFT, [])
    if not lines:
        return
    terminalreporter.section("provider matrix out of date", red=True)
    for line in lines:
        terminalreporter.write_line(line)
    terminalreporter.write_line(
        f"docs/providers.md's matrix differs from what ran; regenerate the cells that ran with "
        f"`{REGENERATE}` (with the same -k/-m selection) and commit the diff."
    )
