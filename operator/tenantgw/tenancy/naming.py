"""Names, passwords and connection URLs of a tenant's storage; pure functions, no I/O.

A tenant `engineering-team` gets the PostgreSQL role `tgw_engineering_team`, the schema
`t_engineering_team`, the Redis ACL user `tgw:engineering-team` and the Redis keys
`t:{engineering-team}:*` (braces: a Redis Cluster hash tag, one slot per tenant). Tenant names
are DNS labels, so '-' → '_' is unambiguous and the key pattern has no glob characters.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from urllib.parse import quote, unquote, urlencode, urlsplit

from tenantgw.api.markers import key_prefix as tenant_key_prefix
from tenantgw.api.tenant import TENANT_NAME_MAX
from tenantgw.tenancy.errors import StorageError

ROLE_PREFIX = "tgw_"
SCHEMA_PREFIX = "t_"
REDIS_USER_PREFIX = "tgw:"

_TENANT_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Printable ASCII without spaces: SASLprep leaves it unchanged (so our SCRAM verifiers match the
# server's) and it survives URLs, environment variables and YAML untouched.
_PASSWORD_RE = re.compile(r"^[\x21-\x7e]+$")
PASSWORD_MIN = 16
PASSWORD_MAX = 256
POSTGRES_TLS_PARAMS = ("sslrootcert", "sslcrl", "ssl_min_protocol_version")
"""libpq parameters of the admin DSN that the tenants' DSNs carry too (with sslmode): how to
check the server, never who the admin is (sslcert and sslkey stay the operator's)."""
REDIS_TLS_PARAMS = ("ssl_ca_certs", "ssl_ca_path", "ssl_cert_reqs", "ssl_check_hostname")
"""redis-py URL parameters of the admin URL that the tenants' URLs carry too (rediss://)."""


def validate_tenant_name(tenant_name: str) -> str:
    """Return the name if it can go into SQL identifiers and Redis key patterns, else raise."""
    if len(tenant_name) > TENANT_NAME_MAX or not _TENANT_RE.match(tenant_name):
        raise StorageError(
            f"tenant name {tenant_name!r} cannot name storage: it must be a DNS label of at most "
            f"{TENANT_NAME_MAX} characters (lowercase letters, digits and '-')"
        )
    return tenant_name


def role_name(tenant_name: str) -> str:
    """PostgreSQL role of a tenant: `tgw_<tenant>` with '-' → '_'."""
    return ROLE_PREFIX + validate_tenant_name(tenant_name).replace("-", "_")


def schema_name(tenant_name: str) -> str:
    """PostgreSQL schema of a tenant: `t_<tenant>` with '-' → '_'."""
    return SCHEMA_PREFIX + validate_tenant_name(tenant_name).replace("-", "_")


def redis_username(tenant_name: str) -> str:
    """Redis ACL user of a tenant: `tgw:<tenant>`."""
    return REDIS_USER_PREFIX + validate_tenant_name(tenant_name)


def key_prefix(tenant_name: str) -> str:
    """Prefix of every Redis key a tenant may touch: `t:{<tenant>}:` (its Cluster hash tag)."""
    return tenant_key_prefix(validate_tenant_name(tenant_name))


def generate_password() -> str:
    """A new random password: 43 URL-safe characters (256 bits)."""
    return secrets.token_urlsafe(32)


def check_password(password: str, tenant_name: str) -> str:
    """Return the password if we can use it for both PostgreSQL and Redis, else raise."""
    if not (PASSWORD_MIN <= len(password) <= PASSWORD_MAX) or not _PASSWORD_RE.match(password):
        raise StorageError(
            f"the storage password of tenant {tenant_name} is unusable: it must be "
            f"{PASSWORD_MIN} to {PASSWORD_MAX} printable ASCII characters without spaces; "
            "drop it (pass None) to generate a new one"
        )
    return password


def url_host(host: str) -> str:
    """A host as it goes into a URL: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def tenant_postgres_dsn(
    tenant_name: str,
    password: str,
    host: str,
    port: int,
    dbname: str,
    *,
    sslmode: str | None = None,
    tls_params: Mapping[str, str] | None = None,
) -> str:
    """postgresql://tgw_<tenant>:<password>@host:port/<dbname>, every part URL-encoded.

    `sslmode` and `tls_params` (POSTGRES_TLS_PARAMS of the admin DSN: sslrootcert...) go into
    the query, so the gateway checks the server exactly as the operator does.
    """
    dsn = (
        f"postgresql://{quote(role_name(tenant_name), safe='')}:{quote(password, safe='')}"
        f"@{url_host(host)}:{port}/{quote(dbname, safe='')}"
    )
    query = {**({"sslmode": sslmode} if sslmode else {}), **(tls_params or {})}
    return f"{dsn}?{urlencode(query, safe='/')}" if query else dsn


def tenant_redis_url(
    tenant_name: str,
    password: str,
    host: str,
    port: int,
    db: int,
    *,
    scheme: str = "redis",
    tls_params: Mapping[str, str] | None = None,
) -> str:
    """redis://tgw%3A<tenant>:<password>@host:port/<db>: the ':' of the user name is encoded.

    With scheme rediss, `tls_params` (REDIS_TLS_PARAMS of the admin URL: ssl_ca_certs...) go
    into the query.
    """
    user = quote(redis_username(tenant_name), safe="")
    url = f"{scheme}://{user}:{quote(password, safe='')}@{url_host(host)}:{port}/{db}"
    return f"{url}?{urlencode(tls_params, safe='/')}" if tls_params else url


def password_from(storage_dsn: str) -> str:
    """The password in a tenant's PostgreSQL DSN or Redis URL (as stored in its Secret)."""
    try:
        password = urlsplit(storage_dsn).password
    except ValueError as err:
        raise StorageError(f"cannot parse the stored storage URL: {err}") from None
    if not password:
        raise StorageError(
            "the stored storage URL carries no password: delete it from the tenant's Secret "
            "so that the operator provisions a new one"
        )
    return unquote(password)
