"""The operator's part of the audit trail: its signing key, checkpoints, retention, and the
control-plane records of what it changed for a tenant.

- The Ed25519 key that signs checkpoints lives in Secret `tenantgw-audit-signing` of the
  operator's namespace (created once at startup when absent); only the operator reads it, no
  tenant principal and no gateway. Its public half is in ConfigMap `tenantgw-audit-signing` of
  the same namespace, for `tenantctl audit verify`.
- `run_audit_loop` signs each enabled tenant's chain head when it moved (a checkpoint, with the
  admin credentials) and prunes records older than `retentionDays` behind a signed anchor, every
  `interval` seconds; an idle tenant costs two reads.
- `record_change` appends one control-plane record per reconcile that changed something:
  generation, the objects applied and pruned (names and kinds, never their data), the rendered
  config's digest, keys issued, rotated and retired (names only). An idle resync writes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tenantgw.api import Audit
from tenantgw.api.audit_trail import (
    PRIVATE_KEY_FIELD,
    PUBLIC_KEY_FIELD,
    SIGNING_PUBLIC,
    SIGNING_SECRET,
    b64,
    generate_signing_key,
    public_key_of,
    unb64,
)
from tenantgw.kube.client import Kube, KubeError
from tenantgw.render.labels import MANAGED_BY, MANAGED_BY_LABEL
from tenantgw.tenancy import Provisioner, StorageError

log = logging.getLogger(__name__)


async def load_signing_key(kube: Kube, namespace: str) -> bytes:
    """The checkpoint signing key from the operator's Secret, created (with the public
    ConfigMap) when absent."""
    secret = await kube.get("v1", "Secret", SIGNING_SECRET, namespace)
    if secret is not None and PRIVATE_KEY_FIELD in (secret.get("data") or {}):
        private = unb64(unb64(secret["data"][PRIVATE_KEY_FIELD]).decode())
    else:
        private, _ = generate_signing_key()
        labels = {MANAGED_BY_LABEL: MANAGED_BY}
        try:
            await kube.create(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": SIGNING_SECRET, "namespace": namespace, "labels": labels},
                    "type": "Opaque",
                    "stringData": {PRIVATE_KEY_FIELD: b64(private)},
                }
            )
        except KubeError as exc:
            if exc.status != 409:
                raise
            return await load_signing_key(kube, namespace)  # another replica made it first
    public = b64(public_key_of(private))
    cm = await kube.get("v1", "ConfigMap", SIGNING_PUBLIC, namespace)
    if cm is None or (cm.get("data") or {}).get(PUBLIC_KEY_FIELD) != public:
        await kube.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": SIGNING_PUBLIC,
                    "namespace": namespace,
                    "labels": {MANAGED_BY_LABEL: MANAGED_BY},
                },
                "data": {PUBLIC_KEY_FIELD: public},
            }
        )
    return private


async def keep_trail(provisioner: Provisioner, tenant: str, audit: Audit, key: bytes) -> None:
    """One tenant's checkpoint and retention pass."""
    if not audit.enabled:
        return
    admin = provisioner.audit
    await admin.checkpoint(tenant, key)
    pruned = await admin.prune(tenant, audit.retention_days, key)
    if pruned:
        log.info("tenant %s: %d audit records past %d days pruned", tenant, pruned,
                 audit.retention_days)  # fmt: skip


async def run_audit_loop(
    provisioner: Provisioner,
    key: bytes,
    tenants: Callable[[], Mapping[str, Audit]],
    interval: float,
) -> None:
    """Checkpoints and retention for every tenant, every `interval` seconds, until cancelled."""
    while True:
        await asyncio.sleep(interval)
        for name, audit in list(tenants().items()):
            try:
                await keep_trail(provisioner, name, audit, key)
            except (StorageError, OSError) as exc:
                log.warning("tenant %s: audit checkpoint/retention failed: %s", name, exc)
            except Exception:
                log.exception("tenant %s: audit checkpoint/retention failed", name)


def _keys(status: Mapping[str, Any] | None) -> dict[str, str]:
    """Key name → what identifies its current value (a rotation issues it again: new issuedAt)."""
    return {
        k.get("name", ""): "@".join(
            str(k.get(f, "")) for f in ("secretName", "issuedAt", "expiresAt")
        )
        for k in (status or {}).get("keys") or []
        if isinstance(k, Mapping)
    }


def change_record(
    body: Mapping[str, Any],
    objects: Sequence[Mapping[str, Any]],
    applied: Sequence[str],
    pruned: Sequence[str],
    new_status: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The content of one control-plane record (pure; names and digests, never secret data)."""
    config = next(
        (o for o in objects if o.get("kind") == "ConfigMap" and "gateway" in
         o.get("metadata", {}).get("name", "")),
        None,
    )  # fmt: skip
    before, after = _keys(body.get("status")), _keys(new_status)
    spec = body.get("spec") or {}
    return {
        "generation": body.get("metadata", {}).get("generation"),
        "applied": sorted(applied),
        "pruned": sorted(pruned),
        "config_digest": (
            hashlib.sha256(json.dumps(config.get("data"), sort_keys=True).encode()).hexdigest()
            if config
            else None
        ),
        "keys_issued": sorted(set(after) - set(before)),
        "keys_rotated": sorted(k for k in set(after) & set(before) if after[k] != before[k]),
        "keys_retired": sorted(set(before) - set(after)),
        "limits": spec.get("limits"),
        "key_limits": [
            {k: v for k, v in key.items() if k in ("name", "rpm", "tpm", "maxParallelRequests")}
            for key in spec.get("keys") or []
            if isinstance(key, Mapping)
        ],
        "compliance": spec.get("compliance"),
    }


async def record_change(
    provisioner: Provisioner | None, tenant: str, content: Mapping[str, Any]
) -> None:
    """Append a control-plane record; a failure is logged (the change itself was applied)."""
    if provisioner is None:
        return
    event_id = f"control:{content.get('generation')}:{uuid.uuid4().hex}"
    try:
        await provisioner.audit.append_control(tenant, event_id, content)
    except Exception as exc:
        log.warning("tenant %s: control-plane audit record not written: %s", tenant, exc)
