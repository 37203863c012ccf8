"""A PostgreSQL cluster of a test's own, on a free port, that the test may stop and start.

Never the shared PostgreSQL of .dev/: a run that takes the database down (the soak's restart)
initdb's its own cluster from Debian's binaries in a temporary directory, with the same
settings as e2e/services/up.sh (scram-sha-256, fsync off), and removes it afterwards. `stop`
is `pg_ctl stop -m fast` (sessions terminated, as at a real restart); `start` brings the same
data directory back on the same port, so DSNs stay valid.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from e2e.ports import free_port

ADMIN = "soak_admin"
DATABASE = "tenantgw"


def pg_bin() -> Path:
    """The bin directory of the newest PostgreSQL Debian installed."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (make setup installs it)")
    return found[-1].parent


def as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as Debian's postgres user."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.getuid() == 0 else argv


class ThrowawayPostgres:
    """One PostgreSQL cluster in a fresh directory; `admin_dsn` connects as its superuser."""

    def __init__(self, max_connections: int = 60) -> None:
        self.bin = pg_bin()
        # Outside pytest's tmp and /root (mode 0700): the postgres user must reach it.
        self.root = Path(tempfile.mkdtemp(prefix="tenantgw-pg-"))
        self.datadir = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.max_connections = max_connections
        self.running = False

    @property
    def admin_dsn(self) -> str:
        return (
            f"postgresql://{ADMIN}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{DATABASE}"
        )

    def _run(self, argv: list[str], timeout: float = 90) -> None:
        proc = subprocess.run(
            as_postgres(argv), capture_output=True, text=True, cwd="/", timeout=timeout,
            check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{argv[0]} failed: {proc.stderr[-2000:]}\n{tail}")

    def init(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        self.log.touch()
        if os.getuid() == 0:
            for path in (self.root, pwfile, self.log):
                shutil.chown(path, "postgres", "postgres")
        self._run(
            [str(self.bin / "initdb"), "-D", str(self.datadir), "-U", ADMIN,
             f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8"]
        )  # fmt: skip
        pwfile.unlink()
        self.start()
        env = {**os.environ, "PGPASSWORD": self.password}
        subprocess.run(
            [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", ADMIN,
             "-d", "postgres", "-qc", f"create database {DATABASE}"],
            env=env, check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.root} -c max_connections={self.max_connections} "
            "-c fsync=off -c synchronous_commit=off"
        )
        self._run(
            [str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.log), "-w",
             "-t", "60", "start", "-o", options]
        )  # fmt: skip
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m <mode>`: fast terminates the sessions, as a restart does."""
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"])
        self.running = False

    def remove(self) -> None:
        if self.running:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def throwaway_postgres(max_connections: int = 60) -> Iterator[ThrowawayPostgres]:
    server = ThrowawayPostgres(max_connections)
    try:
        server.init()
        yield server
    finally:
        server.remove()
