"""Which watch events of a tenant's objects wake its reconcile (tenantgw.operator.event_filter).

A controller's status bookkeeping that no reconcile reads wakes nothing; everything a
reconcile does read (spec, metadata, a Deployment's availability and rollout, a Namespace's
phase) still wakes it, so drift is reverted and Ready follows the gateway as before.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tenantgw.operator.event_filter import EventFilter

pytestmark = pytest.mark.unit


def pdb(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": "gateway",
            "namespace": "tenant-a",
            "uid": "pdb-1",
            "resourceVersion": "10",
            "generation": 1,
            "labels": {"app.kubernetes.io/managed-by": "tenantgw-operator"},
            "managedFields": [{"manager": "tenantgw", "operation": "Apply"}],
        },
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "gateway"}}},
        "status": status,
    }


def bookkeeping(body: dict[str, Any], version: str, **status: Any) -> dict[str, Any]:
    """What a controller's status update brings: new status, version and managed fields."""
    new = copy.deepcopy(body)
    new["status"] = {**new.get("status", {}), **status}
    new["metadata"]["resourceVersion"] = version
    new["metadata"]["managedFields"].append({"manager": "kube-controller-manager"})
    return new


def deployment(generation: int = 1, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "gateway",
            "namespace": "tenant-a",
            "uid": "dep-1",
            "resourceVersion": "20",
            "generation": generation,
            "managedFields": [],
        },
        "spec": {"replicas": 2, "template": {"metadata": {"annotations": {"hash": "a"}}}},
        "status": status,
    }


def available(value: str) -> list[dict[str, str]]:
    return [{"type": "Available", "status": value}]


def test_a_status_recount_of_a_disruption_budget_wakes_nothing() -> None:
    events = EventFilter()
    first = pdb()
    assert events.wakes(None, first)  # the first sight of an object always wakes
    counted = bookkeeping(first, "11", currentHealthy=0, expectedPods=2)
    assert not events.wakes("MODIFIED", counted)
    assert not events.wakes("MODIFIED", bookkeeping(counted, "12", currentHealthy=2))


def test_drift_of_a_disruption_budget_still_wakes() -> None:
    events = EventFilter()
    body = pdb(currentHealthy=2)
    events.wakes("ADDED", body)
    edited = copy.deepcopy(body)
    edited["spec"]["maxUnavailable"] = 0
    assert events.wakes("MODIFIED", edited)
    relabelled = copy.deepcopy(edited)
    relabelled["metadata"]["annotations"] = {"someone": "was here"}
    assert events.wakes("MODIFIED", relabelled)
    assert events.wakes("DELETED", relabelled)
    assert len(events) == 0  # forgotten: nothing held for objects that are gone
    assert events.wakes("ADDED", body)


def test_a_deployment_wakes_when_its_availability_or_rollout_changes_not_its_counts() -> None:
    events = EventFilter()
    new = deployment(generation=1)
    assert events.wakes("ADDED", new)
    # The controller's steps towards the first pods: nothing a reconcile reads moves.
    step = bookkeeping(new, "21", observedGeneration=1, replicas=2, updatedReplicas=2)
    assert not events.wakes("MODIFIED", step)
    step = bookkeeping(step, "22", readyReplicas=1, conditions=available("False"))
    assert not events.wakes("MODIFIED", step)
    serving = bookkeeping(step, "23", availableReplicas=2, conditions=available("True"))
    assert events.wakes("MODIFIED", serving)  # Available: the Tenant turns Ready
    assert not events.wakes("MODIFIED", bookkeeping(serving, "24", readyReplicas=2))


def test_a_deployment_wakes_when_a_rollout_starts_and_when_it_ends() -> None:
    events = EventFilter()
    done = {
        "observedGeneration": 1,
        "replicas": 2,
        "updatedReplicas": 2,
        "availableReplicas": 2,
        "conditions": available("True"),
    }
    events.wakes("ADDED", deployment(1, **done))
    rolling = deployment(2, **done)  # a new template: generation 2, not yet observed
    rolling["spec"]["template"]["metadata"]["annotations"]["hash"] = "b"
    assert events.wakes("MODIFIED", rolling)
    surge = bookkeeping(rolling, "30", observedGeneration=2, replicas=3, updatedReplicas=1)
    assert not events.wakes("MODIFIED", surge)  # still rolling: Ready says so already
    finished = bookkeeping(surge, "31", replicas=2, updatedReplicas=2)
    assert events.wakes("MODIFIED", finished)


def test_a_namespace_wakes_when_its_phase_changes() -> None:
    events = EventFilter()
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tenant-a", "uid": "n"},
          "status": {"phase": "Active"}}  # fmt: skip
    events.wakes(None, ns)
    assert events.wakes("MODIFIED", {**ns, "status": {"phase": "Terminating"}})


@pytest.mark.parametrize("kind", ["ConfigMap", "Secret", "Certificate", "NetworkPolicy"])
def test_other_kinds_wake_on_every_event(kind: str) -> None:
    events = EventFilter()
    body = {"apiVersion": "v1", "kind": kind, "metadata": {"name": "x", "uid": "u"}}
    assert events.wakes(None, body)
    assert events.wakes("MODIFIED", body)
    assert len(events) == 0  # nothing remembered for them
