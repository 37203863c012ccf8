"""Which rendered objects an apply pass sends: additions, changes, removals and drift, and
nothing when nothing changed (an idle resync costs zero writes)."""

from __future__ import annotations

import base64
import copy
import dataclasses
from typing import Any

import pytest

from tenantgw.kube.apply import (
    APPLIED_HASH,
    applied_hash,
    contains,
    needs_apply,
    scrub_secret_values,
    stamped,
)
from tenantgw.render import RenderInputs, render_tenant

pytestmark = pytest.mark.unit


def by_kind(objects: list[dict[str, Any]], kind: str, name: str = "gateway") -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def as_served(desired: dict[str, Any]) -> dict[str, Any]:
    """What the API server returns after our apply: our fields plus defaults and others' fields."""
    live = copy.deepcopy(desired)
    meta = live["metadata"]
    meta.update(uid="u-1", resourceVersion="42", creationTimestamp="2025-01-01T00:00:00Z")
    meta.setdefault("annotations", {})["someone-else/note"] = "kept"
    meta["managedFields"] = [{"manager": "tenantgw-operator", "operation": "Apply"}]
    live["status"] = {"observedGeneration": 1}
    if live["kind"] == "Deployment":
        live["spec"]["progressDeadlineSeconds"] = 600
        live["spec"]["template"]["spec"]["schedulerName"] = "default-scheduler"
    return live


def with_gateway(inputs: RenderInputs, **changes: Any) -> RenderInputs:
    tenant = inputs.tenant
    gateway = tenant.spec.gateway.model_copy(update=changes)
    spec = tenant.spec.model_copy(update={"gateway": gateway})
    return dataclasses.replace(inputs, tenant=tenant.model_copy(update={"spec": spec}))


def test_an_applied_object_with_server_defaults_needs_no_write(
    engineering_team: RenderInputs,
) -> None:
    for obj in render_tenant(engineering_team):
        desired = stamped(obj)
        assert not needs_apply(as_served(desired), desired), obj["kind"]


def test_rendering_twice_gives_the_same_hash(engineering_team: RenderInputs) -> None:
    """Idle resyncs write nothing only if the same inputs stamp the same hash."""
    first = [applied_hash(o) for o in render_tenant(engineering_team)]
    again = [applied_hash(o) for o in render_tenant(engineering_team)]
    assert first == again
    assert len(set(first)) == len(first)


def test_removing_resource_limits_is_applied_though_the_live_object_contains_the_rest(
    engineering_team: RenderInputs,
) -> None:
    before = stamped(by_kind(render_tenant(engineering_team), "Deployment"))
    live = as_served(before)
    assert live["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    resources = engineering_team.tenant.spec.gateway.resources
    assert resources is not None
    trimmed = with_gateway(engineering_team, resources=resources.model_copy(update={"limits": {}}))
    after = stamped(by_kind(render_tenant(trimmed), "Deployment"))
    assert "limits" not in after["spec"]["template"]["spec"]["containers"][0]["resources"]
    unstamped = copy.deepcopy(after)
    unstamped["metadata"]["annotations"].pop(APPLIED_HASH)
    assert contains(live, unstamped), "the subset check alone cannot see a removal"
    assert needs_apply(live, after), "a removed field would never reach the Deployment"


@pytest.mark.parametrize("where", ["labels", "annotations", "data"])
def test_a_key_we_stop_rendering_is_applied(engineering_team: RenderInputs, where: str) -> None:
    obj = copy.deepcopy(by_kind(render_tenant(engineering_team), "Secret"))
    section = obj if where == "data" else obj["metadata"]
    section.setdefault(where, {})["tenantgw.io/extra" if where != "data" else "extra"] = "eA=="
    live = as_served(stamped(obj))
    del section[where]["tenantgw.io/extra" if where != "data" else "extra"]
    assert needs_apply(live, stamped(obj))


def test_a_hand_edit_of_the_configmap_is_reverted(engineering_team: RenderInputs) -> None:
    desired = stamped(by_kind(render_tenant(engineering_team), "ConfigMap", "gateway-config"))
    live = as_served(desired)
    key = next(k for k, v in live["data"].items() if '"mode": "redact"' in v)  # the rules
    live["data"][key] = live["data"][key].replace('"mode": "redact"', '"mode": "off"')
    assert live["data"][key] != desired["data"][key]
    assert needs_apply(live, desired)


def test_a_hand_edit_of_our_hash_is_reverted(engineering_team: RenderInputs) -> None:
    desired = stamped(by_kind(render_tenant(engineering_team), "Service"))
    live = as_served(desired)
    live["metadata"]["annotations"][APPLIED_HASH] = "0" * 32
    assert needs_apply(live, desired)


def test_objects_applied_before_hashes_existed_are_applied_once(
    engineering_team: RenderInputs,
) -> None:
    obj = by_kind(render_tenant(engineering_team), "Service")
    assert needs_apply(as_served(obj), stamped(obj))
    assert needs_apply(None, stamped(obj))


def test_the_hash_ignores_its_own_annotation(engineering_team: RenderInputs) -> None:
    obj = by_kind(render_tenant(engineering_team), "PodDisruptionBudget")
    assert applied_hash(stamped(obj)) == applied_hash(obj)
    assert APPLIED_HASH not in (obj["metadata"].get("annotations") or {}), "stamped() mutated"


def test_a_refused_secret_never_puts_its_value_in_the_failure() -> None:
    """The failure message goes to status and Events: a Secret's value must not ride along."""
    encoded = base64.b64encode(b"sk-tgw-very-secret").decode()
    secret: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "gateway", "namespace": "tenant-a"},
        "data": {"masterKey": encoded},
    }
    said = f'data[masterKey]: Invalid value: "sk-tgw-very-secret" ({encoded})'
    message = scrub_secret_values(said, secret)
    assert "sk-tgw-very-secret" not in message
    assert encoded not in message
    assert message.startswith("data[masterKey]: Invalid value")
    assert scrub_secret_values(said, {**secret, "kind": "ConfigMap"}) == said
