"""Deployment, Service, PodDisruptionBudget and HorizontalPodAutoscaler of a tenant's gateway.

The pod meets the `restricted` Pod Security Standard: non-root, no privilege escalation, no
capabilities, read-only root filesystem (only /tmp is writable), RuntimeDefault seccomp and no
ServiceAccount token for the Kubernetes API (the gateway never talks to it); a provider with
workload identity gets a token projected for its cloud's audience only (render.identity).
"""

from __future__ import annotations

from typing import Any

from tenantgw.render.config import config_hash, restart_material
from tenantgw.render.identity import identity_env, identity_mounts, identity_volumes
from tenantgw.render.inputs import RenderInputs
from tenantgw.render.labels import gateway_labels, gateway_selector, object_meta
from tenantgw.render.litellm_config import MASTER_KEY_ENV, provider_env
from tenantgw.render.names import (
    CONFIG_FILE,
    CONFIG_HASH_ANNOTATION,
    CONFIG_MOUNT,
    CONFIG_NAME,
    GATEWAY_NAME,
    GATEWAY_PORT,
    KEYS_FILE,
    MASTER_KEY_FIELD,
    METRICS_PORT,
    METRICS_PORT_NAME,
    POSTGRES_DSN_FIELD,
    REDIS_URL_FIELD,
    RULES_FILE,
    SECRET_MOUNT,
    TLS_PORT_NAME,
    tenant_name,
)
from tenantgw.render.quantity import canonical_resources
from tenantgw.render.storage_tls import pod_storage, storage_tls_items
from tenantgw.render.tls import (
    port_name,
    probe_scheme,
    tls_annotations,
    tls_args,
    tls_mounts,
    tls_volumes,
)

# The distroless "nonroot" user; the gateway image runs as it.
RUN_AS = 65532
SECRET_MODE = 0o440
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "250m", "memory": "512Mi"},
    "limits": {"memory": "1Gi"},
}
# Graceful drain (tenantgw.gateway.drain): after SIGTERM the gateway fails its readiness at
# once and keeps accepting for DRAIN_SECONDS, until the endpoints have dropped the pod; the
# requests in flight then get STREAM_GRACE_SECONDS to finish before they are cut; the ledger
# flush after them is bounded by SHUTDOWN_FLUSH_SECONDS (gateway.lifespan: LiteLLM's callbacks
# 15 s, the ledger 25 s). The kubelet's SIGKILL comes after all three.
DRAIN_SECONDS = 5
STREAM_GRACE_SECONDS = 60
SHUTDOWN_FLUSH_SECONDS = 40
TERMINATION_GRACE_SECONDS = DRAIN_SECONDS + STREAM_GRACE_SECONDS + SHUTDOWN_FLUSH_SECONDS


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {
        "name": name,
        "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": False}},
    }


def provider_env_list(inputs: RenderInputs) -> list[dict[str, Any]]:
    """One variable per provider credential, from the Secret the Tenant names, by name."""
    env = [
        _secret_env(provider_env(provider.name), ref.name, ref.key)
        for provider in inputs.tenant.spec.providers
        if (ref := provider.credentials_secret_ref) is not None
    ]
    return sorted(env, key=lambda item: str(item["name"]))


def _storage_env(inputs: RenderInputs) -> list[dict[str, Any]]:
    storage = inputs.storage
    env: list[dict[str, Any]] = []
    if storage is not None and storage.postgres_dsn:
        env.append(_secret_env("TENANTGW_POSTGRES_DSN", GATEWAY_NAME, POSTGRES_DSN_FIELD))
    if storage is not None and storage.redis_url:
        env.append(_secret_env("TENANTGW_REDIS_URL", GATEWAY_NAME, REDIS_URL_FIELD))
    return env


