"""The cluster always matches the spec: removals reach the live objects, hand edits of any owned
object are reverted within seconds, refused applies and terminating namespaces show on the
Tenant, and a rejected ModelAlias degrades a Tenant without making it "not ready".

These tests run the real operator with the production resync (300 s), so anything that happens
within their deadlines happened because a watch or a requeue woke the reconcile.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from e2e.fixtures import Cluster, Services
from e2e.helpers import K8s, alias_body, eventually, secret_body, tenant_body
from e2e.operator_fixture import RunningOperator, audit_events, start_operator, stop_operator

pytestmark = pytest.mark.e2e

SIM_BASE = "http://127.0.0.1:9/v1"  # no traffic here
TENANTS = ("tenantgw.io/v1alpha1", "Tenant")
HOLD = "e2e.tenantgw.io/hold"


@pytest.fixture(scope="module")
def k8s(kube: ApiClient) -> K8s:
    return K8s(kube)


@pytest.fixture(scope="module")
def watching_operator(
    cluster: Cluster, services: Services, operator: RunningOperator
) -> Iterator[RunningOperator]:
    """The operator with the production resync, in place of the session's 5 s one.

    The session operator is stopped for this module and started again afterwards, in the same
    RunningOperator, so later tests keep using it.
    """
    env = {"TENANTGW_POSTGRES_DSN": services.postgres_dsn, "TENANTGW_REDIS_URL": services.redis_url}
    stop_operator(operator)
    slow = start_operator(cluster, resync_seconds=300, extra_env=env)
    try:
        yield slow
    finally:
        stop_operator(slow)
        again = start_operator(cluster, resync_seconds=5, extra_env=env)
        operator.process, operator.log_file = again.process, again.log_file


def provider(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "sim",
        "type": "openai-compatible",
        "apiBase": SIM_BASE,
        "region": "us-east-1",
        "credentialsSecretRef": {"name": "sim", "key": "apiKey"},
        **overrides,
    }


def spec(**overrides: Any) -> dict[str, Any]:
    return {
        "providers": [provider()],
        # Every model of the simulator; prices and tiers are the platform's (tenantgw.api.catalog).
        "catalog": [{"provider": "sim", "model": "*", "costTier": "medium"}],
        "keys": [{"name": "alice"}],
        "routing": {"defaultAlias": "fast-code"},
        "gateway": {"replicas": 1},
        **overrides,
    }


def fast_code(ns: str) -> dict[str, Any]:
    return alias_body(
        ns,
        "fast-code",
        targets=[{"provider": "sim", "model": "qwen3-coder"}],
    )


def provider_secret(ns: str, name: str) -> dict[str, Any]:
    """The provider Secret, labelled so that creating or changing it wakes its tenant."""
    body = secret_body(ns, "sim", {"apiKey": f"sim-provider-credential-{name}"})
    body["metadata"]["labels"] = {"app.kubernetes.io/part-of": "tenantgw"}
    return body


def create_tenant(k8s: K8s, name: str, **overrides: Any) -> str:
    ns = f"tenant-{name}"
    k8s.apply(tenant_body(name, **spec(**overrides)))
    eventually(lambda: k8s.namespace_exists(ns), 30, f"namespace {ns}")
    k8s.apply(provider_secret(ns, name))
    k8s.apply(fast_code(ns))
    return ns


def ready_for_generation(k8s: K8s, name: str) -> dict[str, Any] | None:
    """The Ready condition once status reports the Tenant's current generation as Ready."""
    body = k8s.tenant(name)
    status = body.get("status") or {}
    cond = k8s.condition(body, "Ready")
    current = status.get("observedGeneration") == body["metadata"]["generation"]
    return cond if current and cond and cond["status"] == "True" else None


