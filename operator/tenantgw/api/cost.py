"""Cost attribution on the Tenant: the list-price baseline of savings, and cost labels.

Both are money, so both are the platform's: they live on the cluster-scoped Tenant, which
tenant principals cannot write (nor read). A tenant admin who could pick the baseline of an
alias could make any routing look like a saving.

- `spec.costBaseline`: the Claude model whose Anthropic list price a request is compared with
  when the client named an alias rather than a Claude model (`default`, or per alias).
- `spec.keys[].labels` and `spec.costLabels`: labels (`team`, `project`, `cost-center`, ...)
  each ledger row carries, from the key, and optionally one from a request header whose
  values the platform lists, so a client cannot mint labels without bound.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import ConfigDict, Field, field_validator

from tenantgw.api.common import CamelModel, cel, unique_set, validations
from tenantgw.api.list_prices import ANTHROPIC_LIST_PRICES, claude_family

LABEL_KEY_PATTERN = r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$"
LABEL_VALUE_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
LABEL_KEY_RE = re.compile(LABEL_KEY_PATTERN)
MAX_LABELS = 8
"""Labels per key (with the header's label: at most MAX_LABELS + 1 per ledger row)."""
HEADER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$"
RESERVED_HEADERS = (
    "authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "host",
    "content-type",
    "content-length",
    "x-claude-code-session-id",
)
"""Headers that already mean something: none of them may carry a cost label."""

LabelKey = Annotated[str, Field(min_length=1, max_length=32, pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, Field(min_length=1, max_length=63, pattern=LABEL_VALUE_PATTERN)]
ClaudeModelName = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^(anthropic/)?claude-[a-z0-9.@-]+$")
]

LABELS_KEYS_MESSAGE = (
    "label keys must be lowercase letters, digits and '-', starting with a letter, at most 32 "
    "characters"
)


def labels_field(description: str) -> Any:
    """A bounded `{key: value}` map of cost labels, keys checked by the API server too."""
    return Field(
        default_factory=dict,
        description=description,
        max_length=MAX_LABELS,
        json_schema_extra=validations(
            cel(
                f"self.all(k, size(k) <= 32 && k.matches('{LABEL_KEY_PATTERN}'))",
                LABELS_KEYS_MESSAGE,
            )
        ),
    )


def check_label_keys(labels: dict[str, str]) -> dict[str, str]:
    for key in labels:
        if len(key) > 32 or not LABEL_KEY_RE.match(key):
            raise ValueError(f"label key {key!r}: {LABELS_KEYS_MESSAGE}")
    return labels


def _known_claude(model: str, where: str) -> str:
    if claude_family(model) is None:
        known = ", ".join(ANTHROPIC_LIST_PRICES)
        raise ValueError(
            f"{where}: {model!r} is not a Claude model with a known list price (known: {known})"
        )
    return model


class CostBaseline(CamelModel):
    """The Claude model whose list price requests naming an alias are compared with."""

    default: ClaudeModelName | None = Field(
        default=None,
        description=(
            "Claude model (e.g. claude-sonnet-4-5) whose Anthropic list price is the "
            "counterfactual of a request that named an alias, not a Claude model. Unset: such "
            "requests have no list cost and count in no saving."
        ),
    )
    aliases: dict[str, ClaudeModelName] = Field(
        default_factory=dict,
        description=(
            "Per ModelAlias (by name or client name the request used): the Claude model it "
            "stands in for, e.g. {reasoning: claude-opus-4-1}. Overrides default."
        ),
        max_length=128,
    )

    @field_validator("default")
    @classmethod
    def _default_priced(cls, model: str | None) -> str | None:
        return None if model is None else _known_claude(model, "costBaseline.default")

    @field_validator("aliases")
    @classmethod
    def _aliases_priced(cls, aliases: dict[str, str]) -> dict[str, str]:
        for alias, model in aliases.items():
            _known_claude(model, f"costBaseline.aliases.{alias}")
        return aliases


class CostLabels(CamelModel):
    """One cost label a request header may set, limited to values the platform lists."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                f"!(self.header.lowerAscii() in {list(RESERVED_HEADERS)})",
                "costLabels.header: this header already has a meaning at the gateway",
                ".header",
            )
        )
    )

    header: str = Field(
        description="Request header carrying the label's value, e.g. X-Project.",
        min_length=1,
        max_length=64,
        pattern=HEADER_PATTERN,
    )
    label: LabelKey = Field(
        description="Label the header sets, e.g. project; it overrides the key's own."
    )
    allowed_values: list[LabelValue] = Field(
        description=(
            "The values the header may take; a request with any other value is refused with "
            "400 naming the header. A request without the header keeps the key's labels."
        ),
        min_length=1,
        max_length=256,
        json_schema_extra=unique_set(),
    )

    @field_validator("header")
    @classmethod
    def _not_reserved(cls, header: str) -> str:
        if header.lower() in RESERVED_HEADERS:
            raise ValueError(f"costLabels.header: {header} already has a meaning at the gateway")
        return header
