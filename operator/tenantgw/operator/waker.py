"""Coalesce wake-ups: at most one reconcile per tenant runs, and one more is queued behind it."""

from __future__ import annotations

import asyncio
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
        self._stopped: set[str] = set()

    def allow(self, name: str) -> None:
        """Let `name` be reconciled again (a Tenant of that name exists)."""
        self._stopped.discard(name)

    async def stop(self, name: str) -> None:
        """Refuse new reconciles of `name` and wait for a running one to finish."""
        self._stopped.add(name)
        while (state := self._states.get(name)) is not None and state.running:
            state.again = False
            await asyncio.sleep(0.05)

    async def wake(self, name: str) -> None:
        if name in self._stopped:
            return
        state = self._states.setdefault(name, _State())
        if state.running:
            state.again = True
            return
        state.running = True
        try:
            while True:
                state.again = False
                await self._reconcile(name)
                if not state.again or name in self._stopped:
                    break
        finally:
            state.running = False
            if not state.again:
                self._states.pop(name, None)
