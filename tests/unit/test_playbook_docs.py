"""docs/model-selection.md's provider summary says what the generated matrix of docs/providers.md
says, and the playbooks' runnable blocks parse (their runs: e2e/test_playbooks.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from e2e import playbooks

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def table(text: str, begin: str, end: str) -> list[dict[str, str]]:
    body = text.split(begin, 1)[1].split(end, 1)[0]
    lines = [line for line in body.strip().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        for line in lines[2:]
    ]


def cell(value: str) -> str:
    """A matrix cell without its note marks ('pass [1]' -> 'pass')."""
    return re.sub(r"\s*\[\d+\]$", "", value)


def summary_from_matrix() -> list[dict[str, str]]:
    matrix = table(
        (ROOT / "docs" / "providers.md").read_text(),
        "<!-- conformance-matrix:begin -->",
        "<!-- conformance-matrix:end -->",
    )
    streams = ("anthropic SDK streamed", "openai SDK streamed")
    return [
        {
            "provider type": row["provider type"],
            "Claude Code tool turn": cell(row["Claude Code tool turn"]),
            "tools (anthropic / openai SDK)": (
                f"{cell(row['anthropic SDK tool round trip'])} / {cell(row['openai SDK tools'])}"
            ),
            "streaming": "pass" if all(cell(row[s]) == "pass" for s in streams) else "fail",
            "count_tokens": cell(row["count_tokens"]),
            "thinking blocks returned": "yes" if "[2]" in row["thinking requested"] else "no",
        }
        for row in matrix
    ]


def test_the_provider_summary_is_the_conformance_matrix() -> None:
    documented = table(
        (ROOT / "docs" / "model-selection.md").read_text(),
        "<!-- provider-summary:begin -->",
        "<!-- provider-summary:end -->",
    )
    assert documented == summary_from_matrix()
    assert len(documented) >= 15


def test_the_matrix_note_two_still_means_thinking_blocks() -> None:
    """The summary reads note [2] as "thinking blocks returned": the matrix must say so."""
    assert "[2] thinking blocks returned" in (ROOT / "docs" / "providers.md").read_text()


def test_each_playbook_has_runnable_blocks_with_commands() -> None:
    for doc in playbooks.checked_docs(ROOT):
        found = playbooks.blocks(doc.read_text())
        runs = [b for b in found if b.kind != "apply"]
        assert runs, doc
        for block in runs:
            assert block.lang == "console", (doc, block.body)
            assert playbooks.commands(block.body), (doc, block.body)
    kinds = {
        o["kind"]
        for doc in playbooks.checked_docs(ROOT)
        for o in playbooks.apply_objects(doc, playbooks.Substitution("checkout-team", {}))
    }
    assert kinds == {"Tenant", "ModelAlias", "BudgetPolicy"}


def test_substitution_reaches_names_schemas_and_times_and_back() -> None:
    from datetime import UTC, datetime

    when = datetime(2026, 12, 1, 18, 40, 5, 123456, tzinfo=UTC)
    sub = playbooks.Substitution("checkout-team-abc123", {"2026-03-02T10:00Z": when})
    command = (
        "tenantctl report checkout-team --since 2026-03-02T10:00Z; kubectl -n "
        "tenant-checkout-team get x; psql -c 'select 1 from t_checkout_team.usage'"
    )
    forward = sub.forward(command)
    assert forward == (
        "tenantctl report checkout-team-abc123 --since 2026-12-01T18:40:05.123456+00:00; "
        "kubectl -n tenant-checkout-team-abc123 get x; "
        "psql -c 'select 1 from t_checkout_team_abc123.usage'"
    )
    shown = "checkout-team-abc123: 2026-12-01T18:40:05.123456+00:00 .. now"
    assert sub.back(shown) == "checkout-team: 2026-03-02T10:00:00+00:00 .. now"


def test_commands_join_continuations_and_keep_outputs() -> None:
    body = "$ a \\\n    --b\none\ntwo\n$ c\n"
    assert playbooks.commands(body) == [
        playbooks.Command("a \\\n    --b", "one\ntwo"),
        playbooks.Command("c", ""),
    ]
    assert playbooks.mask("12 requests, $0.0031 (p = 0.4)") == "N requests, $N (p = N)"
    assert playbooks.mask("b  7\na 1: differ (p < 0.05)") == "a N: VERDICT\nb N"
    assert playbooks.mask("a 1: no significant difference") == "a N: VERDICT"
    assert playbooks.mask("a 1 request") != playbooks.mask("a 1 error")
