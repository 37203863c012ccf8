"""The operator turns Tenants and ModelAliases into isolated gateways, end to end.

Each test runs the real operator (kopf, as its own ServiceAccount) against the local control
plane and names the user story it proves.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, cast

import pytest
import yaml
from kubernetes.client import ApiClient

from e2e.fixtures import Services
from e2e.helpers import K8s, alias_body, eventually, secret_body, tenant_body
from e2e.operator_fixture import RunningOperator, audit_events
from tenantgw.api.markers import key_prefix

pytestmark = pytest.mark.e2e

SIM_BASE = (
    "http://127.0.0.1:9/v1"  # no traffic in these tests; the gateway process tests use a simulator
)


@pytest.fixture(scope="module")
def k8s(kube: ApiClient) -> K8s:
    return K8s(kube)


def make_tenant(k8s: K8s, name: str, **overrides: Any) -> str:
    """Apply a one-provider tenant and its credential Secret; returns its namespace."""
    ns = f"tenant-{name}"
    spec: dict[str, Any] = {
        "displayName": f"Team {name}",
        "providers": [
            {
                "name": "sim",
                "type": "openai-compatible",
                "apiBase": SIM_BASE,
                "region": "us-east-1",
                "credentialsSecretRef": {"name": "sim", "key": "apiKey"},
            }
        ],
        # Every model of the simulator; prices and tiers are the platform's (tenantgw.api.catalog).
        "catalog": [{"provider": "sim", "model": "*", "costTier": "medium"}],
        "keys": [{"name": "alice"}],
        "routing": {"defaultAlias": "fast-code"},
        "gateway": {"replicas": 1},
    }
    spec.update(overrides)
    k8s.apply(tenant_body(name, **spec))
    eventually(lambda: k8s.namespace_exists(ns), 30, f"namespace {ns}")
    k8s.apply(secret_body(ns, "sim", {"apiKey": "sim-provider-credential-" + name}))
    return ns


def fast_code(ns: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "aliases": ["claude-sonnet-4-5"],
        "targets": [{"provider": "sim", "model": "qwen3-coder", "weight": 1}],
    }
    spec.update(overrides)
    return alias_body(ns, "fast-code", **spec)


@pytest.fixture
def tenant(k8s: K8s, operator: RunningOperator) -> Iterator[tuple[str, str]]:
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    ns = make_tenant(k8s, name)
    k8s.apply(fast_code(ns))
    yield name, ns
    k8s.delete("tenantgw.io/v1alpha1", "Tenant", name)


def config_of(k8s: K8s, ns: str) -> dict[str, Any]:
    cm = k8s.core.read_namespaced_config_map("gateway-config", ns)
    config: dict[str, Any] = yaml.safe_load(cm.data["config.yaml"])
    return config


def model_names(k8s: K8s, ns: str) -> set[str]:
    return {m["model_name"] for m in config_of(k8s, ns)["model_list"]}


def pod_hash(k8s: K8s, ns: str) -> str:
    dep = k8s.apps.read_namespaced_deployment("gateway", ns)
    return str(dep.spec.template.metadata.annotations["tenantgw.io/config-hash"])


def test_platform_team_applies_a_tenant_and_gets_a_ready_gateway(
    k8s: K8s, tenant: tuple[str, str]
) -> None:
    """US-002: a Tenant and a ModelAlias become a running, isolated gateway within 30 s."""
    name, ns = tenant
    k8s.wait_condition(lambda: k8s.tenant(name), "Ready", "True", timeout=30)
    status = k8s.tenant(name)["status"]
    assert status["url"] == f"http://gateway.{ns}.svc:4000"
    assert "fast-code" in status["models"]
    assert "claude-sonnet-4-5" in status["models"]
    assert [(k["name"], k["secretName"]) for k in status["keys"]] == [
        ("alice", "gateway-key-alice")
    ]
    assert "issuedAt" in status["keys"][0]
    assert status["observedGeneration"] == k8s.tenant(name)["metadata"]["generation"]
    dep = k8s.apps.read_namespaced_deployment("gateway", ns)
    assert dep.status.available_replicas == 1
    pod = dep.spec.template.spec
    assert pod.security_context.run_as_non_root is True
    assert pod.containers[0].security_context.read_only_root_filesystem is True
    ns_labels = k8s.core.read_namespace(ns).metadata.labels
    assert ns_labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for kind, obj in [
        ("Service", k8s.core.read_namespaced_service("gateway", ns)),
        ("ConfigMap", k8s.core.read_namespaced_config_map("gateway-config", ns)),
        ("Secret", k8s.core.read_namespaced_secret("gateway-key-alice", ns)),
    ]:
        assert obj.metadata.labels["tenantgw.io/tenant"] == name, kind
        assert obj.metadata.owner_references[0].kind == "Tenant", kind
    alias = k8s.alias(ns, "fast-code")
    assert k8s.condition(alias, "Accepted")["status"] == "True"  # type: ignore[index]


def test_editing_an_alias_reaches_the_config_without_rolling_the_gateway(
    k8s: K8s, tenant: tuple[str, str]
) -> None:
    """US-001: routing changes are declarative. An edited, added or deleted alias changes
    gateway-config, which serving gateways reload (e2e/test_gateway_model_reload.py); the pod
    template stays, so no pod restarts and no stream is cut for it."""
    name, ns = tenant
    k8s.wait_condition(lambda: k8s.tenant(name), "Ready", "True", timeout=30)
    before_hash = pod_hash(k8s, ns)
    generation = k8s.apps.read_namespaced_deployment("gateway", ns).metadata.generation
    k8s.apply(
        fast_code(ns, targets=[{"provider": "sim", "model": "qwen3-coder-plus", "weight": 3}])
    )

    def edited() -> bool:
        models = [m["litellm_params"]["model"] for m in config_of(k8s, ns)["model_list"]]
        return any(m.endswith("qwen3-coder-plus") for m in models)

    eventually(edited, 30, "the new target in config.yaml")
    k8s.apply(alias_body(ns, "reasoning", targets=[{"provider": "sim", "model": "o3"}]))
    eventually(lambda: "reasoning" in model_names(k8s, ns), 30, "alias reasoning in the config")
    k8s.delete("tenantgw.io/v1alpha1", "ModelAlias", "reasoning", ns)
    eventually(lambda: "reasoning" not in model_names(k8s, ns), 30, "alias reasoning to leave")
    assert "fast-code" in model_names(k8s, ns)
    k8s.wait_condition(lambda: k8s.tenant(name), "Ready", "True", timeout=30)
    assert pod_hash(k8s, ns) == before_hash
    assert k8s.apps.read_namespaced_deployment("gateway", ns).metadata.generation == generation


def test_an_unchanged_tenant_costs_zero_api_writes(
    k8s: K8s, tenant: tuple[str, str], operator: RunningOperator, services: Services
) -> None:
    """Operators at scale: an idle resync reads its watch caches, and never writes.

    A resync leaves no trace in the API server's audit log, so the proof that one ran is what
    only a resync repairs: the tenant's Redis user, deleted behind the operator's back.
    """
    import redis

    from tenantgw.tenancy import redis_username

    name, _ = tenant
    k8s.wait_condition(lambda: k8s.tenant(name), "Ready", "True", timeout=30)

    # Let in-flight reconciles of this and earlier tests settle: no write by the operator for 3 s.
    def quiet() -> bool:
        return not audit_events(operator.username, time.time() - 3)

    eventually(quiet, 60, "the operator to stop writing")
    since = time.time()
    admin = redis.Redis.from_url(services.redis_url, decode_responses=True)
    try:
        assert admin.acl_deluser(redis_username(name)) == 1
        eventually(
            lambda: redis_username(name) in cast(list[str], admin.acl_users()),
            30,
            "a resync to recreate the tenant's Redis user",
        )
    finally:
        admin.close()
    time.sleep(3)
    writes = audit_events(operator.username, since)
    assert writes == [], [(e.get("verb"), e.get("requestURI")) for e in writes]


def test_invalid_aliases_are_rejected_and_the_rest_keeps_serving(
    k8s: K8s, tenant: tuple[str, str], operator: RunningOperator
) -> None:
    """Bad input: each broken alias says which field to fix; the good alias keeps serving."""
    name, ns = tenant
    # Serving first: until the operator has seen the provider Secret, ConfigValid is False for
    # another reason (ProviderCredentialsMissing).
    k8s.wait_condition(lambda: k8s.tenant(name), "Ready", "True", timeout=30)
    broken = {
        "unknown-provider": (
            {"targets": [{"provider": "azure", "model": "gpt-4"}]},
            "UnknownProvider",
            'spec.targets[0].provider: no provider "azure"',
        ),
        "missing-fallback": (
            {"targets": [{"provider": "sim", "model": "m"}], "fallbacks": ["nowhere"]},
            "UnknownFallback",
            'spec.fallbacks[0]: no ModelAlias "nowhere"',
        ),
        "cycle-a": (
            {"targets": [{"provider": "sim", "model": "m"}], "fallbacks": ["cycle-b"]},
            "FallbackCycle",
            "spec.fallbacks: fallback cycle",
        ),
        "cycle-b": (
            {"targets": [{"provider": "sim", "model": "m"}], "fallbacks": ["cycle-a"]},
            "FallbackCycle",
            "spec.fallbacks: fallback cycle",
        ),
    }
    for alias_name, (spec, _, _) in broken.items():
        k8s.apply(alias_body(ns, alias_name, **spec))
    for alias_name, (_, reason, message) in broken.items():
        cond = k8s.wait_condition(lambda n=alias_name: k8s.alias(ns, n), "Accepted", "False")  # type: ignore[misc]
        assert cond["reason"] == reason
        assert message in cond["message"]
    names = model_names(k8s, ns)
    assert "fast-code" in names
    assert not names & set(broken)
    cond = k8s.wait_condition(lambda: k8s.tenant(name), "ConfigValid", "False")
    assert cond["reason"] == "ModelAliasRejected"
    assert operator.process.poll() is None


def test_data_residency_rejects_an_alias_on_a_provider_outside_the_allowed_regions(
    k8s: K8s, operator: RunningOperator
) -> None:
    """US-004: a compliance officer's region list keeps traffic in the allowed regions."""
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    eu = {
        "name": "eu",
        "type": "openai-compatible",
        "apiBase": SIM_BASE,
        "region": "eu-west-1",
        "credentialsSecretRef": {"name": "sim", "key": "apiKey"},
    }
    us = {**eu, "name": "sim", "region": "us-east-1"}
    ns = make_tenant(
        k8s,
        name,
        providers=[us, eu],
        compliance={"dataResidency": {"allowedRegions": ["us-east-1"]}},
    )
    try:
        k8s.apply(fast_code(ns))
        k8s.apply(alias_body(ns, "euro", targets=[{"provider": "eu", "model": "m"}]))
        cond = k8s.wait_condition(lambda: k8s.alias(ns, "euro"), "Accepted", "False")
        assert cond["reason"] == "ResidencyViolation"
        assert 'spec.targets[0].provider: provider "eu" has region "eu-west-1"' in cond["message"]
        # A fallback of a fallback counts too: LiteLLM follows nested fallbacks.
        us_target = [{"provider": "sim", "model": "m"}]
        k8s.apply(alias_body(ns, "relay", targets=us_target, fallbacks=["euro"]))
        k8s.apply(alias_body(ns, "front", targets=us_target, fallbacks=["relay"]))
        cond = k8s.wait_condition(lambda: k8s.alias(ns, "front"), "Accepted", "False")
        assert cond["reason"] == "ResidencyViolation"
        assert "spec.fallbacks[0]: falls back through front -> relay -> euro" in cond["message"]
        k8s.wait_condition(lambda: k8s.alias(ns, "fast-code"), "Accepted", "True")
        served = model_names(k8s, ns)
        assert not {"euro", "relay", "front"} & set(served)
    finally:
        k8s.delete("tenantgw.io/v1alpha1", "Tenant", name)


