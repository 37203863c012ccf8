"""Keys the gateways write in their tenant's Redis prefix and the operator reads (a contract)."""

from __future__ import annotations

ENFORCEMENT_FIELDS = ("since", "until", "reason", "detail", "mode", "refused", "admitted")
"""Fields of the JSON summary of the last Redis outage a gateway of the tenant lived through."""


def enforcement_marker_key(tenant: str) -> str:
    """`t:<tenant>:enforcement`: the last Redis outage a gateway of `tenant` lived through."""
    return f"t:{tenant}:enforcement"
