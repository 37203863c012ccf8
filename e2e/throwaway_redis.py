"""A redis-server of a test's own, on a free port, that the test may freeze, kill and restart.

Never the shared Redis of .dev/: tests that take a store down use one of these.
"""

from __future__ import annotations

import contextlib
import hashlib
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayRedis:
    """One redis-server process without persistence; `url` stays the same across restarts."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make setup installs it)")
        self.binary = binary

    def start(self) -> None:
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "redis.log"),
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

    def restart(self) -> None:
        self.kill()
        self.start()


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
