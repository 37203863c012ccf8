"""What each ModelAlias of a tenant costs, known when the rules file is loaded.

A target's price is, in order: the platform's catalog `pricing` (rules file), what LiteLLM bills
the deployment at (its `model_info` price, else its cost map for the model as the router calls
it, `litellm_route`, e.g. `openrouter/qwen/qwen3-coder`),
Anthropic's list price when the provider model is a Claude model (what metering falls back to,
`usage.record_from_kwargs`), else none: a request it serves would be charged $0
(`unpriced.py` decides whether it is served, docs/money.md).

Pure: LiteLLM's cost map is reached through a lookup the gateway installs (`install()`, done
by `unpriced.py`); without one only the catalog and Anthropic's list prices are known.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from tenantgw.gateway import files
from tenantgw.gateway.pricing import anthropic_price

PriceSource = Literal["catalog", "litellm", "anthropic"]


@dataclass(frozen=True)
class Price:
    """USD per million tokens of one model, and who set it."""

    input_per_million: float
    output_per_million: float
    source: PriceSource

    @property
    def blended(self) -> float:
        """Input plus output per million: what downgrades compare aliases by."""
        return self.input_per_million + self.output_per_million


Lookup = Callable[[files.AliasTarget], Price | None]
"""A target -> what LiteLLM bills it at: its deployment's own price (`model_info`, registered
under the deployment id), else the cost map's for the model as the router calls it; None when
neither has one or the map has only zeros (LiteLLM would charge $0)."""


def _no_lookup(target: files.AliasTarget) -> Price | None:
    return None


def target_price(target: files.AliasTarget, lookup: Lookup) -> Price | None:
    """The price a request served by `target` is charged at; None: it would be charged $0."""
    if target.pricing is not None:
        return Price(target.pricing.input_per_million, target.pricing.output_per_million, "catalog")
    found = lookup(target)
    if found is not None:
        return found
    listed = anthropic_price(target.model)
    if listed is not None:
        return Price(listed.input, listed.output, "anthropic")
    return None


@dataclass(frozen=True)
class AliasPrice:
    """An alias's expected price (weighted by its targets), and its targets without one."""

    blended: float | None
    """Weighted mean of its targets' blended prices; None when one of them has no price."""
    unpriced: tuple[str, ...] = ()
    """`provider/model` of its own targets no price covers."""


def alias_price(alias: files.AliasRules, lookup: Lookup) -> AliasPrice:
    """The price of one alias from its own targets (fallbacks are checked per hop)."""
    unpriced: list[str] = []
    weighted, weights = 0.0, 0
    for target in alias.targets:
        price = target_price(target, lookup)
        if price is None:
            label = f"{target.provider}/{target.model}"
            if label not in unpriced:
                unpriced.append(label)
            continue
        weight = max(target.weight, 1)
        weighted += price.blended * weight
        weights += weight
    blended = weighted / weights if weights and not unpriced else None
    return AliasPrice(blended=blended, unpriced=tuple(unpriced))


def alias_prices(aliases: Mapping[str, files.AliasRules], lookup: Lookup) -> dict[str, AliasPrice]:
    return {name: alias_price(alias, lookup) for name, alias in aliases.items()}


Announce = Callable[[files.Rules, Mapping[str, AliasPrice]], None]


class PriceBook:
    """Alias prices of the current rules, recomputed when the rules file changes."""

    def __init__(self, lookup: Lookup = _no_lookup, announce: Announce | None = None) -> None:
        self._lookup = lookup
        self._announce = announce
        self._lock = threading.Lock()
        self._rules: files.Rules | None = None
        self._prices: dict[str, AliasPrice] = {}

    def install(self, lookup: Lookup, announce: Announce | None = None) -> None:
        """Use `lookup` for LiteLLM's cost map, and call `announce` with each new rules file."""
        with self._lock:
            self._lookup, self._announce, self._rules = lookup, announce, None

    def of(self, rules: files.Rules) -> dict[str, AliasPrice]:
        with self._lock:
            if rules is self._rules:
                return self._prices
            self._prices = alias_prices(rules.aliases, self._lookup)
            self._rules = rules
            prices, announce = self._prices, self._announce
        if announce is not None:
            announce(rules, prices)
        return prices


_book = PriceBook()


def install(lookup: Lookup, announce: Announce | None = None) -> None:
    """Make `lookup` the gateway's way into LiteLLM's cost map (see `PriceBook.install`)."""
    _book.install(lookup, announce)


def current(rules: files.Rules) -> dict[str, AliasPrice]:
    """The price of every alias of `rules` (LiteLLM's map looked up once per rules file)."""
    return _book.of(rules)
