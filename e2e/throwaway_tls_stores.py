"""A PostgreSQL and a redis-server of a test's own that speak TLS only, on free ports.

Never the shared servers of .dev/: each gets its own data directory, port and certificate
(signed by the test's CA). PostgreSQL's pg_hba accepts `hostssl` only and rejects any
plaintext connection, Redis listens on a --tls-port only (port 0: no plaintext listener), so a
client that falls back to plaintext cannot connect at all.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from e2e.throwaway_postgres import as_postgres, free_port
from e2e.throwaway_postgres import pg_bin as throwaway_pg_bin
from e2e.tls_certs import Pem

PG_ADMIN = "tls_admin"


@dataclass
class TlsPostgres:
    """A running TLS-only PostgreSQL; `dsn(ca, mode)` connects as its superuser."""

    port: int
    password: str
    datadir: Path
    process: subprocess.Popen[bytes]

    def dsn(self, ca: Path | str, sslmode: str = "verify-full", host: str = "localhost") -> str:
        return (
            f"postgresql://{PG_ADMIN}:{quote(self.password, safe='')}@{host}:{self.port}/"
            f"tenantgw?sslmode={sslmode}&sslrootcert={ca}"
        )


@contextlib.contextmanager
def tls_postgres(server: Pem) -> Iterator[TlsPostgres]:
    """initdb in a fresh directory, ssl=on with `server`'s pair, hostssl only; removed after."""
    pg_bin = throwaway_pg_bin()
    # Outside pytest's tmp (mode 0700, root's): the postgres user must reach the directory.
    root = Path(tempfile.mkdtemp(prefix="tenantgw-pgtls-"))
    datadir, certs = root / "data", root / "certs"
    certs.mkdir()
    shutil.copy(server.cert, certs / "server.crt")
    shutil.copy(server.key, certs / "server.key")
    password = secrets.token_urlsafe(24)
    (root / "pw").write_text(password)
    if os.getuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        for path in (certs, certs / "server.crt", certs / "server.key", root / "pw"):
            shutil.chown(path, "postgres", "postgres")
    (certs / "server.key").chmod(0o600)
    port = free_port()
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            as_postgres(
                [str(pg_bin / "initdb"), "-D", str(datadir), "-U", PG_ADMIN,
                 f"--pwfile={root / 'pw'}", "--auth=scram-sha-256", "-E", "UTF8"]
            ),
            check=True, capture_output=True, cwd="/",
        )  # fmt: skip
        (datadir / "pg_hba.conf").write_text(
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
            "hostnossl all all 0.0.0.0/0 reject\n"
            "local all all scram-sha-256\n"
        )
        proc = subprocess.Popen(
            as_postgres(
                [str(pg_bin / "postgres"), "-D", str(datadir), "-p", str(port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}",
                 "-c", "ssl=on", "-c", f"ssl_cert_file={certs / 'server.crt'}",
                 "-c", f"ssl_key_file={certs / 'server.key'}", "-c", "fsync=off",
                 "-c", "max_connections=40"]
            ),
            stdout=(root / "postgres.log").open("wb"), stderr=subprocess.STDOUT, cwd="/",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            ready = subprocess.run(
                [str(pg_bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                capture_output=True, check=False,
            )  # fmt: skip
            if ready.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (root / "postgres.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the TLS PostgreSQL did not start:\n{log}")
            time.sleep(0.1)
        env = {**os.environ, "PGPASSWORD": password}
        subprocess.run(
            [str(pg_bin.parent / "bin" / "psql"), "-h", "127.0.0.1", "-p", str(port),
             "-U", PG_ADMIN, "-d", "postgres", "-c", "create database tenantgw"],
            env={**env, "PGSSLMODE": "require"}, check=True, capture_output=True,
        )  # fmt: skip
        yield TlsPostgres(port, password, datadir, proc)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class TlsRedis:
    """A running TLS-only redis-server with a password for `default`."""

    port: int
    password: str
    process: subprocess.Popen[bytes]

    def url(self, ca: Path | str, host: str = "localhost") -> str:
        return (
            f"rediss://default:{quote(self.password, safe='')}@{host}:{self.port}/0"
            f"?ssl_ca_certs={ca}"
        )


@contextlib.contextmanager
def tls_redis(server: Pem, workdir: Path) -> Iterator[TlsRedis]:
    """redis-server with --port 0 (no plaintext) and --tls-port; clients need no certificate."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (make setup installs it)")
    workdir.mkdir(parents=True, exist_ok=True)
    port, password = free_port(), secrets.token_urlsafe(24)
    proc = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(server.cert), "--tls-key-file", str(server.key),
         "--tls-auth-clients", "no", "--requirepass", password, "--save", "",
         "--appendonly", "no", "--dir", str(workdir),
         "--logfile", str(workdir / "redis-tls.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the TLS redis-server did not start")
            time.sleep(0.05)
        yield TlsRedis(port, password, proc)
    finally:
        proc.kill()
        proc.wait(10)
