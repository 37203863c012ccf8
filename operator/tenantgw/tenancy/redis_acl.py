"""A tenant's Redis ACL user: the rules, the drift check, and the admin connection.

Redis rewrites the command rules of a user in its own words (ACL GETUSER shows categories and
exceptions it chose), so the check does not compare strings: it applies both rule lists to the
server's command table (COMMAND: every command and subcommand with its ACL categories) and
compares the sets of allowed commands. An idle resync costs one ACL GETUSER.
Needs Redis 7 or later (selectors, FUNCTION, ACL GETUSER in this shape).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from tenantgw.tenancy.errors import StorageError
from tenantgw.tenancy.naming import REDIS_TLS_PARAMS, key_prefix, redis_username

log = logging.getLogger(__name__)

Note = Callable[[str, str], None]

# Data commands on the tenant's own keys, scripts, transactions; nothing else.
# Categories first, then every command that the categories let in but that reaches beyond the
# key pattern or into other tenants' business:
#   keys, scan, randomkey, dbsize   see key names or counts of the whole database (not checked
#                                   against ~patterns)
#   select, move, copy              put keys in another database, out of reach of remove()
#   flushdb, flushall               wipe everyone (also in @dangerous: said twice on purpose)
#   function, fcall, fcall_ro       the function library is global: load/replace/flush/dump it
#   script|flush|kill|debug         flush everyone's script cache, kill or block their scripts
#   client|tracking, client|caching BCAST tracking reports changes of other tenants' keys
# Streams come with @read/@write: the gateway's ledger spools usage rows in the stream
# `t:{<tenant>}:ledger:spool` (XADD from a script, XLEN, XRANGE, XREVRANGE, XDEL).
COMMAND_RULES: tuple[str, ...] = (
    "-@all",
    "+@read", "+@write", "+@string", "+@hash", "+@list", "+@sortedset", "+@set",
    "+@scripting", "+@connection", "+@transaction",
    "-@dangerous",
    "-keys", "-scan", "-randomkey", "-dbsize",
    "-select", "-move", "-copy",
    "-flushdb", "-flushall",
    "-function", "-fcall", "-fcall_ro",
    "-script|flush", "-script|kill", "-script|debug",
    "-client|tracking", "-client|caching",
    # The gateway's rate-limit and budget scripts read the server's clock (one clock for every
    # replica); TIME is in no category above.
    "+time",
)  # fmt: skip
UNLINK_BATCH = 500
_UNSAFE_FLAGS = frozenset({"off", "nopass", "allkeys", "allchannels", "allcommands"})


def password_hash(password: str) -> str:
    """How Redis stores and shows a password: hex SHA-256."""
    return hashlib.sha256(password.encode()).hexdigest()


def key_pattern(tenant_name: str) -> str:
    """The one key pattern of the tenant's user: `t:{<tenant>}:*`."""
    return key_prefix(tenant_name) + "*"


def setuser_rules(tenant_name: str, password: str) -> list[str]:
    """Arguments of ACL SETUSER that give the tenant's user exactly its rules."""
    return [
        "reset",  # no old password, key pattern, channel or selector survives
        "on",
        "#" + password_hash(password),
        "~" + key_pattern(tenant_name),
        "resetchannels",
        *COMMAND_RULES,
    ]


@dataclass(frozen=True)
class CommandTable:
    """Executable commands (subcommands for containers) and their ACL categories."""

    categories: Mapping[str, frozenset[str]]  # "get" / "client|info" -> {"@read", ...}
    leaves: Mapping[str, tuple[str, ...]]  # "client" -> ("client|info", ...), "get" -> ("get",)

    @classmethod
    def parse(cls, reply: Iterable[Any]) -> CommandTable:
        """From the raw reply of COMMAND."""
        categories: dict[str, frozenset[str]] = {}
        leaves: dict[str, tuple[str, ...]] = {}
        for entry in reply:
            name = str(entry[0]).lower()
            subcommands = entry[9] if len(entry) > 9 else []
            if subcommands:
                names = []
                for sub in subcommands:
                    sub_name = str(sub[0]).lower()
                    categories[sub_name] = frozenset(str(c) for c in sub[6])
                    names.append(sub_name)
                leaves[name] = tuple(names)
            else:
                categories[name] = frozenset(str(c) for c in entry[6])
                leaves[name] = (name,)
        return cls(categories=categories, leaves=leaves)


