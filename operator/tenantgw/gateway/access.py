"""The gateway's access log: exactly one line per request, never a body, a prompt or a key.

A request the plugins meter (it reached the pre-call hook with a tenant key) gets its line
from the meter, when its ledger row is decided (`metering.Meter`): tenant, key name, the
alias asked for and the one that served, provider and provider model, HTTP status, latency,
tokens, cost, request id and session. Every other request (refused by the middleware,
answered by it like /v1/models and count_tokens, a bad key, a probe) gets its line from the
middleware when its response is sent (`app.GatewayMiddleware`): method, path (no query),
status, latency and the key's name when it was authenticated. The middleware hands each
request an `Exchange` through a context variable; the pre-call hook marks it metered, so
exactly one of the two writes the line.

A call the gateway makes itself (auto mode's classifier) is a request of its own in the
ledger and so has its own line, with `parent_request_id`. One `json.dumps` per line: the
record is pre-rendered and the handler writes its message as is. docs/operations.md ("Logs")
has the schema.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.usage import UsageRecord
from tenantgw.jsonlog import LogFormat, timestamp

LOGGER = "tenantgw.access"
MAX_PATH = 256
"""A longer path (only a refused one can be) is cut: the line stays bounded."""

log = logging.getLogger(LOGGER)


@dataclass
class Exchange:
    """One HTTP request as the middleware sees it, until its line is written."""

    method: str
    path: str
    started: float = field(default_factory=time.monotonic)
    status: int | None = None
    key: str | None = None
    metered: bool = False
    credential_failure: str | None = None
    """Set by the failure hook when the provider's credential could not be obtained
    (`credfail`): the error answer becomes a 502 saying so."""


CURRENT: ContextVar[Exchange | None] = ContextVar("tenantgw_access", default=None)


class AccessLog:
    """Writes access lines in the process's log format (`jsonlog.FORMAT_ENV`)."""

    def __init__(self, fmt: LogFormat = "text") -> None:
        self.json = fmt == "json"

    def configure(self, fmt: LogFormat) -> None:
        """Render lines as `fmt` from now on; the logger writes messages as they come."""
        self.json = fmt == "json"
        handler = logging.StreamHandler(sys.__stderr__)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.handlers[:] = [handler]
        log.setLevel(logging.INFO)
        log.propagate = False

    def write(self, fields: dict[str, Any]) -> None:
        """Write one line of `fields` (None values left out; the dict is consumed)."""
        if not log.isEnabledFor(logging.INFO):
            return
        for key in [key for key, value in fields.items() if value is None]:
            del fields[key]
        if self.json:
            fields["timestamp"] = timestamp(time.time())
            fields["level"] = "INFO"
            fields["logger"] = LOGGER
            fields["message"] = "request"
            line = json.dumps(fields, default=str)
        else:
            line = "access " + " ".join(f"{key}={value}" for key, value in fields.items())
        log.info(line)

    # ---- the two writers

    def metered(self, rec: UsageRecord, ctx: RequestContext) -> None:
        """The line of a metered request, from its final record."""
        latency = rec.latency_ms
        if latency is None and ctx.started_at:
            latency = round((time.monotonic() - ctx.started_at) * 1000)
        fields: dict[str, Any] = {
            "tenant": rec.tenant,
            "key": rec.key_name,
            "request_id": rec.request_id,
            "call_type": ctx.call_type or None,
            "requested_model": rec.requested_model,
            "alias": rec.alias,
            "routed_alias": ctx.alias if ctx.alias and ctx.alias != rec.alias else None,
            "provider": rec.provider,
            "model": rec.provider_model,
            "status": rec.http_status or (200 if rec.status == "success" else 500),
            "outcome": rec.status,
            "error_type": rec.error_type,
            "latency_ms": latency,
            "ttft_ms": rec.ttft_ms if rec.stream else None,
            "stream": rec.stream,
            "input_tokens": rec.input_tokens,
            "output_tokens": rec.output_tokens,
            "cache_read_tokens": rec.cache_read_tokens,
            "cache_write_tokens": rec.cache_write_tokens,
            "cost_usd": round(rec.cost_usd, 8),
            "session_id": rec.session_id,
            "parent_request_id": rec.parent_request_id,
            "downgraded_from": rec.downgraded_from,
        }
        self.write(fields)

    def unmetered(self, exchange: Exchange, tenant: str | None) -> None:
        """The line of a request no meter saw, when the middleware sent its response."""
        fields: dict[str, Any] = {
            "tenant": tenant,
            "key": exchange.key,
            "method": exchange.method,
            "path": exchange.path[:MAX_PATH],
            "status": exchange.status or 0,
            "latency_ms": round((time.monotonic() - exchange.started) * 1000),
        }
        self.write(fields)


access_log = AccessLog()
"""The process's access log (`configure`d by the gateway's start-up)."""


def authenticated(key_name: str) -> None:
    """The request in progress was made with tenant key `key_name` (its name, never the key)."""
    exchange = CURRENT.get()
    if exchange is not None:
        exchange.key = key_name


def claim() -> None:
    """The request in progress is metered: the meter writes its line, the middleware does not."""
    exchange = CURRENT.get()
    if exchange is not None:
        exchange.metered = True
