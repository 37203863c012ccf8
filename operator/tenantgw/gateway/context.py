"""What the gateway knows about one request, kept where the client cannot write.

The pre-call hook builds a `RequestContext` from the authenticated key only (LiteLLM's
`UserAPIKeyAuth` that tenantgw's custom auth returned) and keeps it in this process, in a
`ContextStore`. Into LiteLLM's request metadata goes only a ticket: a random 128-bit token the
server draws per request and never sends to the client. The success and failure callbacks find
the context by that ticket; a ticket the store does not know finds nothing.

Why not more: the metadata (`metadata` / `litellm_metadata`) is a client-writable part of the
request body, and LiteLLM's call id (`litellm_call_id`) is taken from the client's
`x-litellm-call-id` header when one is sent, so neither can say which key is charged or which
rate-limit slot is freed. The request id the limits, budgets and ledger use is drawn here too.
Whatever a client sends under `tenantgw` in either metadata dict is dropped.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

METADATA_KEY = "tenantgw"
"""Key of the ticket in the request metadata (`data["metadata"]` / `data["litellm_metadata"]`)."""
METADATA_KEYS = ("metadata", "litellm_metadata")
MAX_LIVE = 100_000
"""Requests whose context this process keeps at once (the oldest go first past this)."""
LIVE_TTL_SECONDS = 900.0
"""A context whose request never reports an end is forgotten after this long (600 s timeout)."""
FINISHED_TTL_SECONDS = 60.0
"""A finished request's context stays this long for late events of the same request."""


def new_request_id() -> str:
    """A request id the client cannot choose (the ledger's primary key, the limits' member)."""
    return uuid.uuid4().hex


@dataclass
class RequestContext:
    """One request as the tenantgw plugins see it.

    `requested_model` is what the client sent, `alias` the ModelAlias the routing chose (after a
    budget downgrade: the alias actually called, and `downgraded_from` the one routing chose).
    `started_at` is `time.monotonic()` when the pre-call hook ran. `session_id` is the
    client's own label, validated; it never selects the key charged or the policies' scopes.
    """

    tenant: str
    key_name: str
    request_id: str
    requested_model: str
    alias: str
    cost_tier: str | None = None
    call_type: str = ""
    started_at: float = field(default_factory=time.monotonic)
    stream: bool = False
    pii_counts: dict[str, int] = field(default_factory=dict)
    downgraded_from: str | None = None
    review: Review | None = None
    """Claude Code asked for auto mode's safety check (`safeguards`): what the classifier needs."""
    parent_request_id: str | None = None
    """For a classifier call: the request whose tool calls it judges."""
    judged: tuple[str, ...] | None = None
    """For a classifier call: the tool_use ids it was asked about."""
    verdicts: dict[str, str] | None = None
    """For a classifier call that failed or was refused: the verdicts answered instead."""
    session_id: str | None = None
    """The client's Claude Code session (`sessions.py`, validated): a label under the key."""
    response_pii_counts: dict[str, int] = field(default_factory=dict)
    """PII entities found in the answer (redacted, or the reason it was withheld)."""
    response_pii_texts: dict[str, str] = field(default_factory=dict)
    """Texts of the answer the PII policy scanned: as received -> as sent (for the audit)."""
    response_withheld: bool = False
    """The answer was withheld by the PII policy's block mode (the client got an error)."""
    labels: dict[str, str] = field(default_factory=dict)
    """Cost labels: the key's, and the one the tenant's label header set (`costlabels.py`)."""
    list_model: str | None = None
    """The Claude model whose list price the request is compared with (`costlabels.py`)."""


@dataclass
class Review:
    """A request's auto-mode check: the classifier alias (None: the platform chose none), the
    agent's environment and the conversation, and whether a Claude-native deployment served
    (then `safeguards` went upstream and the provider answers it)."""

    classifier: str | None
    timeout: float
    environment: str
    transcript: str
    native: bool = False