@pytest.fixture
def tenant(k8s: K8s, watching_operator: RunningOperator) -> Iterator[tuple[str, str]]:
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    ns = create_tenant(k8s, name)
    # Ready and serving fast-code: the Tenant can be Ready before the ModelAlias (applied after
    # the namespace appears) has reached the gateway's config.
    eventually(
        lambda: (
            ready_for_generation(k8s, name)
            and "fast-code" in (k8s.tenant(name).get("status") or {}).get("models", [])
        ),
        60,
        f"Tenant {name} Ready, serving fast-code",
    )
    yield name, ns
    k8s.delete(*TENANTS, name)


def container(k8s: K8s, ns: str) -> Any:
    return k8s.apps.read_namespaced_deployment("gateway", ns).spec.template.spec.containers[0]


def test_removing_resource_limits_reaches_the_deployment(
    k8s: K8s, watching_operator: RunningOperator
) -> None:
    """The cluster matches the spec: a field dropped from the Tenant leaves the Deployment."""
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    resources = {"requests": {"cpu": "100m"}, "limits": {"memory": "512Mi"}}
    ns = create_tenant(k8s, name, gateway={"replicas": 1, "resources": resources})
    try:
        eventually(lambda: ready_for_generation(k8s, name), 60, "Ready with limits")
        assert container(k8s, ns).resources.limits == {"memory": "512Mi"}
        k8s.apply(
            tenant_body(
                name, **spec(gateway={"replicas": 1, "resources": {"requests": {"cpu": "100m"}}})
            )
        )
        eventually(
            lambda: not container(k8s, ns).resources.limits,
            30,
            "the removed limits to leave the Deployment",
        )
        assert container(k8s, ns).resources.requests == {"cpu": "100m"}
        eventually(lambda: ready_for_generation(k8s, name), 60, "Ready for the new generation")
    finally:
        k8s.delete(*TENANTS, name)


def test_a_hand_edit_of_any_owned_object_is_reverted_within_seconds(
    k8s: K8s, tenant: tuple[str, str]
) -> None:
    """Drift: editing the gateway's rules or its PodDisruptionBudget, or deleting its Service,
    does not last 10 s."""
    _, ns = tenant
    original = k8s.core.read_namespaced_config_map("gateway-config", ns).data
    rules = next(k for k, v in original.items() if '"pii_redaction"' in v)
    k8s.core.patch_namespaced_config_map(
        "gateway-config", ns, {"data": {rules: '{"pii_redaction": {"mode": "off"}}'}}
    )
    assert k8s.core.read_namespaced_config_map("gateway-config", ns).data != original
    eventually(
        lambda: k8s.core.read_namespaced_config_map("gateway-config", ns).data == original,
        10,
        "the ConfigMap edit to be reverted",
    )

    budget = k8s.dyn.resources.get(api_version="policy/v1", kind="PodDisruptionBudget")
    assert budget.get(name="gateway", namespace=ns).spec.maxUnavailable == 1
    budget.patch(
        name="gateway",
        namespace=ns,
        body={"spec": {"maxUnavailable": 0}},
        content_type="application/merge-patch+json",
    )
    eventually(
        lambda: budget.get(name="gateway", namespace=ns).spec.maxUnavailable == 1,
        10,
        "the PodDisruptionBudget edit to be reverted",
    )

    policy = k8s.dyn.resources.get(api_version="networking.k8s.io/v1", kind="NetworkPolicy")
    policy.delete(name="gateway", namespace=ns)
    k8s.core.delete_namespaced_service("gateway", ns)
    eventually(
        lambda: (
            k8s.core.read_namespaced_service("gateway", ns)
            and policy.get(name="gateway", namespace=ns)
        ),
        10,
        "the deleted Service and NetworkPolicy to come back",
    )


