"""The gateway's one door: the only routes of LiteLLM's app a client can reach.

`DOORS` is the allowlist, as data: every (method, path) served, what it is for and, for the
routes that carry a prompt, the body fields the middleware checks before LiteLLM sees them.
Every other request (LiteLLM's pass-through routes, files, batches, assistants, management
and UI routes, websockets) is refused with a 404 in the client's shape by `GatewayMiddleware`
before LiteLLM runs, whatever the key, the master key included.

Why these and no more: a tenant's tokens must pass routing, PII redaction, residency, rate
limits, budgets and the ledger. The pre-call hook applies them to the `anthropic_messages`
and `acompletion` call types, which `/v1/messages` and `/chat/completions` produce and which
the provider simulator proves metered end to end. LiteLLM's completions, embeddings and
responses routes are metered by the same hook on paper, but nothing proves it end to end
(the simulator speaks neither protocol), so they stay closed until a test does.
`/v1/messages/count_tokens` is answered by the gateway itself (`tokencount`), never upstream,
and so are `/v1/models`, `/models` and `/v1/models/<id>` (`models`): the tenant's aliases.

`registered_routes` lists every route LiteLLM's app registers, mounted apps and lazily
registered feature routers included, for the test that walks them all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

Purpose = Literal["model", "count_tokens", "models", "health", "metrics"]

_POST = frozenset({"POST"})
_GET = frozenset({"GET"})
_PROMPT_FIELDS = ("model", "messages")


@dataclass(frozen=True)
class Door:
    """One (path, methods) the gateway serves, and why."""

    path: str
    methods: frozenset[str]
    purpose: Purpose
    fields: tuple[str, ...] | None = None
    """Body fields the middleware requires (JSON routes only); None: the body is not read."""


DOORS: tuple[Door, ...] = (
    Door("/v1/messages", _POST, "model", _PROMPT_FIELDS),
    Door("/v1/messages/count_tokens", _POST, "count_tokens", _PROMPT_FIELDS),
    Door("/v1/chat/completions", _POST, "model", _PROMPT_FIELDS),
    Door("/chat/completions", _POST, "model", _PROMPT_FIELDS),
    Door("/v1/models", _GET, "models"),
    Door("/models", _GET, "models"),
    Door("/health/liveliness", _GET, "health"),
    Door("/health/readiness", _GET, "health"),
    # The gateway's collectors (gateway.metrics), also on the metrics port.
    Door("/metrics", _GET, "metrics"),
    Door("/metrics/", _GET, "metrics"),
)

_BY_PATH: dict[str, Door] = {door.path: door for door in DOORS}
MODEL_DOOR = Door("/v1/models/{model_id}", _GET, "models")
"""One model by id (the Anthropic and OpenAI SDKs' `models.retrieve`)."""
_MODEL_PREFIXES = ("/v1/models/", "/models/")


def door_for(method: str | None, path: str) -> Door | None:
    """The door serving `method path`, None when the gateway refuses it.

    Paths match exactly, as LiteLLM's router sees them (no trailing slash, no prefix forms).
    """
    door = _BY_PATH.get(path)
    if door is None and any(
        path.startswith(p) and "/" not in path[len(p) :] and path[len(p) :] for p in _MODEL_PREFIXES
    ):
        door = MODEL_DOOR
    if door is None or (method or "").upper() not in door.methods:
        return None
    return door


def served_summary() -> str:
    """The routes a client may use, for the 404 message."""
    model = [d.path for d in DOORS if d.purpose in ("model", "count_tokens")]
    models = [d.path for d in DOORS if d.purpose == "models"]
    return f"{', '.join(model)}, GET {', '.join(models)} and /v1/models/<id>, health and metrics"


# --------------------------------------------------------------------------- LiteLLM's routes


@dataclass(frozen=True)
class RegisteredRoute:
    """One route of an ASGI app: its path template, methods and kind."""

    path: str
    methods: frozenset[str]
    kind: Literal["http", "websocket", "mount"]

    def sample_paths(self) -> list[str]:
        """Concrete paths that reach this route (parameters filled in)."""
        filled = _fill_params(self.path)
        if self.kind == "mount":
            base = filled.rstrip("/")
            return [base or "/", f"{base}/index.html"]
        return [filled or "/"]


_PARAM = re.compile(r"\{([^}:]+)(?::([^}]+))?\}")


def _fill_params(template: str) -> str:
    def value(match: re.Match[str]) -> str:
        name, convertor = match.group(1), match.group(2)
        if convertor == "path":
            return f"{name}-x/y"
        if convertor in ("int", "float"):
            return "1"
        return f"{name}-x"

    return _PARAM.sub(value, template)


def _route_of(route: Any, path: str | None = None) -> RegisteredRoute | None:
    from starlette.routing import Mount, WebSocketRoute

    path = path if path is not None else getattr(route, "path", None)
    if path is None:
        return None
    if isinstance(route, Mount):
        return RegisteredRoute(path, frozenset(), "mount")
    if isinstance(route, WebSocketRoute) or type(route).__name__ == "APIWebSocketRoute":
        return RegisteredRoute(path, frozenset(), "websocket")
    methods = getattr(route, "methods", None) or {"GET"}
    return RegisteredRoute(path, frozenset(m.upper() for m in methods), "http")


def _walk(routes: Iterable[Any]) -> Iterator[RegisteredRoute]:
    for route in routes:
        # FastAPI >= 0.16x keeps included routers as one lazy entry each.
        contexts = getattr(route, "effective_route_contexts", None)
        if callable(contexts):
            for context in contexts():
                effective = getattr(context, "starlette_route", None) or context.original_route
                found = _route_of(effective, getattr(effective, "path", None) or context.path)
                if found is not None:
                    yield found
            continue
        found = _route_of(route)
        if found is not None:
            yield found


def registered_routes(app: Any, *, include_lazy: bool = True) -> list[RegisteredRoute]:
    """Every route `app` (LiteLLM's proxy app) registers, in order, without duplicates.

    With `include_lazy`, LiteLLM's lazily registered feature routers are registered first
    (they are otherwise added on the first request under their prefix).
    """
    if include_lazy:
        try:
            from litellm.proxy import _lazy_features
        except ImportError:  # a LiteLLM without lazy routes: every route is already there
            pass
        else:
            _lazy_features.register_all_features(app)
    seen: set[RegisteredRoute] = set()
    found: list[RegisteredRoute] = []
    for route in _walk(app.routes):
        if route not in seen:
            seen.add(route)
            found.append(route)
    return found
