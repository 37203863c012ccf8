"""`GET /v1/models` (and `/models`, `/v1/models/{id}`), answered by the gateway itself.

What a tenant's developers may pick: exactly the ModelAliases the gateway serves, one entry
each, named as clients send them, with the display name and description of the ModelAlias and
the context window the alias can be trusted with. No internal deployment id, no provider
model, no duplicate (the Claude names an alias answers to are routing synonyms, not models).

One body parses with both SDKs: Anthropic's `client.models.list()` (data[].type "model", id,
display_name, created_at; has_more, first_id, last_id) and OpenAI's (`object: "list"`,
data[].object "model", created, owned_by). Claude Code reads id, display_name and description
(its gateway model discovery). Anthropic's pagination (`limit`, `after_id`, `before_id`) is
honoured over the alias names in order.

The context window of an alias is the smallest among its targets and, transitively, the
aliases it falls back to: a request may land on any of them. A target's window is the
platform's catalog `contextWindow` when set, else `max_input_tokens` in LiteLLM's local model
map, else unknown: then the alias gets `DEFAULT_CONTEXT_WINDOW` (or less), the entry says
`context_window_source: "default"` and the gateway logs which catalog field to set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from tenantgw.gateway import auth, files
from tenantgw.gateway.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    ServiceUnavailableError,
)

log = logging.getLogger("tenantgw.gateway")

DEFAULT_CONTEXT_WINDOW = 128_000
"""Window assumed for a model nobody knows the window of: below most current models' real
window, so that a client compacts too early rather than too late."""
OWNER = "tenantgw"
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
_EPOCH = "1970-01-01T00:00:00Z"

WindowSource = Literal["catalog", "litellm", "default"]
Lookup = Callable[[str], int | None]
"""LiteLLM model name -> its max_input_tokens, None when unknown."""


@dataclass(frozen=True)
class TargetWindow:
    """The context window of one target and where it comes from (None: unknown)."""

    window: int | None
    source: WindowSource


@dataclass(frozen=True)
class AliasWindow:
    """The window an alias can be trusted with, and the targets nobody knows the window of."""

    window: int
    source: WindowSource
    unknown: tuple[str, ...] = ()
    """`provider/model` of the targets (own or of fallbacks) whose window is unknown."""


def target_window(target: files.AliasTarget, lookup: Lookup) -> TargetWindow:
    """The platform's catalog window, else LiteLLM's, else unknown."""
    if target.context_window is not None:
        return TargetWindow(target.context_window, "catalog")
    if target.litellm_model:
        found = lookup(target.litellm_model)
        if found is not None:
            return TargetWindow(found, "litellm")
    return TargetWindow(None, "default")


def _closure(name: str, aliases: Mapping[str, files.AliasRules]) -> list[str]:
    """`name` and every served alias it falls back to, transitively (cycles stop)."""
    seen, order, stack = {name}, [name], [name]
    while stack:
        alias = aliases.get(stack.pop())
        for fallback in alias.fallbacks if alias is not None else ():
            if fallback in aliases and fallback not in seen:
                seen.add(fallback)
                order.append(fallback)
                stack.append(fallback)
    return order


_RANK: dict[WindowSource, int] = {"catalog": 0, "litellm": 1, "default": 2}


def alias_windows(
    aliases: Mapping[str, files.AliasRules],
    lookup: Lookup,
    default: int = DEFAULT_CONTEXT_WINDOW,
) -> dict[str, AliasWindow]:
    """The trusted window of every alias: the smallest of its targets and fallbacks.

    An unknown target window counts as `default`. The source is the least certain one among
    the windows that were compared (catalog < litellm < default).
    """
    own: dict[str, list[tuple[str, TargetWindow]]] = {
        name: [(f"{t.provider}/{t.model}", target_window(t, lookup)) for t in alias.targets]
        for name, alias in aliases.items()
    }
    result: dict[str, AliasWindow] = {}
    for name in aliases:
        windows: list[int] = []
        source: WindowSource = "catalog"
        unknown: list[str] = []
        for member in _closure(name, aliases):
            for label, found in own[member]:
                windows.append(found.window if found.window is not None else default)
                if _RANK[found.source] > _RANK[source]:
                    source = found.source
                if found.window is None and label not in unknown:
                    unknown.append(label)
        result[name] = AliasWindow(min(windows, default=default), source, tuple(unknown))
    return result


# --------------------------------------------------------------------------- LiteLLM's map


def litellm_window(model: str) -> int | None:
    """max_input_tokens of `model` (`openai/gpt-4o-mini`) in LiteLLM's local model map."""
    import litellm

    try:
        info = litellm.get_model_info(model=model)
    except Exception:  # LiteLLM raises for a model it has not mapped
        return None
    value = info.get("max_input_tokens") or info.get("max_tokens")
    return value if isinstance(value, int) and value > 0 else None


