"""Anthropic's list prices of Claude models, and the names clients and providers give them.

The counterfactual of every saving the gateway reports: what a request would have cost on
Anthropic's API at the Claude model the client asked for (or the Tenant's
`spec.costBaseline`). USD per million tokens, the same numbers as LiteLLM's cost map
(`model_prices_and_context_window.json`: a unit test compares every family with it); cache
writes at the 5-minute TTL rate (1.25x input) unless the 1-hour TTL was used (2x input).

Here, in the API package, so that the Tenant's validation can refuse a baseline the gateway
could not price; the gateway's `pricing` module computes costs with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LONG_CONTEXT_THRESHOLD = 200_000
"""Prompt tokens above which Sonnet 4 / 4.5 (1M-token context) are billed at long-context rates."""


@dataclass(frozen=True)
class ClaudePrice:
    """USD per million tokens of one Claude model."""

    input: float
    output: float
    cache_write: float
    cache_read: float
    long_context: ClaudePrice | None = None
    """Rates for prompts over LONG_CONTEXT_THRESHOLD tokens, where Anthropic charges more."""

    @property
    def cache_write_1h(self) -> float:
        return self.input * 2


_OPUS_4 = ClaudePrice(input=15.0, output=75.0, cache_write=18.75, cache_read=1.50)
_OPUS_4_5 = ClaudePrice(input=5.0, output=25.0, cache_write=6.25, cache_read=0.50)
_SONNET = ClaudePrice(input=3.0, output=15.0, cache_write=3.75, cache_read=0.30)
_SONNET_1M = ClaudePrice(
    input=3.0,
    output=15.0,
    cache_write=3.75,
    cache_read=0.30,
    long_context=ClaudePrice(input=6.0, output=22.50, cache_write=7.50, cache_read=0.60),
)

ANTHROPIC_LIST_PRICES: dict[str, ClaudePrice] = {
    # From LiteLLM 1.106.12's cost map (the gateway's pinned release), `anthropic` provider.
    "claude-opus-5-5": ClaudePrice(input=4.0, output=20.0, cache_write=5.0, cache_read=0.20),
    "claude-opus-5": _OPUS_4_5,
    "claude-opus-4-8": _OPUS_4_5,
    "claude-opus-4-7": _OPUS_4_5,
    "claude-opus-4-6": _OPUS_4_5,
    "claude-sonnet-5-5": ClaudePrice(input=2.0, output=10.0, cache_write=2.5, cache_read=0.10),
    "claude-sonnet-5": ClaudePrice(input=2.0, output=10.0, cache_write=2.5, cache_read=0.20),
    "claude-sonnet-4-6": _SONNET,
    "claude-haiku-5-5": ClaudePrice(input=0.10, output=0.50, cache_write=0.125, cache_read=0.01),
    "claude-opus-4-5": _OPUS_4_5,
    "claude-opus-4-1": _OPUS_4,
    "claude-opus-4": _OPUS_4,
    "claude-sonnet-4-5": _SONNET_1M,
    "claude-sonnet-4": _SONNET_1M,
    "claude-3-7-sonnet": _SONNET,
    "claude-3-5-sonnet": _SONNET,
    "claude-haiku-4-5": ClaudePrice(input=1.0, output=5.0, cache_write=1.25, cache_read=0.10),
    "claude-3-5-haiku": ClaudePrice(input=0.80, output=4.0, cache_write=1.0, cache_read=0.08),
    "claude-3-opus": _OPUS_4,
    "claude-3-haiku": ClaudePrice(input=0.25, output=1.25, cache_write=0.30, cache_read=0.03),
}
"""Anthropic list prices by model family; dated names (`-20250929`, `-latest`) share them."""

# The new-style spelling of the Claude 3.x names (claude-sonnet-3-7 for claude-3-7-sonnet).
_SPELLINGS = {
    "claude-sonnet-3-7": "claude-3-7-sonnet",
    "claude-sonnet-3-5": "claude-3-5-sonnet",
    "claude-haiku-3-5": "claude-3-5-haiku",
    "claude-opus-3": "claude-3-opus",
    "claude-haiku-3": "claude-3-haiku",
}
_FAMILIES = sorted([*ANTHROPIC_LIST_PRICES, *_SPELLINGS], key=len, reverse=True)
_DOTTED_VERSION = re.compile(r"(?<=\d)\.(?=\d)")
_BEDROCK_VERSION = re.compile(r"-v\d+(:\d+)?$")
_SUFFIX = re.compile(r"^-(\d{8}|latest)$")


def claude_family(model: str | None) -> str | None:
    """The price-table name of a Claude model name, None when it is not a known Claude model.

    Accepts what clients and providers send: `claude-sonnet-4-5-20250929`,
    `anthropic/claude-sonnet-4.5`, `us.anthropic.claude-3-5-haiku-20241022-v1:0`,
    `claude-opus-4-1@20250805`, `claude-3-7-sonnet-latest`.
    """
    if not model:
        return None
    name = model.strip().lower().rsplit("/", 1)[-1]
    if "anthropic." in name:  # Bedrock model ids and cross-region inference profiles
        name = name.split("anthropic.", 1)[1]
    name = _BEDROCK_VERSION.sub("", name.split("@", 1)[0].split("[", 1)[0])
    name = _DOTTED_VERSION.sub("-", name)
    for family in _FAMILIES:
        if name == family or (name.startswith(family) and _SUFFIX.match(name[len(family) :])):
            return _SPELLINGS.get(family, family)
    return None