def test_a_missing_provider_secret_is_a_condition_that_names_it(
    k8s: K8s, operator: RunningOperator
) -> None:
    """Bad input: a credential Secret that does not exist is reported, not crashed on."""
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    ns = f"tenant-{name}"
    k8s.apply(
        tenant_body(
            name,
            providers=[
                {
                    "name": "sim",
                    "type": "openai",
                    "credentialsSecretRef": {"name": "does-not-exist", "key": "apiKey"},
                }
            ],
        )
    )
    try:
        cond = k8s.wait_condition(lambda: k8s.tenant(name), "ConfigValid", "False")
        assert cond["reason"] == "ProviderCredentialsMissing"
        assert (
            'spec.providers[0].credentialsSecretRef: Secret "does-not-exist" not found in '
            f"namespace {ns}"
        ) in cond["message"]
        # Ready says the same as ConfigValid; `kubectl get events` says it once.

        def warnings() -> list[str]:
            return [
                e.message
                for e in k8s.core.list_namespaced_event("default").items
                if e.involved_object.name == name and e.reason == "ProviderCredentialsMissing"
            ]

        eventually(warnings, 10, "the Warning Event")
        time.sleep(1)  # posted right after the status: a second one would be there by now
        assert warnings() == [cond["message"]], warnings()
        k8s.apply(secret_body(ns, "does-not-exist", {"apiKey": "now-it-does"}))
        k8s.wait_condition(lambda: k8s.tenant(name), "ConfigValid", "True")
    finally:
        k8s.delete("tenantgw.io/v1alpha1", "Tenant", name)


