"""manifests/ installs tenantgw with kustomize, the operator gets least privilege, and the
API server accepts every example as written: schema, CEL rules and all.

The CRDs and the RBAC are applied for real and left installed (the operator fixture applies the
same objects and runs as the same ServiceAccount); the rest is applied with a server-side dry
run, so the API server validates it without a fake operator pod appearing.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.fixtures import Cluster
from tenantgw.api import ModelAlias, Tenant
from tenantgw.api.model_alias import FALLBACK_SELF_MESSAGE

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
CRDS = ROOT / "crds"
OPERATOR = "system:serviceaccount:tenantgw-system:tenantgw-operator"
PART_OF = ("app.kubernetes.io/part-of", "tenantgw")
RBAC_KINDS = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
EXAMPLES = ROOT / "examples"
EXAMPLE_NS = "tenant-engineering-team"
EXAMPLE_TENANT = "engineering-team"
MANAGER = "tenantgw-examples-test"

# What the operator does, and so all it may do: (apiGroup, resource) -> verbs.
# What the operator does with each kind it creates: applies (create, patch), prunes (delete),
# reads, and watches (label-selected) to revert drift.
OWNED_VERBS = {"get", "list", "watch", "create", "patch", "delete"}
OPERATOR_RULES: dict[tuple[str, str], set[str]] = {
    ("tenantgw.io", "tenants"): {"get", "list", "watch", "patch"},
    ("tenantgw.io", "tenants/status"): {"get", "patch"},
    ("tenantgw.io", "modelaliases"): {"get", "list", "watch", "patch"},
    ("tenantgw.io", "modelaliases/status"): {"get", "patch"},
    ("tenantgw.io", "budgetpolicies"): {"get", "list", "watch", "patch"},
    ("tenantgw.io", "budgetpolicies/status"): {"get", "patch"},
    ("", "namespaces"): OWNED_VERBS,
    ("", "secrets"): OWNED_VERBS,
    ("", "configmaps"): OWNED_VERBS,
    ("", "serviceaccounts"): OWNED_VERBS,
    ("", "services"): OWNED_VERBS,
    ("", "events"): {"create"},
    ("apps", "deployments"): OWNED_VERBS,
    ("networking.k8s.io", "networkpolicies"): OWNED_VERBS,
    ("policy", "poddisruptionbudgets"): OWNED_VERBS,
    ("autoscaling", "horizontalpodautoscalers"): OWNED_VERBS,
    ("rbac.authorization.k8s.io", "roles"): OWNED_VERBS,
    ("rbac.authorization.k8s.io", "rolebindings"): OWNED_VERBS,
    ("monitoring.coreos.com", "servicemonitors"): OWNED_VERBS,
    ("monitoring.coreos.com", "prometheusrules"): OWNED_VERBS,
    ("cert-manager.io", "certificates"): OWNED_VERBS,
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"},
}
# The only rule limited to names: binding the two people roles it renders RoleBindings for.
OPERATOR_BIND = {
    "apiGroups": ["rbac.authorization.k8s.io"],
    "resources": ["clusterroles"],
    "resourceNames": ["tenantgw-tenant-admin", "tenantgw-tenant-viewer"],
    "verbs": ["bind"],
}


def render(cluster: Cluster, path: Path = MANIFESTS) -> list[dict[str, Any]]:
    out = cluster.run_kubectl("kustomize", str(path)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    pytest.fail(f"manifests render no {kind} {name}")


def rules_of(role: dict[str, Any], *, strict: bool = True) -> dict[tuple[str, str], set[str]]:
    """Flatten a role's rules into (apiGroup, resource) -> verbs; strict: no resourceNames."""
    flat: dict[tuple[str, str], set[str]] = {}
    for rule in role.get("rules") or []:
        assert not (strict and rule.get("resourceNames")), rule
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                flat.setdefault((group, resource), set()).update(rule["verbs"])
    return flat


