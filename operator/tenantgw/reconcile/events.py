"""Kubernetes Events about a Tenant, for `kubectl describe tenant`."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from tenantgw.kube.client import JSON, Kube, KubeError
from tenantgw.reconcile.settings import Settings

log = logging.getLogger(__name__)
COMPONENT = "tenantgw-operator"


async def post_event(
    kube: Kube, settings: Settings, body: JSON, type_: str, reason: str, message: str
) -> None:
    """Post an Event; failing to post one never fails a reconcile.

    Events of a cluster-scoped object live in the events namespace (default), as kubectl and
    kopf expect.
    """
    meta = body["metadata"]
    namespace = meta.get("namespace") or settings.events_namespace
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        await kube.create(event)
    except KubeError as exc:
        log.warning("could not post event %s on %s: %s", reason, meta["name"], exc)
