"""Golden files of tenantgw.render: what the operator applies for a tenant, reviewed in diffs.

`pytest tests/unit --update-golden` rewrites tests/golden/<case>/ from the current rendering;
otherwise every rendered object must equal its file, and no file may be left over.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenantgw.render import RenderInputs, render_litellm_config, render_rules, render_tenant

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
CASES = {
    "cloud-identity": "cloud_identity_tenant",
    "engineering-team": "engineering_team",
    "minimal": "minimal_tenant",
    "pod-identity": "pod_identity_tenant",
    "storage-tls": "storage_tls_tenant",
    "tls": "tls_tenant",
}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (config.yaml and tenantgw.json in the ConfigMap) as readable blocks."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def dump(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def golden_files(inputs: RenderInputs) -> dict[str, str]:
    """File name -> content: one YAML per object, plus the two generated config files."""
    files = {
        f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml": dump(obj)
        for obj in render_tenant(inputs)
    }
    files["litellm-config.yaml"] = dump(render_litellm_config(inputs))
    files["tenantgw.json"] = json.dumps(render_rules(inputs), sort_keys=True, indent=2) + "\n"
    return files


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendering_matches_golden_files(
    case: str, request: pytest.FixtureRequest, update_golden: bool
) -> None:
    inputs: RenderInputs = request.getfixturevalue(CASES[case])
    rendered = golden_files(inputs)
    directory = GOLDEN / case
    if update_golden:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.iterdir():
            if stale.name not in rendered:
                stale.unlink()
        for name, content in rendered.items():
            (directory / name).write_text(content)
        return

    assert directory.is_dir(), f"no golden files for {case}: run pytest tests/unit --update-golden"
    problems = []
    for name, content in sorted(rendered.items()):
        path = directory / name
        expected = path.read_text() if path.exists() else ""
        if content != expected:
            diff = difflib.unified_diff(
                expected.splitlines(keepends=True),
                content.splitlines(keepends=True),
                fromfile=f"golden/{case}/{name}",
                tofile="rendered",
            )
            problems.append("".join(diff) or f"golden/{case}/{name} is missing")
    leftover = sorted(p.name for p in directory.iterdir() if p.name not in rendered)
    if leftover:
        problems.append(f"golden/{case} has files for objects no longer rendered: {leftover}")
    if problems:
        pytest.fail(
            "rendering differs from the golden files; review the diff and, if it is intended, "
            "run `pytest tests/unit --update-golden`:\n" + "\n".join(problems),
            pytrace=False,
        )
