"""The storage CA files in the gateway pod: PostgreSQL and Redis checked as the operator checks.

The admin DSN and URL name the CA (and CRL) files the operator trusts (`sslrootcert`, `sslcrl`,
`ssl_ca_certs`), and every tenant's DSN and URL carry the same parameters. Those paths are the
operator's; the gateway image has no such files. So the operator puts their text into Secret
`gateway` (keys `postgres-ca.crt`, `postgres-crl.pem`, `redis-ca.crt`), the Deployment mounts
them with keys.json (the `secret` volume, read-only, mode 0440), and the DSN and URL the gateway
gets name the mounted files instead. `sslrootcert=system` and `ssl_ca_path` (a directory) stay
as they are: the image's system bundle, or a directory the image must carry.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tenantgw.render.inputs import StorageEndpoints
from tenantgw.render.names import SECRET_MOUNT

FILES = {
    "sslrootcert": "postgres-ca.crt",
    "sslcrl": "postgres-crl.pem",
    "ssl_ca_certs": "redis-ca.crt",
}
"""DSN/URL parameter -> the key in Secret `gateway` and the file name in the pod."""


def _pointed(url: str, files: dict[str, str]) -> str:
    """`url` with each parameter of `files` naming the mounted file."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(name in files for name, _ in query):
        return url
    pointed = [
        (name, f"{SECRET_MOUNT}/{FILES[name]}" if name in files else value) for name, value in query
    ]
    return urlunsplit(parts._replace(query=urlencode(pointed, safe="/")))


def pod_storage(storage: StorageEndpoints | None) -> StorageEndpoints | None:
    """The endpoints as the gateway gets them: CA parameters naming the mounted files."""
    if storage is None or not storage.tls_files:
        return storage
    files = {name: text for name, text in storage.tls_files.items() if name in FILES}
    return dataclasses.replace(
        storage,
        postgres_dsn=_pointed(storage.postgres_dsn, files) if storage.postgres_dsn else None,
        redis_url=_pointed(storage.redis_url, files) if storage.redis_url else None,
    )


def storage_tls_data(storage: StorageEndpoints | None) -> dict[str, str]:
    """Secret key -> PEM text of the CA files the gateway mounts."""
    if storage is None:
        return {}
    return {FILES[name]: text for name, text in sorted(storage.tls_files.items()) if name in FILES}


def storage_tls_items(storage: StorageEndpoints | None) -> list[dict[str, str]]:
    """The `secret` volume's items for them (beside keys.json)."""
    return [{"key": key, "path": key} for key in storage_tls_data(storage)]
