"""Budget decisions, pure: which BudgetPolicies cover a request and what their spend decides.

No I/O here. `budgets.BudgetGuard` reads and reserves spend in Redis and asks `decide()`.
Everything works on the typed rules file (`files.Rules`).

A Session-scoped policy caps each Claude Code session (`X-Claude-Code-Session-Id`, validated
in `sessions.py`) at its limit per period: it covers every request that carries a session, and
its spend is that session's. A request without a (well-formed) session id is not covered by
Session policies; Tenant and Key policies are what bound a key holder who omits or rotates it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from tenantgw.gateway import prices
from tenantgw.gateway.files import Rules
from tenantgw.gateway.periods import format_reset, period_end

MICRO = 1_000_000
TIER_RANK = {"low": 0, "medium": 1, "high": 2}

Action = Literal["allow", "block", "downgrade"]


@dataclass(frozen=True)
class Decision:
    """What to do with a request: allow it, block it, or send it to the cheaper `to_alias`.

    `policy` names the BudgetPolicy that decided (None for allow); `resets_at` is the UTC
    boundary where that policy's period ends. `held` marks a block that only reservations of
    requests in progress cause (the spend itself is below the limit): it may lift in seconds.
    """

    action: Action
    policy: str | None = None
    message: str = ""
    to_alias: str | None = None
    resets_at: datetime | None = None
    held: bool = False


ALLOW = Decision(action="allow")


@dataclass(frozen=True)
class Policy:
    """One BudgetPolicy from the rules file."""

    name: str
    kind: str
    scope_name: str | None
    period: str
    limit_usd: float
    action: str
    to_cost_tier: str | None
    unenforceable: str | None = None
    """Why the operator could not apply the policy; set, it refuses every request it covers."""

    @property
    def limit_micro(self) -> int:
        return round(self.limit_usd * MICRO)

    @property
    def per_session(self) -> bool:
        """Spend is counted per session: one counter per session id, each with the limit."""
        return self.kind == "Session"

    def matches(self, key_name: str, alias: str, session_id: str | None = None) -> bool:
        if self.kind == "Tenant":
            return True
        if self.kind == "Key":
            return self.scope_name == key_name
        if self.kind == "Session":
            return session_id is not None
        return self.kind == "ModelAlias" and self.scope_name == alias

    def scope(self) -> dict[str, str | None]:
        return {"kind": self.kind, "name": self.scope_name}

    def describe(self, session_id: str | None = None) -> str:
        if self.kind == "Key":
            return f"key {self.scope_name}"
        if self.kind == "ModelAlias":
            return f"model alias {self.scope_name}"
        if self.kind == "Session":
            return f"session {session_id}" if session_id else "each session"
        return "tenant"


@dataclass(frozen=True)
class Spend:
    """A policy's spend in the current period after `add_spend()`."""

    policy: str
    spent_usd: float
    limit_usd: float
    session_id: str | None = None
    """For a Session policy: the session whose spend this is."""

    @property
    def utilization_percent(self) -> float:
        if self.limit_usd <= 0:
            return 100.0
        return self.spent_usd / self.limit_usd * 100


_policies_cache: tuple[Rules, list[Policy]] | None = None


def policies(rules: Rules) -> list[Policy]:
    """The BudgetPolicies of a rules file, sorted by name.

    Built once per rules object (the gateway keeps one until the file changes).
    """
    global _policies_cache
    cached = _policies_cache
    if cached is not None and cached[0] is rules:
        return cached[1]
    parsed = sorted(
        (
            Policy(
                name=budget.name or "",
                kind=budget.scope.kind,
                scope_name=budget.scope.name,
                period=budget.period,
                limit_usd=budget.limit_usd,
                action=budget.on_exceeded.action,
                to_cost_tier=budget.on_exceeded.to_cost_tier,
                unenforceable=(
                    f"{budget.unenforceable.reason}: {budget.unenforceable.message}"
                    if budget.unenforceable is not None
                    else None
                ),
            )
            for budget in rules.budgets
            if budget.name
        ),
        key=lambda policy: policy.name,
    )
    _policies_cache = (rules, parsed)
    return parsed


def covering(
    rules: Rules, key_name: str, alias: str, session_id: str | None = None
) -> list[Policy]:
    """The policies (by name) that cover a request of key `key_name` to `alias`, in a session."""
    return [p for p in policies(rules) if p.matches(key_name, alias, session_id)]


def alias_tier(rules: Rules, alias: str) -> str | None:
    """The cost tier of a ModelAlias in the rules, None when unknown."""
    entry = rules.aliases.get(alias)
    return entry.cost_tier if entry is not None and entry.cost_tier else None


