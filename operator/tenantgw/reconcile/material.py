"""Secret material of a tenant: generated once, read back from its Secrets, rotated when due.

`read_material` is the observe step's read of those Secrets; `plan_material` decides from them,
without I/O, which values to serve (new ones come from the caller's key generator).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tenantgw.api import Tenant
from tenantgw.kube.client import JSON, Kube
from tenantgw.render.config import (
    ISSUED_AT_ANNOTATION,
    PREVIOUS_SHA256_ANNOTATION,
    PREVIOUS_VALID_UNTIL_ANNOTATION,
)
from tenantgw.render.inputs import KeyState
from tenantgw.render.names import (
    API_KEY_FIELD,
    GATEWAY_NAME,
    MASTER_KEY_FIELD,
    POSTGRES_DSN_FIELD,
    REDIS_URL_FIELD,
    key_secret_name,
)

KEY_PREFIX = "sk-tgw-"


@dataclass(frozen=True)
class Material:
    """The master key, the plain tenant keys and their rotation state, by key name."""

    master_key: str
    keys: dict[str, str]
    key_state: dict[str, KeyState] = field(default_factory=dict)
    rotated: list[str] = field(default_factory=list)
    postgres_dsn: str | None = None
    redis_url: str | None = None
    live: dict[tuple[str, str, str, str | None], JSON | None] = field(default_factory=dict)
    """The Secrets as read for this material (None: missing), for the apply that follows."""


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _decode(secret: dict[str, Any] | None, name: str) -> str | None:
    if not secret:
        return None
    data = secret.get("data")
    if not isinstance(data, dict) or not isinstance(data.get(name), str):
        return None
    return base64.b64decode(data[name]).decode()


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def next_key_state(
    plain: str | None,
    notes: dict[str, str],
    created: datetime | None,
    rotate_after_days: int | None,
    grace: timedelta,
    now: datetime,
    generate: Callable[[], str] = new_key,
) -> tuple[str, KeyState, bool]:
    """The key value to serve, its state, and whether it was rotated just now.

    A key older than `rotate_after_days` gets a new value; the old one stays valid for `grace`
    and is then retired. Pure, so rotation is tested without waiting days.
    """
    if plain is None:
        return generate(), KeyState(issued_at=now), False
    issued = _time(notes.get(ISSUED_AT_ANNOTATION)) or created or now
    prev_sha = notes.get(PREVIOUS_SHA256_ANNOTATION)
    prev_until = _time(notes.get(PREVIOUS_VALID_UNTIL_ANNOTATION))
    if rotate_after_days is not None and now >= issued + timedelta(days=rotate_after_days):
        old = hashlib.sha256(plain.encode()).hexdigest()
        return (
            generate(),
            KeyState(now, previous_sha256=old, previous_valid_until=now + grace),
            True,
        )
    if prev_until is None or now >= prev_until:
        prev_sha, prev_until = None, None
    return plain, KeyState(issued, previous_sha256=prev_sha, previous_valid_until=prev_until), False


SecretRef = tuple[str, str, str, str | None]


def material_refs(tenant: Tenant) -> list[SecretRef]:
    """The Secrets the tenant's material lives in: the gateway's, then one per key."""
    ns: str | None = tenant.namespace_name()
    return [("v1", "Secret", GATEWAY_NAME, ns)] + [
        ("v1", "Secret", key_secret_name(spec.name), ns) for spec in tenant.spec.keys
    ]


async def read_material(kube: Kube, tenant: Tenant) -> dict[SecretRef, JSON | None]:
    """The live Secrets of `material_refs` (None: missing)."""
    return {ref: await kube.get(*ref) for ref in material_refs(tenant)}


def stored_endpoints(
    tenant: Tenant, live: Mapping[SecretRef, JSON | None]
) -> tuple[str | None, str | None]:
    """The PostgreSQL DSN and Redis URL the gateway's Secret holds now."""
    gateway = live.get(("v1", "Secret", GATEWAY_NAME, tenant.namespace_name()))
    return _decode(gateway, POSTGRES_DSN_FIELD), _decode(gateway, REDIS_URL_FIELD)


def plan_material(
    tenant: Tenant,
    live: Mapping[SecretRef, JSON | None],
    *,
    grace: timedelta,
    now: datetime,
    generate: Callable[[], str] = new_key,
) -> Material:
    """Existing keys are kept; missing ones are generated; keys due for rotation are rotated.

    Pure: `live` holds the Secrets of `material_refs` as read, `generate` makes new key values.
    """
    ns = tenant.namespace_name()
    gateway = live.get(("v1", "Secret", GATEWAY_NAME, ns))
    master = _decode(gateway, MASTER_KEY_FIELD) or generate()
    keys: dict[str, str] = {}
    states: dict[str, KeyState] = {}
    rotated: list[str] = []
    for spec in tenant.spec.keys:
        existing = live.get(("v1", "Secret", key_secret_name(spec.name), ns))
        meta = (existing or {}).get("metadata", {})
        value, state, was_rotated = next_key_state(
            _decode(existing, API_KEY_FIELD),
            meta.get("annotations") or {},
            _time(meta.get("creationTimestamp")),
            spec.rotate_after_days,
            grace,
            now,
            generate,
        )
        keys[spec.name], states[spec.name] = value, state
        if was_rotated:
            rotated.append(spec.name)
    postgres_dsn, redis_url = stored_endpoints(tenant, live)
    return Material(
        master_key=master,
        keys=keys,
        key_state=states,
        rotated=rotated,
        postgres_dsn=postgres_dsn,
        redis_url=redis_url,
        live=dict(live),
    )
