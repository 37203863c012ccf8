"""Which ModelAlias serves a request: pure functions of the request body and the rules file.

Order (first that applies wins):
1. the tenant's routing rules, in order; a rule matches when every condition it sets holds:
   `model` (glob on the requested model), `prompt_prefix` (start of the last user message,
   case-insensitive) and `task` (background, thinking, long-context, web-search);
2. the requested model itself, when it is an alias name or one of an alias's client names
   (exact names before globs such as `claude-sonnet-4-5-*`);
3. the tenant's default alias;
4. otherwise the model is unknown: 404 naming the models the tenant serves.

The chosen alias replaces `data["model"]`, so LiteLLM routes, retries and falls back by alias.

Anthropic's `thinking` parameter reaches only providers that serve Claude natively
(`adapt_thinking`): LiteLLM sends a `/v1/messages` request carrying `thinking` to an `openai/`
deployment as `POST {api_base}/responses`, which OpenAI-compatible upstreams lack.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from tenantgw.gateway.errors import InvalidRequestError, ModelNotFoundError
from tenantgw.gateway.files import AliasRules, AliasTarget, RoutingRule, Rules

LONG_CONTEXT_TOKENS = 60_000
"""Prompts estimated above this many tokens are "long-context"."""
CHARS_PER_TOKEN = 4
BACKGROUND_GLOB = "*haiku*"
"""Claude Code sends its background calls (titles, summaries) to the small/fast model: Haiku."""
_SYSTEM_REMINDER = "<system-reminder>"
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Route:
    """The routing decision: which alias, for which requested model, and why."""

    alias: str
    requested_model: str
    reason: str
    """"rule <n>" (1-based), "alias", "client-name", "client-glob" or "default"."""


# --------------------------------------------------------------------------- request features


def _text_parts(content: Any) -> Iterable[str]:
    """Text of a message content: a string, or Anthropic / OpenAI text parts."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping) and part.get("type") in ("text", "input_text"):
                text = part.get("text")
                if isinstance(text, str):
                    yield text
            elif isinstance(part, str):
                yield part


def last_user_texts(data: Mapping[str, Any]) -> list[str]:
    """Text parts of the last user message that has text (tool-result-only turns are skipped).

    Claude Code puts `<system-reminder>` blocks before the user's own words; those are left
    out, so a prefix matches what the user typed.
    """
    messages = data.get("messages")
    if not isinstance(messages, list):
        items = data.get("input")
        messages = items if isinstance(items, list) else []
    for message in reversed(messages):
        if not isinstance(message, Mapping) or message.get("role") != "user":
            continue
        texts = [
            text
            for text in _text_parts(message.get("content"))
            if text.strip() and not text.lstrip().startswith(_SYSTEM_REMINDER)
        ]
        if texts:
            return texts
    prompt = data.get("input") if "messages" not in data else None
    return [prompt] if isinstance(prompt, str) else []


def matches_prompt_prefix(data: Mapping[str, Any], prefix: str) -> bool:
    """Whether the last user message starts with `prefix` (case-insensitive)."""
    wanted = prefix.strip().casefold()
    return any(text.lstrip().casefold().startswith(wanted) for text in last_user_texts(data))


def _chars(value: Any, limit: int) -> int:
    """Characters of text in a request value, counting up to `limit` (then it stops early)."""
    if isinstance(value, str):
        return len(value)
    total = 0
    if isinstance(value, Mapping):
        items: Iterable[Any] = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return 0
    for item in items:
        total += _chars(item, limit - total)
        if total > limit:
            break
    return total


def estimated_prompt_tokens(data: Mapping[str, Any], limit: int = LONG_CONTEXT_TOKENS) -> int:
    """Prompt tokens estimated as characters / 4 over system, messages and tools.

    Counting stops a little past `limit` tokens: the caller only needs to compare with it.
    """
    char_limit = (limit + 1) * CHARS_PER_TOKEN
    total = 0
    for field in ("system", "messages", "input", "prompt", "tools"):
        if field in data:
            total += _chars(data[field], char_limit - total)
            if total > char_limit:
                break
    return total // CHARS_PER_TOKEN


def is_background(requested_model: str) -> bool:
    """Claude Code's background calls go to the small/fast model, a Haiku."""
    return fnmatchcase(requested_model.casefold(), BACKGROUND_GLOB)


def wants_thinking(data: Mapping[str, Any]) -> bool:
    """Explicit extended thinking (Anthropic `thinking`) or reasoning effort (OpenAI) is asked for.

    Only `{"type": "enabled", "budget_tokens": ...}` counts: Claude Code 2.1 sends
    `{"type": "adaptive"}` on every request, which lets the model decide and is no reason to
    pick an expensive alias.
    """
    thinking = data.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") == "enabled":
        return True
    effort = data.get("reasoning_effort")
    if isinstance(effort, str) and effort not in ("", "none"):
        return True
    reasoning = data.get("reasoning")  # Responses API: {"effort": ...}
    return isinstance(reasoning, Mapping) and reasoning.get("effort") not in (None, "", "none")