def can_i(cluster: Cluster, who: str, verb: str, resource: str, *extra: str) -> bool:
    """`kubectl auth can-i` as a SubjectAccessReview, so unserved kinds are checked too.

    `resource` is `plural.group` as kubectl writes it; `extra` takes `-n NS`,
    `--subresource=NAME` and `--name=NAME` (one object); without `-n` the question is
    cluster-wide.
    """
    plural, _, group = resource.partition(".")
    attributes: dict[str, str] = {"verb": verb, "group": group, "resource": plural}
    args = list(extra)
    if "-n" in args:
        attributes["namespace"] = args[args.index("-n") + 1]
    for arg in args:
        if arg.startswith("--subresource="):
            attributes["subresource"] = arg.removeprefix("--subresource=")
        if arg.startswith("--name="):
            attributes["name"] = arg.removeprefix("--name=")
    groups = ["system:authenticated"]
    if who.startswith("system:serviceaccount:"):
        namespace = who.split(":")[2]
        groups += ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"]
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": who, "groups": groups, "resourceAttributes": attributes},
    }
    out = cluster.run_kubectl("create", "-o", "json", "-f", "-", stdin=json.dumps(review)).stdout
    allowed: bool = json.loads(out)["status"].get("allowed", False)
    return allowed


@pytest.fixture(scope="module")
def rendered(cluster: Cluster) -> list[dict[str, Any]]:
    return render(cluster)


@pytest.fixture(scope="module")
def crds_installed(cluster: Cluster) -> None:
    """The CRDs of manifests/crds, applied for real and Established."""
    crds = MANIFESTS / "crds"
    cluster.run_kubectl("apply", "--server-side", "--force-conflicts", "-k", str(crds))
    names = [f"crd/{d['metadata']['name']}" for d in render(cluster, crds)]
    cluster.run_kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)


@pytest.fixture(scope="module")
def rbac_installed(cluster: Cluster, rendered: list[dict[str, Any]]) -> None:
    """The namespace, ServiceAccount, ClusterRoles and binding, applied for real."""
    docs = [d for d in rendered if d["kind"] in RBAC_KINDS]
    docs.sort(key=lambda d: d["kind"] != "Namespace")
    stream = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    cluster.run_kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=stream)


@pytest.mark.unit  # pure: also in `make test-unit`, which runs after `make crds`
def test_crd_copies_in_manifests_are_the_generated_crds() -> None:
    """kustomize reads no files outside manifests/, so manifests/crds holds copies of crds/."""
    fix = "run `python -m tenantgw.api.crdgen manifests/crds/` (or copy crds/*.yaml there)"
    kustomization = yaml.safe_load((MANIFESTS / "crds" / "kustomization.yaml").read_text())
    for crd in sorted(CRDS.glob("*.yaml")):
        copy = MANIFESTS / "crds" / crd.name
        assert copy.exists(), f"manifests/crds/{crd.name} is missing: {fix}"
        assert copy.read_text() == crd.read_text(), f"manifests/crds/{crd.name} is stale: {fix}"
        assert crd.name in kustomization["resources"]
    copies = {p.name for p in (MANIFESTS / "crds").glob("*.tenantgw.io.yaml")}
    assert copies == {p.name for p in CRDS.glob("*.yaml")}, f"manifests/crds has extra CRDs: {fix}"


