"""tenantgw's manifests, checked with the tools a platform team runs on them.

Three sets: the install (`kubectl kustomize manifests/` and manifests/monitoring), the Helm
chart's output, and rendered tenants (the golden files of tests/golden/, the operator's exact
output). Each passes kubeconform -strict, with schemas made offline: built-in kinds from this
control plane's /openapi/v2, tenantgw's and kopf's kinds from the repository's CRDs. Each passes
kube-score with zero findings besides those written down, with their reasons, in
e2e/lint/exceptions.yaml. The tools are built by `make setup` (e2e/lint/build.sh); missing, the
tests fail and say so.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.fixtures import Cluster
from e2e.lint import schemas
from e2e.lint.tools import ToolMissingError, kubernetes_version, tool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXCEPTIONS = ROOT / "e2e" / "lint" / "exceptions.yaml"
GOLDEN = ROOT / "tests" / "golden"
# LiteLLM's own config file, beside the Kubernetes objects of each golden case.
NOT_KUBERNETES = {"litellm-config.yaml"}
CRD_FILES = [
    *sorted((ROOT / "crds").glob("*.yaml")),
    ROOT / "manifests/crds/clusterkopfpeerings.kopf.dev.yaml",
    # cert-manager's Certificate (the subset of its schema the operator renders against), so a
    # rendered Certificate is checked, not skipped.
    ROOT / "e2e/certmanager/certificates.cert-manager.io.yaml",
]

Doc = dict[str, Any]


def binary(name: str) -> str:
    try:
        return str(tool(name))
    except ToolMissingError as missing:
        pytest.fail(str(missing), pytrace=False)


def exceptions() -> Doc:
    loaded: Doc = yaml.safe_load(EXCEPTIONS.read_text())
    for entry in loaded["kubeconform"]["skip"] + loaded["kube-score"]["findings"]:
        assert str(entry.get("reason", "")).strip(), f"{EXCEPTIONS}: {entry} gives no reason"
    return loaded


def install() -> str:
    kubectl = binary("kubectl")
    out = []
    for path in (ROOT / "manifests", ROOT / "manifests" / "monitoring"):
        out.append(subprocess.run([kubectl, "kustomize", str(path)], capture_output=True,
                                  text=True, check=True).stdout)  # fmt: skip
    return "---\n".join(out)


def helm_output() -> str:
    args = [binary("helm"), "template", "tenantgw", str(ROOT / "charts" / "tenantgw")]
    args += ["-n", "tenantgw-system", "--include-crds", "--set", "monitoring.enabled=true"]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def rendered_tenants() -> str:
    files = [p for p in sorted(GOLDEN.glob("*/*.yaml")) if p.name not in NOT_KUBERNETES]
    assert len(files) > 20, "no rendered tenants under tests/golden/"
    return "---\n".join(p.read_text() for p in files)


SETS = {"install": install, "helm": helm_output, "tenants": rendered_tenants}


@pytest.fixture(scope="module")
def schema_root(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kubeconform's schemas: this control plane's built-in kinds, the repository's CRDs."""
    openapi = json.loads(cluster.run_kubectl("get", "--raw", "/openapi/v2").stdout)
    made = schemas.builtin_schemas(openapi)
    assert "deployment-apps-v1.json" in made
    assert "networkpolicy-networking-v1.json" in made
    made.update(schemas.crd_schemas(CRD_FILES))
    assert "tenant-tenantgw-v1alpha1.json" in made
    root = tmp_path_factory.mktemp("schemas")
    schemas.write(root, kubernetes_version(), made)
    return root


