"""Tenant principals: the team's admins and viewers reach what is theirs and nothing else.

The real operator (as its own ServiceAccount) renders the Role and RoleBindings of
`spec.access`; every check below is made twice against the local control plane, as
`kubectl auth can-i --as --as-group` and as the real request with impersonation, on every kind
of object the operator creates in a tenant namespace, plus the Tenant itself. An attacker in the
team tries each way to a credential: read it, list it, widen the Role, bind themselves more,
mount it in a pod, exec into the gateway, mint a token.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from e2e.fixtures import Cluster
from e2e.helpers import K8s, alias_body, eventually, secret_body, tenant_body
from e2e.operator_fixture import RunningOperator

pytestmark = pytest.mark.e2e

TENANT_API = "tenantgw.io/v1alpha1"


@pytest.fixture(scope="module")
def k8s(kube: Any) -> K8s:
    return K8s(kube)


@dataclass(frozen=True)
class Principal:
    """Someone the operator bound from spec.access, to impersonate."""

    user: str
    group: str

    def flags(self) -> list[str]:
        return [f"--as={self.user}", f"--as-group={self.group}"]


@dataclass(frozen=True)
class Team:
    name: str
    ns: str
    admin: Principal
    viewer: Principal


def fast_code(ns: str, name: str = "fast-code") -> dict[str, Any]:
    return alias_body(
        ns,
        name,
        aliases=[f"{name}-model"],
        targets=[{"provider": "sim", "model": "qwen3-coder", "weight": 1}],
    )


def team_spec(tag: str, keys: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "providers": [
            {
                "name": "sim",
                "type": "openai-compatible",
                "apiBase": "http://127.0.0.1:9/v1",
                "region": "us-east-1",
                "credentialsSecretRef": {"name": "sim", "key": "apiKey"},
            }
        ],
        "catalog": [{"provider": "sim", "model": "*", "costTier": "medium"}],
        "keys": keys,
        "routing": {"defaultAlias": "fast-code"},
        "gateway": {"replicas": 1},
        "access": {
            "admins": [{"kind": "Group", "name": f"{tag}-admins"}],
            "viewers": [{"kind": "Group", "name": f"{tag}-viewers"}],
        },
    }


@pytest.fixture(scope="module")
def team(k8s: K8s, operator: RunningOperator) -> Iterator[Team]:
    """A Ready tenant whose spec.access names an admin group and a viewer group."""
    tag = f"e2e-acc-{uuid.uuid4().hex[:6]}"
    ns = f"tenant-{tag}"
    k8s.apply(tenant_body(tag, **team_spec(tag, [{"name": "alice"}])))
    eventually(lambda: k8s.namespace_exists(ns), 30, f"namespace {ns}")
    k8s.apply(secret_body(ns, "sim", {"apiKey": "sim-provider-credential-" + tag}))
    k8s.apply(fast_code(ns))
    k8s.wait_condition(lambda: k8s.tenant(tag), "Ready", "True", timeout=60)
    yield Team(
        name=tag,
        ns=ns,
        admin=Principal(f"{tag}-alice", f"{tag}-admins"),
        viewer=Principal(f"{tag}-victor", f"{tag}-viewers"),
    )
    k8s.delete(TENANT_API, "Tenant", tag)


def can_i(cluster: Cluster, who: Principal, verb: str, what: str, *args: str) -> bool:
    """`kubectl auth can-i VERB WHAT` as `who`: yes or no from the API server."""
    proc = cluster.run_kubectl(*who.flags(), "auth", "can-i", verb, what, *args, check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i {verb} {what}: {proc.stdout}{proc.stderr}"
    return answer == "yes"


def as_(cluster: Cluster, who: Principal, *args: str, stdin: str | None = None) -> tuple[bool, str]:
    """Run kubectl as `who`; (succeeded, stdout or stderr)."""
    # The identity goes first: whatever follows `--` is the command `kubectl exec` runs.
    proc = cluster.run_kubectl(*who.flags(), *args, stdin=stdin, check=False)
    if proc.returncode == 0:
        return True, proc.stdout
    return False, proc.stderr


def refused(cluster: Cluster, who: Principal, *args: str, stdin: str | None = None) -> None:
    ok, out = as_(cluster, who, *args, stdin=stdin)
    assert not ok, f"{who.user} was allowed: kubectl {' '.join(args)}"
    assert "forbidden" in out.lower(), f"kubectl {' '.join(args)} failed otherwise: {out}"


def allowed(cluster: Cluster, who: Principal, *args: str, stdin: str | None = None) -> str:
    ok, out = as_(cluster, who, *args, stdin=stdin)
    assert ok, f"{who.user} was refused: kubectl {' '.join(args)}: {out}"
    return out


def gateway_pod(k8s: K8s, ns: str) -> str:
    pods = eventually(
        lambda: [
            p
            for p in k8s.core.list_namespaced_pod(
                ns, label_selector="app.kubernetes.io/name=gateway"
            ).items
            if not p.metadata.deletion_timestamp
        ],
        30,
        "a gateway pod",
    )
    return str(pods[0].metadata.name)


def refused_exec(cluster: Cluster, k8s: K8s, who: Principal, ns: str) -> None:
    """`kubectl exec` into the gateway is forbidden (retried only while a rollout replaces the
    pod under it: kubectl reads the pod before it asks to exec)."""

    def attempt() -> bool:
        ok, out = as_(cluster, who, "exec", gateway_pod(k8s, ns), "-n", ns, "--", "env")
        assert not ok, f"{who.user} could exec into the gateway: {out}"
        if "NotFound" in out:
            return False
        assert "forbidden" in out.lower(), f"kubectl exec failed otherwise: {out}"
        return True

    eventually(attempt, 30, "kubectl exec to be refused on a live pod")


def pod_mounting(ns: str, secret: str) -> str:
    """A restricted-PSS pod that would print a Secret: the way round RBAC through a workload."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"steal-{secret}", "namespace": ns},
            "spec": {
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 1000,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "c",
                        "image": "busybox",
                        "command": ["cat", "/s/masterKey"],
                        "volumeMounts": [{"name": "s", "mountPath": "/s"}],
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
                "volumes": [{"name": "s", "secret": {"secretName": secret}}],
            },
        }
    )


