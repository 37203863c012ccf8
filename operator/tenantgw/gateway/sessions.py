"""Claude Code sessions: the `X-Claude-Code-Session-Id` a request carries, validated.

Claude Code sends `X-Claude-Code-Session-Id` (a UUID, the same on every request of one
`claude` run) on each call. The gateway records it on the request's ledger row and counts it
under Session-scoped BudgetPolicies. It is a label under the authenticated key, nothing more:
the key that is charged, the policies that apply and the limits all come from the key.

Only a well-formed value is kept: 1 to 64 ASCII characters of `[A-Za-z0-9._:-]` (a UUID, or
another client's own id such as `ci:build-1234`). Anything else (empty, longer, other
characters: quotes, spaces, newlines, non-ASCII) is dropped: the request is served as one
without a session, and `tenantgw_session_ids_rejected_total{reason}` counts it. A bad header
never fails a request. The value is used verbatim (no case folding): it is a label, and a
client that wants another session can always send another id.

Where it comes from: the request headers that LiteLLM's proxy puts in
`data["proxy_server_request"]["headers"]` when the request arrives (set by the server, after
the body is read, so a body field cannot stand in for the header).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

SESSION_HEADER = "x-claude-code-session-id"
MAX_SESSION_ID_LENGTH = 64
SESSION_ID_PATTERN = r"[A-Za-z0-9._:-]{1,64}"
_SESSION_ID = re.compile(SESSION_ID_PATTERN)

RejectReason = Literal["empty", "too_long", "invalid_characters"]
REJECT_REASONS: tuple[RejectReason, ...] = ("empty", "too_long", "invalid_characters")
"""The only values of the metric's `reason` label (bounded: no client text in labels)."""


@dataclass(frozen=True)
class SessionHeader:
    """What a request's session header said: a usable id, or why it was dropped."""

    session_id: str | None = None
    rejected: RejectReason | None = None


NO_SESSION = SessionHeader()


def parse_session_id(value: Any) -> SessionHeader:
    """A header value as a session id, or the reason it is not one (None: no header)."""
    if value is None:
        return NO_SESSION
    if not isinstance(value, str):
        return SessionHeader(rejected="invalid_characters")
    if not value:
        return SessionHeader(rejected="empty")
    if len(value) > MAX_SESSION_ID_LENGTH:
        return SessionHeader(rejected="too_long")
    if _SESSION_ID.fullmatch(value) is None:
        return SessionHeader(rejected="invalid_characters")
    return SessionHeader(session_id=value)


def valid_session_id(value: Any) -> str | None:
    """`value` when it is a well-formed session id, else None."""
    return parse_session_id(value).session_id


def request_headers(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """The request headers LiteLLM's proxy recorded for a request (empty when none)."""
    server = data.get("proxy_server_request")
    headers = server.get("headers") if isinstance(server, Mapping) else None
    return headers if isinstance(headers, Mapping) else {}


def session_from_request(data: Mapping[str, Any]) -> SessionHeader:
    """The session header of a request as the pre-call hook receives it (`data`)."""
    headers = request_headers(data)
    value = headers.get(SESSION_HEADER)
    if value is None:  # ASGI servers lower-case names; a test client might not
        value = next((v for k, v in headers.items() if str(k).lower() == SESSION_HEADER), None)
    return parse_session_id(value)
