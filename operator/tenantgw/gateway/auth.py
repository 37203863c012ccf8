"""LiteLLM `custom_auth`: tenant keys from the keys file, checked by SHA-256.

LiteLLM calls `user_api_key_auth(request=..., api_key=...)` with the bare key (it strips
`Bearer ` and reads `x-api-key`), or None when the client sent none. It also calls it with the
master key, which is accepted as the tenant's admin. Every refusal is a `ProxyException`:
anything else raised here would reach the client as a bare text 500.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tenantgw.api.tenant import KEY_SECRET_PREFIX
from tenantgw.gateway import files
from tenantgw.gateway.errors import (
    AuthenticationError,
    GatewayError,
    ServiceUnavailableError,
    proxy_exception,
)

log = logging.getLogger("tenantgw.gateway")

MASTER_KEY_ENV = "LITELLM_MASTER_KEY"
ADMIN_USER = "admin"
_KEY_HEADERS = "'x-api-key: <key>' or 'Authorization: Bearer <key>'"


@dataclass(frozen=True)
class Identity:
    """Who a request is: a tenant key by name, or the tenant's admin (master key)."""

    tenant: str
    key_name: str
    key_hash: str
    admin: bool = False


def key_digest(key: str) -> str:
    """Hex SHA-256 of a key, as keys.json stores it."""
    return hashlib.sha256(key.encode()).hexdigest()


def _key_secret_hint(namespace: str) -> str:
    return f"Secret {KEY_SECRET_PREFIX}<name> in namespace {namespace}"


def authenticate(
    api_key: str | None,
    *,
    tenant: str,
    namespace: str,
    keys: Sequence[files.KeyEntry] | None,
    keys_error: str | None = None,
    master_key: str | None = None,
    now: datetime | None = None,
) -> Identity:
    """The identity of `api_key`; raises a GatewayError telling the client what to do.

    `keys` is None when the keys file could not be loaded (`keys_error` says why): the master
    key still works then, tenant keys get a 503 rather than a misleading 401.
    """
    hint = _key_secret_hint(namespace)
    key = (api_key or "").strip()
    if not key:
        raise AuthenticationError(
            f"missing API key for tenant {tenant}: send {_KEY_HEADERS} with the key from {hint}"
        )
    digest = key_digest(key)
    if master_key and hmac.compare_digest(digest, key_digest(master_key)):
        return Identity(tenant=tenant, key_name=ADMIN_USER, key_hash=digest, admin=True)
    if keys is None:
        raise ServiceUnavailableError(
            f"tenant {tenant}'s keys are not loaded ({keys_error or 'no keys file'}): "
            "the gateway is misconfigured, ask your platform team to check it"
        )
    found: files.KeyEntry | None = None
    for entry in keys:  # compare with every entry: the time taken does not reveal a match
        if hmac.compare_digest(digest, entry.sha256) and found is None:
            found = entry
    if found is None:
        raise AuthenticationError(f"invalid API key for tenant {tenant}: use the key from {hint}")
    if found.expired(now):
        assert found.expires_at is not None
        when = found.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise AuthenticationError(
            f"API key {found.name!r} of tenant {tenant} expired at {when}: use the new key from "
            f"Secret {KEY_SECRET_PREFIX}{found.name} in namespace {namespace} once it is rotated"
        )
    return Identity(tenant=tenant, key_name=found.name, key_hash=digest)


def identify(api_key: str | None) -> Identity:
    """`authenticate` against this process's keys file, tenant and master key."""
    tenant = files.tenant_name()
    namespace = f"tenant-{tenant}"
    with contextlib.suppress(files.FileError):  # only messages name it; auth works without
        namespace = files.current_rules().namespace_name()
    keys: tuple[files.KeyEntry, ...] | None
    keys_error = None
    try:
        keys = files.current_keys()
    except files.FileError as exc:
        keys, keys_error = None, str(exc)
    return authenticate(
        api_key,
        tenant=tenant,
        namespace=namespace,
        keys=keys,
        keys_error=keys_error,
        master_key=os.environ.get(MASTER_KEY_ENV),
    )


def user_auth(identity: Identity) -> Any:
    """The LiteLLM UserAPIKeyAuth of an identity (the key hash, never the key, in api_key)."""
    from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth

    role = LitellmUserRoles.PROXY_ADMIN if identity.admin else LitellmUserRoles.INTERNAL_USER
    return UserAPIKeyAuth(
        api_key=identity.key_hash,
        token=identity.key_hash,
        key_name=identity.key_name,
        key_alias=identity.key_name,
        user_id=identity.key_name,
        team_id=identity.tenant,
        team_alias=identity.tenant,
        user_role=role,
        metadata={"tenant": identity.tenant, "key": identity.key_name},
    )


async def user_api_key_auth(request: Any, api_key: str | None) -> Any:
    """LiteLLM custom_auth entry point (general_settings.custom_auth)."""
    try:
        return user_auth(identify(api_key))
    except GatewayError as exc:
        raise proxy_exception(exc) from None
    except Exception:
        log.exception("tenantgw auth failed unexpectedly")
        from litellm.proxy._types import ProxyException

        raise ProxyException(
            message="the gateway could not check the API key (internal error): try again, "
            "and tell your platform team if it persists",
            type="api_error",
            param=None,
            code=500,
        ) from None