def test_a_tenant_admin_reads_its_keys_and_no_other_secret(
    cluster: Cluster, k8s: K8s, team: Team
) -> None:
    """Least privilege: the admin gets the key Secrets, never the gateway's or the providers'."""
    ns, admin = team.ns, team.admin
    n = ("-n", ns)
    # Its own keys, by name.
    assert can_i(cluster, admin, "get", "secret/gateway-key-alice", *n)
    out = allowed(cluster, admin, "get", "secret", "gateway-key-alice", *n, "-o", "json")
    key = base64.b64decode(json.loads(out)["data"]["apiKey"]).decode()
    assert key == k8s.secret_value(ns, "gateway-key-alice", "apiKey")
    # Not Secret gateway (master key, PostgreSQL DSN, Redis password), not the provider key.
    for secret in ("gateway", "sim"):
        assert not can_i(cluster, admin, "get", f"secret/{secret}", *n)
        refused(cluster, admin, "get", "secret", secret, *n)
    # Not by listing or watching them either.
    assert not can_i(cluster, admin, "list", "secrets", *n)
    refused(cluster, admin, "get", "secrets", *n)
    assert not can_i(cluster, admin, "watch", "secrets", *n)
    refused(cluster, admin, "get", "secrets", *n, "--watch-only", "--request-timeout=5s")
    # Not by changing the operator's Secrets or replacing the provider's.
    for verb, secret in (("patch", "gateway-key-alice"), ("delete", "gateway-key-alice")):
        assert not can_i(cluster, admin, verb, f"secret/{secret}", *n)
    refused(
        cluster, admin, "patch", "secret", "gateway-key-alice", *n, "-p", '{"data":{"apiKey":""}}'
    )
    refused(cluster, admin, "delete", "secret", "gateway-key-alice", *n)
    assert not can_i(cluster, admin, "create", "secrets", *n)
    refused(cluster, admin, "create", "secret", "generic", "sim2", "--from-literal=a=b", *n)
    # Not through a workload that mounts it, exec into the gateway, or a ServiceAccount token.
    assert not can_i(cluster, admin, "create", "pods", *n)
    refused(cluster, admin, "create", "-f", "-", stdin=pod_mounting(ns, "gateway"))
    assert not can_i(cluster, admin, "create", "pods", "--subresource=exec", *n)
    refused_exec(cluster, k8s, admin, ns)
    assert not can_i(cluster, admin, "create", "pods", "--subresource=portforward", *n)
    assert not can_i(cluster, admin, "create", "pods", "--subresource=attach", *n)
    for kind in ("deployments.apps", "jobs.batch", "cronjobs.batch", "statefulsets.apps"):
        assert not can_i(cluster, admin, "create", kind, *n), kind
    assert not can_i(cluster, admin, "create", "serviceaccounts", "--subresource=token", *n)
    refused(cluster, admin, "create", "token", "gateway", *n)
    # Not by widening its Role or binding itself more.
    assert not can_i(cluster, admin, "patch", "role/tenantgw-keys", *n)
    refused(
        cluster, admin, "patch", "role", "tenantgw-keys", *n, "--type=json",
        "-p", '[{"op":"remove","path":"/rules/0/resourceNames"}]',
    )  # fmt: skip
    assert not can_i(cluster, admin, "create", "rolebindings", *n)
    refused(
        cluster, admin, "create", "rolebinding", "me-too", "--clusterrole=admin",
        f"--group={admin.group}", *n,
    )  # fmt: skip
    refused(cluster, admin, "delete", "rolebinding", "tenantgw-tenant-admins", *n)


