"""Which watch events of a tenant's objects can change what its reconcile does.

Controllers keep the status of the objects the operator applies: the Deployment controller
counts replicas at each step of a rollout, the disruption controller recounts a
PodDisruptionBudget's pods, the autoscaler records its metrics every 15 s. Each such event
woke a whole reconcile (observe, plan, act) that then found nothing to do: about two of every
three wakes of a new tenant.

A reconcile reads an object's spec and metadata (to revert drift) and, of its status, only
the Deployment's availability and whether its rollout is done (`reconcile.readiness`) and the
Namespace's phase. `EventFilter` remembers that part of each object it has seen, and an event
that leaves it as it was wakes nothing. Every other kind wakes on every event, as before.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from tenantgw.reconcile.readiness import deployment_available, rollout_left


def _deployment(body: Mapping[str, Any]) -> object:
    dep = dict(body)
    return deployment_available(dep), rollout_left(dep) is None


def _namespace(body: Mapping[str, Any]) -> object:
    return (body.get("status") or {}).get("phase")


def _nothing(_: Mapping[str, Any]) -> object:
    return None


STATUS_READ: dict[str, Callable[[Mapping[str, Any]], object]] = {
    "Deployment": _deployment,
    "Namespace": _namespace,
    "PodDisruptionBudget": _nothing,
    "HorizontalPodAutoscaler": _nothing,
    "Service": _nothing,
}
"""Kind → what a reconcile reads of its status. Kinds not here always wake."""

_BOOKKEEPING = frozenset({"resourceVersion", "managedFields"})


def _read_part(body: Mapping[str, Any], status: Callable[[Mapping[str, Any]], object]) -> int:
    """A hash of what a reconcile reads of `body`: all but its status and the API server's
    bookkeeping, and the part of its status that `status` picks."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in _BOOKKEEPING}
    rest = {k: v for k, v in body.items() if k not in ("status", "metadata")}
    text = json.dumps([meta, rest, status(body)], sort_keys=True, default=str)
    return hash(text)


class EventFilter:
    """Per object (by uid), the part its tenant's reconcile reads, as the last event had it."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def wakes(self, event: str | None, body: Mapping[str, Any]) -> bool:
        """Whether this event can change what the reconcile does; remembers the object."""
        status = STATUS_READ.get(str(body.get("kind")))
        if status is None:
            return True
        uid = str((body.get("metadata") or {}).get("uid", ""))
        if event == "DELETED":
            self._seen.pop(uid, None)
            return True
        part = _read_part(body, status)
        before = self._seen.get(uid)
        self._seen[uid] = part
        return before != part

    def __len__(self) -> int:
        return len(self._seen)
