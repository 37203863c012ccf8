"""The StorageReady side of a reconcile: the tenant's own PostgreSQL role and Redis user."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tenantgw.api import Tenant
from tenantgw.reconcile.cache import ReconcileCache
from tenantgw.reconcile.conditions import condition
from tenantgw.reconcile.material import Material
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
    material: Material,
    generation: int | None,
    cache: ReconcileCache | None = None,
) -> StorageOutcome:
    """Provision (or verify) the tenant's storage with the password its Secret already holds.

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
    try:
        password = password_from(material.postgres_dsn) if material.postgres_dsn else None
        if cache is not None and password and cache.storage_fresh(name, password):
            storage = provisioner.storage(name, password)
        else:
            storage = await provisioner.ensure(name, password)
            if cache is not None:
                cache.storage_ok(name, password_from(storage.postgres_dsn))
    except StorageError as err:
        log.warning("tenant %s: storage not ready: %s", name, err)
        kept = (
            StorageEndpoints(postgres_dsn=material.postgres_dsn, redis_url=material.redis_url)
            if material.postgres_dsn and material.redis_url
            else None
        )
        return StorageOutcome(
            kept, condition("StorageReady", False, "StorageUnavailable", str(err), generation), True
        )
    return StorageOutcome(
        StorageEndpoints(postgres_dsn=storage.postgres_dsn, redis_url=storage.redis_url),
        condition(
            "StorageReady",
            True,
            "Provisioned",
            f"PostgreSQL schema and Redis user of tenant {name} are ready",
            generation,
        ),
    )