def container_env(inputs: RenderInputs) -> list[dict[str, Any]]:
    """Environment of the gateway container: references to Secrets, never their values."""
    return [
        _secret_env(MASTER_KEY_ENV, GATEWAY_NAME, MASTER_KEY_FIELD),
        *provider_env_list(inputs),
        *identity_env(inputs),
        # No outbound fetches of LiteLLM's cost map and Anthropic beta headers: the
        # NetworkPolicy would block them anyway, and start-up must not wait on them.
        {"name": "LITELLM_LOCAL_MODEL_COST_MAP", "value": "True"},
        {"name": "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "value": "True"},
        {"name": "TENANTGW_TENANT", "value": tenant_name(inputs.tenant)},
        {"name": "TENANTGW_RULES_FILE", "value": f"{CONFIG_MOUNT}/{RULES_FILE}"},
        {"name": "TENANTGW_KEYS_FILE", "value": f"{SECRET_MOUNT}/{KEYS_FILE}"},
        # One JSON object per log line (tenantgw.jsonlog), one access line per request.
        {"name": "TENANTGW_LOG_FORMAT", "value": inputs.log_format},
        {"name": "TENANTGW_DRAIN_SECONDS", "value": str(DRAIN_SECONDS)},
        {"name": "TENANTGW_STREAM_GRACE_SECONDS", "value": str(STREAM_GRACE_SECONDS)},
        *_storage_env(inputs),
    ]


def resources(inputs: RenderInputs) -> dict[str, dict[str, str]]:
    """spec.gateway.resources as given (canonical quantities), else the operator's defaults.

    Not merged with the defaults: a limit below a default request would make the pod invalid.
    """
    spec = inputs.tenant.spec.gateway.resources
    if not spec.requests and not spec.limits:
        return {kind: dict(values) for kind, values in DEFAULT_RESOURCES.items()}
    result: dict[str, dict[str, str]] = {}
    if spec.requests:
        result["requests"] = canonical_resources(spec.requests)
    if spec.limits:
        result["limits"] = canonical_resources(spec.limits)
    return result


def _probe(inputs: RenderInputs, path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port_name(inputs), **probe_scheme(inputs)},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _container(inputs: RenderInputs) -> dict[str, Any]:
    workers = inputs.tenant.spec.gateway.workers
    return {
        "name": GATEWAY_NAME,
        "image": inputs.image,
        # LiteLLM's proxy inside tenantgw's error-shape and body-limit middleware.
        "command": ["python", "-m", "tenantgw.gateway"],
        "args": [
            "--config",
            f"{CONFIG_MOUNT}/{CONFIG_FILE}",
            "--host",
            "0.0.0.0",  # noqa: S104 (the pod's address; the NetworkPolicy limits callers)
            "--port",
            str(GATEWAY_PORT),
            "--num_workers",
            str(workers),
            "--metrics_port",
            str(METRICS_PORT),
            *tls_args(inputs),
        ],
        "ports": [
            {"name": port_name(inputs), "containerPort": GATEWAY_PORT, "protocol": "TCP"},
            {"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": container_env(inputs),
        "resources": resources(inputs),
        # Start-up loads LiteLLM (tens of seconds on a cold node): up to 3 minutes.
        "startupProbe": _probe(inputs, "/health/liveliness", period=2, failures=90),
        "readinessProbe": _probe(inputs, "/health/readiness", period=10, failures=3),
        "livenessProbe": _probe(inputs, "/health/liveliness", period=15, failures=4),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
            {"name": "secret", "mountPath": SECRET_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 (an emptyDir)
            *identity_mounts(inputs),
            *tls_mounts(inputs),
        ],
    }


def _replicas(fixed: int | None) -> dict[str, int]:
    # With autoscaling the field is left out of the apply: the HorizontalPodAutoscaler writes
    # it (through the scale subresource, under its own field manager) and server-side apply
    # leaves a field the operator does not send to its owner, so no reconcile reverts it.
    return {} if fixed is None else {"replicas": fixed}


def render_deployment(inputs: RenderInputs, litellm: dict[str, Any]) -> dict[str, Any]:
    """Deployment `gateway`; `litellm` is its config.yaml (`render_litellm_config`), whose
    start-time part the pod template's config hash covers."""
    tenant = inputs.tenant
    name = tenant_name(tenant)
    storage = pod_storage(inputs.storage)
    digest = config_hash(
        restart_material(inputs, litellm),
        provider_env_list(inputs),
        {
            "postgres_dsn": storage.postgres_dsn if storage else None,
            "redis_url": storage.redis_url if storage else None,
        },
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(tenant, GATEWAY_NAME, gateway_labels(name)),
        "spec": {
            **_replicas(tenant.spec.gateway.fixed_replicas()),
            "selector": {"matchLabels": gateway_selector(name)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": gateway_labels(name),
                    "annotations": {
                        CONFIG_HASH_ANNOTATION: digest,
                        **tls_annotations(inputs),
                    },
                },
                "spec": {
                    "serviceAccountName": GATEWAY_NAME,
                    "automountServiceAccountToken": False,
                    # Service links would add GATEWAY_PORT=tcp://... and friends to the env.
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS,
                        "runAsGroup": RUN_AS,
                        "fsGroup": RUN_AS,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "kubernetes.io/hostname",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": gateway_selector(name)},
                        }
                    ],
                    "containers": [_container(inputs)],
                    "volumes": [
                        {"name": "config", "configMap": {"name": CONFIG_NAME}},
                        {
                            "name": "secret",
                            "secret": {
                                "secretName": GATEWAY_NAME,
                                "items": [
                                    {"key": KEYS_FILE, "path": KEYS_FILE},
                                    *storage_tls_items(inputs.storage),
                                ],
                                "defaultMode": SECRET_MODE,
                            },
                        },
                        {"name": "tmp", "emptyDir": {}},
                        *identity_volumes(inputs),
                        *tls_volumes(inputs),
                    ],
                },
            },
        },
    }


def render_service(inputs: RenderInputs) -> dict[str, Any]:
    """Service `gateway`: ClusterIP, port 4000 named http or https (clients), 9464 named
    metrics."""
    name = tenant_name(inputs.tenant)
    port = port_name(inputs)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(inputs.tenant, GATEWAY_NAME, gateway_labels(name)),
        "spec": {
            "type": "ClusterIP",
            "selector": gateway_selector(name),
            "ports": [
                {
                    "name": port,
                    "port": GATEWAY_PORT,
                    "targetPort": port,
                    "protocol": "TCP",
                    **({"appProtocol": "https"} if port == TLS_PORT_NAME else {}),
                },
                {
                    "name": METRICS_PORT_NAME,
                    "port": METRICS_PORT,
                    "targetPort": METRICS_PORT_NAME,
                    "protocol": "TCP",
                },
            ],
        },
    }


def render_pod_disruption_budget(inputs: RenderInputs) -> dict[str, Any]:
    """PodDisruptionBudget `gateway`: drains take one gateway pod at a time."""
    name = tenant_name(inputs.tenant)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(inputs.tenant, GATEWAY_NAME),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": gateway_selector(name)}},
    }


def render_autoscaler(inputs: RenderInputs) -> dict[str, Any] | None:
    """HorizontalPodAutoscaler `gateway` (autoscaling/v2, CPU) when `spec.gateway.autoscaling`."""
    scaling = inputs.tenant.spec.gateway.autoscaling
    if scaling is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(inputs.tenant, GATEWAY_NAME),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": GATEWAY_NAME},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": scaling.target_cpu_utilization,
                        },
                    },
                }
            ],
        },
    }
