"""PostgreSQL and Redis run for real, with admin credentials, and Redis has no open door."""

from __future__ import annotations

from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from redis.exceptions import AuthenticationError, ResponseError

from e2e.fixtures import Services

pytestmark = pytest.mark.integration


def test_postgres_answers_with_admin_credentials(services: Services) -> None:
    with psycopg.connect(services.postgres_dsn, connect_timeout=5) as conn:
        row = conn.execute(
            "select current_user, current_setting('server_version_num')::int"
        ).fetchone()
    assert row is not None
    user, version = row
    assert user == "tenantgw_admin"
    assert version >= 150000


def test_postgres_refuses_a_wrong_password(services: Services) -> None:
    url = urlsplit(services.postgres_dsn)
    bad = services.postgres_dsn.replace(f":{url.password}@", ":wrong@")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(bad, connect_timeout=5)


def test_redis_answers_the_admin_user(services: Services) -> None:
    r = redis.Redis.from_url(services.redis_url, socket_timeout=5)
    assert r.ping() is True
    assert r.acl_whoami() in ("admin", b"admin")
    r.close()


def test_redis_refuses_an_unauthenticated_client(services: Services) -> None:
    url = urlsplit(services.redis_url)
    anon = redis.Redis(host=url.hostname or "127.0.0.1", port=url.port or 6379, socket_timeout=5)
    with pytest.raises((AuthenticationError, ResponseError), match=r"(?i)noauth|authentication"):
        anon.set("t:anyone:key", "value")
    anon.close()
