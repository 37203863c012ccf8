"""Coalesce wake-ups: at most one reconcile per tenant runs, and one more is queued behind it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass
class _State:
    running: bool = False
    again: bool = False


class Waker:
    """Runs `reconcile(name)`; wake-ups that arrive while it runs fold into one more run.

    A burst of events (a Tenant and its five ModelAliases at startup) costs two reconciles, not
    six, and two reconciles of one tenant never interleave.
    """

    def __init__(self, reconcile: Callable[[str], Awaitable[None]]) -> None:
        self._reconcile = reconcile
        self._states: dict[str, _State] = {}

    async def wake(self, name: str) -> None:
        state = self._states.setdefault(name, _State())
        if state.running:
            state.again = True
            return
        state.running = True
        try:
            while True:
                state.again = False
                await self._reconcile(name)
                if not state.again:
                    break
        finally:
            state.running = False
            if not state.again:
                self._states.pop(name, None)
