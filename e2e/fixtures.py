"""pytest fixtures that bring up the real local control plane, PostgreSQL and Redis.

A fixture reuses servers that are already running and leaves them running; servers it had to
start itself are stopped at the end of the session. When something cannot start, the test fails
with the launcher's own message and the tail of its log, never a silent skip.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from kubernetes.client import ApiClient
from kubernetes.config import new_client_from_config
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT / ".dev"


@dataclass(frozen=True)
class Cluster:
    """A running local control plane."""

    kubeconfig: Path
    bin_dir: Path

    @property
    def kubectl(self) -> str:
        return str(self.bin_dir / "kubectl")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}:{env.get('PATH', '')}"
        return env

    def run_kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.kubectl, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=120,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"kubectl {shlex.join(args)} failed:\n{proc.stderr}")
        return proc


@dataclass(frozen=True)
class Services:
    """Admin endpoints of the local PostgreSQL and Redis."""

    postgres_dsn: str
    redis_url: str


def _read_env(path: Path) -> dict[str, str]:
    """Parse the `export NAME="value"` lines that the launchers write."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, raw = line.removeprefix("export ").partition("=")
            values[name] = shlex.split(raw)[0] if raw else ""
    return values


def _launch(script: str, what: str) -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / script)], capture_output=True, text=True, timeout=1800
    )
    if proc.returncode != 0:
        logs = DEV / "logs"
        tails = []
        if logs.is_dir():
            for log in sorted(p for p in logs.glob("*.log") if not p.name.startswith("audit")):
                tail = log.read_text(errors="replace").splitlines()[-15:]
                tails.append(f"--- {log.name}\n" + "\n".join(tail))
        pytest.fail(
            f"could not start {what} ({script} exited {proc.returncode}):\n"
            f"{proc.stderr[-4000:]}\n" + "\n".join(tails),
            pytrace=False,
        )


def _cluster_is_up() -> bool:
    pids = DEV / "cluster" / "pids"
    if not (DEV / "cluster.env").exists() or not pids.is_dir():
        return False
    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"):
        pid_file = pids / f"{name}.pid"
        if not pid_file.exists():
            return False
        try:
            os.kill(int(pid_file.read_text()), 0)
        except (OSError, ValueError):
            return False
    return True


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The local control plane: etcd, kube-apiserver, controller-manager, scheduler, kwok."""
    started = not _cluster_is_up()
    _launch("e2e/cluster/up.sh", "the local control plane")
    env = _read_env(DEV / "cluster.env")
    bin_dir = Path(env["PATH"].split(":")[0])
    yield Cluster(kubeconfig=Path(env["KUBECONFIG"]), bin_dir=bin_dir)
    if started and not os.environ.get("TENANTGW_KEEP_CLUSTER"):
        subprocess.run(["bash", str(ROOT / "e2e/cluster/down.sh")], check=False, timeout=120)


def _services_are_up() -> bool:
    state = DEV / "services"
    pg_pid = state / "postgres" / "postmaster.pid"
    redis_pid = state / "redis.pid"
    if not (pg_pid.exists() and redis_pid.exists()):
        return False
    try:
        os.kill(int(pg_pid.read_text().splitlines()[0]), 0)
        os.kill(int(redis_pid.read_text()), 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """PostgreSQL and Redis on loopback with admin credentials."""
    started = not _services_are_up()
    _launch("e2e/services/up.sh", "PostgreSQL and Redis")
    env = _read_env(DEV / "services.env")
    yield Services(postgres_dsn=env["TENANTGW_POSTGRES_DSN"], redis_url=env["TENANTGW_REDIS_URL"])
    if started and not os.environ.get("TENANTGW_KEEP_SERVICES"):
        subprocess.run(["bash", str(ROOT / "e2e/services/down.sh")], check=False, timeout=120)


@pytest.fixture(scope="session")
def kube(cluster: Cluster) -> Iterator[ApiClient]:
    """A kubernetes client of the local control plane with admin rights."""
    client = new_client_from_config(config_file=str(cluster.kubeconfig))
    yield client
    client.close()


@contextlib.contextmanager
def tenant_role(services: Services, prefix: str) -> Iterator[tuple[str, str]]:
    """A tenant role owning its schema, as the operator provisions it: (role, DSN); dropped
    afterwards with its sessions."""
    role, password = f"{prefix}_{uuid.uuid4().hex[:12]}", secrets.token_hex(16)
    parts = urlsplit(services.postgres_dsn)
    netloc = f"{quote(role)}:{quote(password)}@{parts.hostname}:{parts.port}"
    ident = sql.Identifier(role)
    with psycopg.connect(services.postgres_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident, sql.Literal(password))
        )
        admin.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(ident, ident))
        admin.execute(sql.SQL("ALTER ROLE {} SET search_path = {}").format(ident, ident))
    try:
        yield role, urlunsplit(parts._replace(netloc=netloc))
    finally:
        with psycopg.connect(services.postgres_dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [role]
            )
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident))
            admin.execute(sql.SQL("DROP ROLE {}").format(ident))