def allowed_commands(rules: Iterable[str], table: CommandTable) -> frozenset[str] | None:
    """The commands a list of ACL command rules allows, or None for a rule we do not model."""
    allowed: set[str] = set()
    for rule in rules:
        rule = rule.lower()
        if rule in ("allcommands", "+@all"):
            allowed = set(table.categories)
            continue
        if rule in ("nocommands", "-@all"):
            allowed.clear()
            continue
        if len(rule) < 2 or rule[0] not in "+-":
            return None
        name = rule[1:]
        if name.startswith("@"):
            targets = {cmd for cmd, cats in table.categories.items() if name in cats}
        elif name in table.leaves:
            targets = set(table.leaves[name])
        elif name in table.categories:
            targets = {name}
        else:
            parent, _, first_arg = name.partition("|")
            if first_arg and table.leaves.get(parent) == (parent,):
                return None  # a first-argument rule like +select|0, which we never give
            targets = set()  # a command or subcommand this server does not have
        if rule[0] == "+":
            allowed |= targets
        else:
            allowed -= targets
    return frozenset(allowed)


def _tokens(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | bytes):
        text = value.decode() if isinstance(value, bytes) else value
        return text.split()
    return [str(item) for item in value]


def parse_getuser(reply: Any) -> dict[str, Any] | None:
    """ACL GETUSER as a dict (RESP2 gives a flat list, RESP3 a map); None: no such user."""
    if reply is None:
        return None
    if isinstance(reply, dict):
        return {str(k): v for k, v in reply.items()}
    items = list(reply)
    return {str(k): v for k, v in zip(items[::2], items[1::2], strict=True)}


def user_drift(
    user: Mapping[str, Any] | None, tenant_name: str, password: str, table: CommandTable
) -> list[str]:
    """What differs between the user Redis has and the one we want; [] when nothing."""
    if user is None:
        return ["missing"]
    drift = []
    flags = set(_tokens(user.get("flags")))
    if "on" not in flags or flags & _UNSAFE_FLAGS:
        drift.append("flags")
    if _tokens(user.get("passwords")) != [password_hash(password)]:
        drift.append("password")
    if _tokens(user.get("keys")) != ["~" + key_pattern(tenant_name)]:
        drift.append("keys")
    if [c for c in _tokens(user.get("channels")) if c != "resetchannels"]:
        drift.append("channels")
    if user.get("selectors"):
        drift.append("selectors")
    actual = allowed_commands(_tokens(user.get("commands")), table)
    if actual is None or actual != allowed_commands(COMMAND_RULES, table):
        drift.append("commands")
    return drift


def _raw(response: Any, **options: Any) -> Any:
    return response


async def _command(client: aioredis.Redis, *args: Any) -> Any:
    # redis-py leaves execute_command untyped; this is the one place that says so.
    return await client.execute_command(*args)  # type: ignore[no-untyped-call]


