"""A redis-server of a test's own, on a free port, that the test may freeze, kill and restart.

Never the shared Redis of .dev/: tests that take a store down use one of these.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from e2e.ports import free_port as _free_port


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    for _ in range(200):
        port = random.randint(20000, 45000)  # noqa: S311 (a port, not a secret)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class ThrowawayRedis:
    """One redis-server process without persistence; `url` stays the same across restarts."""

    def __init__(self, workdir: Path, *, cluster: bool = False) -> None:
        self.workdir = workdir
        self.port = _free_cluster_port() if cluster else _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self._options: tuple[str, ...] = ()
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make setup installs it)")
        self.binary = binary

    def start(self, *options: str) -> None:
        self._options = options
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "redis.log"),
            *options,
        ]  # fmt: skip
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.exceptions.RedisError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise
                    time.sleep(0.05)
        finally:
            client.close()

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers (a hung server)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL, as a crash: every key is gone (no persistence)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        """SIGTERM, as an orderly shutdown: with `--appendonly yes` what it holds is kept."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
        self.process.wait(30)
        self.process = None

    def start_again(self) -> None:
        """Start after `stop` or `kill`, with the options of the last `start`."""
        self.start(*self._options)

    def restart(self) -> None:
        self.kill()
        self.start(*self._options)


@contextlib.contextmanager
def throwaway_redis(workdir: Path) -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(workdir)
    server.start()
    try:
        yield server
    finally:
        server.kill()


class CommandLog:
    """Every command a Redis server runs while it is open (MONITOR, in a thread).

    `round_trips()` are the commands clients sent (not those a Lua script ran), each one a
    round trip, as (client "host:port", command words); `ignore` holds clients not to count
    (test helpers). Script calls show as `EVALSHA <sha> ...`: `script_of()` names them.
    """

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url, socket_timeout=None)
        self._monitor = self._client.monitor()  # type: ignore[no-untyped-call]
        self._entries: list[dict[str, Any]] = []
        self._thread: threading.Thread | None = None
        self.ignore: set[str] = set()

    def __enter__(self) -> CommandLog:
        self._monitor.__enter__()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        with contextlib.suppress(redis.exceptions.RedisError, OSError, ValueError, AttributeError):
            while True:
                entry = self._monitor.next_command()
                if entry is not None:
                    self._entries.append(entry)

    def __exit__(self, *exc: object) -> None:
        self._monitor.__exit__()
        if self._thread is not None:
            self._thread.join(5)
        self._client.close()

    def mark(self) -> int:
        """A position in the log, to count from."""
        return len(self._entries)

    def round_trips(self, since: int = 0) -> list[tuple[str, list[str]]]:
        out = []
        for entry in self._entries[since:]:
            if entry["client_type"] == "lua":
                continue
            client = f"{entry['client_address']}:{entry['client_port']}"
            if client in self.ignore:
                continue
            out.append((client, entry["command"].split(" ")))
        return out


def script_sha(text: str) -> str:
    """The SHA1 that EVALSHA names a script by."""
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 (Redis's name for it)


def _command(client: redis.Redis, *args: Any) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


class ThrowawayCluster:
    """A Redis Cluster of `masters` masters with one replica each, redis-servers of a test's own
    on free ports, without persistence. `url` is `redis+cluster://` to its first node."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        self.workdir = workdir
        self.nodes = [
            ThrowawayRedis(workdir / f"node{i}", cluster=True) for i in range(2 * masters)
        ]
        self.masters = masters
        self.url = f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> None:
        for node in self.nodes:
            node.workdir.mkdir(parents=True, exist_ok=True)
            node.start(
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node.workdir / "nodes.conf"),
                "--cluster-node-timeout", "2000",
            )  # fmt: skip
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            timeout=60,
        )
        self.wait_ok()

    def client(self, node: ThrowawayRedis) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=node.port, socket_timeout=2, decode_responses=True
        )

    def wait_ok(self, seconds: float = 30, *, replicas: bool = True) -> None:
        """Until every running node says cluster_state:ok, and (`replicas`) every master has a
        replica that serves."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                running = [self.client(n) for n in self.nodes if n.process is not None]
                ok = all("cluster_state:ok" in _command(c, "CLUSTER", "INFO") for c in running)
                if ok and replicas:
                    slots = _command(running[0], "CLUSTER", "SLOTS")
                    ok = all(len(entry) >= 4 for entry in slots)
                if ok:
                    return
            except redis.exceptions.RedisError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the Redis Cluster did not become ok")
            time.sleep(0.1)

    def node_of(self, port: int) -> ThrowawayRedis:
        return next(n for n in self.nodes if n.port == port)

    def master_of(self, key: str) -> tuple[ThrowawayRedis, ThrowawayRedis | None]:
        """The node serving `key`'s slot, and a replica of it (None while it has none)."""
        running = next(n for n in self.nodes if n.process is not None)
        admin = self.client(running)
        slot = int(_command(admin, "CLUSTER", "KEYSLOT", key))
        for start, end, master, *replicas in _command(admin, "CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                replica = self.node_of(int(replicas[0][1])) if replicas else None
                return self.node_of(int(master[1])), replica
        raise AssertionError(f"no master serves slot {slot}")

    def failover(self, key: str) -> ThrowawayRedis:
        """CLUSTER FAILOVER on the replica of `key`'s master (coordinated: no write lost);
        returns the new master once it serves."""
        _, new = self.master_of(key)
        assert new is not None, f"the master of {key} has no replica"
        _command(self.client(new), "CLUSTER", "FAILOVER")
        self._wait_master(key, new)
        return new

    def kill_master(self, key: str) -> tuple[ThrowawayRedis, ThrowawayRedis]:
        """SIGKILL the master of `key`'s slot, as a crash; (the dead node, its replica)."""
        old, new = self.master_of(key)
        assert new is not None, f"the master of {key} has no replica"
        old.kill()
        return old, new

    def _wait_master(self, key: str, node: ThrowawayRedis, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while self.master_of(key)[0] is not node:
            if time.monotonic() > deadline:
                raise AssertionError(f"{node.port} did not take over {key}'s slot")
            time.sleep(0.1)
        self.wait_ok(seconds, replicas=False)

    def wait_promoted(self, key: str, node: ThrowawayRedis, seconds: float = 30) -> None:
        """Until `node` serves `key`'s slot (a replica promoted after its master died)."""
        self._wait_master(key, node, seconds)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


@contextlib.contextmanager
def throwaway_cluster(workdir: Path, masters: int = 3) -> Iterator[ThrowawayCluster]:
    cluster = ThrowawayCluster(workdir, masters)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
