"""The operator watches only what it manages: every watch of a kind it does not define is
filtered by a label selector on the API server, so no cluster-wide Secret or Deployment cache."""

from __future__ import annotations

import kopf
import pytest
from kopf._cogs.structs.references import Resource

from tenantgw.kube.client import KINDS
from tenantgw.operator import handlers
from tenantgw.reconcile.tenant import MONITORING_KINDS, PRUNABLE_KINDS

pytestmark = pytest.mark.unit


def watched() -> set[tuple[str, str, str]]:
    registry = kopf.get_default_registry()
    found = set()
    for part in (registry._watching, registry._changing, registry._spawning, registry._indexing):
        for selector in part.get_all_selectors():
            found.add((selector.group or "", selector.version or "", str(selector.any_name)))
    return found


def selectors_for(
    settings: kopf.OperatorSettings, group: str, version: str, plural: str
) -> list[str]:
    resource = Resource(group=group, version=version, plural=plural, preferred=True)
    return settings.watching.label_selectors.collect(resource)


def test_every_watch_outside_our_api_group_is_label_selected() -> None:
    settings = kopf.OperatorSettings()
    handlers.select_watches(settings)
    kinds = watched()
    assert ("", "v1", "secrets") in kinds
    assert ("apps", "v1", "deployments") in kinds
    for group, version, plural in kinds:
        if group == "tenantgw.io":
            continue  # our own resources: all of them are ours
        assert selectors_for(settings, group, version, plural), f"{plural} watched unfiltered"
    assert selectors_for(settings, "", "v1", "secrets") == ["app.kubernetes.io/part-of=tenantgw"]
    assert selectors_for(settings, "apps", "v1", "deployments") == [
        "app.kubernetes.io/managed-by=tenantgw-operator"
    ]


def test_every_owned_kind_is_watched() -> None:
    """Drift of any object the operator creates wakes its tenant (not only the Deployment's)."""
    kinds = watched()
    for group, version, plural in handlers.OWNED:
        assert (group, version, plural) in kinds, plural


def test_every_kind_the_operator_prunes_is_watched() -> None:
    """A kind added to what a tenant gets (and prunes) must be watched too, or its drift waits."""
    owned = {
        *PRUNABLE_KINDS,
        *MONITORING_KINDS,
        ("v1", "Namespace"),
    }
    for api_version, kind in owned:
        k = KINDS[(api_version, kind)]
        group, _, version = api_version.rpartition("/")
        assert (group, version, k.plural) in handlers.OWNED or k.plural == "secrets", kind
