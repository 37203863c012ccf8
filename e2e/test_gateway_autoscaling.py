"""`spec.gateway.autoscaling`: a HorizontalPodAutoscaler sizes the gateway, and the operator
never fights it over the Deployment's replicas.

Against the real control plane: kube-controller-manager runs the real HPA controller, which
raises the Deployment to `minReplicas` (it needs no metrics for that). Then a writer of the
scale subresource under a field manager of its own (what the HPA does when it scales on CPU)
sets another count, and reconciles that really re-apply the Deployment (a change of its pod
template) leave that count alone: the operator does not send `spec.replicas`, so server-side
apply leaves the field to its owner.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from e2e.helpers import K8s, eventually, tenant_body
from e2e.operator_fixture import RunningOperator
from e2e.test_operator_convergence import TENANTS, create_tenant, ready_for_generation, spec
from tenantgw.kube.client import FIELD_MANAGER

pytestmark = pytest.mark.e2e

HPA_LIKE_MANAGER = "e2e-hpa-like"


@pytest.fixture(scope="module")
def k8s(kube: ApiClient) -> K8s:
    return K8s(kube)


@pytest.fixture
def scaled(k8s: K8s, operator: RunningOperator) -> Iterator[tuple[str, str]]:
    name = f"e2e-hpa-{uuid.uuid4().hex[:6]}"
    ns = create_tenant(k8s, name, gateway={"autoscaling": {"minReplicas": 3, "maxReplicas": 6}})
    eventually(lambda: ready_for_generation(k8s, name), 90, f"Tenant {name} Ready")
    yield name, ns
    k8s.delete(*TENANTS, name)


def hpa(kube: ApiClient, ns: str) -> Any:
    try:
        return client.AutoscalingV2Api(kube).read_namespaced_horizontal_pod_autoscaler(
            "gateway", ns
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def replicas_owners(deployment: Any) -> set[str]:
    """Field managers that own the Deployment's spec.replicas."""
    owners = set()
    for entry in deployment.metadata.managed_fields or []:
        fields = (entry.fields_v1 or {}).get("f:spec", {})
        if "f:replicas" in fields:
            owners.add(entry.manager)
    return owners


def apply_tenant(k8s: K8s, name: str, **overrides: Any) -> None:
    k8s.apply(tenant_body(name, **spec(**overrides)))


def test_the_operator_leaves_the_replicas_to_the_autoscaler(
    k8s: K8s, kube: ApiClient, scaled: tuple[str, str]
) -> None:
    """US: a platform engineer turns on autoscaling and the gateway scales without the operator
    scaling it back at the next reconcile."""
    name, ns = scaled
    autoscaler = eventually(lambda: hpa(kube, ns), 30, "the HorizontalPodAutoscaler")
    assert autoscaler.spec.scale_target_ref.name == "gateway"
    assert (autoscaler.spec.min_replicas, autoscaler.spec.max_replicas) == (3, 6)
    # The real HPA controller raises the Deployment to minReplicas.
    eventually(
        lambda: k8s.apps.read_namespaced_deployment("gateway", ns).spec.replicas == 3,
        90,
        "the HPA controller to scale the gateway to minReplicas",
    )
    deployment = k8s.apps.read_namespaced_deployment("gateway", ns)
    assert FIELD_MANAGER not in replicas_owners(deployment)

    # An HPA-like writer scales through the scale subresource, as the HPA does on CPU.
    k8s.apps.patch_namespaced_deployment_scale(
        "gateway", ns, {"spec": {"replicas": 4}}, field_manager=HPA_LIKE_MANAGER
    )
    # A change that makes the operator re-apply the Deployment (its pod template's args).
    apply_tenant(
        k8s, name, gateway={"autoscaling": {"minReplicas": 3, "maxReplicas": 6}, "workers": 2}
    )

    def reapplied() -> bool:
        args = (
            k8s.apps.read_namespaced_deployment("gateway", ns).spec.template.spec.containers[0].args
        )
        return bool(args[args.index("--num_workers") + 1] == "2")

    eventually(reapplied, 60, "the operator to re-apply the Deployment with two workers")
    eventually(lambda: ready_for_generation(k8s, name), 60, f"Tenant {name} Ready again")
    deployment = k8s.apps.read_namespaced_deployment("gateway", ns)
    assert deployment.spec.replicas == 4
    assert FIELD_MANAGER not in replicas_owners(deployment)
    assert FIELD_MANAGER in {e.manager for e in deployment.metadata.managed_fields}

    # Back to fixed replicas: the operator owns the count again and the HPA is pruned.
    apply_tenant(k8s, name, gateway={"replicas": 2})
    eventually(lambda: hpa(kube, ns) is None, 60, "the HorizontalPodAutoscaler to be pruned")
    eventually(
        lambda: k8s.apps.read_namespaced_deployment("gateway", ns).spec.replicas == 2,
        60,
        "the operator to set two replicas",
    )


@pytest.mark.parametrize(
    ("gateway", "message"),
    [
        (
            {"replicas": 2, "autoscaling": {"maxReplicas": 4}},
            "replicas and autoscaling are both set",
        ),
        (
            {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}},
            "minReplicas must not be more than maxReplicas",
        ),
    ],
)
def test_the_api_server_refuses_contradicting_sizes(
    k8s: K8s, gateway: dict[str, Any], message: str
) -> None:
    """US: a platform engineer who sets both, or a range upside down, is told which field."""
    name = f"e2e-hpa-bad-{uuid.uuid4().hex[:6]}"
    with pytest.raises(ApiException) as refused:
        k8s.apply(tenant_body(name, **spec(gateway=gateway)))
    assert refused.value.status == 422
    assert message in str(refused.value.body)
    assert "spec.gateway" in str(refused.value.body)
