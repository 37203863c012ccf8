"""Log lines for collectors: one JSON object per line, from the operator and the gateway.

Every line has `timestamp` (RFC 3339, UTC, milliseconds), `level`, `logger` and `message`,
then the record's structured fields (`logger.info(..., extra={...})`), an `exception` with the
traceback when there is one, and for kopf's per-object records the object they are about
(`object`: apiVersion, kind, namespace, name, uid). docs/operations.md ("Logs") has the schema.

$TENANTGW_LOG_FORMAT chooses `json` (what the manifests, the chart and the operator's rendered
gateways set) or `text` (the default of a process started by hand, and of the tests: readable
in a terminal). Shared by the operator and the gateway, so it imports neither.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

FORMAT_ENV = "TENANTGW_LOG_FORMAT"
LogFormat = Literal["json", "text"]
FORMATS: tuple[LogFormat, ...] = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's colored copy of the message
    "litellm_redacted",  # LiteLLM's mark that its secret filter saw the record
    # kopf's per-object adapter: its settings object and event flag are no log fields.
    "settings",
    "k8s_skip",
    "k8s_ref",
}


def log_format(env: Any = None) -> LogFormat:
    """$TENANTGW_LOG_FORMAT (`json` or `text`), else `text`; anything else is refused."""
    raw = str((os.environ if env is None else env).get(FORMAT_ENV, "") or "text").strip().lower()
    for known in FORMATS:
        if raw == known:
            return known
    raise ValueError(f"{FORMAT_ENV}={raw!r}: use json or text")


def timestamp(created: float) -> str:
    """Epoch seconds as RFC 3339 in UTC with milliseconds: 2026-01-31T12:00:00.123Z."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class JsonFormatter(logging.Formatter):
    """A record as one JSON object on one line (see the module doc for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        ref = record.__dict__.get("k8s_ref")
        if isinstance(ref, dict):
            entry["object"] = {k: v for k, v in ref.items() if v is not None}
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        elif record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str)


def formatter(fmt: LogFormat) -> logging.Formatter:
    """The formatter of `fmt`: JSON lines, or tenantgw's one-line text."""
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def install(fmt: LogFormat, *, level: int = logging.INFO) -> None:
    """Every record of this process through the root logger's handlers, in `fmt`.

    Handlers the root logger already has (kopf's) keep their place and get the formatter;
    without one, a handler on stderr is added. Third-party loggers propagate to it, so no
    record falls through to Python's last-resort plain-text handler. tenantgw's loggers log
    from `level` on; the root logger's own level (kopf's -v/-q) is left as it is. In JSON,
    Python's warnings become records, and whatever a library prints on stdout or stderr
    (a banner, a stray print) becomes a JSON line too (`StrayLines`).
    """
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(formatter(fmt))
    tenantgw = logging.getLogger("tenantgw")
    tenantgw.handlers.clear()
    tenantgw.propagate = True
    tenantgw.setLevel(level)
    if fmt == "json":
        logging.captureWarnings(True)
        if not isinstance(sys.stdout, StrayLines):
            sys.stdout = StrayLines(sys.stdout, "stdout")
        if not isinstance(sys.stderr, StrayLines):
            sys.stderr = StrayLines(sys.stderr, "stderr")


class StrayLines:
    """A text stream that passes JSON lines through and turns any other line into one.

    Handlers made before it keep writing to the real stream; what reaches this one is
    whatever code writes to sys.stdout / sys.stderr itself: rare, so each line is checked.
    Blank lines are dropped.
    """

    def __init__(self, stream: TextIO, name: str) -> None:
        self.stream = stream
        self.name = name
        self._partial = ""

    def write(self, text: str) -> int:
        data = self._partial + text
        *lines, self._partial = data.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        if not line.strip():
            return
        if line.startswith("{"):
            try:
                if isinstance(json.loads(line), dict):
                    self.stream.write(line + "\n")
                    return
            except ValueError:
                pass
        record = {
            "timestamp": timestamp(time.time()),
            "level": "INFO" if self.name == "stdout" else "WARNING",
            "logger": self.name,
            "message": line.rstrip(),
        }
        self.stream.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        if self._partial:
            line, self._partial = self._partial, ""
            self._line(line)
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, buffer...
        return getattr(self.stream, name)
