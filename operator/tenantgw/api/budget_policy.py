"""The BudgetPolicy resource (namespaced): a spending limit on a tenant, key, alias or session."""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from typing import Annotated, ClassVar, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from tenantgw.api.catalog import CostTier
from tenantgw.api.common import (
    CamelModel,
    Condition,
    Resource,
    SecretKeyRef,
    ShortString,
    StatusModel,
    cel,
    map_list,
    validations,
)

BUDGET_POLICY_PLURAL = "budgetpolicies"

BudgetState = Literal["Ok", "Warning", "Exceeded"]
Period = Literal["daily", "weekly", "monthly"]

SCOPE_NAME_MESSAGE = (
    "scope.name is required when scope.kind is Key or ModelAlias and must be omitted for "
    "Tenant and Session"
)
UNNAMED_KINDS = ("Tenant", "Session")
TO_COST_TIER_MESSAGE = (
    "onExceeded.toCostTier is required when action is downgrade and allowed only then"
)
THRESHOLDS_MESSAGE = "alertThresholds must be strictly ascending percentages, e.g. [50, 80, 100]"
DEFAULT_THRESHOLDS = (50, 80, 100)


class BudgetScope(CamelModel):
    """What the budget counts: the whole tenant, one key, one ModelAlias, or each session."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "(self.kind == 'Tenant' || self.kind == 'Session') != has(self.name)",
                SCOPE_NAME_MESSAGE,
            )
        )
    )

    kind: Literal["Tenant", "Key", "ModelAlias", "Session"] = Field(
        description=(
            "Tenant (all spend in the namespace), Key, ModelAlias, or Session: each Claude Code "
            "session (X-Claude-Code-Session-Id) may spend at most limitUSD per period; requests "
            "without a session id are not counted by Session policies."
        )
    )
    name: ShortString | None = Field(
        default=None,
        description="Name of the key or ModelAlias; omitted for Tenant and Session.",
    )

    @model_validator(mode="after")
    def _name_matches_kind(self) -> BudgetScope:
        if (self.kind in UNNAMED_KINDS) == (self.name is not None):
            raise ValueError(SCOPE_NAME_MESSAGE)
        return self


class OnExceeded(CamelModel):
    """What the gateway does once spend reaches the limit."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.action == 'downgrade' ? has(self.toCostTier) : !has(self.toCostTier)",
                TO_COST_TIER_MESSAGE,
            )
        )
    )

    action: Literal["block", "downgrade"] = Field(
        default="block",
        description="block (reject requests) or downgrade (route to a cheaper cost tier).",
    )
    to_cost_tier: CostTier | None = Field(
        default=None, description="Cost tier of ModelAliases to downgrade to."
    )

    @model_validator(mode="after")
    def _tier_with_downgrade(self) -> OnExceeded:
        if (self.action == "downgrade") != (self.to_cost_tier is not None):
            raise ValueError(TO_COST_TIER_MESSAGE)
        return self


class Notify(CamelModel):
    """Where threshold alerts go: a webhook, signed by the Standard Webhooks scheme."""

    webhook_secret_ref: SecretKeyRef = Field(
        description=(
            "Secret key (in the policy's namespace) holding the http(s) URL each threshold "
            "crossing and the exceedance are POSTed to, once per period."
        )
    )
    signing_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description=(
            "Secret key holding the Standard Webhooks signing secret (whsec_<base64 of 24 to 64 "
            "random bytes>): each request carries webhook-id, webhook-timestamp and "
            "webhook-signature (v1,<base64 HMAC-SHA256 of id.timestamp.body>). Without it, "
            "requests are sent unsigned."
        ),
    )
    format: Literal["standard", "slack"] = Field(
        default="standard",
        description=(
            'standard: a JSON event {type, timestamp, data}; slack: {"text": ...}, which a '
            "Slack (or Mattermost, Teams workflow) incoming webhook posts as a message."
        ),
    )