def test_a_namespace_of_another_tenant_is_never_taken(
    k8s: K8s, tenant: tuple[str, str], operator: RunningOperator
) -> None:
    """Isolation: a second Tenant naming the first one's namespace gets NamespaceConflict."""
    owner, ns = tenant
    k8s.wait_condition(lambda: k8s.tenant(owner), "Ready", "True", timeout=30)
    thief = f"e2e-{uuid.uuid4().hex[:6]}"
    k8s.apply(tenant_body(thief, namespace=ns, providers=[]))
    try:
        cond = k8s.wait_condition(lambda: k8s.tenant(thief), "Ready", "False")
        assert cond["reason"] == "NamespaceConflict"
        assert f'spec.namespace: namespace "{ns}" belongs to Tenant "{owner}"' in cond["message"]
        labels = k8s.core.read_namespace(ns).metadata.labels
        assert labels["tenantgw.io/tenant"] == owner
    finally:
        k8s.delete("tenantgw.io/v1alpha1", "Tenant", thief)
    eventually(lambda: not _exists(k8s, thief), 30, f"Tenant {thief} to be deleted")
    assert k8s.namespace_exists(ns), "deleting the conflicting Tenant removed the owner's namespace"


def _exists(k8s: K8s, name: str) -> bool:
    try:
        k8s.tenant(name)
    except Exception:
        return False
    return True


