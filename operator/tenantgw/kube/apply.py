"""Apply a set of rendered objects with server-side apply, writing only what differs, and prune.

Two signals decide whether an object is written:
- drift: the live object no longer contains what we render (someone edited or removed a field
  we set); `contains()` sees that;
- intent: what we render changed since the last apply, including fields we *stopped*
  rendering, which a subset check cannot see. Each applied object carries the hash of what was
  rendered (`tenantgw.io/applied-hash`); a different hash sends the apply, and server-side
  apply under our one field manager deletes the fields we no longer send.
An object whose hash matches and whose fields are all in place costs no write.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from tenantgw.kube.client import JSON, Kube, KubeError, kind_of

APPLIED_HASH: Final = "tenantgw.io/applied-hash"
NAMESPACE_TERMINATING: Final = "NamespaceTerminating"
"""The Status cause of a create refused in a namespace being deleted (NamespaceLifecycle)."""

Ref = tuple[str, str, str, str | None]


def contains(live: Any, desired: Any) -> bool:
    """Whether every field we set in `desired` already has the same value in `live`.

    The API server adds defaults and other managers' fields, so equality is too strict; a
    subset check is what "already applied" means. Lists must match item by item, because a
    list we render is the whole list we want.
    """
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return False
        return all(k in live and contains(live[k], v) for k, v in desired.items() if v is not None)
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return False
        return all(contains(lv, dv) for lv, dv in zip(live, desired, strict=True))
    if isinstance(desired, bool) or isinstance(live, bool):
        return live is desired
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return float(live) == float(desired)
    return bool(live == desired)


def applied_hash(obj: JSON) -> str:
    """A digest of everything we render for `obj` (our own hash annotation left out)."""
    meta = dict(obj.get("metadata") or {})
    notes = {k: v for k, v in (meta.get("annotations") or {}).items() if k != APPLIED_HASH}
    if notes:
        meta["annotations"] = notes
    else:
        meta.pop("annotations", None)
    canonical = json.dumps({**obj, "metadata": meta}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def stamped(obj: JSON) -> JSON:
    """A copy of `obj` carrying its applied hash, as it is sent to the API server.

    Only the path to the annotation is copied: the rest is shared with `obj`, and nothing
    after this changes either."""
    meta = obj["metadata"]
    notes = {**(meta.get("annotations") or {}), APPLIED_HASH: applied_hash(obj)}
    return {**obj, "metadata": {**meta, "annotations": notes}}


def _comparable(obj: JSON) -> JSON:
    """The part of a rendered object that is compared with the live one."""
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    meta = dict(body.get("metadata", {}))
    meta.pop("namespace", None)
    body["metadata"] = meta
    return body


def needs_apply(live: JSON | None, desired: JSON) -> bool:
    """Whether `desired` (stamped) must be sent: missing, changed intent, or drifted.

    Pure: the plan of an apply pass is this function over the live objects.
    """
    if live is None:
        return True
    stamp = (live.get("metadata", {}).get("annotations") or {}).get(APPLIED_HASH)
    if stamp != desired["metadata"]["annotations"][APPLIED_HASH]:
        return True  # what we render changed, possibly by a removal
    return not contains(live, _comparable(desired))  # someone edited what we set


def ref(obj: JSON) -> Ref:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))


@dataclass(frozen=True)
class ApplyFailure:
    """One object the API server refused, with its own words."""

    object: str
    status: int
    reason: str
    message: str
    causes: tuple[str, ...] = ()

    @property
    def namespace_terminating(self) -> bool:
        """Refused because its namespace is being deleted: heals once the namespace is gone."""
        return NAMESPACE_TERMINATING in self.causes

    def describe(self) -> str:
        return f"{self.object}: {self.message or self.reason} ({self.status})"


@dataclass
class ApplyResult:
    """What one apply pass changed or failed to change, for events and status."""

    applied: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    failed: list[ApplyFailure] = field(default_factory=list)
    live: dict[Ref, JSON] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.pruned)


async def apply_objects(
    kube: Kube,
    objects: Sequence[JSON],
    known: Mapping[Ref, JSON | None] | None = None,
) -> ApplyResult:
    """Apply each object that needs it (see `needs_apply`); namespaces go first, RoleBindings
    after the Roles they bind.

    `known` holds live objects the caller read in this same pass (None: it does not exist), so
    they are neither read twice nor compared with a different version than the one used.
    A refused apply is recorded in `failed` and the others still go out; when a cluster-scoped
    object (the Namespace) fails, the namespaced ones are not tried.
    """
    known = known or {}
    result = ApplyResult()
    for batch in _batches([stamped(o) for o in objects]):
        if any(f.object.startswith("Namespace/") for f in result.failed):
            break  # the Namespace was refused: nothing can go into it
        lives = await asyncio.gather(*(_live(kube, o, known) for o in batch))
        todo = []
        for obj, live in zip(batch, lives, strict=True):
            if live is not None:
                result.live[ref(obj)] = live  # replaced below if it is applied
            if live is None or needs_apply(live, obj):
                todo.append(obj)
        applied = await asyncio.gather(*(_apply(kube, o) for o in todo))
        for obj, outcome in zip(todo, applied, strict=True):
            if isinstance(outcome, ApplyFailure):
                result.failed.append(outcome)
            else:
                result.live[ref(obj)] = outcome
                result.applied.append(f"{obj['kind']}/{obj['metadata']['name']}")
    return result


def _batches(objects: list[JSON]) -> list[list[JSON]]:
    """Cluster-scoped objects (the Namespace), then namespaced ones, then RoleBindings.

    A RoleBinding to a Role that does not exist yet is refused (404: the API server checks that
    the binder holds the Role's permissions), so the Roles it binds go in the batch before.
    """
    first = [o for o in objects if not kind_of(o).namespaced]
    bindings = [o for o in objects if kind_of(o).namespaced and o["kind"] == "RoleBinding"]
    rest = [o for o in objects if kind_of(o).namespaced and o["kind"] != "RoleBinding"]
    return [b for b in (first, rest, bindings) if b]


async def _apply(kube: Kube, obj: JSON) -> JSON | ApplyFailure:
    try:
        return await kube.apply(obj)
    except KubeError as exc:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        message = scrub_secret_values(exc.message, obj)
        return ApplyFailure(name, exc.status, exc.reason, message, exc.causes)


def scrub_secret_values(message: str, obj: JSON) -> str:
    """The server's message without any value of a Secret we sent: it ends up in status."""
    if obj.get("kind") != "Secret":
        return message
    for encoded in (obj.get("data") or {}).values():
        if not isinstance(encoded, str):
            continue
        try:
            plain = base64.b64decode(encoded).decode()
        except ValueError:
            plain = ""
        for value in (encoded, plain):
            if len(value) >= 4:
                message = message.replace(value, "[REDACTED]")
    return message


async def _live(kube: Kube, obj: JSON, known: Mapping[Ref, JSON | None]) -> JSON | None:
    key = ref(obj)
    if key in known:
        return known[key]
    return await kube.peek(*key)


async def prune(
    kube: Kube,
    namespace: str,
    selector: str,
    kinds: Iterable[tuple[str, str]],
    keep: Iterable[JSON],
    result: ApplyResult | None = None,
) -> ApplyResult:
    """Delete objects of `kinds` in `namespace` that carry `selector` but are not in `keep`."""
    result = result or ApplyResult()
    wanted = {(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in keep}
    for api_version, kind in kinds:
        for live in await kube.list(api_version, kind, namespace, selector=selector):
            name = live["metadata"]["name"]
            if (api_version, kind, name) not in wanted and await kube.delete(
                api_version, kind, name, namespace
            ):
                result.pruned.append(f"{kind}/{name}")
    return result