class _Windows:
    """Alias windows of the current rules, recomputed when the rules file changes."""

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self._lock = threading.Lock()
        self._rules: files.Rules | None = None
        self._windows: dict[str, AliasWindow] = {}

    def of(self, rules: files.Rules) -> dict[str, AliasWindow]:
        with self._lock:
            if rules is not self._rules:
                self._windows = alias_windows(rules.aliases, self._lookup)
                self._rules = rules
                for name, found in sorted(self._windows.items()):
                    if found.unknown:
                        log.warning(
                            "context window of alias %s assumed to be %d tokens: neither the "
                            "Tenant's spec.catalog[].contextWindow nor LiteLLM's model map "
                            "knows the window of %s",
                            name,
                            found.window,
                            ", ".join(found.unknown),
                        )
            return self._windows


_windows = _Windows(litellm_window)


def current_windows(rules: files.Rules) -> dict[str, AliasWindow]:
    """The trusted window of every alias of `rules` (LiteLLM's map looked up once per file)."""
    return _windows.of(rules)


# --------------------------------------------------------------------------- the response


def model_entry(name: str, alias: files.AliasRules, window: AliasWindow) -> dict[str, Any]:
    """One alias as both SDKs and Claude Code read a model."""
    created_at = alias.created_at or _EPOCH
    return {
        "type": "model",
        "object": "model",
        "id": name,
        "display_name": alias.display_name or name,
        "description": alias.description,
        "created_at": created_at,
        "created": int(_parse_time(created_at).timestamp()),
        "owned_by": OWNER,
        "max_input_tokens": window.window,
        "context_window": window.window,
        "context_window_source": window.source,
    }


def _parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return datetime.fromtimestamp(0, UTC)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _limit(query: Mapping[str, str]) -> int:
    raw = query.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise InvalidRequestError(
            f"limit: expected a whole number from 1 to {MAX_LIMIT}, got {raw!r}", param="limit"
        ) from None
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequestError(
            f"limit: expected a whole number from 1 to {MAX_LIMIT}, got {limit}", param="limit"
        )
    return limit


def list_body(
    aliases: Mapping[str, files.AliasRules],
    windows: Mapping[str, AliasWindow],
    query: Mapping[str, str],
) -> dict[str, Any]:
    """The page of models `query` asks for (Anthropic's limit / after_id / before_id)."""
    names = sorted(aliases)
    limit = _limit(query)
    after, before = query.get("after_id"), query.get("before_id")
    if after and before:
        raise InvalidRequestError("send after_id or before_id, not both", param="before_id")
    for param, value in (("after_id", after), ("before_id", before)):
        if value and value not in aliases:
            raise InvalidRequestError(f"{param}: no model {value!r} on this gateway", param=param)
    if after:
        rest = names[names.index(after) + 1 :]
        page, has_more = rest[:limit], len(rest) > limit
    elif before:
        rest = names[: names.index(before)]
        page, has_more = rest[-limit:], len(rest) > limit
    else:
        page, has_more = names[:limit], len(names) > limit
    return {
        "object": "list",
        "data": [model_entry(name, aliases[name], windows[name]) for name in page],
        "has_more": has_more,
        "first_id": page[0] if page else None,
        "last_id": page[-1] if page else None,
    }


def _rules() -> files.Rules:
    try:
        return files.current_rules()
    except files.FileError as exc:
        raise ServiceUnavailableError(
            f"the gateway's routing rules are not loaded ({exc}): ask your platform team"
        ) from None


def answer(api_key: str | None, path: str, query: Mapping[str, str]) -> dict[str, Any]:
    """The body of `GET path?query` with `api_key`; raises a GatewayError.

    `path` is /v1/models or /models (the list) or /v1/models/<id> (one alias by the name it is
    served under). The key must be one of the tenant's (or its master key).
    """
    auth.identify(api_key)
    rules = _rules()
    windows = current_windows(rules)
    prefix = next((p for p in ("/v1/models/", "/models/") if path.startswith(p)), None)
    if prefix is None:
        return list_body(rules.aliases, windows, query)
    name = path[len(prefix) :]
    alias = rules.aliases.get(name)
    if alias is None:
        served = ", ".join(sorted(rules.aliases)) or "none"
        raise ModelNotFoundError(f"no model {name!r} on this gateway; it serves: {served}")
    return model_entry(name, alias, windows[name])