def test_deleting_a_tenant_removes_everything_it_created(
    k8s: K8s, operator: RunningOperator
) -> None:
    """Lifecycle: a deleted Tenant leaves no namespace, gateway or Secret behind."""
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    ns = make_tenant(k8s, name)
    k8s.apply(fast_code(ns))
    k8s.wait_condition(lambda: k8s.tenant(name), "Ready", "True", timeout=30)
    k8s.delete("tenantgw.io/v1alpha1", "Tenant", name)
    eventually(lambda: not k8s.namespace_exists(ns), 60, f"namespace {ns} to be removed")
    eventually(lambda: not _exists(k8s, name), 30, f"Tenant {name} to be gone (finalizer released)")


def test_no_secret_value_appears_in_configmaps_status_events_or_logs(
    k8s: K8s, tenant: tuple[str, str], operator: RunningOperator
) -> None:
    """Security: secrets live only in Secrets."""
    name, ns = tenant
    k8s.wait_condition(lambda: k8s.tenant(name), "Ready", "True", timeout=30)
    secrets = [
        k8s.secret_value(ns, "gateway", "masterKey"),
        k8s.secret_value(ns, "gateway-key-alice", "apiKey"),
        k8s.secret_value(ns, "sim", "apiKey"),
    ]
    assert all(len(s) >= 16 for s in secrets)
    haystacks = {
        "configmaps": json.dumps(
            [cm.data for cm in k8s.core.list_config_map_for_all_namespaces().items]
        ),
        "tenant status": json.dumps(k8s.tenant(name).get("status")),
        "alias status": json.dumps(k8s.alias(ns, "fast-code").get("status")),
        "events": json.dumps(
            [(e.message, e.reason) for e in k8s.core.list_event_for_all_namespaces().items]
        ),
        "operator log": operator.log(),
        "pod template": json.dumps(
            k8s.api.sanitize_for_serialization(k8s.apps.read_namespaced_deployment("gateway", ns))
        ),
    }
    for where, text in haystacks.items():
        for secret in secrets:
            assert secret not in text, f"a secret value leaked into {where}"


