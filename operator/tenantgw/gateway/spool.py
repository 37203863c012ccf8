"""Where ledger rows wait while Postgres cannot take them: a Redis stream, then local disk.

`StreamSpool` (below) is the durable spool: a Redis stream inside the tenant's ACL prefix that
every replica shares, so rows survive the pod that spooled them. `Spool` is the last resort,
for rows that reach neither Postgres nor Redis: JSON lines in the pod's own directory, fsynced.
They survive a crash or restart of the process, not the loss of the pod's emptyDir; the ledger
moves them to the stream as soon as Redis answers again.

Each process appends to its own file, `<name>-active-<pid>.jsonl`. To replay, the writer first
*claims* the file by renaming it to `<name>-pending-<pid>-<ns>.jsonl`, so rows appended while a
replay runs go to a fresh file and are never deleted unread; a pending file is deleted only
after all its rows are in Postgres (or in the stream). Active files of processes that no longer
run (a crashed gateway, a restarted container sharing the same emptyDir) are claimed too.
Replaying a file twice is harmless: the ledger inserts by request_id with ON CONFLICT DO NOTHING.

The file methods do blocking I/O; the ledger calls them through `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from tenantgw.api.markers import tenant_key
from tenantgw.gateway.redisclient import RedisClient, register_script

log = logging.getLogger("tenantgw.gateway.spool")

DEFAULT_SPOOL_DIR = "/tmp/tenantgw-spool"  # noqa: S108 (an emptyDir in the pod, 0700)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class Spool:
    """JSON-lines files of rows waiting for Postgres, safe across crashes and restarts."""

    def __init__(self, directory: Path | str = DEFAULT_SPOOL_DIR, name: str = "usage") -> None:
        self.directory = Path(directory)
        self.name = name
        self._lock = threading.Lock()
        self._active_re = re.compile(rf"^{re.escape(name)}-active-(\d+)\.jsonl$")

    @property
    def active_path(self) -> Path:
        return self.directory / f"{self.name}-active-{os.getpid()}.jsonl"

    def _ensure_dir(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def append(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append rows and fsync them; returns how many were written."""
        lines = [encode_row(row) + "\n" for row in rows]
        if not lines:
            return 0
        with self._lock:
            self._ensure_dir()
            fd = os.open(self.active_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, "".join(lines).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        return len(lines)

    def claim(self) -> list[Path]:
        """Pending files to replay: this process's active file and dead processes' are renamed.

        Returns every pending file in the directory, oldest first.
        """
        with self._lock:
            if not self.directory.is_dir():
                return []
            for path in self.directory.iterdir():
                match = self._active_re.match(path.name)
                if match is None:
                    continue
                pid = int(match.group(1))
                if pid != os.getpid() and _alive(pid):
                    continue
                target = self.directory / f"{self.name}-pending-{pid}-{time.time_ns()}.jsonl"
                with contextlib.suppress(FileNotFoundError):  # another process claimed it
                    os.rename(path, target)
            self._sync_dir()
            return sorted(
                self.directory.glob(f"{self.name}-pending-*.jsonl"),
                key=lambda p: int(p.stem.rsplit("-", 1)[-1]),
            )

    def read(self, path: Path) -> list[dict[str, Any]]:
        """The rows of a spool file; a torn last line (a crash mid-write) is skipped."""
        rows: list[dict[str, Any]] = []
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:  # replayed and removed by another process
            return rows
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                log.warning("skipping unreadable line %d of %s", number, path)
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def remove(self, path: Path) -> None:
        """Delete a replayed file."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def has_rows(self) -> bool:
        """Whether any active or pending file of this spool holds data."""
        if not self.directory.is_dir():
            return False
        for path in self.directory.glob(f"{self.name}-*.jsonl"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_size > 0:
                    return True
        return False

    def count_rows(self) -> int:
        """Rows waiting in every file of this spool (for tests and diagnostics)."""
        if not self.directory.is_dir():
            return 0
        return sum(len(self.read(p)) for p in self.directory.glob(f"{self.name}-*.jsonl"))

    def _sync_dir(self) -> None:
        # Make the renames durable, so a crash cannot resurrect a file already replayed.
        with contextlib.suppress(OSError):
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


# --------------------------------------------------------------------------- the shared stream

STREAM_FIELD = "r"
"""The one field of a stream entry: the row as JSON."""
MAX_REJECTED_ROWS = 10_000
"""Rows Postgres refused that the rejected stream keeps (the newest), for an operator to read."""
MAX_STREAM_ROWS = 250_000
"""Rows the stream holds at most (about 150 MB of Redis memory at ~625 bytes a row); past it,
rows go to the local disk spool."""
STREAM_CHECK_INTERVAL = 5.0
"""Seconds between a writer's looks at its stream for rows left there (by another replica that
died, or before a restart); rows it spools there itself it knows of at once."""

# All rows of a batch or none, and never past the cap. ARGV[1] is the cap, the rest are rows.
_APPEND_SCRIPT = """
local cap = tonumber(ARGV[1])
if redis.call('XLEN', KEYS[1]) + #ARGV - 1 > cap then return -1 end
for i = 2, #ARGV do redis.call('XADD', KEYS[1], '*', 'r', ARGV[i]) end
return #ARGV - 1
"""


# Take or extend the replay lease when free or already ours. ARGV: token, milliseconds.
_LEASE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class StreamFullError(Exception):
    """The stream holds `max_rows` rows already: the caller keeps the rows elsewhere."""


def stream_key(tenant: str) -> str:
    """The Redis stream of a tenant's spooled usage rows, inside its ACL's `t:{<tenant>}:*`."""
    return tenant_key(tenant, "ledger", "spool")


def lease_key(tenant: str) -> str:
    """Who replays the stream now: one replica at a time, so they do not insert in lockstep."""
    return tenant_key(tenant, "ledger", "replaying")


def rejected_key(tenant: str) -> str:
    """The Redis stream of spooled rows that Postgres refused as data."""
    return tenant_key(tenant, "ledger", "rejected")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def encode_row(row: Mapping[str, Any]) -> str:
    """A row as one line of JSON (the disk spool's lines and the stream's entries alike)."""
    return json.dumps(row, separators=(",", ":"), default=str)


class StreamSpool:
    """Rows waiting for Postgres in a Redis stream that every replica of the tenant shares.

    A pod that dies (a rollout, an eviction, a crash) leaves its rows here for the next writer
    that reaches Postgres, whichever replica that is. Replay reads entries in order, inserts
    them, then deletes exactly the entries it inserted (XDEL by id): two replicas replaying at
    once insert some rows twice (ON CONFLICT makes that harmless) and never delete a row that
    is not in Postgres. Asynchronous methods use the gateway's client; `append_blocking` opens a
    short synchronous connection with the same parameters, for the interpreter's exit, when the
    event loop of that client is gone.
    """

    def __init__(
        self, client: RedisClient, tenant: str, *, max_rows: int = MAX_STREAM_ROWS
    ) -> None:
        self.token = secrets.token_hex(8)
        """This writer's name in the replay lease."""
        self.client = client
        self.key = stream_key(tenant)
        self.rejected_key = rejected_key(tenant)
        self.lease_key = lease_key(tenant)
        self.max_rows = max_rows
        self._append = register_script(client, _APPEND_SCRIPT)
        self._lease = register_script(client, _LEASE_SCRIPT)
        self._release = register_script(client, _RELEASE_SCRIPT)
        self._sync: redis.Redis | redis.RedisCluster | None = None

    async def append(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Add rows atomically (all or none); how many. Raises StreamFullError or Redis errors."""
        if not rows:
            return 0
        added = await self._append(keys=[self.key], args=[self.max_rows, *map(encode_row, rows)])
        if int(added) < 0:
            raise StreamFullError(f"{self.key} holds {self.max_rows} rows already")
        return int(added)

    async def lease(self, token: str, seconds: float) -> bool:
        """Take (or extend) the replay lease for `seconds`; False when another replica has it.

        Only an economy: replay stays correct without it (two replicas replaying at once insert
        rows twice, which ON CONFLICT skips); a holder that dies frees it when it expires.
        """
        taken = await self._lease(keys=[self.lease_key], args=[token, max(int(seconds * 1000), 1)])
        return int(taken) == 1

    async def release(self, token: str) -> None:
        await self._release(keys=[self.lease_key], args=[token])

    async def length(self) -> int:
        return int(await self.client.xlen(self.key))

    async def last_id(self) -> str | None:
        """The id of the newest entry, None when the stream is empty or absent."""
        newest = await self.client.xrevrange(self.key, "+", "-", count=1)
        return _text(newest[0][0]) if newest else None

    async def read(
        self, after: str | None, upto: str, count: int
    ) -> list[tuple[str, dict[str, Any] | None]]:
        """Up to `count` entries after id `after` (from the start when None) up to `upto`.

        Each is (id, row); row is None for an entry that is not a row (deleted with the rest).
        """
        start = "-" if after is None else f"({after}"
        entries = await self.client.xrange(self.key, start, upto, count=count)
        result: list[tuple[str, dict[str, Any] | None]] = []
        for entry_id, fields in entries:
            row: dict[str, Any] | None = None
            raw = fields.get(STREAM_FIELD) or fields.get(STREAM_FIELD.encode())
            try:
                loaded = json.loads(raw) if raw is not None else None
            except ValueError:
                loaded = None
            if isinstance(loaded, dict):
                row = loaded
            else:
                log.warning("skipping unreadable entry %s of %s", _text(entry_id), self.key)
            result.append((_text(entry_id), row))
        return result

    async def delete(self, ids: Sequence[str]) -> int:
        """Delete replayed entries by id."""
        return int(await self.client.xdel(self.key, *ids)) if ids else 0

    async def reject(self, row: Mapping[str, Any], reason: str) -> None:
        """Keep a row Postgres refused, with the reason, in the rejected stream (bounded)."""
        await self.client.xadd(
            self.rejected_key,
            {STREAM_FIELD: encode_row(row), "reason": reason[:500]},
            maxlen=MAX_REJECTED_ROWS,
            approximate=True,
        )

    def append_blocking(self, rows: Sequence[Mapping[str, Any]], timeout: float = 2.0) -> int:
        """`append` over a synchronous connection: callable with or without an event loop."""
        if not rows:
            return 0
        if self._sync is None:
            self._sync = _sync_client(self.client, timeout)
        sync: Any = self._sync  # redis-py types eval per client class
        # EVAL: a rare call (shutdown), and it reaches the node of the key on a Cluster too.
        added = sync.eval(_APPEND_SCRIPT, 1, self.key, self.max_rows, *map(encode_row, rows))
        if int(added) < 0:
            raise StreamFullError(f"{self.key} holds {self.max_rows} rows already")
        return int(added)

    def close_blocking(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None


_SYNC_KWARGS = ("host", "port", "db", "username", "password", "path")


def _sync_client(client: RedisClient, timeout: float) -> redis.Redis | redis.RedisCluster:
    """A synchronous client to the same server or Cluster, as the same user, as an asyncio
    client."""
    if isinstance(client, aioredis.RedisCluster):
        node = client.get_default_node()
        same: dict[str, Any] = {
            k: client.connection_kwargs.get(k) for k in ("username", "password")
        }
        if issubclass(client.connection_kwargs["connection_class"], aioredis.SSLConnection):
            same["ssl"] = True
        return redis.RedisCluster(
            host=node.host,
            port=int(node.port),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            **same,
        )
    pool = client.connection_pool
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in _SYNC_KWARGS}
    if "path" in kwargs:
        kwargs["unix_socket_path"] = kwargs.pop("path")
    ssl = {k: v for k, v in pool.connection_kwargs.items() if k.startswith("ssl_")}
    if issubclass(pool.connection_class, aioredis.SSLConnection):
        kwargs.update(ssl, ssl=True)
    return redis.Redis(**kwargs, socket_timeout=timeout, socket_connect_timeout=timeout)
