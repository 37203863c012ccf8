"""Reads served from the operator's watch caches instead of the API server.

The operator watches every kind it manages (kopf keeps an index of each, filled as the watches
list and kept current by their events). `LiveCache` answers `Kube.get()` and `Kube.list()` for
those kinds from the indexes, so a reconcile of a tenant whose objects are all in place reads
nothing from the API server.

A watch lags behind the operator's own writes by the time its event takes to arrive: a
reconcile that starts in between would see the version before the write and write again. So
every write's answer (or, for a delete, a tombstone) is remembered until the index has caught up
with it, compared by resourceVersion, and a read returns the newer of the two.

Watches of kinds outside tenantgw's API group are label-selected (operator/handlers.py), so an
object missing from the cache may still exist without our label: `get()` then asks the API
server (a foreign namespace, a provider Secret that is not labelled), while the apply path
(`peek()`) treats it as missing and applies, which server-side apply turns into an update.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

JSON = dict[str, Any]
Ref = tuple[str, str, str, str | None]

MISS: Final = object()
"""What `LiveCache.lookup` answers for a kind it does not hold, or a label-selected kind's
object it has not seen."""


class Index(Protocol):
    """What the cache needs of a kopf index: the objects stored under one key."""

    def get(self, key: str, default: Any = ..., /) -> Any: ...


SHARED_STRING_MAX: Final = 64
"""Strings up to this length are interned in cached objects (see `trimmed`)."""


def _compact(value: Any) -> Any:
    if isinstance(value, dict):
        return {sys.intern(k): _compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    if isinstance(value, str) and len(value) <= SHARED_STRING_MAX:
        return sys.intern(value)
    return value


def _unmanaged(body: Mapping[str, Any]) -> JSON:
    """All of an object but its managedFields (half its size); shares the rest with `body`."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return {**body, "metadata": meta}


def trimmed(body: Mapping[str, Any]) -> JSON:
    """What the index keeps of an object: all of it but managedFields, with its keys and
    short strings interned.

    A watch event's JSON gets fresh string objects for every key and value; across a
    thousand tenants the same keys, labels, images and defaults would be held a thousand
    times, and strings are half of what the cache holds. Interned, each is held once: a
    tenant's objects take about half the memory (tests/unit/test_live_cache.py), for a few
    milliseconds of CPU per tenant at its first reconcile (docs/benchmarks.md)."""
    compact: JSON = _compact(_unmanaged(body))
    return compact


def index_key(namespace: str | None, name: str) -> str:
    """Namespaced objects are indexed by namespace, cluster-scoped ones by name."""
    return namespace if namespace else name


def _version(obj: Mapping[str, Any]) -> int | None:
    try:
        return int(obj.get("metadata", {}).get("resourceVersion", ""))
    except ValueError:
        return None


def _matches(obj: Mapping[str, Any], selector: str) -> bool:
    """Equality selectors only (`a=b,c=d`): the ones the operator uses."""
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


@dataclass
class _Written:
    version: int
    """The index's copy is current once its resourceVersion is at least this."""
    body: JSON | None
    """What the write answered; None: deleted."""
    at: float = field(default_factory=time.monotonic)


