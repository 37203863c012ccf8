"""Every condition reason the operator can set is registered and documented.

The registry is `tenantgw.reconcile.reasons.REASONS`. The sources are scanned for the reason
literals that reach a condition: the third argument of `condition()`, the reason of a `Verdict`
(directly, through a `(reason, message)` problem tuple, through `_unenforceable()` or an
assignment to `.reason`) and `NamespaceVerdict(reason=...)`. A reason held in a local variable
is followed to the literals assigned to it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tenantgw.reconcile.reasons import REASONS, reason_names

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    path
    for package in ("reconcile", "operator", "api")
    for path in (ROOT / "operator" / "tenantgw" / package).glob("*.py")
)
GUIDE = ROOT / "docs" / "troubleshooting.md"
CAMEL = re.compile(r"^[A-Z][a-z]+(?:[A-Z][a-z]*)*$")
REASON_POSITION = {"condition": 2, "Verdict": 2, "_unenforceable": 3}


def _name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def _literals(node: ast.AST, scope: ast.AST) -> Iterator[str]:
    """The reason strings `node` can evaluate to; names are followed within `scope`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from _literals(node.body, scope)
        yield from _literals(node.orelse, scope)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            yield from _literals(value, scope)
    elif isinstance(node, ast.Tuple) and node.elts:
        yield from _literals(node.elts[0], scope)  # (reason, message)
    elif isinstance(node, ast.Starred):
        yield from _literals(node.value, scope)
    elif isinstance(node, ast.Name):
        for assign in ast.walk(scope):
            if isinstance(assign, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == node.id for t in assign.targets
            ):
                yield from _literals(assign.value, scope)
    # Attributes and subscripts (verdict.reason, config["reason"]) pass a reason on.


def scanned_reasons(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    for function in functions:
        for node in ast.walk(function):
            if isinstance(node, ast.Call):
                position = REASON_POSITION.get(_name(node))
                if position is not None:
                    args = node.args
                    starred = next(
                        (i for i, a in enumerate(args) if isinstance(a, ast.Starred)), None
                    )
                    if starred is not None and starred <= position:
                        found.update(_literals(args[starred], function))
                    elif len(args) > position:
                        found.update(_literals(args[position], function))
                for kw in node.keywords:
                    if kw.arg == "reason":
                        found.update(_literals(kw.value, function))
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                        for t, v in zip(target.elts, node.value.elts, strict=False):
                            if isinstance(t, ast.Attribute) and t.attr == "reason":
                                found.update(_literals(v, function))
                    elif isinstance(target, ast.Name) and target.id == "problem":
                        found.update(_literals(node.value, function))
            elif isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
                returns = function.returns
                if returns is not None and "tuple[str, str]" in ast.unparse(returns):
                    found.update(_literals(node.value, function))
    return found


def all_scanned() -> dict[str, set[str]]:
    return {path.name: scanned_reasons(path) for path in SOURCES}


def test_the_scanner_finds_the_reasons_it_should() -> None:
    """Not vacuous: one reason of each way of setting one is found."""
    found = set().union(*all_scanned().values())
    for reason in (
        "ApplyFailed",  # condition(..., "ApplyFailed", ...)
        "ModelAliasRejected",  # a local variable holding an if-expression
        "NotInCatalog",  # a problem tuple
        "DuplicateName",  # returned by a function returning tuple[str, str]
        "FallbackCycle",  # v.accepted, v.reason = False, "FallbackCycle"
        "Accepted",  # Verdict(name, ok, *(problem or ("Accepted", "")), gen)
        "NamespaceConflict",  # NamespaceVerdict(reason=...)
        "InvalidSpec",  # _unenforceable(name, gen, None, "InvalidSpec", message)
    ):
        assert reason in found, reason


def test_every_reason_the_code_sets_is_registered() -> None:
    unregistered = {
        f"{reason} ({name})"
        for name, reasons in all_scanned().items()
        for reason in reasons
        if CAMEL.match(reason) and reason not in reason_names()
    }
    assert not unregistered, (
        f"condition reasons set in code but missing from tenantgw.reconcile.reasons.REASONS "
        f"(and probably from docs/troubleshooting.md): {sorted(unregistered)}"
    )


def test_every_registered_reason_is_set_somewhere() -> None:
    found = set().union(*all_scanned().values())
    stale = reason_names() - found
    assert not stale, f"REASONS lists reasons no code sets any more: {sorted(stale)}"


def guide_sections() -> dict[str, dict[str, str]]:
    """Kind → reason → the text of its entry in docs/troubleshooting.md."""
    sections: dict[str, dict[str, str]] = {}
    kind = reason = None
    for line in GUIDE.read_text().splitlines():
        if line.startswith("## "):
            kind, reason = line[3:].strip(), None
            sections.setdefault(kind, {})
        elif line.startswith("### ") and kind is not None:
            heading = re.match(r"^### `([A-Za-z]+)`", line)
            reason = heading.group(1) if heading else None
            if reason:
                sections[kind][reason] = ""
        elif kind is not None and reason is not None:
            sections[kind][reason] += line + "\n"
    return sections


def test_every_reason_is_documented_with_cause_and_fix() -> None:
    sections = guide_sections()
    missing, thin = [], []
    for (kind, name), _ in sorted(REASONS.items()):
        entry = sections.get(kind, {}).get(name)
        if entry is None:
            missing.append(f"{kind}/{name}")
        elif "**Cause**" not in entry or "**Fix**" not in entry:
            thin.append(f"{kind}/{name}")
    assert not missing, f"docs/troubleshooting.md has no `### \\`Reason\\`` entry for {missing}"
    assert not thin, f"entries without **Cause** and **Fix**: {thin}"


def test_the_guide_documents_no_reason_the_code_never_sets() -> None:
    documented = {(kind, name) for kind, entries in guide_sections().items() for name in entries}
    extra = documented - set(REASONS)
    assert not extra, f"docs/troubleshooting.md documents reasons no code sets: {sorted(extra)}"


def test_the_guide_names_the_conditions_of_each_reason() -> None:
    sections = guide_sections()
    for (kind, name), reason in REASONS.items():
        entry = sections.get(kind, {}).get(name, "")
        for cond in reason.conditions:
            assert f"`{cond}`" in entry, f"{kind}/{name}: the entry does not name `{cond}`"
