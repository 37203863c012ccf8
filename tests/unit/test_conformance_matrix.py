"""The provider matrix of docs/providers.md: generated, complete, and its drift check can fail.

`e2e/conformance.py` records the cells of `e2e/test_provider_conformance.py`; these tests run
that plugin on tiny suites (pytester) to show that a committed cell differing from what ran
fails the session, that `--update-matrix` writes what ran, and that cells which did not run
are neither compared nor overwritten.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.conformance import (
    BEGIN,
    COLUMNS,
    DOC,
    END,
    PROVIDER_TYPES,
    REGENERATE,
    Cell,
    Matrix,
    committed_block,
    drift,
    incomplete,
    parse,
    render,
    splice,
)
from tenantgw.api import ProviderType

pytestmark = pytest.mark.unit
pytest_plugins = ["pytester"]


def full(value: str = "pass") -> Matrix:
    return {
        (p, c): Cell(f"`{p}/{c}`" if c in ("litellm", "needs") else value)
        for p in PROVIDER_TYPES
        for c in COLUMNS
    }


def test_every_provider_type_of_the_tenant_is_a_row() -> None:
    assert set(PROVIDER_TYPES) == {t.value for t in ProviderType}


def test_the_committed_matrix_is_complete() -> None:
    """Every provider type x column has an outcome (or its text), and every note is listed."""
    committed = parse(committed_block(DOC.read_text()))
    assert list(incomplete(committed)) == []
    assert REGENERATE in DOC.read_text(), "docs/providers.md must say how to regenerate"


def test_render_and_parse_round_trip_with_notes() -> None:
    matrix = full()
    matrix[("vertex", "anthropic_plain")] = Cell("fail", "google-auth | missing")
    matrix[("vertex", "openai_plain")] = Cell("fail", "google-auth | missing")
    matrix[("ollama", "thinking")] = Cell("n/s", "no thinking")
    text = render(matrix)
    assert parse(text) == matrix
    assert text.count("google-auth") == 1, "one note, referenced twice"


def test_drift_compares_only_what_ran() -> None:
    committed = full()
    assert drift(committed, {("groq", "openai_tools"): Cell("pass")}) == []
    (line,) = drift(committed, {("groq", "openai_tools"): Cell("fail", "BadRequestError")})
    assert "groq" in line
    assert "BadRequestError" in line
    assert drift({}, {("groq", "ledger"): Cell("pass")}) == [
        "groq x ledger row (tokens, cost): table says 'missing', ran 'pass'"
    ]


def test_incomplete_names_missing_cells_and_bad_outcomes() -> None:
    matrix = full()
    del matrix[("cohere", "ledger")]
    matrix[("groq", "thinking")] = Cell("maybe")
    assert list(incomplete(matrix)) == [
        "groq x thinking requested: 'maybe' is not one of ('pass', 'fail', 'n/s')",
        "cohere x ledger row (tokens, cost): missing",
    ]


def test_splice_keeps_the_rest_of_the_document() -> None:
    doc = f"# Title\n\nbefore\n\n{BEGIN}\nold\n{END}\n\nafter\n"
    out = splice(doc, full())
    assert out.startswith("# Title\n\nbefore\n\n" + BEGIN + "\n| provider type |")
    assert out.endswith(END + "\n\nafter\n")
    with pytest.raises(ValueError, match="no <!-- conformance-matrix:begin -->"):
        splice("no markers", full())


CELLS = """
import pytest

@pytest.mark.conformance_cell("anthropic_plain")
@pytest.mark.parametrize("provider", ["openai", "groq"])
def test_plain(provider):
    pass

@pytest.mark.conformance_cell("thinking")
@pytest.mark.parametrize("provider", ["openai"])
def test_thinking(provider, request):
    from e2e.conformance import not_supported
    not_supported(request, "the provider does not think")

@pytest.mark.conformance_cell("ledger")
@pytest.mark.parametrize("provider", ["groq"])
def test_ledger(provider):
    raise KeyError("no row")
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> Path:
    """A suite of four cells and a committed table that matches them."""
    pytester.makepyfile(test_cells=CELLS)
    doc = pytester.path / "providers.md"
    committed = full()
    committed[("openai", "thinking")] = Cell("n/s", "the provider does not think")
    committed[("groq", "ledger")] = Cell("fail", "KeyError")
    doc.write_text(f"# Providers\n\n{BEGIN}\n{render(committed)}{END}\n")
    return doc


def run(pytester: pytest.Pytester, doc: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess(
        "-p",
        "e2e.conformance",
        f"--matrix-doc={doc}",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:asyncio",
        *args,
    )


def test_a_matching_table_passes_and_a_stale_one_fails_the_session(
    pytester: pytest.Pytester, suite: Path
) -> None:
    ok = run(pytester, suite, "-k", "not ledger")
    assert ok.ret == pytest.ExitCode.OK, ok.stdout.str()
    stale = parse(committed_block(suite.read_text()))
    stale[("groq", "anthropic_plain")] = Cell("fail", "InternalServerError")
    suite.write_text(splice(suite.read_text(), stale))
    failed = run(pytester, suite, "-k", "not ledger")
    assert failed.ret == pytest.ExitCode.TESTS_FAILED
    failed.stdout.fnmatch_lines(
        [
            "*provider matrix out of date*",
            "groq x anthropic SDK plain: table says 'fail (InternalServerError)', ran 'pass'",
            f"*`{REGENERATE}`*",
        ]
    )


def test_cells_that_did_not_run_are_not_compared(pytester: pytest.Pytester, suite: Path) -> None:
    stale = parse(committed_block(suite.read_text()))
    stale[("groq", "anthropic_plain")] = Cell("fail", "InternalServerError")
    suite.write_text(splice(suite.read_text(), stale))
    result = run(pytester, suite, "-k", "thinking")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()


def test_update_writes_what_ran_and_keeps_the_rest(pytester: pytest.Pytester, suite: Path) -> None:
    stale = parse(committed_block(suite.read_text()))
    stale[("groq", "anthropic_plain")] = Cell("fail", "InternalServerError")
    stale[("cohere", "anthropic_plain")] = Cell("fail", "kept: did not run")
    suite.write_text(splice(suite.read_text(), stale))
    run(pytester, suite, "-k", "plain", "--update-matrix")
    written = parse(committed_block(suite.read_text()))
    assert written[("groq", "anthropic_plain")] == Cell("pass")
    assert written[("cohere", "anthropic_plain")] == Cell("fail", "kept: did not run")
    assert run(pytester, suite, "-k", "plain").ret == pytest.ExitCode.OK


def test_a_failing_cell_is_recorded_as_fail_with_its_error(
    pytester: pytest.Pytester, suite: Path
) -> None:
    stale = parse(committed_block(suite.read_text()))
    stale[("groq", "ledger")] = Cell("pass")
    suite.write_text(splice(suite.read_text(), stale))
    result = run(pytester, suite, "-k", "ledger")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["groq x ledger row (tokens, cost): table says 'pass', ran 'fail (KeyError)'"]
    )