@dataclass
class LiveCache:
    """The watch caches of the kinds in `indexes`, with the operator's own recent writes."""

    indexes: Mapping[tuple[str, str], Index]
    """(apiVersion, kind) → its index, keyed by `index_key`."""
    selected: frozenset[tuple[str, str]] = frozenset()
    """Kinds whose watch is label-selected: a miss is not proof that the object is absent."""
    horizon: float = 60.0
    """Seconds after which a remembered write is dropped (its watch event has long arrived)."""
    written: dict[Ref, _Written] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    _writes: int = 0

    def holds(self, api_version: str, kind: str) -> bool:
        return (api_version, kind) in self.indexes

    def _indexed(self, api_version: str, kind: str, key: str) -> Iterable[JSON]:
        found: Iterable[JSON] = self.indexes[(api_version, kind)].get(key, ())
        return found

    def _newer(self, ref: Ref, indexed: JSON | None) -> JSON | None:
        mine = self.written.get(ref)
        if mine is None:
            return indexed
        version = _version(indexed) if indexed is not None else None
        if indexed is not None and (version is None or version >= mine.version):
            del self.written[ref]  # the watch has caught up
            return indexed
        return mine.body

    def lookup(self, api_version: str, kind: str, name: str, namespace: str | None) -> Any:
        """The object (None: known to be gone), or MISS when the cache cannot say."""
        if not self.holds(api_version, kind):
            return MISS
        ref = (api_version, kind, name, namespace)
        indexed = next(
            (
                o
                for o in self._indexed(api_version, kind, index_key(namespace, name))
                if o["metadata"]["name"] == name
            ),
            None,
        )
        found = self._newer(ref, indexed)
        if found is None and ref not in self.written and (api_version, kind) in self.selected:
            return MISS
        return found

    def list(
        self, api_version: str, kind: str, namespace: str, selector: str = ""
    ) -> list[JSON] | None:
        """The objects of a namespace matching `selector`; None for a kind it does not hold.

        Complete for a label-selected kind only when `selector` includes its watch's selector.
        """
        if not self.holds(api_version, kind):
            return None
        by_name = {o["metadata"]["name"]: o for o in self._indexed(api_version, kind, namespace)}
        for ref in [r for r in self.written if r[:2] == (api_version, kind) and r[3] == namespace]:
            by_name.setdefault(ref[2], {})
        out = []
        for name, indexed in by_name.items():
            obj = self._newer((api_version, kind, name, namespace), indexed or None)
            if obj is not None and _matches(obj, selector):
                out.append(obj)
        return out

    def observed(self, event: str | None, body: Mapping[str, Any]) -> bool:
        """A watch event arrived: a remembered write it has caught up with is dropped, and so
        is one of an object it reports deleted (else the write would bring the object back).

        True when the event says nothing the operator does not know: it brings the very
        version its own write answered, or an older one. Such an echo needs no reconcile.
        """
        meta = body.get("metadata") or {}
        ref = (str(body.get("apiVersion")), str(body.get("kind")), str(meta.get("name")),
               meta.get("namespace"))  # fmt: skip
        mine = self.written.get(ref)
        if mine is None:
            return False
        version = _version(body)
        if version is None or version >= mine.version or event == "DELETED":
            del self.written[ref]
        return (
            mine.body is not None
            and event != "DELETED"
            and version is not None
            and version <= mine.version
        )

    def wrote(self, body: Mapping[str, Any]) -> None:
        """Remember what a write answered, until the watch brings that version."""
        meta = body.get("metadata") or {}
        version = _version(body)
        kind_key = (str(body.get("apiVersion")), str(body.get("kind")))
        if version is None or not self.holds(*kind_key):
            return
        ref = (*kind_key, str(meta.get("name")), meta.get("namespace"))
        # Not interned: held only until the watch brings the same version, moments later.
        self.written[ref] = _Written(version, _unmanaged(body), self.clock())
        self._sweep()

    def deleted(self, api_version: str, kind: str, name: str, namespace: str | None) -> None:
        """Remember that an object is gone, until the watch says so too."""
        if not self.holds(api_version, kind):
            return
        ref = (api_version, kind, name, namespace)
        before = self.lookup(api_version, kind, name, namespace)
        version = _version(before) if isinstance(before, dict) else None
        # A recreated object has a resourceVersion past the deleted one's.
        self.written[ref] = _Written((version or 0) + 1, None, self.clock())
        self._sweep()

    def _sweep(self) -> None:
        self._writes += 1
        if self._writes % 256:
            return
        oldest = self.clock() - self.horizon
        for ref in [r for r, w in self.written.items() if w.at < oldest]:
            del self.written[ref]
