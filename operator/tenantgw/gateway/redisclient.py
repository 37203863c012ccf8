"""The gateway's Redis client: one server, or a Redis Cluster when the URL says so.

`TENANTGW_REDIS_URL` is `redis://` / `rediss://` (TLS) for one server, `redis+cluster://` /
`rediss+cluster://` for a Redis Cluster: the host and port are one node of it (any; the client
discovers the others and follows MOVED/ASK, and a failover). Every key of a tenant carries its
hash tag (`t:{<tenant>}:`, `tenantgw.api.markers`), so each script and command of the gateway
runs in the one slot of its tenant.

Both clients fail fast (`timeout`, one quick retry): during an outage or a failover a request
waits for Redis 2 s at most, then gets the Tenant's onStoreUnavailable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import NoScriptError

RedisClient: TypeAlias = aioredis.Redis | aioredis.RedisCluster
"""What the gateway's parts take: a client of one server or of a Redis Cluster."""

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""URL schemes that mean a Redis Cluster, and the plain scheme of their nodes."""
DEFAULT_TIMEOUT = 2.0


def is_cluster_url(url: str) -> bool:
    """Whether `url` names a Redis Cluster (`redis+cluster://`, `rediss+cluster://`)."""
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def node_url(url: str) -> str:
    """A cluster URL as the plain URL of its node (`redis+cluster://` -> `redis://`)."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme, parts.scheme)
    return urlunsplit(parts._replace(scheme=scheme))


class LuaScript:
    """A Lua script called by its SHA (EVALSHA), sent whole (EVAL) where the server lacks it.

    Not redis-py's Script: on a Cluster its NOSCRIPT recovery loads the script on another node
    than the one that serves the keys, so after a failover (a promoted replica has an empty
    script cache) every call would fail for good. EVAL goes where the keys are and caches the
    script there.
    """

    def __init__(self, client: RedisClient, text: str) -> None:
        self.client: Any = client  # redis-py types evalsha/eval per client class
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 (Redis's script id)

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        try:
            return await self.client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.client.eval(self.text, len(keys), *keys, *args)


def register_script(client: RedisClient, text: str) -> LuaScript:
    """A Lua script on `client` (EVALSHA, EVAL once per server), for either kind of client."""
    return LuaScript(client, text)


def connect(url: str, timeout: float = DEFAULT_TIMEOUT) -> RedisClient:
    """A client of the server or Cluster `url` names, failing fast."""
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(ExponentialBackoff(cap=0.1, base=0.02), 1),
    }
    if is_cluster_url(url):
        return aioredis.RedisCluster.from_url(node_url(url), **options)
    # No idle health check (redis-py's `health_check_interval` PINGs a pooled connection that
    # sat idle before reusing it: a third round trip on the first requests after every lull).
    # A connection that died while idle (Redis restarted, an idle timeout) fails its command
    # at once, and `retry` sends it again on a fresh connection, as the Cluster client does.
    return aioredis.Redis.from_url(url, **options)
