"""Every link of README.md and docs/*.md to a file of the repository resolves.

A dead link (a page that was renamed, or promised and never written) fails the suite. Links to
a heading of a markdown page (`page.md#heading`, `#heading`) must name a heading of that page,
by GitHub's rule for anchors. Links in code blocks and to other sites are not checked.

Pages are also named without a link (`docs/money.md`, "see operations.md"): every such mention
outside code blocks must name a page that exists too (`docs/<page>.md` from the repository's
root, a bare `<page>.md` in docs/ or at the root).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
_MENTION = re.compile(r"(?<![\w/.-])((?:docs/)?[A-Za-z0-9_-]+\.md)\b")
OUTSIDE = {"DESIGN.md": "the design brief, kept beside the repository, not in it"}
"""Pages mentioned on purpose that are not in the repository, with why."""
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...


def _prose(text: str) -> str:
    """The page without fenced code blocks and inline code spans."""
    return _CODE.sub("", _FENCE.sub("", text))


def links(text: str) -> list[str]:
    prose = _prose(text)
    return [m.group(1) for m in _LINK.finditer(prose)] + [m.group(1) for m in _REF.finditer(prose)]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor of a markdown page; a repeated heading gets -1, -2, ..."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for match in _HEADING.finditer(_FENCE.sub("", page.read_text())):
        base = slug(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def dead_links(page: Path) -> list[str]:
    dead = []
    for target in links(page.read_text()):
        if _EXTERNAL.match(target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            dead.append(f"{target}: no file {os.path.relpath(resolved, ROOT)}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            dead.append(f"{target}: no heading #{anchor} in {os.path.relpath(resolved, ROOT)}")
    return dead


def dead_mentions(text: str) -> list[str]:
    dead = []
    for name in _MENTION.findall(_FENCE.sub("", text)):
        if name in OUTSIDE:
            continue
        places = [ROOT / name] if name.startswith("docs/") else [ROOT / "docs" / name, ROOT / name]
        if not any(p.exists() for p in places):
            dead.append(f"{name}: no such page")
    return dead


def test_the_pages_exist() -> None:
    assert ROOT / "README.md" in PAGES
    assert len(PAGES) > 5


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_local_link_resolves(page: Path) -> None:
    assert dead_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_page_mentioned_exists(page: Path) -> None:
    assert dead_mentions(page.read_text()) == []


def test_the_checker_finds_dead_links_and_ignores_code(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# A heading, with `code`\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md) [ok](there.md#a-heading-with-code) [ok](there.md#twice-1)\n"
        "[ok](https://example.com/missing.md) [ok](#local) `[no](code.md)`\n"
        "```\n[no](fenced.md)\n```\n"
        "# Local\n"
        "[dead](missing.md) [dead](there.md#nowhere) [dead](#elsewhere)\n"
        "[ref]: gone.md\n"
    )
    assert [d.split(":")[0] for d in dead_links(page)] == [
        "missing.md",
        "there.md#nowhere",
        "#elsewhere",
        "gone.md",
    ]


def test_mentions_of_missing_pages_are_found() -> None:
    text = (
        "see `docs/money.md`, operations.md, README.md and docs/nowhere.md or gone.md;\n"
        "DESIGN.md; https://example.com/x.md\n```\nfenced.md\n```\n"
    )
    assert dead_mentions(text) == ["docs/nowhere.md: no such page", "gone.md: no such page"]
