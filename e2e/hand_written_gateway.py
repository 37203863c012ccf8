"""A tenant gateway run from hand-written files in the shapes the operator renders.

For stories that need what the operator would never render (a stale or hand-edited config):
the tests write config.yaml, tenantgw.json and keys.json themselves (`write_tenant_files`),
give the gateway the tenant's own Redis ACL user and Postgres role (`tenant_stores`) and
launch it with the env the operator's Deployment sets (`gateway_env`).
e2e/rendered_gateway.py is the harness for a gateway run from what the operator renders.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import redis
import yaml
from psycopg import sql

from e2e.fixtures import Services
from tenantgw.api.markers import key_prefix
from tenantgw.tenancy.redis_acl import COMMAND_RULES


def write_tenant_files(
    directory: Path, config: dict[str, Any], rules: dict[str, Any], keys: Mapping[str, str]
) -> Path:
    """config/config.yaml, config/tenantgw.json and secret/keys.json (the SHA-256 of each of
    `keys`, name -> value) under `directory`; returns the config.yaml path."""
    hashed = [
        {"name": n, "sha256": hashlib.sha256(k.encode()).hexdigest()} for n, k in keys.items()
    ]
    (directory / "config").mkdir(parents=True, exist_ok=True)
    (directory / "secret").mkdir(parents=True, exist_ok=True)
    (directory / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (directory / "config" / "tenantgw.json").write_text(json.dumps(rules, indent=2))
    (directory / "secret" / "keys.json").write_text(json.dumps(hashed, indent=2))
    return directory / "config" / "config.yaml"


def gateway_env(directory: Path, tenant: str, redis_url: str, postgres_dsn: str) -> dict[str, str]:
    """The gateway's tenantgw env for the files `write_tenant_files` wrote under `directory`."""
    return {
        "TENANTGW_TENANT": tenant,
        "TENANTGW_RULES_FILE": str(directory / "config" / "tenantgw.json"),
        "TENANTGW_KEYS_FILE": str(directory / "secret" / "keys.json"),
        "TENANTGW_REDIS_URL": redis_url,
        "TENANTGW_POSTGRES_DSN": postgres_dsn,
        "TENANTGW_SPOOL_DIR": str(directory / "spool"),
    }


@dataclass
class Stores:
    """The tenant's own storage credentials, as the operator provisions them."""

    tenant: str
    redis_url: str
    admin_redis: redis.Redis
    postgres_dsn: str


@contextlib.contextmanager
def tenant_stores(services: Services) -> Iterator[Stores]:
    tenant = f"fb-{uuid.uuid4().hex[:8]}"
    user, password = f"tenant-{tenant}", secrets.token_hex(16)
    parts = urlsplit(services.redis_url)
    admin = redis.Redis.from_url(services.redis_url, socket_timeout=5)
    admin.execute_command(
        "ACL", "SETUSER", user, "reset", "on", f">{password}", f"~{key_prefix(tenant)}*",
        "resetchannels", *COMMAND_RULES,
    )  # fmt: skip
    redis_url = urlunsplit(
        parts._replace(netloc=f"{quote(user)}:{quote(password)}@{parts.hostname}:{parts.port}")
    )
    role, pg_password = f"tg_fb_{uuid.uuid4().hex[:10]}", secrets.token_hex(16)
    pg = urlsplit(services.postgres_dsn)
    ident = sql.Identifier(role)
    with psycopg.connect(services.postgres_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident, sql.Literal(pg_password))
        )
        conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(ident, ident))
        conn.execute(sql.SQL("ALTER ROLE {} SET search_path = {}").format(ident, ident))
    dsn = urlunsplit(
        pg._replace(netloc=f"{quote(role)}:{quote(pg_password)}@{pg.hostname}:{pg.port}")
    )
    try:
        yield Stores(tenant, redis_url, admin, dsn)
    finally:
        keys = list(admin.scan_iter(match=f"{key_prefix(tenant)}*"))
        if keys:
            admin.delete(*keys)
        admin.acl_deluser(user)
        admin.close()
        with psycopg.connect(services.postgres_dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [role]
            )
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident))
            conn.execute(sql.SQL("DROP ROLE {}").format(ident))