def test_a_tenant_admin_manages_aliases_and_only_looks_at_the_rest(
    cluster: Cluster, k8s: K8s, team: Team
) -> None:
    """Tenant admins manage ModelAliases; the gateway's objects and budgets are read-only."""
    ns, admin = team.ns, team.admin
    n = ("-n", ns)
    allowed(
        cluster, admin, "apply", "--server-side", "--field-manager=team", "-f", "-",
        stdin=json.dumps(fast_code(ns, "team-alias")),
    )  # fmt: skip
    assert k8s.alias(ns, "team-alias")["spec"]["targets"][0]["model"] == "qwen3-coder"
    allowed(cluster, admin, "delete", "modelalias", "team-alias", *n)
    assert can_i(cluster, admin, "get", "pods", *n)
    allowed(cluster, admin, "get", "pods", *n)
    for verb in ("patch", "delete"):
        assert not can_i(cluster, admin, verb, "pods", *n), verb
    readable = [("configmap", "gateway-config"), ("deployment", "gateway"), ("service", "gateway")]
    for kind, name in readable:
        assert can_i(cluster, admin, "get", f"{kind}/{name}", *n), kind
        allowed(cluster, admin, "get", kind, name, *n)
        assert not can_i(cluster, admin, "patch", f"{kind}/{name}", *n), kind
        refused(cluster, admin, "annotate", kind, name, "tenantgw.io/x=1", *n)
        assert not can_i(cluster, admin, "delete", f"{kind}/{name}", *n), kind
    refused(cluster, admin, "scale", "deployment", "gateway", "--replicas=0", *n)
    refused(cluster, admin, "patch", "configmap", "gateway-config", *n, "-p", '{"data":{}}')
    for kind in ("networkpolicy", "poddisruptionbudget"):
        for verb in ("patch", "delete"):
            assert not can_i(cluster, admin, verb, f"{kind}/gateway", *n), (verb, kind)
        refused(cluster, admin, "delete", kind, "gateway", *n)
    allowed(cluster, admin, "get", "budgetpolicies", *n)
    assert not can_i(cluster, admin, "create", "budgetpolicies", *n)
    assert not can_i(cluster, admin, "patch", "budgetpolicies", *n)
    assert not can_i(cluster, admin, "delete", "budgetpolicies", *n)
    # The Tenant is the platform's: no read, no edit, no delete, not even of its own.
    for verb in ("get", "patch", "delete"):
        assert not can_i(cluster, admin, verb, f"tenant/{team.name}"), verb
    refused(cluster, admin, "get", "tenant", team.name)
    refused(cluster, admin, "patch", "tenant", team.name, "--type=merge", "-p", '{"spec":{}}')
    refused(cluster, admin, "delete", "tenant", team.name)
    # Another tenant's namespace is out of reach.
    assert not can_i(cluster, admin, "get", "modelaliases", "-n", "tenantgw-system")


