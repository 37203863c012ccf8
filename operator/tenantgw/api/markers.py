"""Keys the gateways write in their tenant's Redis prefix and the operator reads (a contract).

Every Redis key of a tenant starts with `key_prefix(tenant)`, `t:{<tenant>}:`; the tenant's
Redis ACL user may touch nothing else. The braces are a Redis Cluster hash tag: every key of a
tenant hashes to the same slot, so a script may touch any of them (all declared in KEYS) and
runs unchanged on a Redis Cluster. (Docs write the prefix `t:{<tenant>}:`; tenant names are
DNS labels, never braces.)
"""

from __future__ import annotations

ENFORCEMENT_FIELDS = ("since", "until", "reason", "detail", "mode", "refused", "admitted")
"""Fields of the JSON summary of the last Redis outage a gateway of the tenant lived through."""


def key_prefix(tenant: str) -> str:
    """`t:{<tenant>}:`: the prefix of every Redis key of `tenant` (its hash tag in braces)."""
    return f"t:{{{tenant}}}:"


def tenant_key(tenant: str, *parts: str) -> str:
    """`t:{<tenant>}:<part>:<part>...`: a Redis key of `tenant`."""
    return key_prefix(tenant) + ":".join(parts)


def enforcement_marker_key(tenant: str) -> str:
    """`t:{<tenant>}:enforcement`: the last Redis outage a gateway of `tenant` lived through."""
    return tenant_key(tenant, "enforcement")