def downgrade_alias(rules: Rules, tier: str, exclude: str | None = None) -> str | None:
    """The cheapest ModelAlias of cost tier `tier`, None when the tenant has none.

    Cheapest by the weighted blended price (input + output USD per million tokens) of its
    targets (`prices.py`: catalog, else LiteLLM's cost map, else Anthropic's list price); an
    alias with a target nobody prices comes after every priced one; ties go by name.
    """
    found = prices.current(rules)
    candidates = [
        name for name in rules.aliases if name != exclude and alias_tier(rules, name) == tier
    ]

    def cost(name: str) -> tuple[float, str]:
        price = found.get(name)
        blended = price.blended if price is not None else None
        return (blended if blended is not None else math.inf, name)

    return min(candidates, key=cost, default=None)


def _rank(tier: str | None) -> int:
    return TIER_RANK.get(tier or "", len(TIER_RANK))


def _usd(micro: int) -> str:
    return f"${micro / MICRO:,.2f}"


def _block(
    policy: Policy, spent: int, reserved: int, now: datetime, session_id: str | None = None
) -> Decision:
    resets_at = period_end(policy.period, now)
    head = f"budget {policy.name} ({policy.describe(session_id)})"
    limit = _usd(policy.limit_micro)
    if spent >= policy.limit_micro:
        message = (
            f"{head} has reached its {policy.period} limit of {limit} ({_usd(spent)} spent); "
            f"it resets at {format_reset(resets_at)}"
        )
    else:
        message = (
            f"{head} is at its {policy.period} limit of {limit}: {_usd(spent)} spent and "
            f"{_usd(reserved)} held by requests in progress; retry when they finish or "
            f"after the reset at {format_reset(resets_at)}"
        )
    return Decision(
        action="block",
        policy=policy.name,
        message=message,
        resets_at=resets_at,
        held=spent < policy.limit_micro,
    )


def refuse_unenforceable(
    covering: Sequence[Policy], session_id: str | None = None
) -> Decision | None:
    """A block for the first covering policy the operator could not apply (fail closed)."""
    for policy in covering:
        if policy.unenforceable is not None:
            message = (
                f"budget {policy.name} ({policy.describe(session_id)}) cannot be enforced "
                f"({policy.unenforceable}); requests in its scope are refused until the "
                "BudgetPolicy is fixed"
            )
            return Decision(action="block", policy=policy.name, message=message)
    return None


def decide(
    rules: Rules,
    covering: Sequence[Policy],
    state: Mapping[str, tuple[int, int]],
    alias: str,
    tier: str | None,
    now: datetime,
    session_id: str | None = None,
) -> Decision:
    """The decision for a request to `alias` (cost tier `tier`), given its covering policies.

    `state` maps each policy to (spent, reserved by requests in progress), in micro-USD; a
    policy is at its limit when their sum reaches it. A block policy at its limit blocks (the
    first by name). Otherwise downgrade policies at their limit whose `to_cost_tier` is cheaper
    than `tier` downgrade to the cheapest alias (by price, `downgrade_alias`) of the cheapest
    such tier; when the tenant has no alias of that tier, the request is blocked. A covering
    policy marked unenforceable blocks whatever the spend. For a Session policy, `state` holds
    the spend of the request's session `session_id`, which the refusal names.
    """
    refused = refuse_unenforceable(covering, session_id)
    if refused is not None:
        return refused
    for policy in covering:
        spent, reserved = state.get(policy.name, (0, 0))
        if policy.action == "block" and spent + reserved >= policy.limit_micro:
            return _block(policy, spent, reserved, now, session_id)
    over = [
        p
        for p in covering
        if p.action == "downgrade"
        and sum(state.get(p.name, (0, 0))) >= p.limit_micro
        and _rank(tier) > _rank(p.to_cost_tier)
    ]
    if not over:
        return ALLOW
    # The cheapest tier any exceeded policy asks for satisfies all of them.
    policy = min(over, key=lambda p: (_rank(p.to_cost_tier), p.name))
    target_tier = policy.to_cost_tier or "low"
    to_alias = downgrade_alias(rules, target_tier, exclude=alias)
    resets_at = period_end(policy.period, now)
    head = (
        f"budget {policy.name} ({policy.describe(session_id)}) has reached its "
        f"{policy.period} limit of {_usd(policy.limit_micro)} ({_usd(state[policy.name][0])} spent)"
    )
    if to_alias is None:
        return Decision(
            action="block",
            policy=policy.name,
            message=f"{head} and no model alias has cost tier {target_tier} to downgrade to; "
            f"it resets at {format_reset(resets_at)}",
            resets_at=resets_at,
        )
    return Decision(
        action="downgrade",
        policy=policy.name,
        message=f"{head}: {alias} is served by {to_alias} (cost tier {target_tier}) "
        f"until {format_reset(resets_at)}",
        to_alias=to_alias,
        resets_at=resets_at,
    )