def test_manifests_render_the_whole_install(rendered: list[dict[str, Any]]) -> None:
    objects = {(d["kind"], d["metadata"]["name"]) for d in rendered}
    assert objects == {
        ("CustomResourceDefinition", "tenants.tenantgw.io"),
        ("CustomResourceDefinition", "modelaliases.tenantgw.io"),
        ("CustomResourceDefinition", "budgetpolicies.tenantgw.io"),
        ("CustomResourceDefinition", "clusterkopfpeerings.kopf.dev"),
        ("Namespace", "tenantgw-system"),
        ("ServiceAccount", "tenantgw-operator"),
        ("ClusterRole", "tenantgw-operator"),
        ("ClusterRoleBinding", "tenantgw-operator"),
        ("ClusterRole", "tenantgw-tenant-admin"),
        ("ClusterRole", "tenantgw-tenant-viewer"),
        ("ClusterRole", "tenantgw-viewer"),
        ("ClusterKopfPeering", "tenantgw"),
        ("Deployment", "tenantgw-operator"),
        ("NetworkPolicy", "tenantgw-operator"),
    }
    for doc in rendered:
        labels = doc["metadata"].get("labels", {})
        assert labels.get(PART_OF[0]) == PART_OF[1], f"{doc['kind']} {doc['metadata']['name']}"
    ns = find(rendered, "Namespace", "tenantgw-system")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_operator_deployment_runs_kopf_as_configured(rendered: list[dict[str, Any]]) -> None:
    dep = find(rendered, "Deployment", "tenantgw-operator")
    assert dep["metadata"]["namespace"] == "tenantgw-system"
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "tenantgw-operator"
    assert pod["automountServiceAccountToken"] is True
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/tenantgw/operator:0.1.0"
    assert container["command"] == [
        "kopf",
        "run",
        "--all-namespaces",
        "--peering=tenantgw",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--log-format=json",
        "-m",
        "tenantgw.operator.handlers",
    ]
    env = {e["name"]: e for e in container["env"]}
    assert env["TENANTGW_GATEWAY_IMAGE"]["value"] == "ghcr.io/tenantgw/gateway:0.1.0"
    # JSON log lines from the operator and from the gateways it renders.
    assert env["TENANTGW_LOG_FORMAT"]["value"] == "json"
    assert env["TENANTGW_GATEWAY_LOG_FORMAT"]["value"] == "json"
    assert env["TENANTGW_OPERATOR_NAMESPACE"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.namespace"}
    }
    for name in ("TENANTGW_POSTGRES_DSN", "TENANTGW_REDIS_URL"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["optional"]) == ("tenantgw-admin", True)
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert {"name": "health", "containerPort": 8080} in container["ports"]
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "512Mi"},
    }
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_operator_cluster_role_grants_exactly_what_the_operator_does(
    rendered: list[dict[str, Any]],
) -> None:
    role = find(rendered, "ClusterRole", "tenantgw-operator")
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field}: {rule}"
        assert "nonResourceURLs" not in rule
    named = [rule for rule in role["rules"] if rule.get("resourceNames")]
    assert named == [OPERATOR_BIND]
    unnamed = {**role, "rules": [rule for rule in role["rules"] if not rule.get("resourceNames")]}
    assert rules_of(unnamed) == OPERATOR_RULES
    binding = find(rendered, "ClusterRoleBinding", "tenantgw-operator")
    assert binding["roleRef"]["name"] == "tenantgw-operator"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "tenantgw-operator", "namespace": "tenantgw-system"}
    ]


def test_people_roles_are_scoped(rendered: list[dict[str, Any]]) -> None:
    admin = rules_of(find(rendered, "ClusterRole", "tenantgw-tenant-admin"))
    assert admin[("tenantgw.io", "modelaliases")] == {
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
    }
    assert admin[("tenantgw.io", "budgetpolicies")] == {"get", "list", "watch"}
    tenant_viewer = rules_of(find(rendered, "ClusterRole", "tenantgw-tenant-viewer"))
    for role in (admin, tenant_viewer):
        # No Secret (the keys come from the operator's Role tenantgw-keys, by name), nothing
        # that reads one another way (exec, a workload mounting it), no RBAC, no Tenant.
        for group, resource in role:
            assert resource.split("/")[0] not in {"secrets", "serviceaccounts", "roles"}, resource
            assert "/" not in resource, resource
            assert group not in {"rbac.authorization.k8s.io", "batch"}, group
        assert ("tenantgw.io", "tenants") not in role
        for (group, resource), verbs in role.items():
            if (group, resource) != ("tenantgw.io", "modelaliases"):
                assert verbs == {"get", "list", "watch"}, resource
    viewer = find(rendered, "ClusterRole", "tenantgw-viewer")
    assert viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert all(verbs == {"get", "list", "watch"} for verbs in rules_of(viewer).values())


