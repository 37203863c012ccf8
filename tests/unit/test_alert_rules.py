"""The alerts fire when they should, proven by Prometheus's own rule tester (`promtool test rules`).

The rules are the ones shipped: the operator's PrometheusRule in manifests/monitoring/ and the
one the operator renders per tenant (its golden file, which test_render_golden keeps equal to
what render produces). Each PrometheusRule's `spec` is a Prometheus rule file; the tests are
in tests/promtool/. promtool comes with Debian's prometheus package (`make setup`).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests" / "promtool"
RULES = {
    "operator-rules.yaml": ROOT / "manifests" / "monitoring" / "prometheusrule.yaml",
    "gateway-rules.yaml": ROOT
    / "tests"
    / "golden"
    / "engineering-team"
    / "prometheusrule-gateway.yaml",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: run `make setup` (e2e/install-system-packages.sh "
            "installs Debian's prometheus package, which provides it)"
        )
    return found


@pytest.mark.parametrize("test_file", sorted(p.name for p in TESTS.glob("*.test.yaml")))
def test_promtool_rule_tests_pass(test_file: str, tmp_path: Path) -> None:
    for name, source in RULES.items():
        rule = yaml.safe_load(source.read_text())
        assert rule["kind"] == "PrometheusRule"
        (tmp_path / name).write_text(yaml.safe_dump(rule["spec"]))
    shutil.copy(TESTS / test_file, tmp_path / test_file)
    check = subprocess.run(
        [promtool(), "check", "rules", *RULES], cwd=tmp_path, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run(
        [promtool(), "test", "rules", test_file], cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_every_alert_has_a_promtool_test() -> None:
    tested = "\n".join(p.read_text() for p in TESTS.glob("*.test.yaml"))
    for source in RULES.values():
        spec = yaml.safe_load(source.read_text())["spec"]
        for group in spec["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    assert f"alertname: {rule['alert']}" in tested, rule["alert"]
