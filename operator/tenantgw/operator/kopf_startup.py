"""kopf's start-up wait for its indexes, made linear in the number of objects.

kopf runs no handler before every index is filled: each object of the initial listing gets a
toggle in one set (`operator_indexed`), dropped once the object is indexed, and each object's
worker then waits on the set's condition until no toggle is left. kopf 1.45 wakes every waiter
whenever a toggle is added or dropped, so with n objects it makes about n² wake-ups, each
taking the condition's lock in turn. At a thousand tenants (some four to fifteen thousand
objects of the kinds the operator indexes) that stalled the operator's start for tens of
seconds to minutes before its first reconcile, all of it CPU on the event loop.

The waiters only wait for the set's state (on or off) to change, so the set here wakes them only
when adding or dropping a toggle changes it. Toggles switched on or off one by one (kopf's
peering pauses) notify as before. `install()` patches kopf's `ToggleSet` in place, once, and
only if the class still looks as described; otherwise it leaves kopf alone and says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from kopf._cogs.aiokits import aiotoggles

log = logging.getLogger(__name__)

_MARK = "_tenantgw_linear"


async def _make_toggle(
    self: aiotoggles.ToggleSet, __val: bool = False, *, name: str | None = None
) -> aiotoggles.Toggle:
    toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
    async with self._condition:
        before = self.is_on()
        self._toggles.add(toggle)
        if self.is_on() != before:
            self._condition.notify_all()
    return toggle


async def _drop_toggle(self: aiotoggles.ToggleSet, toggle: aiotoggles.Toggle) -> None:
    async with self._condition:
        before = self.is_on()
        self._toggles.discard(toggle)
        if self.is_on() != before:
            self._condition.notify_all()


async def _drop_toggles(self: aiotoggles.ToggleSet, toggles: Iterable[aiotoggles.Toggle]) -> None:
    async with self._condition:
        before = self.is_on()
        self._toggles.difference_update(toggles)
        if self.is_on() != before:
            self._condition.notify_all()


def install() -> bool:
    """Patch kopf's ToggleSet; True when it is (or already was) patched."""
    cls: Any = aiotoggles.ToggleSet
    if getattr(cls, _MARK, False):
        return True
    probe = cls(all)
    if not all(hasattr(probe, a) for a in ("_condition", "_toggles", "is_on")) or not all(
        hasattr(cls, m) for m in ("make_toggle", "drop_toggle", "drop_toggles")
    ):
        log.warning(
            "kopf's ToggleSet is not the one tenantgw.operator.kopf_startup expects: start-up "
            "with many objects may be slow"
        )
        return False
    cls.make_toggle = _make_toggle
    cls.drop_toggle = _drop_toggle
    cls.drop_toggles = _drop_toggles
    setattr(cls, _MARK, True)
    return True
