"""The model catalog of a Tenant: which provider models its aliases may use, at what price and tier.

Money is the platform's: prices and cost tiers live in `spec.catalog` of the cluster-scoped
Tenant, which only platform principals edit. A ModelAlias (tenant-editable) picks targets among
the catalogued models; it carries no price and no tier of its own. A target that no catalog
entry matches is rejected (`NotInCatalog`), and a Tenant without a catalog serves no alias:
the platform opens models explicitly, `model: "*"` opening every model of a provider.

An alias's cost tier is derived, never declared: the highest tier among its targets and the
aliases it falls back to, so a budget downgrade to `low` only ever lands on low-tier models.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from tenantgw.api.common import LONG_NAME_MAX, CamelModel, DnsLabel

if TYPE_CHECKING:
    from tenantgw.api.model_alias import ModelAlias

CostTier = Literal["low", "medium", "high"]
TIERS: tuple[CostTier, ...] = ("low", "medium", "high")
"""Cost tiers from cheapest to dearest."""
TIER_ORDER: dict[str, int] = {tier: rank for rank, tier in enumerate(TIERS)}
MIN_CONTEXT_WINDOW = 1_024
MAX_CONTEXT_WINDOW = 100_000_000


class Pricing(CamelModel):
    """Price of a model in USD per million tokens, set by the platform."""

    input_per_million: float = Field(description="USD per million input tokens.", ge=0)
    output_per_million: float = Field(description="USD per million output tokens.", ge=0)


class CatalogModel(CamelModel):
    """A provider model the tenant's ModelAliases may route to, with its price and cost tier."""

    provider: DnsLabel = Field(description="Name of a provider in spec.providers.")
    model: str = Field(
        description=(
            "Model name at the provider, e.g. qwen/qwen3-coder; a glob (openai/gpt-4o*, *) "
            "matches several. An exact entry wins over globs, then the first glob listed."
        ),
        min_length=1,
        max_length=LONG_NAME_MAX,
    )
    cost_tier: CostTier = Field(
        description="low, medium or high: what BudgetPolicy downgrades move between."
    )
    pricing: Pricing | None = Field(
        default=None,
        description=(
            "What the gateway charges per token for this model; LiteLLM's list price when "
            "omitted (none for a model LiteLLM does not know, e.g. a local one)."
        ),
    )
    context_window: int | None = Field(
        default=None,
        description=(
            "Input tokens the model accepts (its context window). LiteLLM's model map "
            "(max_input_tokens) when omitted; set it for a model LiteLLM does not know or "
            "gets wrong. An alias's window is the smallest among its targets and fallbacks."
        ),
        ge=MIN_CONTEXT_WINDOW,
        le=MAX_CONTEXT_WINDOW,
    )


def is_glob(model: str) -> bool:
    """Whether a catalog model name matches several models."""
    return any(ch in model for ch in "*?[")


def catalog_entry(
    catalog: Sequence[CatalogModel], provider: str, model: str
) -> CatalogModel | None:
    """The catalog entry covering `model` of `provider`: the exact one, else the first glob."""
    globs = []
    for entry in catalog:
        if entry.provider != provider:
            continue
        if entry.model == model:
            return entry
        if is_glob(entry.model):
            globs.append(entry)
    return next((e for e in globs if fnmatch.fnmatchcase(model, e.model)), None)


def max_tier(tiers: Iterable[str]) -> CostTier:
    """The dearest of `tiers` (low when there are none)."""
    return TIERS[max((TIER_ORDER[tier] for tier in tiers), default=0)]


def alias_cost_tiers(
    catalog: Sequence[CatalogModel], aliases: Sequence[ModelAlias]
) -> dict[str, CostTier]:
    """The cost tier of each alias: the dearest of its targets and of every alias it falls
    back to (transitively), so a fallback cannot make a cheap alias serve a dear model.

    A target outside the catalog counts as high (validation rejects such an alias anyway);
    fallbacks to aliases not in `aliases` are ignored (they are not served).
    """
    own: dict[str, CostTier] = {}
    edges: Mapping[str, Sequence[str]] = {
        a.metadata.name or "": list(a.spec.fallbacks) for a in aliases
    }
    for alias in aliases:
        tiers = []
        for target in alias.spec.targets:
            entry = catalog_entry(catalog, target.provider, target.model)
            tiers.append(entry.cost_tier if entry is not None else "high")
        own[alias.metadata.name or ""] = max_tier(tiers)
    result: dict[str, CostTier] = {}
    for name in own:
        seen, stack = {name}, [name]
        while stack:
            for fallback in edges.get(stack.pop(), ()):
                if fallback in own and fallback not in seen:
                    seen.add(fallback)
                    stack.append(fallback)
        result[name] = max_tier(own[n] for n in seen)
    return result
