"""A local spool of ledger rows that could not be written to Postgres: JSON lines, fsynced.

Each process appends to its own file, `<name>-active-<pid>.jsonl`. To replay, the writer first
*claims* the file by renaming it to `<name>-pending-<pid>-<ns>.jsonl`, so rows appended while a
replay runs go to a fresh file and are never deleted unread; a pending file is deleted only
after all its rows are in Postgres. Active files of processes that no longer run (a crashed
gateway, a restarted container sharing the same emptyDir) are claimed too. Replaying a file
twice is harmless: the ledger inserts by request_id with ON CONFLICT DO NOTHING.

The methods do blocking file I/O; the ledger calls them through `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

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
        lines = [json.dumps(row, separators=(",", ":"), default=str) + "\n" for row in rows]
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
