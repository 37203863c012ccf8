"""Background processes of `make demo`: started in their own session, tracked by pid files.

A pid file alone is not trusted (pids get reused): a process counts as ours only while its
command line still holds the marker of its name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from e2e.fixtures import DEV, ROOT

T = TypeVar("T")

STATE = DEV / "demo"
LOGS = DEV / "logs"
MARKERS: dict[str, tuple[str, ...]] = {
    "operator": ("tenantgw.operator.handlers",),
    "simulator": ("e2e.provider_sim",),
    # podman running the container `tenantgw-demo-gateway`, or `tenantctl dev gateway`
    "gateway": ("tenantgw-demo-gateway", "tenantctl"),
}
"""What the command line of each background process holds (one of)."""


class DemoError(SystemExit):
    """A step failed; the message says which and what to look at."""

    def __init__(self, message: str) -> None:
        super().__init__(f"\nmake demo: {message}")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, a rule under the header."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def step(what: str, action: Callable[[], T]) -> T:
    """Run a helper shared with the tests; their pytest.fail becomes a DemoError."""
    try:
        return action()
    except pytest.fail.Exception as exc:
        raise DemoError(f"{what} failed: {exc}") from None


# --------------------------------------------------------------------------- processes


def _pid_file(name: str) -> Path:
    return STATE / f"{name}.pid"


def running_pid(name: str) -> int | None:
    """The pid of our background process `name`, if it is still alive."""
    try:
        pid = int(_pid_file(name).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return None
    return pid if any(marker in cmdline for marker in MARKERS[name]) else None


def start_background(
    name: str, argv: Sequence[str], env: dict[str, str] | None = None
) -> tuple[int, Path]:
    """Start `argv` in its own session (it outlives `make`); returns (pid, log file)."""
    STATE.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    log_file = LOGS / f"demo-{name}.log"
    with log_file.open("wb") as out:
        proc = subprocess.Popen(
            list(argv),
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _pid_file(name).write_text(f"{proc.pid}\n")
    return proc.pid, log_file


def stop_background(name: str, timeout: float = 30) -> None:
    """SIGTERM our process `name` (its whole session), SIGKILL it if it does not go."""
    pid = running_pid(name)
    _pid_file(name).unlink(missing_ok=True)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    with contextlib.suppress(OSError):  # the session we started: the gateway under tenantctl
        os.killpg(pid, signal.SIGKILL)
    say(f"{name} stopped (pid {pid})")


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # reap it if it is our child
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _log_tail(log_file: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (loopback)
            status: int = resp.status
            return 200 <= status < 300
    except (OSError, urllib.error.HTTPError):
        return False


def wait_http(name: str, url: str, pid: int, log_file: Path, timeout: float) -> float:
    """Seconds until `url` answers 2xx; DemoError if the process dies or time runs out."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if http_ok(url):
            return time.monotonic() - started
        if not _alive(pid):
            raise DemoError(
                f"the {name} exited during start-up; {log_file}:\n{_log_tail(log_file)}"
            )
        time.sleep(0.5)
    raise DemoError(
        f"the {name} did not answer {url} in {timeout:.0f}s; {log_file}:\n{_log_tail(log_file)}"
    )
