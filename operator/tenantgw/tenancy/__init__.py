"""Per-tenant storage: a PostgreSQL role and schema and a Redis ACL user for each tenant.

The operator holds the admin credentials (TENANTGW_POSTGRES_DSN, TENANTGW_REDIS_URL) and calls
`Provisioner.ensure(tenant)`, which returns the tenant's own DSN and Redis URL; a gateway holds
only those. Isolation comes from the servers' own permission systems, not from naming
conventions: a tenant's role cannot use another tenant's schema, and its Redis user can only
touch keys `t:{<tenant>}:*` with data, script and transaction commands.
"""

from tenantgw.tenancy.errors import StorageError
from tenantgw.tenancy.naming import (
    key_prefix,
    password_from,
    redis_username,
    role_name,
    schema_name,
    validate_tenant_name,
)
from tenantgw.tenancy.provisioner import Provisioner, TenantStorage

__all__ = [
    "Provisioner",
    "StorageError",
    "TenantStorage",
    "key_prefix",
    "password_from",
    "redis_username",
    "role_name",
    "schema_name",
    "validate_tenant_name",
]