def test_a_refused_apply_shows_on_the_tenant_and_heals_when_fixed(
    k8s: K8s, tenant: tuple[str, str]
) -> None:
    """A 422 from the API server is Ready=False with the server's message, not a silent Ready."""
    name, ns = tenant
    bad = {"replicas": 1, "resources": {"requests": {"gpu": "1"}}}
    k8s.apply(tenant_body(name, **spec(gateway=bad)))
    cond = k8s.wait_condition(lambda: k8s.tenant(name), "Ready", "False", timeout=30)
    assert cond["reason"] == "ApplyFailed"
    assert "Deployment/gateway" in cond["message"]
    assert "gpu" in cond["message"]
    assert "Invalid value" in cond["message"] or "invalid" in cond["message"].lower()
    assert "gpu" not in str(container(k8s, ns).resources.requests or {})
    k8s.apply(tenant_body(name, **spec()))
    eventually(lambda: ready_for_generation(k8s, name), 60, "Ready once the spec is fixed")


def test_a_tenant_recreated_while_its_namespace_terminates_becomes_ready(
    k8s: K8s, watching_operator: RunningOperator
) -> None:
    """Argo CD prune-and-recreate: delete --wait, apply at once; Ready within 60 s of the
    namespace going away, saying NamespaceTerminating meanwhile."""
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    ns = create_tenant(k8s, name)
    try:
        _recreate_while_terminating(k8s, name, ns)
    finally:
        k8s.delete(*TENANTS, name)  # also when an assertion failed: no tenant left behind


def _recreate_while_terminating(k8s: K8s, name: str, ns: str) -> None:
    eventually(lambda: ready_for_generation(k8s, name), 60, "the first Tenant Ready")
    old_uid = k8s.core.read_namespace(ns).metadata.uid
    # Something in the namespace holds its termination until the test lets go.
    k8s.core.create_namespaced_config_map(
        ns, {"metadata": {"name": "held", "finalizers": [HOLD]}, "data": {}}
    )
    try:
        k8s.delete(*TENANTS, name)
        eventually(lambda: not _exists(k8s, name), 60, "the first Tenant to be gone (--wait)")
        k8s.apply(tenant_body(name, **spec()))
        assert k8s.core.read_namespace(ns).status.phase == "Terminating"
        cond = k8s.wait_condition(lambda: k8s.tenant(name), "Ready", "False", timeout=30)
        assert cond["reason"] == "NamespaceTerminating", cond
        assert ns in cond["message"]
    finally:
        k8s.core.patch_namespaced_config_map("held", ns, {"metadata": {"finalizers": None}})

    def old_namespace_gone() -> bool:
        try:
            return bool(k8s.core.read_namespace(ns).metadata.uid != old_uid)
        except ApiException as exc:
            return bool(exc.status == 404)

    # The operator may create the new namespace before a poll sees the old one missing.
    eventually(old_namespace_gone, 120, f"the old namespace {ns} to go away")
    deadline = time.monotonic() + 60

    def left() -> float:
        return max(0.5, deadline - time.monotonic())

    eventually(lambda: k8s.namespace_exists(ns), left(), f"namespace {ns} to be created again")
    # What Argo CD applies with the Tenant, retried by it until the namespace exists.
    k8s.apply(provider_secret(ns, name))
    k8s.apply(fast_code(ns))
    eventually(lambda: ready_for_generation(k8s, name), left(), "the re-created Tenant Ready")


def _exists(k8s: K8s, name: str) -> bool:
    try:
        k8s.tenant(name)
    except Exception:
        return False
    return True


