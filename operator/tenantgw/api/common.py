"""Shared pieces of the tenantgw custom resources: base models, metadata, conditions.

Specs forbid unknown fields so a typo fails loudly; status models ignore them so an older
operator can still read a status written by a newer one. Python attributes are snake_case,
the Kubernetes wire format is camelCase (aliases).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel

GROUP = "tenantgw.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "tenantgw"

# RFC 1123 label: what Kubernetes accepts for namespace names, and what we put into
# Secret names, Postgres role names and Redis user names.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_LABEL_RE = re.compile(DNS_LABEL_PATTERN)

# The pattern controller-gen emits for resource.Quantity.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)

# String bounds keep the API server's CEL cost estimation within budget.
NAME_MAX = 63
LONG_NAME_MAX = 253
URL_MAX = 2048


def _quantity(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("must be a Kubernetes quantity such as 500m, 2 or 1Gi")
    text = str(value)
    if not _QUANTITY_RE.match(text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity such as 500m, 2 or 1Gi")
    return text


Quantity = Annotated[
    str,
    BeforeValidator(_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes quantity (`500m`, `2`, `1Gi`), kept as its string form."""

DnsLabel = Annotated[str, Field(min_length=1, max_length=NAME_MAX, pattern=DNS_LABEL_PATTERN)]
ShortString = Annotated[str, Field(min_length=1, max_length=LONG_NAME_MAX)]


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry; `field_path` is where the API server reports it."""
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules into the generated CRD."""
    return {"x-kubernetes-validations": list(rules)}


def unique_set() -> dict[str, Any]:
    """`json_schema_extra` for a list of unique scalars."""
    return {"x-kubernetes-list-type": "set"}


def map_list(*keys: str) -> dict[str, Any]:
    """`json_schema_extra` for a list of objects unique by `keys` (merged per item by SSA)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


def duplicates(values: list[str]) -> list[str]:
    """Values that occur more than once, in first-seen order."""
    seen: set[str] = set()
    dups: list[str] = []
    for value in values:
        if value in seen and value not in dups:
            dups.append(value)
        seen.add(value)
    return dups


def plain(value: Any) -> Any:
    """Deep-copy a kopf body (Mappings all the way down) into plain dicts and lists."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


class CamelModel(BaseModel):
    """Base of every spec model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        populate_by_name=True,
        alias_generator=to_camel,
        extra="forbid",
    )

    def k8s_dict(self, *, exclude_none: bool = True) -> dict[str, Any]:
        """The object as Kubernetes expects it: camelCase keys, JSON types.

        Pass `exclude_none=False` for a merge patch that must clear fields.
        """
        return self.model_dump(by_alias=True, mode="json", exclude_none=exclude_none)


class StatusModel(CamelModel):
    """Base of status models: unknown fields are ignored (written by other operator versions)."""

    model_config = ConfigDict(extra="ignore")


class ObjectMeta(CamelModel):
    """The part of Kubernetes object metadata the operator reads; everything else is kept."""

    model_config = ConfigDict(extra="allow")

    name: str | None = Field(default=None, description="Name of the object.")
    namespace: str | None = Field(default=None, description="Namespace of the object.")
    uid: str | None = Field(default=None, description="UID assigned by the API server.")
    generation: int | None = Field(default=None, description="Generation of the spec.")
    resource_version: str | None = Field(default=None, description="Resource version.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")


class SecretKeyRef(CamelModel):
    """A key of a Secret in the tenant's namespace."""

    name: str = Field(
        description="Name of the Secret, in the tenant's namespace.",
        min_length=1,
        max_length=LONG_NAME_MAX,
    )
    key: str = Field(
        description="Key inside the Secret's data.",
        min_length=1,
        max_length=LONG_NAME_MAX,
        pattern=r"^[-._a-zA-Z0-9]+$",
    )


class Condition(StatusModel):
    """A status condition, following the Kubernetes API conventions."""

    type: str = Field(description="Type of the condition in CamelCase, e.g. Ready.", max_length=316)
    status: Literal["True", "False", "Unknown"] = Field(
        description="Status of the condition: True, False or Unknown."
    )
    reason: str | None = Field(
        default=None,
        description="Machine-readable reason for the last transition, in CamelCase.",
        max_length=1024,
    )
    message: str | None = Field(
        default=None,
        description="Human-readable detail; names the field to fix when the user must act.",
        max_length=32768,
    )
    observed_generation: int | None = Field(
        default=None,
        description="The .metadata.generation the condition was computed from.",
        ge=0,
    )
    last_transition_time: datetime | None = Field(
        default=None, description="When the status of the condition last changed."
    )


class Resource(CamelModel):
    """Base of the three top-level resources: parses a raw kopf body with `model_validate`."""

    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    SINGULAR: ClassVar[str]
    SHORT_NAMES: ClassVar[tuple[str, ...]]
    SCOPE: ClassVar[Literal["Cluster", "Namespaced"]]
    # CEL rules on the whole object (they see metadata.name, or compare with oldSelf).
    CRD_VALIDATIONS: ClassVar[tuple[dict[str, str], ...]] = ()

    api_version: str = Field(default=API_VERSION, description="API version of the object.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Object metadata.")

    @model_validator(mode="before")
    @classmethod
    def _from_body(cls, data: Any) -> Any:
        # kopf hands out read-only Mapping views (Body, Meta, Spec), not dicts.
        if isinstance(data, Mapping) and not isinstance(data, dict):
            return plain(data)
        return data