@dataclass
class Tracked:
    """A request this process keeps the context of: its ticket and whether it holds a slot."""

    ticket: str
    ctx: RequestContext
    since: float
    holds_slot: bool = False
    finished_at: float | None = None

    def take_slot(self) -> bool:
        """True once while the request holds a rate-limit slot (the caller frees it)."""
        held, self.holds_slot = self.holds_slot, False
        return held


def metadata_key(data: Mapping[str, Any], call_type: str | None = None) -> str:
    """Which key of LiteLLM's request `data` holds its metadata dict.

    `/v1/messages` (call type `anthropic_messages`) uses `litellm_metadata`, because `metadata`
    is an Anthropic request parameter there; chat and the rest use `metadata`.
    """
    if "litellm_metadata" in data or call_type == "anthropic_messages":
        return "litellm_metadata"
    return "metadata"


def request_metadata(data: dict[str, Any], call_type: str | None = None) -> dict[str, Any]:
    """LiteLLM's metadata dict of a request, created when absent."""
    key = metadata_key(data, call_type)
    metadata = data.get(key)
    if not isinstance(metadata, dict):
        metadata = {}
        data[key] = metadata
    return metadata


def drop_client_context(data: Mapping[str, Any]) -> None:
    """Remove whatever the client put under `tenantgw` in either metadata dict."""
    for key in METADATA_KEYS:
        metadata = data.get(key)
        if isinstance(metadata, dict):
            metadata.pop(METADATA_KEY, None)


def metadata_from_kwargs(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    """The request metadata as a success/failure callback receives it."""
    params = kwargs.get("litellm_params")
    if isinstance(params, Mapping):
        metadata = params.get("metadata")
        if isinstance(metadata, Mapping):
            return metadata
    return {}


class ContextStore:
    """The contexts of this process's requests in progress, found by their ticket only."""

    def __init__(
        self,
        *,
        max_live: int = MAX_LIVE,
        live_ttl: float = LIVE_TTL_SECONDS,
        finished_ttl: float = FINISHED_TTL_SECONDS,
    ) -> None:
        self.max_live = max_live
        self.live_ttl = live_ttl
        self.finished_ttl = finished_ttl
        self._live: OrderedDict[str, Tracked] = OrderedDict()
        self._finished: OrderedDict[str, Tracked] = OrderedDict()

    def __len__(self) -> int:
        return len(self._live) + len(self._finished)

    def attach(self, data: dict[str, Any], call_type: str, ctx: RequestContext) -> Tracked:
        """Keep `ctx` and put a fresh ticket for it into the request's metadata."""
        self._sweep()
        ticket = secrets.token_hex(16)
        tracked = Tracked(ticket, ctx, time.monotonic())
        self._live[ticket] = tracked
        request_metadata(data, call_type)[METADATA_KEY] = ticket
        return tracked

    def find(self, metadata: Mapping[str, Any] | None) -> Tracked | None:
        """The request whose ticket `metadata` carries; None for an unknown or forged one."""
        if not metadata:
            return None
        ticket = metadata.get(METADATA_KEY)
        if not isinstance(ticket, str):
            return None
        return self._live.get(ticket) or self._finished.get(ticket)

    def find_in_request(self, data: Mapping[str, Any]) -> Tracked | None:
        """The request as the proxy's hooks receive it (`request_data`)."""
        for key in METADATA_KEYS:
            metadata = data.get(key)
            tracked = self.find(metadata) if isinstance(metadata, Mapping) else None
            if tracked is not None:
                return tracked
        return None

    def finish(self, tracked: Tracked) -> None:
        """The request is over: keep its context a short while for late events."""
        if self._live.pop(tracked.ticket, None) is not None:
            tracked.finished_at = time.monotonic()
            self._finished[tracked.ticket] = tracked
        self._sweep()

    def _sweep(self) -> None:
        now = time.monotonic()
        while self._live:
            ticket, entry = next(iter(self._live.items()))
            if now - entry.since <= self.live_ttl and len(self._live) < self.max_live:
                break
            del self._live[ticket]
        while self._finished:
            ticket, entry = next(iter(self._finished.items()))
            done = entry.finished_at or entry.since
            if now - done <= self.finished_ttl and len(self._finished) < self.max_live:
                break
            del self._finished[ticket]
