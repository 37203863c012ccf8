"""What a tenant's rendered objects promise: no leaked secrets, stable hashes, safe pods."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest
import yaml

from tenantgw.render import (
    CONFIG_NAME,
    GATEWAY_NAME,
    RenderInputs,
    config_hash,
    key_hash,
    labels,
    owner_reference,
    render_tenant,
    service_url,
)
from tenantgw.render.config import restart_material
from tenantgw.render.litellm_config import render_litellm_config

pytestmark = pytest.mark.unit


def by_kind(objects: list[dict[str, Any]], kind: str, name: str = GATEWAY_NAME) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, got {len(matches)}"
    return matches[0]


def secret_values(inputs: RenderInputs) -> list[str]:
    values = [inputs.master_key, *inputs.keys.values()]
    if inputs.storage is not None:
        values += [v for v in (inputs.storage.postgres_dsn, inputs.storage.redis_url) if v]
    return values


def config_hash_of(inputs: RenderInputs) -> str:
    deployment = by_kind(render_tenant(inputs), "Deployment")
    return str(deployment["spec"]["template"]["metadata"]["annotations"]["tenantgw.io/config-hash"])


def with_alias_spec(inputs: RenderInputs, name: str, **changes: Any) -> RenderInputs:
    aliases = []
    for alias in inputs.aliases:
        if alias.metadata.name == name:
            spec = alias.spec.model_copy(update=changes)
            alias = alias.model_copy(update={"spec": spec})
        aliases.append(alias)
    return dataclasses.replace(inputs, aliases=aliases)


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("case", ["engineering_team", "minimal_tenant"])
def test_no_secret_value_outside_secrets(case: str, request: pytest.FixtureRequest) -> None:
    inputs: RenderInputs = request.getfixturevalue(case)
    secrets = secret_values(inputs) + [key_hash(plain) for plain in inputs.keys.values()]
    for obj in render_tenant(inputs):
        if obj["kind"] == "Secret":
            continue
        text = json.dumps(obj)
        leaked = [value for value in secrets if value in text]
        assert not leaked, f"{obj['kind']}/{obj['metadata']['name']} contains a secret value"


def test_provider_credentials_are_environment_references(engineering_team: RenderInputs) -> None:
    configmap = by_kind(render_tenant(engineering_team), "ConfigMap", CONFIG_NAME)
    config = yaml.safe_load(configmap["data"]["config.yaml"])
    credentials = [
        params[field]
        for params in (entry["litellm_params"] for entry in config["model_list"])
        for field in ("api_key", "vertex_credentials")
        if field in params
    ]
    assert credentials, "the engineering tenant has providers with credentials"
    assert all(value.startswith("os.environ/TENANTGW_PROVIDER_") for value in credentials)
    assert config["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"


def test_secrets_use_data_not_string_data(engineering_team: RenderInputs) -> None:
    secrets = [o for o in render_tenant(engineering_team) if o["kind"] == "Secret"]
    assert [s["metadata"]["name"] for s in secrets] == [
        "gateway",
        "gateway-key-alice",
        "gateway-key-ci",
    ]
    for secret in secrets:
        assert "stringData" not in secret
        assert secret["type"] == "Opaque"

    gateway = {k: base64.b64decode(v).decode() for k, v in secrets[0]["data"].items()}
    assert gateway["masterKey"] == engineering_team.master_key
    assert json.loads(gateway["keys.json"]) == [
        {"name": "alice", "sha256": key_hash(engineering_team.keys["alice"])},
        {
            "name": "ci",
            "sha256": key_hash(engineering_team.keys["ci"]),
            "expires_at": "2026-01-01T00:00:00Z",
        },
    ]
    assert engineering_team.storage is not None
    assert gateway["postgresDsn"] == engineering_team.storage.postgres_dsn
    assert gateway["redisUrl"] == engineering_team.storage.redis_url

    alice = {k: base64.b64decode(v).decode() for k, v in secrets[1]["data"].items()}
    assert alice == {
        "apiKey": engineering_team.keys["alice"],
        "baseUrl": "http://gateway.tenant-engineering-team.svc:4000",
    }


def test_without_storage_no_storage_secret_env_or_egress(minimal_tenant: RenderInputs) -> None:
    objects = render_tenant(minimal_tenant)
    assert set(by_kind(objects, "Secret")["data"]) == {"masterKey", "keys.json"}
    env = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert not {"TENANTGW_POSTGRES_DSN", "TENANTGW_REDIS_URL"} & {e["name"] for e in env}


def test_missing_key_value_is_an_error(minimal_tenant: RenderInputs) -> None:
    with pytest.raises(ValueError, match=r"spec\.keys 'dev'"):
        render_tenant(dataclasses.replace(minimal_tenant, keys={}))


# --------------------------------------------------------------------------- config hash


def configmap_file(inputs: RenderInputs, name: str) -> str:
    return str(by_kind(render_tenant(inputs), "ConfigMap", CONFIG_NAME)["data"][name])


def test_config_hash_stays_when_an_alias_changes_is_added_or_removed(
    engineering_team: RenderInputs,
) -> None:
    """A serving gateway applies a new model routing itself (gateway/modelsync.py): no roll."""
    before = config_hash_of(engineering_team)
    fast = next(a for a in engineering_team.aliases if a.metadata.name == "fast-code")
    targets = [fast.spec.targets[0].model_copy(update={"weight": 50}), fast.spec.targets[1]]
    changes = {
        "changed": with_alias_spec(engineering_team, "fast-code", targets=targets),
        "removed": dataclasses.replace(
            engineering_team, aliases=[a for a in engineering_team.aliases if a is not fast]
        ),
        "alone": dataclasses.replace(engineering_team, aliases=[fast]),
    }
    for what, changed in changes.items():
        # The files change (the gateway sees it), the pod template does not.
        assert configmap_file(changed, "config.yaml") != configmap_file(
            engineering_team, "config.yaml"
        ), what
        assert config_hash_of(changed) == before, what


def test_config_hash_stays_when_budget_policies_change(engineering_team: RenderInputs) -> None:
    """BudgetPolicies live in the rules file, which a serving gateway reloads."""
    assert engineering_team.budgets
    without = dataclasses.replace(engineering_team, budgets=[])
    assert configmap_file(without, "tenantgw.json") != configmap_file(
        engineering_team, "tenantgw.json"
    )
    assert config_hash_of(without) == config_hash_of(engineering_team)


def test_config_hash_covers_config_yaml_but_its_model_routing(
    engineering_team: RenderInputs,
) -> None:
    material = restart_material(engineering_team, render_litellm_config(engineering_team))
    rest = material["config.yaml"]
    assert "model_list" not in rest
    assert "fallbacks" not in rest["litellm_settings"]
    assert "model_group_alias" not in rest["router_settings"]
    # What LiteLLM reads only at start stays, and a change of it rolls the pods.
    assert rest["general_settings"]["custom_auth"] == "tenantgw.gateway.auth.user_api_key_auth"
    digest = config_hash(material, [], {})
    rest["litellm_settings"]["num_retries"] += 1
    assert config_hash(material, [], {}) != digest


def test_config_hash_changes_with_provider_credentials(minimal_tenant: RenderInputs) -> None:
    tenant = minimal_tenant.tenant
    provider = tenant.spec.providers[0]
    assert provider.credentials_secret_ref is not None
    moved = provider.model_copy(
        update={
            "credentials_secret_ref": provider.credentials_secret_ref.model_copy(
                update={"name": "anthropic-v2"}
            )
        }
    )
    spec = tenant.spec.model_copy(update={"providers": [moved]})
    changed = dataclasses.replace(minimal_tenant, tenant=tenant.model_copy(update={"spec": spec}))
    assert config_hash_of(changed) != config_hash_of(minimal_tenant)


def test_key_rotation_does_not_restart_the_gateway(engineering_team: RenderInputs) -> None:
    rotated = dataclasses.replace(
        engineering_team, keys={"alice": "sk-tgw-rotated-1", "ci": "sk-tgw-rotated-2"}
    )
    assert config_hash_of(rotated) == config_hash_of(engineering_team)
    # ...while the Secrets the gateway reloads do change.
    before = by_kind(render_tenant(engineering_team), "Secret")["data"]["keys.json"]
    after = by_kind(render_tenant(rotated), "Secret")["data"]["keys.json"]
    assert before != after


# --------------------------------------------------------------------------- every object


@pytest.mark.parametrize("case", ["engineering_team", "minimal_tenant"])
def test_every_object_is_labelled_owned_and_namespaced(
    case: str, request: pytest.FixtureRequest
) -> None:
    inputs: RenderInputs = request.getfixturevalue(case)
    tenant = inputs.tenant
    name = tenant.metadata.name or ""
    for obj in render_tenant(inputs):
        meta = obj["metadata"]
        what = f"{obj['kind']}/{meta['name']}"
        assert labels(name).items() <= meta["labels"].items(), what
        if obj["kind"] != "Namespace" or tenant.spec.deletion_policy == "Delete":
            assert meta["ownerReferences"] == [owner_reference(tenant)], what
        else:  # a retained namespace must outlive its Tenant, whatever the propagation
            assert "ownerReferences" not in meta, what
        if obj["kind"] == "Namespace":
            assert "namespace" not in meta
            assert meta["name"] == tenant.namespace_name()
        else:
            assert meta["namespace"] == tenant.namespace_name(), what


def test_objects_come_in_apply_order(engineering_team: RenderInputs) -> None:
    kinds = [o["kind"] for o in render_tenant(engineering_team)]
    assert kinds == [
        "Namespace",
        "ServiceAccount",
        "Secret",
        "Secret",
        "Secret",
        "ConfigMap",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "RoleBinding",
        "RoleBinding",
        "ServiceMonitor",
        "PrometheusRule",
    ]


def test_monitoring_objects_only_with_the_crds(engineering_team: RenderInputs) -> None:
    kinds = {
        o["kind"] for o in render_tenant(dataclasses.replace(engineering_team, monitoring=False))
    }
    assert not {"ServiceMonitor", "PrometheusRule"} & kinds


def test_rendering_is_deterministic(engineering_team: RenderInputs) -> None:
    first = render_tenant(engineering_team)
    assert render_tenant(engineering_team) == first
    shuffled = dataclasses.replace(
        engineering_team,
        aliases=list(reversed(engineering_team.aliases)),
        budgets=list(reversed(engineering_team.budgets)),
    )
    assert render_tenant(shuffled) == first


def test_rendering_does_not_mutate_its_inputs(engineering_team: RenderInputs) -> None:
    snapshot = (
        engineering_team.tenant.model_dump(),
        [a.model_dump() for a in engineering_team.aliases],
        dict(engineering_team.keys),
    )
    objects = render_tenant(engineering_team)
    objects[0]["metadata"]["labels"]["x"] = "y"  # callers may edit what they get
    assert snapshot == (
        engineering_team.tenant.model_dump(),
        [a.model_dump() for a in engineering_team.aliases],
        dict(engineering_team.keys),
    )
    assert "x" not in render_tenant(engineering_team)[0]["metadata"]["labels"]


# --------------------------------------------------------------------------- the pod


def test_pod_meets_the_restricted_pod_security_standard(engineering_team: RenderInputs) -> None:
    objects = render_tenant(engineering_team)
    namespace = by_kind(objects, "Namespace", "tenant-engineering-team")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["readOnlyRootFilesystem"] is True
    assert by_kind(objects, "ServiceAccount")["automountServiceAccountToken"] is False


def test_pod_mounts_only_the_key_hashes_of_the_secret(engineering_team: RenderInputs) -> None:
    pod = by_kind(render_tenant(engineering_team), "Deployment")["spec"]["template"]["spec"]
    secret_volume = next(v for v in pod["volumes"] if "secret" in v)["secret"]
    assert secret_volume["items"] == [{"key": "keys.json", "path": "keys.json"}]
    assert secret_volume["defaultMode"] == 0o440


def test_gateway_resources_default_and_canonical(
    engineering_team: RenderInputs, minimal_tenant: RenderInputs
) -> None:
    def resources(inputs: RenderInputs) -> Any:
        deployment = by_kind(render_tenant(inputs), "Deployment")
        return deployment["spec"]["template"]["spec"]["containers"][0]["resources"]

    assert resources(minimal_tenant) == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"memory": "1Gi"},
    }
    # Given as cpu "0.5" and memory "1024Mi": written as the API server would write them back.
    assert resources(engineering_team) == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "2Gi"},
    }


def test_service_selects_the_gateway_pods(engineering_team: RenderInputs) -> None:
    objects = render_tenant(engineering_team)
    deployment = by_kind(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        by_kind(objects, "Service")["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"],
        by_kind(objects, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
        by_kind(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    monitor = by_kind(objects, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
    assert monitor.items() <= by_kind(objects, "Service")["metadata"]["labels"].items()
    assert service_url(engineering_team.tenant) == "http://gateway.tenant-engineering-team.svc:4000"


# --------------------------------------------------------------------------- autoscaling


def with_gateway(inputs: RenderInputs, **gateway: Any) -> RenderInputs:
    spec = inputs.tenant.spec.model_copy(
        update={"gateway": inputs.tenant.spec.gateway.model_validate(gateway)}
    )
    return dataclasses.replace(inputs, tenant=inputs.tenant.model_copy(update={"spec": spec}))


def test_autoscaling_renders_an_hpa_and_leaves_the_replicas_out(
    minimal_tenant: RenderInputs,
) -> None:
    scaled = with_gateway(
        minimal_tenant,
        autoscaling={"minReplicas": 3, "maxReplicas": 9, "targetCpuUtilization": 60},
    )
    objects = render_tenant(scaled)
    assert "replicas" not in by_kind(objects, "Deployment")["spec"]
    hpa = by_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": GATEWAY_NAME,
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 9)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 60},
    }
    assert hpa["metadata"]["labels"]["tenantgw.io/tenant"] == scaled.tenant.metadata.name
    assert hpa["metadata"]["ownerReferences"] == [owner_reference(scaled.tenant)]
    # The gateway is expected up (an alert when no pod answers), as with fixed replicas.
    rule = by_kind(objects, "PrometheusRule") if scaled.monitoring else None
    if rule is not None:
        alerts = [r["alert"] for r in rule["spec"]["groups"][0]["rules"]]
        assert "TenantGatewayDown" in alerts


def test_fixed_replicas_render_no_hpa(minimal_tenant: RenderInputs) -> None:
    for gateway, replicas in (({}, 2), ({"replicas": 5}, 5), ({"replicas": 0}, 0)):
        objects = render_tenant(with_gateway(minimal_tenant, **gateway))
        assert by_kind(objects, "Deployment")["spec"]["replicas"] == replicas
        assert not [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
