"""Dependency scan of the lock files: pip-audit's findings against the triage file.

`python -m e2e.lint.depscan` (in `make lint`) runs pip-audit on each lock file the images and
the tests install from (`LOCKS`), with PyPI's vulnerability service, the hashes required and
pip never run (`--disable-pip`: the pins are read, nothing is resolved or installed), and
`--strict`: a package pip-audit could not check (PyPI did not answer, or has no record of the
pinned version) fails the scan instead of being skipped. Then every finding must have an
entry in `requirements/audit-triage.yaml` with the same id, package and version, and every
entry must still match a finding: an untriaged finding or a stale entry fails, each named.

bench.lock is not scanned: it is `make bench`'s own venv (presidio, spaCy), in no image and
no test. docs/operations.md ("Dependency scan") says how to triage.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ("requirements/operator.lock", "requirements/gateway.lock", "requirements/dev.lock")
TRIAGE = ROOT / "requirements" / "audit-triage.yaml"
DECISIONS = ("upgrade", "accepted", "not-affected")
ENTRY_FIELDS = ("id", "package", "version", "decision", "reason", "reviewer", "date")
TIMEOUT_SECONDS = 30


class ScanError(Exception):
    """The scan could not run, or its findings are not all triaged; the message says which."""


@dataclass(frozen=True)
class Finding:
    """One vulnerability pip-audit reports for one pinned package of one lock file."""

    id: str
    package: str
    version: str
    lock: str
    aliases: tuple[str, ...] = ()
    fix_versions: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.id, self.package, self.version)


def load_triage(path: Path = TRIAGE) -> list[dict[str, Any]]:
    """The triage entries; ScanError naming the entry and field of any malformed one."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScanError(f"{path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("findings"), list):
        raise ScanError(f"{path}: a mapping with a `findings` list (empty when none)")
    entries: list[dict[str, Any]] = doc["findings"]
    seen: set[tuple[str, str, str]] = set()
    for index, entry in enumerate(entries):
        where = f"{path.name}: findings[{index}]"
        if not isinstance(entry, dict):
            raise ScanError(f"{where} must be a mapping with {', '.join(ENTRY_FIELDS)}")
        unknown = sorted(set(entry) - set(ENTRY_FIELDS))
        if unknown:
            raise ScanError(f"{where}: unknown field(s) {', '.join(unknown)}")
        for field in ENTRY_FIELDS:
            value = entry.get(field)
            if field == "date":
                if not isinstance(value, date):
                    raise ScanError(f"{where}.date: the review date, YYYY-MM-DD")
            elif not isinstance(value, str) or not value.strip():
                raise ScanError(f"{where}.{field}: a non-empty string")
        if entry["decision"] not in DECISIONS:
            raise ScanError(f"{where}.decision: one of {', '.join(DECISIONS)}")
        key = (entry["id"], _canonical(entry["package"]), entry["version"])
        if key in seen:
            raise ScanError(f"{where}: {' '.join(key)} is triaged twice")
        seen.add(key)
    return entries


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def parse_report(report: dict[str, Any], lock: str) -> list[Finding]:
    """The findings of pip-audit's JSON report (`--format json`) of one lock file."""
    findings = []
    for dep in report.get("dependencies", []):
        for vuln in dep.get("vulns", []):
            findings.append(
                Finding(
                    id=str(vuln["id"]),
                    package=_canonical(str(dep["name"])),
                    version=str(dep["version"]),
                    lock=lock,
                    aliases=tuple(vuln.get("aliases") or ()),
                    fix_versions=tuple(vuln.get("fix_versions") or ()),
                )
            )
    return findings


def compare(findings: Iterable[Finding], entries: Sequence[dict[str, Any]]) -> list[str]:
    """Problems: each finding without a triage entry, each entry without a finding."""
    triaged = {(e["id"], _canonical(e["package"]), e["version"]) for e in entries}
    found: dict[tuple[str, str, str], list[Finding]] = {}
    for finding in findings:
        found.setdefault(finding.key, []).append(finding)
    problems = []
    for key, hits in sorted(found.items()):
        if key not in triaged:
            first = hits[0]
            fix = f"; fixed in {', '.join(first.fix_versions)}" if first.fix_versions else ""
            locks = ", ".join(sorted({h.lock for h in hits}))
            also = f" ({', '.join(first.aliases)})" if first.aliases else ""
            problems.append(
                f"untriaged: {key[0]}{also} in {key[1]} {key[2]} ({locks}){fix}: upgrade it, "
                f"or add an entry to {TRIAGE.relative_to(ROOT)}"
            )
    for key in sorted(triaged - set(found)):
        problems.append(
            f"stale triage entry: {' '.join(key)} matches no finding any more (upgraded, or "
            f"withdrawn): remove it from {TRIAGE.relative_to(ROOT)}"
        )
    return problems


def audit(lock: str, pip_audit: str) -> list[Finding]:
    """pip-audit of one lock file; ScanError with its output when it cannot check them all."""
    argv = [
        pip_audit,
        "-r", str(ROOT / lock),
        "--vulnerability-service", "pypi",
        "--require-hashes",
        "--disable-pip",
        "--strict",
        "--timeout", str(TIMEOUT_SECONDS),
        "--progress-spinner", "off",
        "--format", "json",
    ]  # fmt: skip
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ScanError(f"pip-audit of {lock} did not run: {exc}") from None
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = None
    # pip-audit exits 1 for findings too: only a report that checked every pin counts.
    if not isinstance(report, dict) or not _complete(report):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        hint = ""
        if "not found on PyPI" in (proc.stderr or ""):
            hint = (
                "\n(pip-audit's PyPI service reads https://pypi.org/pypi/<name>/<version>/json; "
                "an index or proxy that does not serve that API answers 404 for every package)"
            )
        raise ScanError(
            f"pip-audit could not check every package of {lock} (exit {proc.returncode}); "
            "nothing was skipped silently:\n  " + "\n  ".join(tail) + hint
        )
    return parse_report(report, lock)


def _complete(report: dict[str, Any]) -> bool:
    deps = report.get("dependencies", [])
    return bool(deps) and not any("skip_reason" in d for d in deps)


def scan(locks: Sequence[str] = LOCKS, pip_audit: str | None = None) -> list[str]:
    """Problems of the whole scan (empty: every finding triaged, no stale entry)."""
    entries = load_triage()
    tool = pip_audit or str(Path(sys.executable).parent / "pip-audit")
    findings = [f for lock in locks for f in audit(lock, tool)]
    return compare(findings, entries)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.lint.depscan", description=__doc__)
    parser.add_argument("locks", nargs="*", default=list(LOCKS), help="lock files to scan")
    args = parser.parse_args(argv)
    try:
        problems = scan(args.locks)
    except ScanError as exc:
        print(f"dependency scan failed: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"dependency scan: {', '.join(args.locks)}: every finding triaged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
