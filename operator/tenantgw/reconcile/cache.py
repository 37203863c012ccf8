"""What one operator process remembers between reconciles, to spare the API server and storage.

Nothing here changes what a reconcile decides, only how much it reads: the set of objects last
rendered (prune lists only run when it changes, and once after start) and the tenants whose
storage was verified recently (checked again after `storage_ttl`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class ReconcileCache:
    """Per-process memory of recent reconciles, keyed by tenant name."""

    storage_ttl: float = 300.0
    rendered: dict[str, frozenset[tuple[str, str, str]]] = field(default_factory=dict)
    storage_verified: dict[str, tuple[str, float]] = field(default_factory=dict)

    def needs_prune(self, tenant: str, objects: frozenset[tuple[str, str, str]]) -> bool:
        return self.rendered.get(tenant) != objects

    def pruned(self, tenant: str, objects: frozenset[tuple[str, str, str]]) -> None:
        self.rendered[tenant] = objects

    def storage_fresh(self, tenant: str, password: str | None) -> bool:
        seen = self.storage_verified.get(tenant)
        return bool(seen and password and seen[0] == password and seen[1] > time.monotonic())

    def storage_ok(self, tenant: str, password: str) -> None:
        self.storage_verified[tenant] = (password, time.monotonic() + self.storage_ttl)

    def forget(self, tenant: str) -> None:
        self.rendered.pop(tenant, None)
        self.storage_verified.pop(tenant, None)
