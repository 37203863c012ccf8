"""Apply a set of rendered objects with server-side apply, writing only what differs, and prune."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tenantgw.kube.client import JSON, Kube, kind_of


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


def _comparable(obj: JSON) -> JSON:
    """The part of a rendered object that is compared with the live one."""
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    meta = dict(body.get("metadata", {}))
    meta.pop("namespace", None)
    body["metadata"] = meta
    return body


def ref(obj: JSON) -> tuple[str, str, str, str | None]:
    meta = obj["metadata"]
    return (obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))


@dataclass
class ApplyResult:
    """What one apply pass changed, for events and status."""

    applied: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    live: dict[tuple[str, str, str, str | None], JSON] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.pruned)


async def apply_objects(
    kube: Kube,
    objects: Sequence[JSON],
    known: Mapping[tuple[str, str, str, str | None], JSON | None] | None = None,
) -> ApplyResult:
    """Apply each object unless the live one already contains it; namespaces go first.

    `known` holds live objects the caller read in this same pass (None: it does not exist), so
    they are neither read twice nor compared with a different version than the one used.
    """
    known = known or {}
    result = ApplyResult()
    first = [o for o in objects if not kind_of(o).namespaced]
    rest = [o for o in objects if kind_of(o).namespaced]
    for batch in (first, rest):
        lives = await asyncio.gather(*(_live(kube, o, known) for o in batch))
        todo = []
        for obj, live in zip(batch, lives, strict=True):
            if live is not None and contains(live, _comparable(obj)):
                result.live[ref(obj)] = live
            else:
                todo.append(obj)
        applied = await asyncio.gather(*(kube.apply(o) for o in todo))
        for obj, live in zip(todo, applied, strict=True):
            result.live[ref(obj)] = live
            result.applied.append(f"{obj['kind']}/{obj['metadata']['name']}")
    return result


async def _live(
    kube: Kube, obj: JSON, known: Mapping[tuple[str, str, str, str | None], JSON | None]
) -> JSON | None:
    key = ref(obj)
    if key in known:
        return known[key]
    return await kube.get(*key)


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