def test_a_tenant_viewer_reads_no_secret_and_changes_nothing(
    cluster: Cluster, k8s: K8s, team: Team
) -> None:
    """Viewers see the tenant's objects; no Secret at all, not even the keys."""
    ns, viewer = team.ns, team.viewer
    n = ("-n", ns)
    for secret in ("gateway-key-alice", "gateway", "sim"):
        assert not can_i(cluster, viewer, "get", f"secret/{secret}", *n), secret
        refused(cluster, viewer, "get", "secret", secret, *n)
    refused(cluster, viewer, "get", "secrets", *n)
    for kind, name in (("modelalias", "fast-code"), ("configmap", "gateway-config")):
        allowed(cluster, viewer, "get", kind, name, *n)
    allowed(cluster, viewer, "get", "deployment,service,budgetpolicies", *n)
    assert not can_i(cluster, viewer, "create", "modelaliases", *n)
    refused(
        cluster, viewer, "apply", "--server-side", "-f", "-",
        stdin=json.dumps(fast_code(ns, "viewer-alias")),
    )  # fmt: skip
    refused(cluster, viewer, "delete", "modelalias", "fast-code", *n)
    assert not can_i(cluster, viewer, "create", "pods", "--subresource=exec", *n)
    refused_exec(cluster, k8s, viewer, ns)
    refused(cluster, viewer, "get", "tenant", team.name)


def test_the_key_role_follows_spec_keys(cluster: Cluster, k8s: K8s, team: Team) -> None:
    """A new key becomes readable by the admins; without keys no Role is left to widen."""
    ns, admin = team.ns, team.admin
    n = ("-n", ns)
    k8s.apply(tenant_body(team.name, **team_spec(team.name, [{"name": "alice"}, {"name": "bob"}])))
    eventually(
        lambda: as_(cluster, admin, "get", "secret", "gateway-key-bob", *n)[0],
        30,
        "the admin to read gateway-key-bob",
    )
    k8s.apply(tenant_body(team.name, **team_spec(team.name, [])))
    eventually(
        lambda: (
            not as_(cluster, admin, "get", "role", "tenantgw-keys", *n)[0]
            and "NotFound"
            in cluster.run_kubectl("get", "role", "tenantgw-keys", *n, check=False).stderr
        ),
        30,
        "Role tenantgw-keys to be pruned",
    )
    for secret in ("gateway", "gateway-key-alice", "sim"):
        assert not can_i(cluster, admin, "get", f"secret/{secret}", *n), secret
    k8s.apply(tenant_body(team.name, **team_spec(team.name, [{"name": "alice"}])))
    eventually(
        lambda: as_(cluster, admin, "get", "secret", "gateway-key-alice", *n)[0],
        30,
        "the admin to read gateway-key-alice again",
    )
