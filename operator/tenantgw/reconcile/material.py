"""Secret material of a tenant: generated once, then read back from its Secrets and kept."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

from tenantgw.api import Tenant
from tenantgw.kube.client import Kube

GATEWAY_SECRET = "gateway"  # noqa: S105 (a Secret's name)
KEY_SECRET_PREFIX = "gateway-key-"  # noqa: S105 (a Secret name prefix)
KEY_PREFIX = "sk-tgw-"


@dataclass(frozen=True)
class Material:
    """The master key and the plain tenant keys, by key name."""

    master_key: str
    keys: dict[str, str]
    postgres_dsn: str | None = None
    redis_url: str | None = None


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _decode(secret: dict[str, object] | None, field: str) -> str | None:
    if not secret:
        return None
    data = secret.get("data")
    if not isinstance(data, dict) or not isinstance(data.get(field), str):
        return None
    return base64.b64decode(data[field]).decode()


async def load_material(kube: Kube, tenant: Tenant) -> Material:
    """Existing keys are never overwritten; missing ones are generated."""
    ns = tenant.namespace_name()
    gateway = await kube.get("v1", "Secret", GATEWAY_SECRET, ns)
    master = _decode(gateway, "masterKey") or new_key()
    keys: dict[str, str] = {}
    for spec in tenant.spec.keys:
        existing = await kube.get("v1", "Secret", KEY_SECRET_PREFIX + spec.name, ns)
        keys[spec.name] = _decode(existing, "apiKey") or new_key()
    return Material(
        master_key=master,
        keys=keys,
        postgres_dsn=_decode(gateway, "postgresDsn"),
        redis_url=_decode(gateway, "redisUrl"),
    )
