"""The local control plane is a real Kubernetes: scheduling, controllers, GC, CEL admission."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.integration


def eventually(check: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


@pytest.fixture
def namespace(kube: ApiClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def test_deployment_becomes_available_on_a_kwok_node(kube: ApiClient, namespace: str) -> None:
    """Scheduler, controller-manager and kwok together take a Deployment to Available."""
    apps = client.AppsV1Api(kube)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[client.V1Container(name="web", image="example.invalid/web:1")]
                    ),
                ),
            ),
        ),
    )

    def available() -> bool:
        dep = apps.read_namespaced_deployment_status("web", namespace)
        conds = {c.type: c.status for c in (dep.status.conditions or [])}
        return conds.get("Available") == "True" and dep.status.ready_replicas == 2

    eventually(available, what="Deployment web to become Available with 2 ready replicas")
    pods = client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 2
    assert all(p.spec.node_name and p.spec.node_name.startswith("kwok-node-") for p in pods)
    assert all(p.status.phase == "Running" for p in pods)


def test_deleting_an_owner_garbage_collects_its_dependents(kube: ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dependent", owner_references=[ref])),
    )
    core.delete_namespaced_config_map("owner", namespace)

    def dependent_gone() -> bool:
        try:
            core.read_namespaced_config_map("dependent", namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    eventually(dependent_gone, what="the garbage collector to delete the dependent ConfigMap")


def test_deleting_a_namespace_finalizes_it(kube: ApiClient) -> None:
    core = client.CoreV1Api(kube)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    core.create_namespaced_config_map(
        name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="content"))
    )
    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as exc:
            return exc.status == 404
        return False

    eventually(gone, what=f"namespace {name} to be finalized and removed")


def test_crd_cel_rule_rejects_an_invalid_object_with_its_message(kube: ApiClient) -> None:
    ext = client.ApiextensionsV1Api(kube)
    group = "celcheck.tenantgw.io"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "min": {"type": "integer"},
                                        "max": {"type": "integer"},
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.min <= self.max",
                                            "message": "spec.min must not exceed spec.max",
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    try:
        ext.create_custom_resource_definition(crd)
    except ApiException as exc:
        if exc.status != 409:
            raise

    def established() -> bool:
        got = ext.read_custom_resource_definition(f"widgets.{group}")
        return any(
            c.type == "Established" and c.status == "True" for c in got.status.conditions or []
        )

    eventually(established, what="the Widget CRD to be Established")
    custom = client.CustomObjectsApi(kube)

    def create(name: str, lo: int, hi: int) -> Any:
        body = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"min": lo, "max": hi},
        }
        return custom.create_namespaced_custom_object(group, "v1", "default", "widgets", body)

    ok_name = f"ok-{uuid.uuid4().hex[:6]}"
    eventually(
        lambda: _created(lambda: create(ok_name, 1, 2)), what="the valid Widget to be accepted"
    )
    with pytest.raises(ApiException) as raised:
        create(f"bad-{uuid.uuid4().hex[:6]}", 5, 1)
    assert raised.value.status == 422
    assert "spec.min must not exceed spec.max" in str(raised.value.body)
    custom.delete_namespaced_custom_object(group, "v1", "default", "widgets", ok_name)


def _created(create: Callable[[], Any]) -> bool:
    # Right after Established the API group may still be missing from discovery for a moment.
    try:
        create()
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True