def uses_web_search(data: Mapping[str, Any]) -> bool:
    """A web search tool is offered (Anthropic `web_search_*`, OpenAI `web_search*`)."""
    if data.get("web_search_options") is not None:
        return True
    tools = data.get("tools")
    if not isinstance(tools, list):
        return False
    for tool in tools:
        if isinstance(tool, Mapping):
            kind = tool.get("type")
            if isinstance(kind, str) and kind.startswith("web_search"):
                return True
    return False


def matches_task(data: Mapping[str, Any], requested_model: str, task: str) -> bool:
    """Whether the request is of kind `task`."""
    if task == "background":
        return is_background(requested_model)
    if task == "thinking":
        return wants_thinking(data)
    if task == "long-context":
        return estimated_prompt_tokens(data) > LONG_CONTEXT_TOKENS
    if task == "web-search":
        return uses_web_search(data)
    return False


def rule_matches(rule: RoutingRule, data: Mapping[str, Any], requested_model: str) -> bool:
    """Whether every condition the rule sets holds (a rule with none never matches)."""
    match = rule.match
    if match.model is None and match.prompt_prefix is None and match.task is None:
        return False
    if match.model is not None and not fnmatchcase(
        requested_model.casefold(), match.model.casefold()
    ):
        return False
    if match.task is not None and not matches_task(data, requested_model, match.task):
        return False
    return match.prompt_prefix is None or matches_prompt_prefix(data, match.prompt_prefix)


# --------------------------------------------------------------------------- thinking

NATIVE_CLAUDE_PROVIDER_TYPES = frozenset({"anthropic", "bedrock", "vertex"})
"""Provider types that serve Claude with Anthropic's own `thinking` parameter."""
THINKING_ONLY_EDITS = ("clear_thinking_",)
"""`context_management.edits` types that only make sense while thinking is on."""


def serves_thinking_natively(target: AliasTarget) -> bool:
    """Whether the target takes Anthropic's `thinking` as is: Claude on Anthropic, Bedrock or
    Vertex (LiteLLM forwards `thinking` only to Claude models there)."""
    return serves_claude_natively(target.provider_type, target.model)


def serves_claude_natively(provider_type: str | None, model: str) -> bool:
    """Claude on Anthropic, Bedrock or Vertex: Anthropic's own request fields (`thinking`,
    `safeguards`) reach the model and its answers carry Anthropic's own fields."""
    kind = provider_type
    if kind == "anthropic":
        return True
    if kind not in NATIVE_CLAUDE_PROVIDER_TYPES:
        return False
    model = model.casefold()
    return (
        "claude" in model
        or "anthropic" in model
        or (model.startswith("arn:") and ":bedrock:" in model)
    )


def alias_serves_thinking_natively(rules: Rules, alias: str) -> bool:
    """Whether every deployment that may answer for `alias` (its targets, then its fallbacks'
    targets, transitively) takes `thinking` natively. Unknown aliases count as not native."""
    seen: set[str] = set()
    pending = [alias]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        entry = rules.aliases.get(name)
        if entry is None or not entry.targets:
            return False
        if not all(serves_thinking_natively(target) for target in entry.targets):
            return False
        pending.extend(entry.fallbacks)
    return True


def effort_for_budget(budget_tokens: int) -> str:
    """The OpenAI `reasoning_effort` closest to an Anthropic thinking budget (LiteLLM's
    thresholds, without "minimal", which few providers accept)."""
    if budget_tokens >= 4096:
        return "high"
    if budget_tokens >= 2048:
        return "medium"
    return "low"


