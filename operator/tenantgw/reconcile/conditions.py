"""Status conditions by the Kubernetes API conventions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]


def condition(
    type_: str, ok: bool | None, reason: str, message: str, generation: int | None
) -> dict[str, Any]:
    """A condition dict in wire format (camelCase), without lastTransitionTime yet."""
    status: Status = "Unknown" if ok is None else "True" if ok else "False"
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def merge_conditions(
    old: list[dict[str, Any]] | None, new: list[dict[str, Any]], now: datetime | None = None
) -> list[dict[str, Any]]:
    """The full new list, each keeping its lastTransitionTime unless its status flipped."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    previous = {c.get("type"): c for c in old or []}
    merged = []
    for cond in new:
        before = previous.get(cond["type"])
        if before and before.get("status") == cond["status"] and before.get("lastTransitionTime"):
            merged.append({**cond, "lastTransitionTime": before["lastTransitionTime"]})
        else:
            merged.append({**cond, "lastTransitionTime": stamp})
    return merged


def find(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)
