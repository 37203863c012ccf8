"""The ModelAlias resource (namespaced): a model name clients send, mapped to provider models.

Tenant admins edit ModelAliases, so an alias holds routing only: which catalogued models serve
it, in what split, with which fallbacks. Prices and cost tiers come from the Tenant's
`spec.catalog` (tenantgw.api.catalog), which only the platform edits.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from tenantgw.api.common import (
    LONG_NAME_MAX,
    CamelModel,
    Condition,
    DnsLabel,
    Resource,
    ShortString,
    StatusModel,
    cel,
    duplicates,
    map_list,
    unique_set,
    validations,
)

MODEL_ALIAS_PLURAL = "modelaliases"

FALLBACKS_UNIQUE_MESSAGE = "fallbacks must not repeat a ModelAlias"
FALLBACK_SELF_MESSAGE = "spec.fallbacks must not name the ModelAlias itself"


class Target(CamelModel):
    """A provider model that serves the alias."""

    provider: DnsLabel = Field(description="Name of a provider in the Tenant's spec.providers.")
    model: str = Field(
        description="Model name at the provider, e.g. qwen/qwen3-coder; in the Tenant's catalog.",
        min_length=1,
        max_length=LONG_NAME_MAX,
    )
    weight: int = Field(
        default=1,
        description="Share of traffic relative to the other targets (A/B split).",
        ge=1,
        le=1_000_000,
    )
    max_tokens: int | None = Field(
        default=None, description="Cap on output tokens per request.", ge=1
    )


DISPLAY_NAME_MAX = 64
DESCRIPTION_MAX = 256


class ModelAliasSpec(CamelModel):
    """Desired state of a ModelAlias."""

    display_name: str | None = Field(
        default=None,
        description=(
            "Name developers see in model pickers (GET /v1/models, Claude Code's /model); "
            "the alias's name when omitted."
        ),
        min_length=1,
        max_length=DISPLAY_NAME_MAX,
    )
    description: str | None = Field(
        default=None,
        description="One line on what the alias is for, shown beside its name in model pickers.",
        min_length=1,
        max_length=DESCRIPTION_MAX,
    )
    aliases: list[ShortString] = Field(
        default_factory=list,
        description="Extra client-facing names; globs like claude-sonnet-4-5-* are allowed.",
        max_length=32,
        json_schema_extra=unique_set(),
    )
    targets: list[Target] = Field(
        description="Provider models serving the alias, split by weight.",
        min_length=1,
        max_length=16,
    )
    fallbacks: list[ShortString] = Field(
        default_factory=list,
        description="Other ModelAliases tried in order when every target fails.",
        max_length=8,
        json_schema_extra=validations(
            cel("self.all(x, self.exists_one(y, y == x))", FALLBACKS_UNIQUE_MESSAGE)
        ),
    )

    @field_validator("fallbacks")
    @classmethod
    def _unique_fallbacks(cls, fallbacks: list[str]) -> list[str]:
        if duplicates(fallbacks):
            raise ValueError(FALLBACKS_UNIQUE_MESSAGE)
        return fallbacks

    @field_validator("aliases")
    @classmethod
    def _unique_aliases(cls, aliases: list[str]) -> list[str]:
        dups = duplicates(aliases)
        if dups:
            raise ValueError(f"duplicate alias {dups[0]!r}")
        return aliases


class ModelAliasStatus(StatusModel):
    """Observed state of a ModelAlias."""

    conditions: list[Condition] = Field(
        default_factory=list,
        description="Accepted: whether the tenant's gateway serves the alias, and why not.",
        json_schema_extra=map_list("type"),
    )
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation last reconciled."
    )


class ModelAlias(Resource):
    """A model name clients send, mapped to provider models, in a tenant namespace."""

    KIND: ClassVar[str] = "ModelAlias"
    PLURAL: ClassVar[str] = MODEL_ALIAS_PLURAL
    SINGULAR: ClassVar[str] = "modelalias"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("ma",)
    SCOPE: ClassVar[Literal["Cluster", "Namespaced"]] = "Namespaced"
    CRD_VALIDATIONS: ClassVar[tuple[dict[str, str], ...]] = (
        cel(
            "!has(self.spec.fallbacks) || !self.spec.fallbacks.exists(f, f == self.metadata.name)",
            FALLBACK_SELF_MESSAGE,
            ".spec.fallbacks",
        ),
    )

    kind: Literal["ModelAlias"] = Field(default="ModelAlias", description="ModelAlias.")
    spec: ModelAliasSpec = Field(description="Desired state.")
    status: ModelAliasStatus | None = Field(default=None, description="Observed state.")

    @model_validator(mode="after")
    def _no_self_fallback(self) -> ModelAlias:
        if self.metadata.name is not None and self.metadata.name in self.spec.fallbacks:
            raise ValueError(FALLBACK_SELF_MESSAGE)
        return self
