"""Reads from the watch caches: the newer of the index and the operator's own last write wins,
a delete hides the object until the watch drops it, and a label-selected kind's miss is not
taken for proof that the object is absent."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenantgw.kube.cache import MISS, LiveCache, index_key, trimmed

pytestmark = pytest.mark.unit

CM = ("v1", "ConfigMap")
ALIAS = ("tenantgw.io/v1alpha1", "ModelAlias")


def obj(kind: tuple[str, str], name: str, rv: int, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": kind[0],
        "kind": kind[1],
        "metadata": {"name": name, "namespace": "tenant-a", "resourceVersion": str(rv)},
        **extra,
    }


def cache(*objects: dict[str, Any]) -> tuple[LiveCache, dict[tuple[str, str], dict[str, list]]]:
    indexes: dict[tuple[str, str], dict[str, list]] = {CM: {}, ALIAS: {}}
    for o in objects:
        key = (o["apiVersion"], o["kind"])
        meta = o["metadata"]
        indexes[key].setdefault(index_key(meta["namespace"], meta["name"]), []).append(o)
    return LiveCache(indexes=indexes, selected=frozenset({CM})), indexes


def test_a_write_is_read_back_until_the_watch_brings_that_version() -> None:
    c, idx = cache(obj(CM, "gateway-config", 10, data={"v": "old"}))
    c.wrote(obj(CM, "gateway-config", 12, data={"v": "new"}))
    assert c.lookup(*CM, "gateway-config", "tenant-a")["data"] == {"v": "new"}
    idx[CM]["tenant-a"] = [obj(CM, "gateway-config", 12, data={"v": "new"})]
    assert c.lookup(*CM, "gateway-config", "tenant-a")["data"] == {"v": "new"}
    assert c.written == {}, "the remembered write outlived the watch catching up"
    # A later change by someone else shows as soon as the watch has it.
    idx[CM]["tenant-a"] = [obj(CM, "gateway-config", 15, data={"v": "edited"})]
    assert c.lookup(*CM, "gateway-config", "tenant-a")["data"] == {"v": "edited"}


def test_a_deleted_object_is_gone_at_once_and_a_recreated_one_shows() -> None:
    c, idx = cache(obj(ALIAS, "fast-code", 7))
    c.deleted(*ALIAS, "fast-code", "tenant-a")
    assert c.lookup(*ALIAS, "fast-code", "tenant-a") is None
    assert c.list(*ALIAS, "tenant-a") == []
    idx[ALIAS]["tenant-a"] = [obj(ALIAS, "fast-code", 9)]  # created again
    assert c.lookup(*ALIAS, "fast-code", "tenant-a")["metadata"]["resourceVersion"] == "9"


def test_a_created_object_is_listed_before_its_watch_event() -> None:
    c, _ = cache()
    c.wrote(obj(ALIAS, "fast-code", 3))
    assert [o["metadata"]["name"] for o in c.list(*ALIAS, "tenant-a")] == ["fast-code"]


def test_a_label_selected_kind_cannot_say_an_object_is_missing() -> None:
    c, _ = cache()
    assert c.lookup(*CM, "not-ours", "tenant-a") is MISS
    assert c.lookup(*ALIAS, "nothing", "tenant-a") is None  # watched whole: truly absent
    assert c.lookup("apps/v1", "Deployment", "gateway", "tenant-a") is MISS  # not held


def test_list_filters_by_equality_selectors() -> None:
    labelled = obj(CM, "a", 1)
    labelled["metadata"]["labels"] = {"x": "1", "y": "2"}
    c, _ = cache(labelled, obj(CM, "b", 2))
    assert [o["metadata"]["name"] for o in c.list(*CM, "tenant-a", "x=1,y=2")] == ["a"]
    assert c.list(*CM, "tenant-a", "x=1,y=3") == []


def test_the_cache_keeps_no_managed_fields() -> None:
    body = obj(CM, "a", 1)
    body["metadata"]["managedFields"] = [{"manager": "x"}]
    assert "managedFields" not in trimmed(body)["metadata"]
    assert "managedFields" in body["metadata"]


GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "minimal"


def _tenant_objects(name: str) -> list[dict[str, Any]]:
    """A rendered tenant's objects as a watch brings them: fresh strings from JSON."""
    out = []
    for path in sorted(GOLDEN.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc:
                out.append(json.loads(json.dumps(doc).replace("solo", name)))
    return out


def _size(value: Any, seen: set[int]) -> int:
    """Bytes of `value` and what it holds, not counting anything already in `seen`."""
    if id(value) in seen:
        return 0
    seen.add(id(value))
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        size += sum(_size(k, seen) + _size(v, seen) for k, v in value.items())
    elif isinstance(value, list):
        size += sum(_size(v, seen) for v in value)
    return size


def test_cached_objects_share_their_keys_and_short_strings_across_tenants() -> None:
    first, second = _tenant_objects("one"), _tenant_objects("two")
    kept_first, kept_second = [trimmed(o) for o in first], [trimmed(o) for o in second]
    assert kept_first == first  # the same content
    assert kept_second == second
    deployment = next(o for o in kept_second if o["kind"] == "Deployment")
    other = next(o for o in kept_first if o["kind"] == "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image is other["spec"]["template"]["spec"]["containers"][0]["image"]

    def marginal(objects: list[dict[str, Any]], before: list[dict[str, Any]]) -> int:
        seen: set[int] = set()
        for o in before:
            _size(o, seen)
        return sum(_size(o, seen) for o in objects)

    plain, shared = marginal(second, first), marginal(kept_second, kept_first)
    assert shared < plain * 0.6, (shared, plain)  # a second tenant costs under 60 %


def test_remembered_writes_are_dropped_after_the_horizon() -> None:
    now = [0.0]
    c, _ = cache()
    c.clock = lambda: now[0]
    c.horizon = 60
    c.wrote(obj(CM, "old", 1))
    now[0] = 120
    for i in range(300):
        c.wrote(obj(CM, f"new-{i}", i + 2))
    assert ("v1", "ConfigMap", "old", "tenant-a") not in c.written


def test_an_object_deleted_after_our_write_does_not_come_back() -> None:
    """We wrote its status; then it was deleted and its watch dropped it."""
    c, idx = cache(obj(ALIAS, "reasoning", 4))
    c.wrote(obj(ALIAS, "reasoning", 5, status={"conditions": []}))
    idx[ALIAS]["tenant-a"] = []
    c.observed("DELETED", obj(ALIAS, "reasoning", 6))
    assert c.lookup(*ALIAS, "reasoning", "tenant-a") is None
    assert c.list(*ALIAS, "tenant-a") == []


def test_an_event_that_caught_up_drops_the_remembered_write() -> None:
    c, _ = cache()
    c.wrote(obj(ALIAS, "fast-code", 5))
    c.observed("MODIFIED", obj(ALIAS, "fast-code", 4))
    assert c.written, "an older event dropped a newer write"
    c.observed("MODIFIED", obj(ALIAS, "fast-code", 5))
    assert c.written == {}


def test_only_the_echo_of_our_own_write_is_called_an_echo() -> None:
    """The watch event of our write's version wakes nothing; anyone else's change does."""
    c, _ = cache()
    c.wrote(obj(CM, "gateway-config", 7))
    assert c.observed("MODIFIED", obj(CM, "gateway-config", 6)), "an older version is old news"
    assert c.observed("MODIFIED", obj(CM, "gateway-config", 7)), "our own version"
    # The remembered write is gone: the next change (someone's edit) is news.
    assert not c.observed("MODIFIED", obj(CM, "gateway-config", 8))
    c.wrote(obj(CM, "gateway-config", 9))
    assert not c.observed("MODIFIED", obj(CM, "gateway-config", 10)), "an edit after our write"
    c.wrote(obj(CM, "other", 11))
    assert not c.observed("DELETED", obj(CM, "other", 11)), "a deletion is always news"
    assert not c.observed("MODIFIED", obj(CM, "never-written", 3))


def test_an_object_we_deleted_is_no_echo_when_it_comes_back() -> None:
    c, _ = cache(obj(CM, "gone", 4))
    c.deleted(*CM, "gone", "tenant-a")
    assert not c.observed("ADDED", obj(CM, "gone", 9))
    assert c.written == {}