def adapt_thinking(data: dict[str, Any]) -> list[str]:
    """Take Anthropic's thinking parameters out of a request for a provider without them.

    `thinking` is removed; an explicit budget (`type: enabled`) becomes `reasoning_effort`
    unless the client set one, while `adaptive` leaves the effort to the provider. Edits of
    `context_management` that only concern thinking blocks go too (the whole field when none
    is left). Thinking blocks of earlier assistant turns go as well: LiteLLM 1.106.12 forwards
    them, signature included, as `thinking_blocks` on an OpenAI-shaped message, which strict
    servers refuse (LiteLLM #32188, docs/litellm-notes.md (l)), and their signature means
    nothing to another model. Returns what was changed, for the log; empty when nothing was.
    """
    changed: list[str] = []
    if _drop_history_thinking(data):
        changed.append("thinking blocks of earlier turns")
    thinking = data.pop("thinking", None)
    if thinking is not None:
        changed.append("thinking")
        budget = thinking.get("budget_tokens") if isinstance(thinking, Mapping) else None
        explicit = isinstance(thinking, Mapping) and thinking.get("type") == "enabled"
        if (
            explicit
            and isinstance(budget, int)
            and budget > 0
            and data.get("reasoning_effort") in (None, "")
        ):
            data["reasoning_effort"] = effort_for_budget(budget)
            changed.append(f"reasoning_effort={data['reasoning_effort']}")
    management = data.get("context_management")
    if isinstance(management, Mapping) and isinstance(management.get("edits"), list):
        edits = management["edits"]
        kept = [
            edit
            for edit in edits
            if not (
                isinstance(edit, Mapping)
                and isinstance(edit.get("type"), str)
                and edit["type"].startswith(THINKING_ONLY_EDITS)
            )
        ]
        if len(kept) != len(edits):
            changed.append("context_management")
            if kept:
                data["context_management"] = {**management, "edits": kept}
            else:
                del data["context_management"]
    return changed


# --------------------------------------------------------------------------- names


HISTORY_THINKING_BLOCKS = frozenset({"thinking", "redacted_thinking"})


def _drop_history_thinking(data: dict[str, Any]) -> bool:
    """Remove thinking blocks from the assistant turns of `data["messages"]`; whether any were.

    An assistant turn left empty goes too (a turn of thinking alone says nothing to the model).
    """
    messages = data.get("messages")
    if not isinstance(messages, list):
        return False
    kept: list[Any] = []
    dropped = False
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list) or message.get("role") != "assistant":
            kept.append(message)
            continue
        blocks = [
            b
            for b in content
            if not (isinstance(b, Mapping) and b.get("type") in HISTORY_THINKING_BLOCKS)
        ]
        if len(blocks) == len(content):
            kept.append(message)
            continue
        dropped = True
        if blocks:
            kept.append({**message, "content": blocks})
    if dropped:
        data["messages"] = kept
    return dropped


def is_glob(name: str) -> bool:
    return any(char in _GLOB_CHARS for char in name)


def _glob_specificity(pattern: str) -> int:
    return sum(1 for char in pattern if char not in _GLOB_CHARS)


def alias_for_name(rules: Rules, model: str) -> tuple[str, str] | None:
    """(alias, reason) for a model name the client sent, None when no alias answers to it."""
    if model in rules.aliases:
        return model, "alias"
    for name, alias in sorted(rules.aliases.items()):
        if model in alias.client_names:
            return name, "client-name"
    folded = model.casefold()
    globs = [
        (pattern, name)
        for name, alias in rules.aliases.items()
        for pattern in alias.client_names
        if is_glob(pattern) and fnmatchcase(folded, pattern.casefold())
    ]
    if globs:  # the most specific glob wins: claude-sonnet-4-5-* before claude-*
        globs.sort(key=lambda item: (-_glob_specificity(item[0]), item[1]))
        return globs[0][1], "client-glob"
    return None


def served_models(rules: Rules) -> list[str]:
    """The model names a client may send: aliases and their client names."""
    names: list[str] = []
    for name, alias in sorted(rules.aliases.items()):
        names.append(name)
        names.extend(alias.client_names)
    return names


def choose_route(data: Mapping[str, Any], rules: Rules) -> Route:
    """The alias for a request; raises InvalidRequestError / ModelNotFoundError with what to do."""
    requested = data.get("model")
    if requested is None or requested == "":
        raise InvalidRequestError("model: required field is missing", param="model")
    if not isinstance(requested, str):
        raise InvalidRequestError("model: must be a string", param="model")
    for index, rule in enumerate(rules.rules, start=1):
        if rule.alias in rules.aliases and rule_matches(rule, data, requested):
            return Route(alias=rule.alias, requested_model=requested, reason=f"rule {index}")
    by_name = alias_for_name(rules, requested)
    if by_name is not None:
        return Route(alias=by_name[0], requested_model=requested, reason=by_name[1])
    if rules.default_alias and rules.default_alias in rules.aliases:
        return Route(alias=rules.default_alias, requested_model=requested, reason="default")
    models = served_models(rules)
    listed = ", ".join(models) if models else "none (no ModelAlias is accepted yet)"
    raise ModelNotFoundError(
        f"model {requested!r} is not served by tenant {rules.tenant}: use one of {listed}",
        param="model",
    )


def alias_rules(rules: Rules, alias: str) -> AliasRules | None:
    """The rules-file entry of an alias."""
    return rules.aliases.get(alias)


def route_request(data: dict[str, Any], rules: Rules) -> Route:
    """Choose the alias and point the request at it (`data["model"]` = the alias name)."""
    route = choose_route(data, rules)
    data["model"] = route.alias
    return route