@pytest.mark.usefixtures("crds_installed")
def test_the_api_server_accepts_the_whole_install(
    cluster: Cluster, rendered: list[dict[str, Any]]
) -> None:
    # A server-side dry run creates nothing, so the namespace the rest lives in must exist.
    namespace = find(rendered, "Namespace", "tenantgw-system")
    cluster.run_kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(namespace))
    proc = cluster.run_kubectl(
        "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-k", str(MANIFESTS)
    )
    assert "clusterkopfpeering.kopf.dev/tenantgw serverside-applied" in proc.stdout
    assert "deployment.apps/tenantgw-operator serverside-applied" in proc.stdout
    assert "PodSecurity" not in proc.stderr, proc.stderr


@pytest.mark.usefixtures("rbac_installed")
def test_operator_pod_passes_restricted_pod_security(
    cluster: Cluster, rendered: list[dict[str, Any]]
) -> None:
    """A pod from the Deployment's template is admitted by the namespace's `enforce: restricted`."""
    template = find(rendered, "Deployment", "tenantgw-operator")["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "pod-security-check", "namespace": "tenantgw-system"},
        "spec": template["spec"],
    }
    proc = cluster.run_kubectl(
        "create", "--dry-run=server", "-o", "name", "-f", "-", stdin=json.dumps(pod), check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "PodSecurity" not in proc.stderr, proc.stderr


@pytest.mark.usefixtures("rbac_installed", "crds_installed")
@pytest.mark.parametrize(
    ("verb", "resource", "extra"),
    [
        ("watch", "tenants.tenantgw.io", ()),
        ("patch", "tenants.tenantgw.io", ()),
        ("patch", "tenants.tenantgw.io", ("--subresource=status",)),
        ("list", "modelaliases.tenantgw.io", ()),
        ("patch", "budgetpolicies.tenantgw.io", ("--subresource=status", "-n", "tenant-a")),
        ("create", "namespaces", ()),
        ("delete", "namespaces", ()),
        ("watch", "secrets", ()),
        ("create", "secrets", ("-n", "tenant-a")),
        ("patch", "configmaps", ("-n", "tenant-a")),
        ("watch", "configmaps", ()),
        ("create", "events", ("-n", "default")),
        ("watch", "deployments.apps", ()),
        ("delete", "poddisruptionbudgets.policy", ("-n", "tenant-a")),
        ("patch", "horizontalpodautoscalers.autoscaling", ("-n", "tenant-a")),
        ("patch", "networkpolicies.networking.k8s.io", ("-n", "tenant-a")),
        ("create", "servicemonitors.monitoring.coreos.com", ("-n", "tenant-a")),
        ("create", "roles.rbac.authorization.k8s.io", ("-n", "tenant-a")),
        ("bind", "clusterroles.rbac.authorization.k8s.io", ("--name=tenantgw-tenant-admin",)),
        ("bind", "clusterroles.rbac.authorization.k8s.io", ("--name=tenantgw-tenant-viewer",)),
        ("delete", "rolebindings.rbac.authorization.k8s.io", ("-n", "tenant-a")),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io", ()),
        ("patch", "clusterkopfpeerings.kopf.dev", ()),
    ],
)
def test_operator_may(cluster: Cluster, verb: str, resource: str, extra: tuple[str, ...]) -> None:
    assert can_i(cluster, OPERATOR, verb, resource, *extra)


@pytest.mark.usefixtures("rbac_installed", "crds_installed")
@pytest.mark.parametrize(
    ("verb", "resource", "extra"),
    [
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", ()),
        ("escalate", "clusterroles.rbac.authorization.k8s.io", ()),
        ("escalate", "roles.rbac.authorization.k8s.io", ("-n", "tenant-a")),
        ("bind", "clusterroles.rbac.authorization.k8s.io", ("--name=cluster-admin",)),
        ("bind", "clusterroles.rbac.authorization.k8s.io", ("--name=admin",)),
        ("create", "clusterroles.rbac.authorization.k8s.io", ()),
        ("update", "rolebindings.rbac.authorization.k8s.io", ("-n", "tenant-a")),
        ("impersonate", "users", ()),
        ("delete", "nodes", ()),
        ("get", "pods", ("-n", "tenant-a")),
        ("create", "pods", ("-n", "tenant-a", "--subresource=exec")),
        ("update", "tenants.tenantgw.io", ()),
        ("create", "tenants.tenantgw.io", ()),
        ("delete", "tenants.tenantgw.io", ()),
        ("delete", "modelaliases.tenantgw.io", ("-n", "tenant-a")),
        ("update", "secrets", ("-n", "tenant-a")),
        ("deletecollection", "secrets", ("-n", "tenant-a")),
        ("update", "configmaps", ("-n", "tenant-a")),
        ("delete", "events", ("-n", "default")),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io", ()),
        ("create", "clusterkopfpeerings.kopf.dev", ()),
    ],
)
def test_operator_may_not(
    cluster: Cluster, verb: str, resource: str, extra: tuple[str, ...]
) -> None:
    assert not can_i(cluster, OPERATOR, verb, resource, *extra)


@pytest.fixture
def tenant_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.run_kubectl("create", "namespace", name)
    yield name
    cluster.run_kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.usefixtures("rbac_installed", "crds_installed")
def test_tenant_admin_bound_in_a_namespace_stays_in_it(
    cluster: Cluster, tenant_namespace: str
) -> None:
    cluster.run_kubectl(
        "create", "rolebinding", "eng-admins", "-n", tenant_namespace,
        "--clusterrole=tenantgw-tenant-admin", "--user=alice",
    )  # fmt: skip
    ns = ("-n", tenant_namespace)
    assert can_i(cluster, "alice", "create", "modelaliases.tenantgw.io", *ns)
    assert can_i(cluster, "alice", "watch", "deployments.apps", *ns)
    # The keys come from the operator's Role tenantgw-keys, by name; this role reads no Secret.
    assert not can_i(cluster, "alice", "get", "secrets", *ns, "--name=gateway")
    assert not can_i(cluster, "alice", "list", "secrets", *ns)
    assert not can_i(cluster, "alice", "create", "pods", *ns, "--subresource=exec")
    assert not can_i(cluster, "alice", "create", "deployments.apps", *ns)
    assert not can_i(cluster, "alice", "create", "budgetpolicies.tenantgw.io", *ns)
    assert not can_i(cluster, "alice", "create", "secrets", *ns)
    assert not can_i(cluster, "alice", "delete", "deployments.apps", *ns)
    assert not can_i(cluster, "alice", "get", "secrets", "-n", "tenantgw-system")
    assert not can_i(cluster, "alice", "list", "tenants.tenantgw.io")


@pytest.mark.usefixtures("crds_installed")
@pytest.mark.parametrize(
    "namespace", ["kube-system", "kube-node-lease", "default", "tenantgw-system"]
)
def test_the_api_server_refuses_a_tenant_in_a_reserved_namespace(
    cluster: Cluster, namespace: str
) -> None:
    """The CRD's CEL rule: no Tenant may own the cluster's or the operator's namespace."""
    body = {
        "apiVersion": "tenantgw.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": f"t-{uuid.uuid4().hex[:8]}"},
        "spec": {"namespace": namespace},
    }
    proc = cluster.run_kubectl(
        "create", "--dry-run=server", "-f", "-", stdin=json.dumps(body), check=False
    )
    assert proc.returncode != 0
    assert "spec.namespace must not be default, tenantgw-system or start with kube-" in proc.stderr


