"""The StorageReady side of a reconcile: the tenant's own PostgreSQL role and Redis user.

Storage is an external resource with its own observe-then-create contract (Crossplane's): the
provisioner reads the catalogs and the ACL, plans the missing or drifted statements
(`tenancy.pg_plan.plan_ensure`) and runs only those, so a resync of a provisioned tenant only
reads. The tenant reconcile runs this step between observing and planning, because what the
plan renders (the endpoints in the gateway's Secret) is its outcome.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tenantgw.api import Tenant
from tenantgw.reconcile.cache import ReconcileCache
from tenantgw.reconcile.conditions import condition
from tenantgw.render.inputs import StorageEndpoints
from tenantgw.tenancy import Provisioner, StorageError, password_from

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StorageOutcome:
    """Endpoints to render into the tenant's Secret, and the StorageReady condition."""

    endpoints: StorageEndpoints | None
    condition: dict[str, Any]
    failed: bool = False


async def ensure_storage(
    provisioner: Provisioner | None,
    tenant: Tenant,
    stored: tuple[str | None, str | None],
    generation: int | None,
    cache: ReconcileCache | None = None,
) -> StorageOutcome:
    """Provision (or verify) the tenant's storage with the password its Secret already holds.

    `stored` is the PostgreSQL DSN and Redis URL the gateway's Secret holds now (or None).

    A storage outage keeps the endpoints already in the Secret, so the gateway keeps its
    credentials; only a tenant that never had storage renders none.
    """
    if provisioner is None:
        return StorageOutcome(
            None,
            condition(
                "StorageReady",
                False,
                "NotConfigured",
                "the operator has no TENANTGW_POSTGRES_DSN and TENANTGW_REDIS_URL: "
                "usage, budgets and rate limits are off for this tenant",
                generation,
            ),
        )
    name = tenant.metadata.name or ""
    stored_dsn, stored_url = stored
    try:
        password = password_from(stored_dsn) if stored_dsn else None
        if cache is not None and password and cache.storage_fresh(name, password):
            storage = provisioner.storage(name, password)
        else:
            storage = await provisioner.ensure(name, password)
            if cache is not None:
                cache.storage_ok(name, password_from(storage.postgres_dsn))
        tls_files = provisioner.tls_files()
    except StorageError as err:
        log.warning("tenant %s: storage not ready: %s", name, err)
        kept = (
            StorageEndpoints(
                postgres_dsn=stored_dsn, redis_url=stored_url, tls_files=_tls_files(provisioner)
            )
            if stored_dsn and stored_url
            else None
        )
        return StorageOutcome(
            kept, condition("StorageReady", False, "StorageUnavailable", str(err), generation), True
        )
    return StorageOutcome(
        StorageEndpoints(
            postgres_dsn=storage.postgres_dsn, redis_url=storage.redis_url, tls_files=tls_files
        ),
        condition(
            "StorageReady",
            True,
            "Provisioned",
            f"PostgreSQL schema and Redis user of tenant {name} are ready",
            generation,
        ),
    )


def _tls_files(provisioner: Provisioner) -> dict[str, str]:
    """The storage CA files, or none when they cannot be read (the condition says why)."""
    try:
        return provisioner.tls_files()
    except StorageError:
        return {}
