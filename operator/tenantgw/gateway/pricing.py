"""Token prices: Anthropic's list prices for Claude models, and ModelAlias target pricing.

The list price answers "what would this request have cost on Anthropic's API at the Claude
model the client asked for", the number the usage report compares real spend with. Prices are
USD per million tokens from Anthropic's pricing page; cache writes are priced at the 5-minute
TTL rate (1.25x input) unless the usage says the 1-hour TTL was used (2x input).

`TokenUsage` counts tokens the way Anthropic bills them: `input_tokens` excludes cached tokens,
so input + cache_read + cache_write is the whole prompt. `token_usage()` converts LiteLLM's and
OpenAI's usage objects (whose `prompt_tokens` includes cached tokens) to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tenantgw.api.list_prices import (
    ANTHROPIC_LIST_PRICES,
    LONG_CONTEXT_THRESHOLD,
    ClaudePrice,
    claude_family,
)

MILLION = 1_000_000

__all__ = [
    "ANTHROPIC_LIST_PRICES",
    "LONG_CONTEXT_THRESHOLD",
    "ClaudePrice",
    "TokenUsage",
    "anthropic_list_cost",
    "anthropic_price",
    "claude_family",
    "cost_from_pricing",
    "rate_per_million",
    "token_usage",
]


@dataclass(frozen=True)
class TokenUsage:
    """Tokens of one request, billed the Anthropic way (input excludes cached tokens)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    """The part of cache_write_tokens written with the 1-hour TTL."""

    @property
    def prompt_tokens(self) -> int:
        """Every token of the prompt: uncached input plus cache reads and writes."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens


def anthropic_price(model: str | None) -> ClaudePrice | None:
    """Anthropic's list price of a Claude model name, None for any other name."""
    family = claude_family(model)
    return ANTHROPIC_LIST_PRICES[family] if family is not None else None


def anthropic_list_cost(requested_model: str | None, usage: Any) -> float | None:
    """USD the request would cost at Anthropic's list price of `requested_model`.

    `usage` is a TokenUsage or anything `token_usage()` reads. None when the model is not a
    Claude name (nothing to compare with) or the usage is unknown.
    """
    price = anthropic_price(requested_model)
    tokens = usage if isinstance(usage, TokenUsage) else token_usage(usage)
    if price is None or tokens is None:
        return None
    if price.long_context is not None and tokens.prompt_tokens > LONG_CONTEXT_THRESHOLD:
        price = price.long_context
    write_1h = min(tokens.cache_write_1h_tokens, tokens.cache_write_tokens)
    cost = (
        tokens.input_tokens * price.input
        + tokens.output_tokens * price.output
        + tokens.cache_read_tokens * price.cache_read
        + (tokens.cache_write_tokens - write_1h) * price.cache_write
        + write_1h * price.cache_write_1h
    )
    return cost / MILLION


def rate_per_million(pricing: Any, *names: str) -> float | None:
    """A per-million rate from a Pricing model or a mapping (snake, camel or per-token keys)."""
    for name in names:
        value = pricing.get(name) if isinstance(pricing, Mapping) else getattr(pricing, name, None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            per_token = name.endswith(("_per_token", "_token_cost"))
            return float(value) * (MILLION if per_token else 1)
    return None


def cost_from_pricing(pricing: Any, usage: Any) -> float | None:
    """USD of a request at a ModelAlias target's pricing (USD per million tokens).

    `pricing` is a `tenantgw.api.Pricing`, a mapping with `input_per_million` /
    `inputPerMillion` / `output_per_million` / `outputPerMillion`, or a LiteLLM model_info with
    `input_cost_per_token` / `output_cost_per_token`. Cache reads and writes are charged at the
    input rate unless the pricing names a cache rate. None when pricing or usage is unknown.
    """
    tokens = usage if isinstance(usage, TokenUsage) else token_usage(usage)
    if pricing is None or tokens is None:
        return None
    rate_in = rate_per_million(
        pricing, "input_per_million", "inputPerMillion", "input_cost_per_token"
    )
    rate_out = rate_per_million(
        pricing, "output_per_million", "outputPerMillion", "output_cost_per_token"
    )
    if rate_in is None and rate_out is None:
        return None
    rate_in = rate_in or 0.0
    rate_read = rate_per_million(
        pricing, "cache_read_per_million", "cacheReadPerMillion", "cache_read_input_token_cost"
    )
    rate_write = rate_per_million(
        pricing,
        "cache_write_per_million",
        "cacheWritePerMillion",
        "cache_creation_input_token_cost",
    )
    cost = (
        tokens.input_tokens * rate_in
        + tokens.output_tokens * (rate_out or 0.0)
        + tokens.cache_read_tokens * (rate_in if rate_read is None else rate_read)
        + tokens.cache_write_tokens * (rate_in if rate_write is None else rate_write)
    )
    return cost / MILLION


# --------------------------------------------------------------------------- usage shapes


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float):
        return max(int(value), 0)
    return 0


def _mapping(value: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            dumped = dump()
        except Exception:  # a half-built pydantic object; read it as unknown usage
            return None
        return dumped if isinstance(dumped, Mapping) else None
    return None


def token_usage(usage: Any) -> TokenUsage | None:
    """A TokenUsage from LiteLLM's `Usage`, an OpenAI or an Anthropic usage dict; None if none.

    LiteLLM (and OpenAI) count cached tokens inside `prompt_tokens`
    (`prompt_tokens_details.cached_tokens` for reads, `cache_creation_input_tokens` for writes);
    Anthropic's `input_tokens` already excludes them; OpenAI's Responses API `input_tokens`
    includes them (`input_tokens_details.cached_tokens`).
    """
    if isinstance(usage, TokenUsage):
        return usage
    raw = _mapping(usage)
    if not raw:
        return None
    if "prompt_tokens" in raw or "completion_tokens" in raw:
        details = _mapping(raw.get("prompt_tokens_details")) or {}
        read = _int(raw.get("cache_read_input_tokens")) or _int(details.get("cached_tokens"))
        write = _int(raw.get("cache_creation_input_tokens")) or _int(
            details.get("cache_creation_tokens")
        )
        creation = _mapping(details.get("cache_creation_token_details")) or _mapping(
            raw.get("cache_creation")
        )
        return TokenUsage(
            input_tokens=max(_int(raw.get("prompt_tokens")) - read - write, 0),
            output_tokens=_int(raw.get("completion_tokens")),
            cache_read_tokens=read,
            cache_write_tokens=write,
            cache_write_1h_tokens=_int((creation or {}).get("ephemeral_1h_input_tokens")),
        )
    if "input_tokens" in raw or "output_tokens" in raw:
        responses_details = _mapping(raw.get("input_tokens_details"))
        if responses_details is not None:  # OpenAI Responses API
            read = _int(responses_details.get("cached_tokens"))
            return TokenUsage(
                input_tokens=max(_int(raw.get("input_tokens")) - read, 0),
                output_tokens=_int(raw.get("output_tokens")),
                cache_read_tokens=read,
            )
        creation = _mapping(raw.get("cache_creation")) or {}
        return TokenUsage(
            input_tokens=_int(raw.get("input_tokens")),
            output_tokens=_int(raw.get("output_tokens")),
            cache_read_tokens=_int(raw.get("cache_read_input_tokens")),
            cache_write_tokens=_int(raw.get("cache_creation_input_tokens")),
            cache_write_1h_tokens=_int(creation.get("ephemeral_1h_input_tokens")),
        )
    return None