@pytest.mark.usefixtures("crds_installed")
def test_the_api_server_shows_the_default_deletion_policy(cluster: Cluster) -> None:
    """A Tenant that says nothing retains its data, and `kubectl get` shows it."""
    body = {
        "apiVersion": "tenantgw.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": f"t-{uuid.uuid4().hex[:8]}"},
        "spec": {"access": {"admins": [{"kind": "Group", "name": "eng"}]}},
    }
    out = cluster.run_kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(body)
    ).stdout
    assert json.loads(out)["spec"]["deletionPolicy"] == "Retain"
    body["spec"] = {"access": {"admins": [{"kind": "Group", "name": "system:authenticated"}]}}
    proc = cluster.run_kubectl(
        "create", "--dry-run=server", "-f", "-", stdin=json.dumps(body), check=False
    )
    assert proc.returncode != 0
    assert "would make every client a tenant principal" in proc.stderr


@pytest.mark.usefixtures("rbac_installed")
def test_viewer_rules_are_aggregated_into_view(cluster: Cluster) -> None:
    """kube-controller-manager folds tenantgw-viewer into the built-in `view` ClusterRole."""
    deadline = time.monotonic() + 30
    while True:
        view = json.loads(cluster.run_kubectl("get", "clusterrole", "view", "-o", "json").stdout)
        rules = rules_of(view, strict=False)
        if ("tenantgw.io", "modelaliases") in rules:
            break
        if time.monotonic() > deadline:
            pytest.fail("the view ClusterRole did not gain tenantgw-viewer's rules within 30s")
        time.sleep(0.2)
    for resource in ("tenants", "modelaliases", "budgetpolicies"):
        assert rules[("tenantgw.io", resource)] >= {"get", "list", "watch"}