class BudgetPolicySpec(CamelModel):
    """Desired state of a BudgetPolicy."""

    scope: BudgetScope = Field(description="What the budget counts.")
    period: Period = Field(
        default="monthly", description="daily, weekly or monthly; periods start at 00:00 UTC."
    )
    limit_usd: float = Field(
        alias="limitUSD", description="Spending limit per period in USD.", ge=0
    )
    alert_thresholds: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: list(DEFAULT_THRESHOLDS),
        description="Percentages of the limit that fire an alert, ascending.",
        max_length=10,
        json_schema_extra={
            "default": list(DEFAULT_THRESHOLDS),
            "x-kubernetes-list-type": "set",
            **validations(cel("self.isSorted()", THRESHOLDS_MESSAGE)),
        },
    )
    on_exceeded: OnExceeded = Field(
        default_factory=OnExceeded, description="What happens once the limit is reached."
    )
    notify: Notify | None = Field(default=None, description="Where alerts are sent.")

    @field_validator("alert_thresholds")
    @classmethod
    def _ascending(cls, thresholds: list[int]) -> list[int]:
        if any(a >= b for a, b in pairwise(thresholds)):
            raise ValueError(THRESHOLDS_MESSAGE)
        return thresholds


NotificationState = Literal["Delivered", "Retrying", "Failed"]


class NotificationStatus(CamelModel):
    """The delivery state of the policy's latest webhook notification (never its URL)."""

    id: str = Field(description="webhook-id of the message (the same on every attempt).")
    type: str = Field(description="budget.threshold_crossed or budget.exceeded.")
    threshold: int = Field(description="The threshold crossed, in percent (100: exceeded).")
    period_start: datetime = Field(description="Start of the period the message belongs to.")
    state: NotificationState = Field(
        description=(
            "Delivered (the receiver answered 2xx), Retrying (an attempt failed; the next one "
            "follows with exponential backoff) or Failed (given up)."
        )
    )
    attempts: int = Field(description="Delivery attempts so far.", ge=0)
    last_attempt_time: datetime | None = Field(default=None, description="When it was last sent.")
    last_error: str | None = Field(
        default=None, description="Why the last attempt failed, e.g. the receiver's status."
    )


class BudgetPolicyStatus(StatusModel):
    """Observed state of a BudgetPolicy."""

    period_start: datetime | None = Field(default=None, description="Start of the current period.")
    spent_usd: float | None = Field(
        default=None,
        alias="spentUSD",
        description=(
            "USD spent in the current period; for a Session policy, by the session that spent "
            "most (topSession)."
        ),
    )
    utilization: float | None = Field(
        default=None, description="spentUSD as a percentage of limitUSD, e.g. 82.5."
    )
    state: BudgetState | None = Field(
        default=None, description="Ok, Warning (a threshold fired) or Exceeded."
    )
    sessions: int | None = Field(
        default=None,
        description="Session policies: sessions that spent in the current period.",
        ge=0,
    )
    sessions_over_limit: int | None = Field(
        default=None,
        description="Session policies: sessions that reached limitUSD in the current period.",
        ge=0,
    )
    top_session: str | None = Field(
        default=None,
        description="Session policies: the session id that spent most in the current period.",
        max_length=64,
    )
    fired_thresholds: list[int] = Field(
        default_factory=list, description="Thresholds that fired in the current period."
    )
    last_notification: NotificationStatus | None = Field(
        default=None, description="spec.notify: the latest webhook message and its delivery."
    )
    notification_failures: int | None = Field(
        default=None,
        description="spec.notify: failed delivery attempts in the current period.",
        ge=0,
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Conditions of the policy, e.g. Accepted.",
        json_schema_extra=map_list("type"),
    )
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation last reconciled."
    )


class BudgetPolicy(Resource):
    """A spending limit with alerts, in a tenant namespace."""

    KIND: ClassVar[str] = "BudgetPolicy"
    PLURAL: ClassVar[str] = BUDGET_POLICY_PLURAL
    SINGULAR: ClassVar[str] = "budgetpolicy"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("bp",)
    SCOPE: ClassVar[Literal["Cluster", "Namespaced"]] = "Namespaced"

    kind: Literal["BudgetPolicy"] = Field(default="BudgetPolicy", description="BudgetPolicy.")
    spec: BudgetPolicySpec = Field(description="Desired state.")
    status: BudgetPolicyStatus | None = Field(default=None, description="Observed state.")