def test_each_tenant_gets_its_own_storage_removed_with_it(
    k8s: K8s, operator: RunningOperator
) -> None:
    """Isolation: the operator provisions a PostgreSQL role and a Redis user per tenant."""
    import psycopg
    import redis

    name = f"e2e-{uuid.uuid4().hex[:6]}"
    ns = make_tenant(k8s, name)
    k8s.apply(fast_code(ns))
    cond = k8s.wait_condition(lambda: k8s.tenant(name), "StorageReady", "True", timeout=30)
    assert name in cond["message"]
    dsn = k8s.secret_value(ns, "gateway", "postgresDsn")
    url = k8s.secret_value(ns, "gateway", "redisUrl")
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute("select current_user, current_schema()").fetchone()
    assert row == (f"tgw_{name.replace('-', '_')}", f"t_{name.replace('-', '_')}")
    r = redis.Redis.from_url(url, socket_timeout=5)
    r.set(f"{key_prefix(name)}probe", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        r.set(f"{key_prefix('someone-else')}probe", "1")
    r.close()
    k8s.wait_condition(lambda: k8s.tenant(name), "Ready", "True", timeout=30)

    k8s.delete("tenantgw.io/v1alpha1", "Tenant", name)
    eventually(lambda: not _exists(k8s, name), 60, f"Tenant {name} to be gone")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=5)


def test_a_key_due_for_rotation_gets_a_new_value_and_the_old_one_a_grace_period(
    k8s: K8s, operator: RunningOperator
) -> None:
    """US-004 key rotation: after rotateAfterDays a new key is issued; the old one keeps working
    for the grace period recorded in status, then is retired."""
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    ns = make_tenant(k8s, name, keys=[{"name": "alice", "rotateAfterDays": 30}])
    k8s.apply(fast_code(ns))
    k8s.wait_condition(lambda: k8s.tenant(name), "Ready", "True", timeout=30)
    try:
        old = k8s.secret_value(ns, "gateway-key-alice", "apiKey")
        backdated = {"tenantgw.io/issued-at": "2020-01-01T00:00:00Z"}

        def rotated() -> bool:
            if k8s.secret_value(ns, "gateway-key-alice", "apiKey") != old:
                return True
            # The key was issued long ago, as far as the operator can tell. A reconcile that was
            # already under way may write the annotation back once, so say it until it sticks.
            secret = k8s.core.read_namespaced_secret("gateway-key-alice", ns)
            if (secret.metadata.annotations or {}).get("tenantgw.io/issued-at") != backdated[
                "tenantgw.io/issued-at"
            ]:
                k8s.core.patch_namespaced_secret(
                    "gateway-key-alice", ns, {"metadata": {"annotations": backdated}}
                )
            return False

        eventually(rotated, 60, "a new value in Secret gateway-key-alice")
        new = k8s.secret_value(ns, "gateway-key-alice", "apiKey")
        keys = json.loads(k8s.secret_value(ns, "gateway", "keys.json"))
        hashes = {e["sha256"]: e for e in keys if e["name"] == "alice"}
        import hashlib

        old_hash = hashlib.sha256(old.encode()).hexdigest()
        assert hashlib.sha256(new.encode()).hexdigest() in hashes
        assert old_hash in hashes
        assert "expires_at" in hashes[old_hash]

        def status_has_grace() -> dict[str, Any] | None:
            for key in k8s.tenant(name)["status"]["keys"]:
                if key["name"] == "alice" and "previousKeyValidUntil" in key:
                    return dict(key)
            return None

        key_status = eventually(status_has_grace, 30, "previousKeyValidUntil in status.keys")
        assert key_status["previousKeyValidUntil"] == hashes[old_hash]["expires_at"]
        events = k8s.core.list_namespaced_event("default").items
        assert any(e.reason == "KeyRotated" and e.involved_object.name == name for e in events)
        assert old not in json.dumps([e.message for e in events])
    finally:
        k8s.delete("tenantgw.io/v1alpha1", "Tenant", name)