def litellm_metric_names() -> set[str]:
    """LiteLLM's DEFINED_PROMETHEUS_METRICS, read from its source: importing litellm is slow."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        pytest.fail("litellm is not installed")
    source = Path(spec.origin).parent / "types" / "integrations" / "prometheus.py"
    for node in ast.parse(source.read_text()).body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "DEFINED_PROMETHEUS_METRICS"
        ):
            return {
                ast.literal_eval(e) for e in ast.walk(node.value) if isinstance(e, ast.Constant)
            }
    pytest.fail(f"no DEFINED_PROMETHEUS_METRICS in {source}")


def test_monitoring_renders_a_dashboard_and_operator_alerts(cluster: Cluster) -> None:
    docs = render(cluster, MANIFESTS / "monitoring")
    dashboard_cm = find(docs, "ConfigMap", "tenantgw-grafana-dashboard")
    assert dashboard_cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(dashboard_cm["data"]["tenantgw-gateways.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (
        "litellm_proxy_total_requests_metric_total",
        "litellm_proxy_failed_requests_metric_total",
        "litellm_request_total_latency_metric_bucket",
        "litellm_spend_metric_total",
    ):
        assert metric in exprs
    # Every series the dashboard reads is one the pinned LiteLLM exports.
    defined = litellm_metric_names()
    used = {re.sub(r"_(total|bucket)$", "", m) for m in re.findall(r"litellm_\w+", exprs)}
    assert used <= defined, f"not LiteLLM metrics: {sorted(used - defined)}"
    rule = find(docs, "PrometheusRule", "tenantgw-operator")
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts == {"TenantgwOperatorDown", "TenantgwOperatorRestarting"}
    assert all(d["metadata"]["namespace"] == "tenantgw-system" for d in docs)


# The examples: applied for real (server-side), read back and deleted again. A Tenant or
# namespace of that name that was already there (a demo left running) is applied over and kept,
# with what is in it. (They live here, not in tests/integration/test_examples.py: that basename
# is taken by tests/unit/test_examples.py, and pytest cannot import two test modules of one name
# from directories without __init__.py.)


def exists(cluster: Cluster, *what: str) -> bool:
    return cluster.run_kubectl("get", *what, "-o", "name", check=False).returncode == 0


def gone(cluster: Cluster, what: tuple[str, ...], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while exists(cluster, *what):
        if time.monotonic() > deadline:
            pytest.fail(f"{' '.join(what)} was not deleted within {timeout}s")
        time.sleep(0.2)


def documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((EXAMPLES / name).read_text()) if doc]


@pytest.fixture(scope="module")
def applied(cluster: Cluster, crds_installed: None) -> Iterator[str]:
    """Every example applied for real; the output of `kubectl apply`."""
    had_tenant = exists(cluster, "tenant", EXAMPLE_TENANT)
    had_namespace = exists(cluster, "namespace", EXAMPLE_NS)
    if not had_namespace:
        cluster.run_kubectl("create", "namespace", EXAMPLE_NS)
    # Forced: a demo or an end-to-end run left running owns some of the same fields.
    proc = cluster.run_kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        f"--field-manager={MANAGER}",
        "-k",
        str(EXAMPLES),
    )
    yield proc.stdout
    # Deleting the namespace deletes the Secrets, ModelAliases and BudgetPolicy in it.
    if not had_tenant:
        cluster.run_kubectl("delete", "tenant", EXAMPLE_TENANT, "--wait=false", check=False)
        gone(cluster, ("tenant", EXAMPLE_TENANT))
    if not had_namespace:
        cluster.run_kubectl("delete", "namespace", EXAMPLE_NS, "--wait=false", check=False)
        gone(cluster, ("namespace", EXAMPLE_NS))


def test_every_example_is_applied_for_real(applied: str) -> None:
    expected = ["tenant.tenantgw.io/engineering-team", "budgetpolicy.tenantgw.io/engineering-daily"]
    expected += [f"secret/{s['metadata']['name']}" for s in documents("provider-secrets.yaml")]
    expected += [
        f"modelalias.tenantgw.io/{a['metadata']['name']}" for a in documents("model-aliases.yaml")
    ]
    for name in expected:
        assert f"{name} serverside-applied" in applied, applied


@pytest.mark.usefixtures("applied")
def test_the_api_server_keeps_every_field_of_the_tenant(cluster: Cluster) -> None:
    """Nothing in the example is pruned by the CRD's structural schema.

    Every field the example sets is live with its value; a field another manager set (a
    `make demo` left running points the providers' apiBase at its simulator) is not the
    example's and is not compared.
    """
    live = json.loads(cluster.run_kubectl("get", "tenant", EXAMPLE_TENANT, "-o", "json").stdout)
    (written,) = documents("tenant.yaml")
    assert missing_from({"a": [{"b": 1}]}, {"a": [{"b": 1, "c": 2}]}) == ["spec.a[0].c"]
    wanted = Tenant.model_validate(written).spec.model_dump(exclude_unset=True)
    kept = Tenant.model_validate(live).spec.model_dump()
    assert not missing_from(kept, wanted), missing_from(kept, wanted)


def missing_from(live: Any, written: Any, path: str = "spec") -> list[str]:
    """The paths of `written` whose value `live` does not hold (extra live fields allowed)."""
    if isinstance(written, dict):
        if not isinstance(live, dict):
            return [path]
        return [
            miss
            for key, value in written.items()
            for miss in missing_from(live.get(key), value, f"{path}.{key}")
        ]
    if isinstance(written, list):
        if not isinstance(live, list) or len(live) != len(written):
            return [path]
        return [
            miss
            for i, (have, want) in enumerate(zip(live, written, strict=True))
            for miss in missing_from(have, want, f"{path}[{i}]")
        ]
    return [] if live == written else [path]


@pytest.mark.usefixtures("applied")
def test_the_api_server_keeps_every_model_alias(cluster: Cluster) -> None:
    listed = json.loads(
        cluster.run_kubectl("get", "modelaliases", "-n", EXAMPLE_NS, "-o", "json").stdout
    )
    live = {i["metadata"]["name"]: ModelAlias.model_validate(i).spec for i in listed["items"]}
    for doc in documents("model-aliases.yaml"):
        assert live[doc["metadata"]["name"]] == ModelAlias.model_validate(doc).spec


@pytest.mark.usefixtures("applied")
def test_cel_rules_guard_the_examples(cluster: Cluster) -> None:
    """The same alias falling back to itself is refused by the CRD's CEL rule."""
    codex = next(d for d in documents("model-aliases.yaml") if d["metadata"]["name"] == "codex")
    codex["spec"]["fallbacks"] = ["codex"]
    proc = cluster.run_kubectl(
        "apply", "--server-side", f"--field-manager={MANAGER}", "--dry-run=server", "-f", "-",
        stdin=json.dumps(codex), check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert FALLBACK_SELF_MESSAGE in proc.stderr
