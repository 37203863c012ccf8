"""The Helm chart charts/tenantgw installs what manifests/ installs, and installs for real.

One source of truth: manifests/ is the install, the chart's templates are written by hand, and
this test compares `helm template` with `kubectl kustomize manifests/` object by object (Helm's
own labels set aside). The chart's crds/ are byte copies of manifests/crds/. Either drifting
fails here. The only object the chart leaves out is the Namespace: Helm keeps its release
record in the namespace, so it must exist before `helm install` (docs/operations.md).

helm is built from its Go module by `make setup` (e2e/lint/build.sh); these tests fail, not
skip, when it is missing.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.unit.test_tenant_plan import NOW, SETTINGS, STORAGE, TENANT, keys, snapshot

from e2e.fixtures import Cluster
from e2e.lint.tools import ToolMissingError, tool
from tenantgw.api import IssuerRef
from tenantgw.reconcile.plan import plan_tenant
from tenantgw.reconcile.settings import issuer_from_env, network_from_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tenantgw"
MANIFESTS = ROOT / "manifests"
NAMESPACE = "tenantgw-system"
# What Helm and the chart add to every object's metadata.labels, beside kustomize's part-of.
HELM_LABELS = {
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "helm.sh/chart",
}
ONLY_IN_KUSTOMIZE = {("Namespace", NAMESPACE)}

Doc = dict[str, Any]


def binary(name: str) -> str:
    try:
        return str(tool(name))
    except ToolMissingError as missing:
        pytest.fail(str(missing), pytrace=False)


def run(*args: str, env: dict[str, str] | None = None, check: bool = True) -> Any:
    proc = subprocess.run(
        list(args), capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(args[:3])} ... exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def docs(text: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def helm_template(*values: str, namespace: str = NAMESPACE, release: str = "tenantgw") -> str:
    """`helm template` of the chart with `--set`/`-f` arguments; the CRDs included."""
    args = [binary("helm"), "template", release, str(CHART), "-n", namespace, "--include-crds"]
    return str(run(*args, *values).stdout)


def kustomize(path: Path) -> list[Doc]:
    return docs(run(binary("kubectl"), "kustomize", str(path)).stdout)


def key(doc: Doc) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def normalised(doc: Doc) -> Doc:
    """The object without the labels Helm adds (part-of, kustomize's too, is kept)."""
    labels = {k: v for k, v in doc["metadata"].get("labels", {}).items() if k not in HELM_LABELS}
    return {**doc, "metadata": {**doc["metadata"], "labels": labels}}


def by_key(objects: list[Doc]) -> dict[tuple[str, str], Doc]:
    out: dict[tuple[str, str], Doc] = {}
    for doc in objects:
        assert key(doc) not in out, f"{key(doc)} rendered twice"
        out[key(doc)] = doc
    return out


def deployment(rendered: str) -> Doc:
    (dep,) = [d for d in docs(rendered) if d["kind"] == "Deployment"]
    return dep


@pytest.mark.unit  # pure: no server, only files
def test_chart_crds_are_the_generated_crds() -> None:
    fix = "run `make crds` (or copy manifests/crds/*.yaml to charts/tenantgw/crds/)"
    copies = {p.name for p in (CHART / "crds").glob("*.yaml")}
    sources = {p.name for p in (MANIFESTS / "crds").glob("*.yaml")} - {"kustomization.yaml"}
    assert copies == sources, f"charts/tenantgw/crds differs from manifests/crds: {fix}"
    for name in sorted(sources):
        same = (CHART / "crds" / name).read_bytes() == (MANIFESTS / "crds" / name).read_bytes()
        assert same, f"charts/tenantgw/crds/{name} is stale: {fix}"


@pytest.mark.parametrize(
    "values",
    [
        (),
        ("--set", "monitoring.enabled=true"),
        ("--set", "roles.create=false"),
        ("--set", "tls.issuer.name=platform-ca"),
    ],
    ids=["defaults", "monitoring", "no-roles", "tls-issuer"],
)
def test_helm_lint_is_clean(values: tuple[str, ...]) -> None:
    proc = run(binary("helm"), "lint", "--strict", str(CHART), *values, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout, proc.stdout
    assert "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("monitoring", [False, True], ids=["install", "with-monitoring"])
def test_helm_renders_exactly_the_kustomize_install(monitoring: bool) -> None:
    """Object by object, field by field, `helm template` is `kubectl kustomize manifests/`."""
    helm = by_key(docs(helm_template("--set", f"monitoring.enabled={str(monitoring).lower()}")))
    expected = kustomize(MANIFESTS)
    if monitoring:
        expected += kustomize(MANIFESTS / "monitoring")
    kust = {k: d for k, d in by_key(expected).items() if k not in ONLY_IN_KUSTOMIZE}
    assert sorted(helm) == sorted(kust), "the chart and manifests/ render different objects"
    for name, doc in helm.items():
        labels = doc["metadata"].get("labels", {})
        # Helm installs crds/ untemplated; everything else carries Helm's labels.
        if doc["kind"] != "CustomResourceDefinition":
            assert set(labels) >= HELM_LABELS, f"{name} lacks Helm's labels"
        assert normalised(doc) == kust[name], f"{name} differs between the chart and manifests/"


def test_values_reach_the_operator(tmp_path: Path) -> None:
    """Images, the admin Secret, resources and the NetworkPolicy settings are the chart's values,
    and what they render is what the operator's settings parser accepts."""
    digest = "sha256:" + "ab" * 32
    dns = [
        {"namespace": "kube-system", "podLabels": {"k8s-app": "coredns"}},
        {"cidr": "10.9.0.10/32"},
    ]
    values = {
        "operator": {
            "image": {"repository": "registry.example/tgw/operator", "digest": digest},
            "resources": {
                "requests": {"cpu": "50m", "memory": "128Mi"},
                "limits": {"memory": "1Gi"},
            },
            "nodeSelector": {"type": "kwok"},
        },
        "gateway": {"image": {"repository": "registry.example/tgw/gateway", "tag": "9.9.9"}},
        "storage": {"adminSecret": "platform-storage-admin"},
        "networkPolicy": {"clusterCIDRs": ["10.244.0.0/16", "10.96.0.0/12"], "dnsPeers": dns},
    }
    file = tmp_path / "values.yaml"
    file.write_text(yaml.safe_dump(values))
    dep = deployment(helm_template("-f", str(file)))
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"registry.example/tgw/operator@{digest}"
    assert container["resources"] == values["operator"]["resources"]
    assert pod["nodeSelector"] == {"type": "kwok"}
    env = {e["name"]: e for e in container["env"]}
    assert env["TENANTGW_GATEWAY_IMAGE"]["value"] == "registry.example/tgw/gateway:9.9.9"
    for name in ("TENANTGW_POSTGRES_DSN", "TENANTGW_REDIS_URL"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "platform-storage-admin"
    plain = {name: e["value"] for name, e in env.items() if "value" in e}
    network = network_from_env(plain)
    assert network.cluster_cidrs == ("10.244.0.0/16", "10.96.0.0/12")
    assert json.loads(plain["TENANTGW_DNS_PEERS"]) == dns
    assert len(network.dns) == 2
    # Without DNS peers the variable is absent and the operator keeps its default.
    assert "TENANTGW_DNS_PEERS" not in {e["name"] for e in deployment(helm_template())["spec"][
        "template"]["spec"]["containers"][0]["env"]}  # fmt: skip


@pytest.mark.parametrize(("value", "kopf"), [("json", "json"), ("text", "full")])
def test_log_format_reaches_the_operator_and_its_gateways(value: str, kopf: str) -> None:
    """`logFormat` sets kopf's --log-format, the operator's and the gateways' format, and is
    what the operator's settings accept."""
    from tenantgw.reconcile.settings import gateway_log_format

    (container,) = deployment(helm_template("--set", f"logFormat={value}"))["spec"]["template"][
        "spec"]["containers"]  # fmt: skip
    assert f"--log-format={kopf}" in container["command"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TENANTGW_LOG_FORMAT"] == value
    assert gateway_log_format(env) == value
    proc = run(binary("helm"), "template", "t", str(CHART), "--set", "logFormat=yaml", check=False)
    assert proc.returncode != 0
    assert "logFormat must be json or text, not yaml" in proc.stderr


def operator_env(rendered: str) -> dict[str, str]:
    (container,) = deployment(rendered)["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.mark.parametrize(
    ("values", "issuer"),
    [
        (("--set", "tls.issuer.name=platform-ca"), IssuerRef(name="platform-ca")),
        (
            ("--set", "tls.issuer.name=gateway-ca", "--set", "tls.issuer.kind=Issuer",
             "--set", "tls.issuer.group=awspca.cert-manager.io"),
            IssuerRef(name="gateway-ca", kind="Issuer", group="awspca.cert-manager.io"),
        ),
    ],
    ids=["cluster-issuer", "external-issuer"],
)  # fmt: skip
def test_tls_issuer_reaches_the_gateways_certificate(
    values: tuple[str, ...], issuer: IssuerRef
) -> None:
    """`tls.issuer` is the operator's default issuer: what the chart renders is what the
    operator's settings read, and the Certificate the operator then renders for a Tenant with
    spec.gateway.tls and no issuerRef of its own names that issuer."""
    env = operator_env(helm_template(*values))
    assert issuer_from_env(env) == issuer
    settings = dataclasses.replace(SETTINGS, tls_issuer=issuer_from_env(env))
    body = copy.deepcopy(TENANT)
    body["spec"]["gateway"] = {"tls": {"secretName": "gateway-tls"}}
    snap = dataclasses.replace(snapshot(body), cert_manager=True)
    objects = plan_tenant(snap, settings, now=NOW, new_key=keys(), storage=STORAGE).objects
    (certificate,) = [o for o in objects if o["kind"] == "Certificate"]
    assert certificate["spec"]["issuerRef"] == {
        "name": issuer.name,
        "kind": issuer.kind,
        "group": issuer.group,
    }
    assert certificate["spec"]["secretName"] == "gateway-tls"


def test_without_a_tls_issuer_the_operator_has_none() -> None:
    """The default values set no issuer (the kustomize install sets none either), and a kind
    cert-manager does not have is refused by `helm template`, before the operator would be."""
    env = operator_env(helm_template())
    assert "TENANTGW_TLS_ISSUER" not in env
    assert issuer_from_env(env) is None
    proc = run(
        binary("helm"), "template", "t", str(CHART), "--set", "tls.issuer.name=platform-ca",
        "--set", "tls.issuer.kind=Secret", check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "tls.issuer.kind must be ClusterIssuer or Issuer, not Secret" in proc.stderr


def test_the_chart_refuses_values_it_cannot_install() -> None:
    proc = run(
        binary("helm"), "template", "t", str(CHART), "--set", "networkPolicy.clusterCIDRs=null",
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "networkPolicy.clusterCIDRs must list at least one CIDR" in proc.stderr
    proc = run(
        binary("helm"), "template", "t", str(CHART), "--set", "operator.image.tag=",
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "an image needs a tag or a digest" in proc.stderr


# ------------------------------------------------------------------ helm install, for real
# The shared control plane already holds tenantgw's cluster-wide objects (installed from
# manifests/ by the other tests and the operator fixture): CRDs, ClusterRoles, the peering.
# A throwaway release takes its own operator name and peering, leaves the people roles to the
# existing install (roles.create=false: the operator binds them by name), and Helm skips CRDs
# that exist. Its pod is held on the kwok nodes, where it is reported Running without running:
# a second operator must not really start against the shared cluster.


@pytest.fixture
def release(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    name = f"tgw-{uuid.uuid4().hex[:8]}"
    env = {
        "KUBECONFIG": str(cluster.kubeconfig),
        "HELM_CACHE_HOME": str(tmp_path / "cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "config"),
        "HELM_DATA_HOME": str(tmp_path / "data"),
    }
    namespace = name
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }
    cluster.run_kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(ns))
    yield name, namespace, env
    run(binary("helm"), "uninstall", name, "-n", namespace, "--wait", env=env, check=False)
    cluster.run_kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    for kind in ("clusterrole", "clusterrolebinding"):
        cluster.run_kubectl("delete", kind, f"{name}-operator", "--ignore-not-found", check=False)
    cluster.run_kubectl("delete", "clusterkopfpeering", name, "--ignore-not-found", check=False)


def test_helm_installs_and_uninstalls_against_the_control_plane(
    cluster: Cluster, release: tuple[str, str, dict[str, str]]
) -> None:
    name, namespace, env = release
    operator = f"{name}-operator"
    proc = run(
        binary("helm"), "install", name, str(CHART), "-n", namespace, "--wait", "--timeout", "3m",
        "--set", f"operator.name={operator}", "--set", f"peering={name}",
        "--set", "roles.create=false", "--set", "operator.nodeSelector.type=kwok",
        env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    status = json.loads(
        run(binary("helm"), "status", name, "-n", namespace, "-o", "json", env=env).stdout
    )
    assert status["info"]["status"] == "deployed"

    def get(*what: str) -> Doc:
        out = cluster.run_kubectl("get", *what, "-o", "json").stdout
        result: Doc = json.loads(out)
        return result

    dep = get("deployment", operator, "-n", namespace)
    assert dep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    # --wait saw it available: the restricted namespace admitted its pod.
    assert dep["status"].get("availableReplicas") == 1, dep["status"]
    env_vars = {e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "TENANTGW_CLUSTER_CIDRS" in env_vars
    policy = get("networkpolicy", operator, "-n", namespace)["spec"]
    # Isolated for ingress with no rule allowing any (the API server drops the empty list).
    assert "Ingress" in policy["policyTypes"]
    assert policy.get("ingress", []) == []
    assert get("clusterkopfpeering", name)["metadata"]["name"] == name
    binding = get("clusterrolebinding", operator)
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": operator, "namespace": namespace}
    ]
    # The release's ServiceAccount holds the operator's rights, and no more than it.
    sa = f"system:serviceaccount:{namespace}:{operator}"
    for verb, resource, allowed in [
        ("watch", "tenants.tenantgw.io", True),
        ("create", "secrets", True),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", False),
        ("create", "tenants.tenantgw.io", False),
    ]:
        out = cluster.run_kubectl(
            "auth", "can-i", verb, resource, f"--as={sa}", "-A", check=False
        ).stdout.strip()
        assert out == ("yes" if allowed else "no"), (verb, resource, out)

    proc = run(binary("helm"), "uninstall", name, "-n", namespace, "--wait", env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    for what in (
        ("deployment", operator, "-n", namespace),
        ("clusterrole", operator),
        ("clusterrolebinding", operator),
        ("clusterkopfpeering", name),
    ):
        gone = cluster.run_kubectl("get", *what, "-o", "name", check=False)
        assert gone.returncode != 0, f"{what} survived helm uninstall"
    # CRDs are Helm's to install but never to delete: the Tenants in them stay.
    cluster.run_kubectl("get", "crd", "tenants.tenantgw.io")