class RedisAdmin:
    """Provisions tenant ACL users with the operator's admin URL."""

    def __init__(self, url: str, *, connect_timeout: float, note: Note) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port or 6379
        except ValueError as err:
            raise StorageError(f"TENANTGW_REDIS_URL is not a valid URL: {err}") from None
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise StorageError(
                "TENANTGW_REDIS_URL must look like redis://admin:<password>@<host>:<port>/0"
            )
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise StorageError(f"TENANTGW_REDIS_URL: {path!r} is not a database number")
        self.scheme = parts.scheme
        query = dict(parse_qsl(parts.query))
        self.tls_params = (
            {k: query[k] for k in REDIS_TLS_PARAMS if query.get(k)}
            if self.scheme == "rediss"
            else {}
        )
        self.host = parts.hostname
        self.port = port
        self.db = int(path or 0)
        self.endpoint = f"{self.host}:{self.port}"
        self._admin = unquote(parts.username or "default")
        self._url = url
        self._connect_timeout = connect_timeout
        self._note = note
        self._table: CommandTable | None = None
        self._warned_no_aclfile = False
        # One client (with its connection pool) per event loop, reused by every call: a cold
        # start of a thousand tenants would otherwise open and authenticate a connection per
        # read. Connections belong to the loop that opened them.
        self._client: tuple[asyncio.AbstractEventLoop, aioredis.Redis] | None = None
        # ACL SAVE rewrites the whole ACL file, so a save per tenant costs O(users) each: the
        # changes made while a save runs are covered together by the next one (group commit).
        self._saves: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._changes = 0  # ACL changes made so far
        self._saved = 0  # of which the last finished ACL SAVE covers this many

    async def read_counters(self, keys: list[str]) -> list[int]:
        """Integer counters (missing ones are 0), read with the admin user: budgets' spend."""
        if not keys:
            return []
        async with self._connect() as client:
            try:
                values = await client.mget(keys)
            except (rexc.RedisError, OSError) as err:
                raise StorageError(f"could not read budget counters from Redis: {err}") from err
        return [int(v) if v not in (None, "") else 0 for v in values]

    async def read_session_spend(
        self, keys: list[tuple[str, int]]
    ) -> list[tuple[str | None, int, int, int]]:
        """For each (sorted set of a Session policy, limit in micro-USD): the top session, its
        spend, how many sessions spent, how many reached the limit. One round trip."""
        if not keys:
            return []
        async with self._connect() as client:
            try:
                pipe = client.pipeline(transaction=False)
                for key, limit in keys:
                    pipe.zrevrange(key, 0, 0, withscores=True)
                    pipe.zcard(key)
                    pipe.zcount(key, limit, "+inf")
                values = await pipe.execute()
            except (rexc.RedisError, OSError) as err:
                raise StorageError(f"could not read session spend from Redis: {err}") from err
        out: list[tuple[str | None, int, int, int]] = []
        for i in range(len(keys)):
            top, count, over = values[3 * i : 3 * i + 3]
            top_id, top_spend = (str(top[0][0]), int(top[0][1])) if top else (None, 0)
            out.append((top_id, top_spend, int(count), int(over)))
        return out

    async def read_text(self, key: str) -> str | None:
        """One string value (None when missing), read with the admin user: gateway markers."""
        async with self._connect() as client:
            try:
                value = await client.get(key)
            except (rexc.RedisError, OSError) as err:
                raise StorageError(f"could not read {key} from Redis: {err}") from err
        return str(value) if value is not None else None

    def connect(self) -> AbstractAsyncContextManager[aioredis.Redis]:
        """A client as the admin user, closed on exit."""
        return self._own_client()

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[aioredis.Redis]:
        """The shared admin client of the running loop (its pool hands out connections)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client[0] is not loop:
            self._client = (loop, self._new_client())
        yield self._client[1]

    async def close(self) -> None:
        """Close the shared client's connections (at shutdown)."""
        shared, self._client = self._client, None
        if shared is not None and shared[0] is asyncio.get_running_loop():
            await shared[1].aclose()

    @asynccontextmanager
    async def _own_client(self) -> AsyncIterator[aioredis.Redis]:
        client = self._new_client()
        try:
            yield client
        finally:
            await client.aclose()

    def _new_client(self) -> aioredis.Redis:
        client = aioredis.Redis.from_url(
            self._url,
            decode_responses=True,
            socket_connect_timeout=self._connect_timeout,
            socket_timeout=max(self._connect_timeout, 10.0),
            # One quick retry: the reconcile loop retries the whole call with its own backoff.
            retry=Retry(ExponentialWithJitterBackoff(base=0.2, cap=1.0), retries=1),
        )
        client.set_response_callback("COMMAND", _raw)
        return client

    @contextmanager
    def _errors(self, action: str, tenant_name: str) -> Iterator[None]:
        try:
            yield
        except rexc.AuthenticationError as err:
            raise StorageError(
                f"Redis at {self.endpoint} refused the admin login ({err}): "
                "check TENANTGW_REDIS_URL"
            ) from err
        except (rexc.ConnectionError, rexc.TimeoutError) as err:
            raise StorageError(
                f"could not reach Redis at {self.endpoint} ({err}): check that it runs and "
                "that TENANTGW_REDIS_URL points at it"
            ) from err
        except rexc.NoPermissionError as err:
            raise StorageError(
                f"Redis at {self.endpoint} did not let the admin user {self._admin} {action} for "
                f"tenant {tenant_name} ({err}): give it +@all ~* &* in the ACL file"
            ) from err
        except rexc.RedisError as err:
            raise StorageError(
                f"Redis at {self.endpoint} failed to {action} for tenant {tenant_name}: {err}"
            ) from err

    async def _command_table(self, client: aioredis.Redis) -> CommandTable:
        # Fetched once per process: a read, and the same for every tenant.
        if self._table is None:
            self._table = CommandTable.parse(await _command(client, "COMMAND"))
        return self._table

    def _save_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._saves is None or self._saves[0] is not loop:
            self._saves = (loop, asyncio.Lock())
        return self._saves[1]

    async def _save(self, client: aioredis.Redis, tenant_name: str) -> None:
        """ACL SAVE after a change, so that the users survive a restart; returns once a save
        that began after the change has finished (one save covers every change made before
        it began). Without an aclfile, warn once."""
        self._changes += 1
        mine = self._changes
        async with self._save_lock():
            if self._saved >= mine:
                return  # a save that began after our change has written it
            covers = self._changes
            await self._save_now(client, tenant_name)
            self._saved = max(self._saved, covers)

    async def _save_now(self, client: aioredis.Redis, tenant_name: str) -> None:
        self._note(tenant_name, "redis: ACL SAVE")
        try:
            await _command(client, "ACL", "SAVE")
        except rexc.ResponseError as err:
            if "acl file" not in str(err).lower():
                raise
            if not self._warned_no_aclfile:
                self._warned_no_aclfile = True
                log.warning(
                    "Redis at %s has no aclfile: tenant users live until it restarts, then the "
                    "next resync recreates them (%s)",
                    self.endpoint,
                    err,
                )

    async def ensure(self, tenant_name: str, password: str) -> None:
        """Create or fix the tenant's ACL user; only ACL GETUSER when all is in place."""
        user = redis_username(tenant_name)
        async with self._connect() as client:
            with self._errors(f"read ACL user {user}", tenant_name):
                current = parse_getuser(await _command(client, "ACL", "GETUSER", user))
                table = await self._command_table(client)
            drift = user_drift(current, tenant_name, password, table)
            if not drift:
                return
            with self._errors(f"set ACL user {user}", tenant_name):
                self._note(tenant_name, f"redis: ACL SETUSER {user} ({', '.join(drift)})")
                await _command(
                    client, "ACL", "SETUSER", user, *setuser_rules(tenant_name, password)
                )
                await self._save(client, tenant_name)

    async def remove(self, tenant_name: str) -> None:
        """Delete the tenant's ACL user (Redis disconnects its clients), then its keys."""
        user = redis_username(tenant_name)
        async with self._connect() as client:
            with self._errors(f"delete ACL user {user}", tenant_name):
                if await _command(client, "ACL", "GETUSER", user) is not None:
                    self._note(tenant_name, f"redis: ACL DELUSER {user}")
                    await _command(client, "ACL", "DELUSER", user)
                    await self._save(client, tenant_name)
            with self._errors(f"delete the keys {key_pattern(tenant_name)}", tenant_name):
                cursor: int = 0
                while True:
                    cursor, keys = await _command(
                        client, "SCAN", cursor, "MATCH", key_pattern(tenant_name), "COUNT", 1000
                    )
                    for start in range(0, len(keys), UNLINK_BATCH):
                        batch = keys[start : start + UNLINK_BATCH]
                        self._note(tenant_name, f"redis: UNLINK {len(batch)} keys")
                        await _command(client, "UNLINK", *batch)
                    if int(cursor) == 0:
                        break
