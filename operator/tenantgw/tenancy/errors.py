"""The one exception of tenantgw.tenancy."""

from __future__ import annotations


class StorageError(Exception):
    """Provisioning a tenant's PostgreSQL or Redis failed; the message says what to do.

    Messages never carry passwords: they name the server (host:port), the tenant and the step.
    """