def kubeconform(schema_root: Path, manifests: str, tmp_path: Path) -> Doc:
    file = tmp_path / "manifests.yaml"
    file.write_text(manifests)
    skip = ",".join(entry["kind"] for entry in exceptions()["kubeconform"]["skip"])
    proc = subprocess.run(
        [
            binary("kubeconform"), "-strict", "-summary", "-output", "json",
            "-kubernetes-version", kubernetes_version(),
            "-schema-location", schemas.location(schema_root), "-skip", skip, str(file),
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    try:
        report: Doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"kubeconform said:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    report["returncode"] = proc.returncode
    return report


def problems(report: Doc) -> list[str]:
    return [
        f"{r['kind']}/{r['name']}: {r['status']} {r.get('msg', '')} "
        + "; ".join(f"{e['path']}: {e['msg']}" for e in r.get("validationErrors") or [])
        for r in report.get("resources") or []
        if r["status"] not in ("statusValid", "statusSkipped")
    ]


@pytest.mark.parametrize("name", sorted(SETS))
def test_kubeconform_strict_finds_nothing(schema_root: Path, name: str, tmp_path: Path) -> None:
    manifests = SETS[name]()
    report = kubeconform(schema_root, manifests, tmp_path)
    assert problems(report) == [], "\n".join(problems(report))
    assert report["returncode"] == 0
    summary = report["summary"]
    documents = [d for d in yaml.safe_load_all(manifests) if d]
    skipped_kinds = {entry["kind"] for entry in exceptions()["kubeconform"]["skip"]}
    assert summary["skipped"] == sum(d["kind"] in skipped_kinds for d in documents)
    assert summary["valid"] == len(documents) - summary["skipped"] > 0


def test_kubeconform_refuses_undocumented_and_invalid_fields(
    schema_root: Path, tmp_path: Path
) -> None:
    """The schemas bite: a misspelt Deployment field, an unknown Tenant field, a wrong type."""
    docs = [d for d in yaml.safe_load_all(install()) if d]
    dep = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    tenant = yaml.safe_load((ROOT / "examples" / "tenant.yaml").read_text())
    tenant["spec"]["budgett"] = {"daily": 10}
    alias = next(
        d for d in yaml.safe_load_all((ROOT / "examples" / "model-aliases.yaml").read_text()) if d
    )
    alias["spec"]["fallbacks"] = "not-a-list"
    stream = "---\n".join(yaml.safe_dump(d) for d in (dep, tenant, alias))
    report = kubeconform(schema_root, stream, tmp_path)
    found = "\n".join(problems(report))
    assert report["returncode"] != 0
    assert "imagePullPolcy" in found, found
    assert "budgett" in found, found
    assert "/spec/fallbacks" in found, found


# --------------------------------------------------------------------------------- kube-score


def kube_score(manifests: str, tmp_path: Path) -> list[tuple[str, str, str]]:
    """(check id, Kind/namespace/name, summary) of every finding kube-score reports."""
    config = exceptions()["kube-score"]
    file = tmp_path / "manifests.yaml"
    file.write_text(manifests)
    args = [binary("kube-score"), "score", "-o", "json", "--kubernetes-version", "v1.37"]
    args += [entry["flag"] for entry in config["flags"]]
    for test in config["optional-tests"]:
        args += ["--enable-optional-test", test]
    proc = subprocess.run([*args, str(file)], capture_output=True, text=True, timeout=300)
    try:
        scored = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"kube-score said:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    findings = []
    for obj in scored:
        meta = obj["object_meta"]
        where = f"{obj['type_meta']['kind']}/{meta.get('namespace', '')}/{meta['name']}"
        for check in obj["checks"]:
            if check["skipped"] or check["grade"] >= 10:
                continue
            summary = "; ".join(c["summary"] for c in check.get("comments") or [])
            findings.append((check["check"]["id"], where, summary))
    return findings


def excepted(finding: tuple[str, str, str], entry: Doc) -> bool:
    check, where, _ = finding
    return check == entry["check"] and any(fnmatch.fnmatch(where, o) for o in entry["objects"])


def test_kube_score_finds_nothing_not_written_down(tmp_path: Path) -> None:
    entries = exceptions()["kube-score"]["findings"]
    used: set[int] = set()
    unexplained = []
    for name in sorted(SETS):
        for finding in kube_score(SETS[name](), tmp_path):
            matches = [i for i, entry in enumerate(entries) if excepted(finding, entry)]
            used.update(matches)
            if not matches:
                unexplained.append(f"{name}: {finding}")
    assert unexplained == [], "kube-score findings not in e2e/lint/exceptions.yaml:\n" + "\n".join(
        unexplained
    )
    stale = [entries[i]["check"] for i in range(len(entries)) if i not in used]
    assert stale == [], f"exceptions that no longer match a finding (remove them): {stale}"


def test_kube_score_reports_a_weakened_pod(tmp_path: Path) -> None:
    """The filter lets real findings through: a writable root filesystem, no NetworkPolicy."""
    docs = [d for d in yaml.safe_load_all(install()) if d]
    dep = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    dep["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFilesystem"
    ] = False
    entries = exceptions()["kube-score"]["findings"]
    findings = [
        f for f in kube_score(yaml.safe_dump(dep), tmp_path)
        if not any(excepted(f, e) for e in entries)
    ]  # fmt: skip
    checks = {check for check, _, _ in findings}
    assert "container-security-context-readonlyrootfilesystem" in checks, findings
    assert "pod-networkpolicy" in checks, findings
