"""The dependency scan (`make lint`): the triage file's shape, and findings against it."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.lint import depscan

pytestmark = pytest.mark.unit

ENTRY: dict[str, Any] = {
    "id": "PYSEC-2099-1",
    "package": "Example_Pkg",
    "version": "1.0.0",
    "decision": "not-affected",
    "reason": "the vulnerable parser is never called",
    "reviewer": "platform team",
    "date": "2026-12-01",
}


def write_triage(tmp_path: Path, findings: Any) -> Path:
    path = tmp_path / "audit-triage.yaml"
    text = yaml.safe_dump({"findings": findings})
    path.write_text(text.replace("'2026-12-01'", "2026-12-01"))
    return path


def test_the_repository_triage_file_has_the_shape_the_scan_reads() -> None:
    entries = depscan.load_triage()
    for entry in entries:
        assert entry["decision"] in depscan.DECISIONS
    text = depscan.TRIAGE.read_text()
    for field in depscan.ENTRY_FIELDS:
        assert f"{field}:" in text, f"the triage file does not document {field}"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"decision": "ignore"}, "decision: one of upgrade, accepted, not-affected"),
        ({"reason": ""}, "reason: a non-empty string"),
        ({"reviewer": None}, "reviewer: a non-empty string"),
        ({"date": "yesterday"}, "date: the review date"),
        ({"severity": "high"}, "unknown field(s) severity"),
    ],
)
def test_a_malformed_entry_is_named(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    path = write_triage(tmp_path, [{**ENTRY, **change}])
    with pytest.raises(depscan.ScanError, match="findings\\[0\\]") as caught:
        depscan.load_triage(path)
    assert message in str(caught.value)


def test_a_finding_triaged_twice_is_refused(tmp_path: Path) -> None:
    path = write_triage(tmp_path, [ENTRY, {**ENTRY, "package": "example-pkg"}])
    with pytest.raises(depscan.ScanError, match="triaged twice"):
        depscan.load_triage(path)


def finding(**kw: Any) -> depscan.Finding:
    base: dict[str, Any] = {
        "id": "PYSEC-2099-1",
        "package": "example-pkg",
        "version": "1.0.0",
        "lock": "requirements/gateway.lock",
    }
    return depscan.Finding(**{**base, **kw})


def test_an_untriaged_finding_and_a_stale_entry_both_fail(tmp_path: Path) -> None:
    entries = depscan.load_triage(write_triage(tmp_path, [ENTRY]))
    assert depscan.compare([finding()], entries) == []
    new = finding(id="GHSA-xxxx", fix_versions=("1.0.1",))
    problems = depscan.compare([finding(), new], entries)
    assert len(problems) == 1
    assert problems[0].startswith("untriaged: GHSA-xxxx in example-pkg 1.0.0")
    assert "fixed in 1.0.1" in problems[0]
    # The pin was raised: the finding is gone, its entry is stale.
    (stale,) = depscan.compare([], entries)
    assert stale.startswith("stale triage entry: PYSEC-2099-1 example-pkg 1.0.0")
    # The same vulnerability in another version is a new finding, not the triaged one.
    assert len(depscan.compare([finding(version="1.0.2")], entries)) == 2


def fake_pip_audit(tmp_path: Path, stdout: str, exit_code: int, stderr: str = "") -> str:
    script = tmp_path / "pip-audit"
    script.write_text(
        f"#!/bin/sh\ncat <<'EOF'\n{stdout}\nEOF\necho {json.dumps(stderr)} >&2\nexit {exit_code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_findings_come_from_pip_audits_json_report(tmp_path: Path) -> None:
    report = {
        "dependencies": [
            {"name": "ok-pkg", "version": "2.0", "vulns": []},
            {
                "name": "Example_Pkg",
                "version": "1.0.0",
                "vulns": [{"id": "PYSEC-2099-1", "fix_versions": ["1.0.1"], "aliases": ["CVE-1"]}],
            },
        ]
    }
    tool = fake_pip_audit(tmp_path, json.dumps(report), 1)
    (found,) = depscan.audit("requirements/gateway.lock", tool)
    assert found.key == ("PYSEC-2099-1", "example-pkg", "1.0.0")
    assert found.fix_versions == ("1.0.1",)


@pytest.mark.parametrize(
    ("stdout", "stderr"),
    [
        ("", "ERROR: aiohappyeyeballs: Dependency not found on PyPI and could not be audited"),
        ("", "requests.exceptions.ConnectTimeout: pypi.org timed out"),
        (json.dumps({"dependencies": [{"name": "x", "skip_reason": "timed out"}]}), ""),
    ],
)
@pytest.mark.parametrize("exit_code", [0, 1])
def test_a_package_pip_audit_could_not_check_fails_the_scan(
    tmp_path: Path, stdout: str, stderr: str, exit_code: int
) -> None:
    """A PyPI timeout or a missing record fails loudly; nothing is skipped silently."""
    tool = fake_pip_audit(tmp_path, stdout, exit_code, stderr)
    with pytest.raises(depscan.ScanError, match="could not check every package"):
        depscan.audit("requirements/operator.lock", tool)