def test_ready_stays_true_through_a_rejected_alias(
    k8s: K8s, cluster: Cluster, tenant: tuple[str, str]
) -> None:
    """The rest keeps serving: a broken ModelAlias is ConfigValid=False and Ready=True Degraded."""
    name, ns = tenant
    before = k8s.condition(k8s.tenant(name), "Ready")
    assert before is not None
    k8s.apply(alias_body(ns, "broken", targets=[{"provider": "azure", "model": "gpt-4"}]))
    cond = k8s.wait_condition(lambda: k8s.tenant(name), "ConfigValid", "False", timeout=30)
    assert cond["reason"] == "ModelAliasRejected"
    assert "ModelAlias broken" in cond["message"]
    ready = k8s.condition(k8s.tenant(name), "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("True", "Degraded")
    assert "ModelAlias broken" in ready["message"]
    assert ready["lastTransitionTime"] == before["lastTransitionTime"], "Ready flipped meanwhile"
    table = cluster.run_kubectl("get", "tenant", name).stdout.splitlines()
    row = dict(zip(table[0].split(), table[1].split(), strict=False))
    assert (row["READY"], row["REASON"]) == ("True", "Degraded"), table


def test_an_idle_tenant_costs_zero_api_writes_while_watched(
    k8s: K8s, tenant: tuple[str, str], watching_operator: RunningOperator
) -> None:
    """Watching every owned kind must not turn the echo of our own writes into more writes.

    Reconciles read from the watch caches, so a reconcile that writes nothing leaves no trace
    in the audit log. The proof that one ran after the harmless edits is a hand edit made
    after them: the reconcile that reverts it sees the edited ConfigMap and Service too, and
    its revert must be the only write.
    """
    _, ns = tenant

    def quiet() -> bool:
        return not audit_events(watching_operator.username, time.time() - 3)

    eventually(quiet, 60, "the operator to stop writing")
    since = time.time()
    # Wake the tenant through watches without changing anything it renders.
    k8s.core.patch_namespaced_config_map(
        "gateway-config", ns, {"metadata": {"labels": {"e2e.tenantgw.io/touched": "yes"}}}
    )
    k8s.core.patch_namespaced_service(
        "gateway", ns, {"metadata": {"annotations": {"e2e.tenantgw.io/touched": "yes"}}}
    )
    time.sleep(2)  # the reconciles the edits woke have run
    policy = k8s.dyn.resources.get(api_version="networking.k8s.io/v1", kind="NetworkPolicy")
    policy.delete(name="gateway", namespace=ns)
    eventually(lambda: policy.get(name="gateway", namespace=ns), 10, "the NetworkPolicy back")
    time.sleep(3)  # let any further write land in the audit log
    writes = audit_events(watching_operator.username, since)
    made = [(e.get("verb"), e.get("requestURI")) for e in writes]
    resources = [e["objectRef"]["resource"] for e in writes]  # type: ignore[index]
    # The revert, and the Applied Event that reports it.
    assert sorted(resources) == ["events", "networkpolicies"], made


def test_a_labelled_provider_secret_wakes_its_tenant(
    k8s: K8s, watching_operator: RunningOperator
) -> None:
    """Provider credentials: the operator watches no Secret it does not manage except those
    labelled part-of tenantgw, and creating one wakes its tenant at once (resync is 300 s)."""
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    ns = f"tenant-{name}"
    late = provider(credentialsSecretRef={"name": "late", "key": "apiKey"})
    k8s.apply(tenant_body(name, **spec(providers=[late])))
    try:
        cond = k8s.wait_condition(lambda: k8s.tenant(name), "ConfigValid", "False", timeout=30)
        assert cond["reason"] == "ProviderCredentialsMissing"
        k8s.apply(fast_code(ns))

        def quiet() -> bool:
            return not audit_events(watching_operator.username, time.time() - 3)

        eventually(quiet, 60, "the operator to stop writing")
        secret = secret_body(ns, "late", {"apiKey": "arrived-later"})
        secret["metadata"]["labels"] = {"app.kubernetes.io/part-of": "tenantgw"}
        k8s.apply(secret)
        k8s.wait_condition(lambda: k8s.tenant(name), "ConfigValid", "True", timeout=10)
    finally:
        k8s.delete(*TENANTS, name)


# What bringing up one new tenant may cost in API writes, by request. Each object is written
# once (server-side apply creates it); the Tenant's status twice (gateway progressing, then
# Ready); the ModelAlias's Accepted condition and observedGeneration in one patch; kopf's
# finalizer once (kopf keeps no last-handled configuration); no Event: creating the objects is
# routine and posts no Applied Event, and MonitoringCRDsMissing (no Prometheus Operator here)
# says the same of every tenant, on its condition only.
NEW_TENANT_WRITES = {
    "patch tenants": 1,
    "patch tenants/status": 2,
    "patch modelaliases/status": 1,
    "patch namespaces": 1,
    "patch serviceaccounts": 1,
    "patch secrets": 2,
    "patch configmaps": 1,
    "patch services": 1,
    "patch deployments": 1,
    "patch networkpolicies": 1,
    "patch poddisruptionbudgets": 1,
    "patch roles": 1,
}
NEW_TENANT_TOTAL = 14
"""sum(NEW_TENANT_WRITES.values()): 16 before routine creation stopped posting Applied, 15
before MonitoringCRDsMissing stopped posting a Warning (this spec grants no access, so no
RoleBindings)."""


def test_a_new_tenant_costs_one_write_per_object_and_two_status_writes(
    k8s: K8s, watching_operator: RunningOperator
) -> None:
    """Writes per new tenant, counted in the API server's audit log: nothing written twice,
    nothing refused, and no more requests than NEW_TENANT_WRITES allows."""
    name = f"e2e-w-{uuid.uuid4().hex[:6]}"
    ns = f"tenant-{name}"
    # Everything the Tenant needs exists before it, as Argo CD applies a tenant's folder.
    k8s.core.create_namespace({"metadata": {"name": ns, "labels": {"tenantgw.io/tenant": name}}})
    k8s.apply(provider_secret(ns, name))
    k8s.apply(fast_code(ns))
    since = time.time()
    k8s.apply(tenant_body(name, **spec()))
    try:
        eventually(lambda: ready_for_generation(k8s, name), 60, f"Tenant {name} Ready")

        def quiet() -> bool:
            return not audit_events(watching_operator.username, time.time() - 3)

        eventually(quiet, 60, "the operator to stop writing")
        mine = [
            e
            for e in audit_events(watching_operator.username, since)
            if isinstance(ref := e.get("objectRef"), dict)
            and (
                ns in (ref.get("namespace"), ref.get("name"))
                or str(ref.get("name", "")).startswith(name)
            )
        ]
        shapes: dict[str, int] = {}
        written: dict[str, int] = {}
        for e in mine:
            ref = e["objectRef"]
            assert isinstance(ref, dict)
            res = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            shapes[f"{e['verb']} {res}"] = shapes.get(f"{e['verb']} {res}", 0) + 1
            written[f"{res} {ref.get('name')}"] = written.get(f"{res} {ref.get('name')}", 0) + 1
        refused = [(e["verb"], e["requestURI"]) for e in mine if e["responseStatus"]["code"] >= 400]  # type: ignore[index]
        assert refused == [], refused
        over = {k: (n, NEW_TENANT_WRITES.get(k, 0)) for k, n in shapes.items()
                if n > NEW_TENANT_WRITES.get(k, 0)}  # fmt: skip
        assert over == {}, f"writes beyond the budget (made, allowed): {over}; all: {shapes}"
        twice = {k: n for k, n in written.items() if n > 1 and not k.startswith("tenants/status")}
        assert twice == {}, f"objects written more than once: {twice}"
        assert sum(NEW_TENANT_WRITES.values()) == NEW_TENANT_TOTAL
        assert sum(shapes.values()) <= NEW_TENANT_TOTAL, shapes
        # Exactly: each rendered object once, the finalizer, the alias's status and the Tenant's
        # two.
        assert shapes == NEW_TENANT_WRITES
        reasons = [
            e.reason
            for e in k8s.core.list_namespaced_event("default").items
            if e.involved_object.kind == "Tenant" and e.involved_object.name == name
        ]
        assert reasons == [], reasons
    finally:
        k8s.delete(*TENANTS, name)
