"""Secret material of a tenant: generated once, read back from its Secrets, rotated when due."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
) -> tuple[str, KeyState, bool]:
    """The key value to serve, its state, and whether it was rotated just now.

    A key older than `rotate_after_days` gets a new value; the old one stays valid for `grace`
    and is then retired. Pure, so rotation is tested without waiting days.
    """
    if plain is None:
        return new_key(), KeyState(issued_at=now), False
    issued = _time(notes.get(ISSUED_AT_ANNOTATION)) or created or now
    prev_sha = notes.get(PREVIOUS_SHA256_ANNOTATION)
    prev_until = _time(notes.get(PREVIOUS_VALID_UNTIL_ANNOTATION))
    if rotate_after_days is not None and now >= issued + timedelta(days=rotate_after_days):
        old = hashlib.sha256(plain.encode()).hexdigest()
        return new_key(), KeyState(now, previous_sha256=old, previous_valid_until=now + grace), True
    if prev_until is None or now >= prev_until:
        prev_sha, prev_until = None, None
    return plain, KeyState(issued, previous_sha256=prev_sha, previous_valid_until=prev_until), False


async def load_material(
    kube: Kube, tenant: Tenant, *, grace: timedelta = timedelta(hours=24)
) -> Material:
    """Existing keys are kept; missing ones are generated; keys due for rotation are rotated."""
    ns = tenant.namespace_name()
    now = datetime.now(UTC).replace(microsecond=0)
    live: dict[tuple[str, str, str, str | None], JSON | None] = {}
    gateway = await kube.get("v1", "Secret", GATEWAY_NAME, ns)
    live[("v1", "Secret", GATEWAY_NAME, ns)] = gateway
    master = _decode(gateway, MASTER_KEY_FIELD) or new_key()
    keys: dict[str, str] = {}
    states: dict[str, KeyState] = {}
    rotated: list[str] = []
    for spec in tenant.spec.keys:
        existing = await kube.get("v1", "Secret", key_secret_name(spec.name), ns)
        live[("v1", "Secret", key_secret_name(spec.name), ns)] = existing
        meta = (existing or {}).get("metadata", {})
        value, state, was_rotated = next_key_state(
            _decode(existing, API_KEY_FIELD),
            meta.get("annotations") or {},
            _time(meta.get("creationTimestamp")),
            spec.rotate_after_days,
            grace,
            now,
        )
        keys[spec.name], states[spec.name] = value, state
        if was_rotated:
            rotated.append(spec.name)
    return Material(
        master_key=master,
        keys=keys,
        key_state=states,
        rotated=rotated,
        postgres_dsn=_decode(gateway, POSTGRES_DSN_FIELD),
        redis_url=_decode(gateway, REDIS_URL_FIELD),
        live=live,
    )
