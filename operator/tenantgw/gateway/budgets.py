"""BudgetPolicy enforcement: per-period spend counters in Redis, checked before each request.

Counters. Each policy has one counter per period, `t:<tenant>:budget:<policy>:<YYYY-MM-DD of
the period start>`, in micro-USD (integers, INCRBY). `add_spend()` adds a request's cost to
every policy whose scope matches it: the tenant, its key, its ModelAlias.

Reservations keep concurrent requests from overshooting a limit. A request that reaches the
limit only when it completes would let every request admitted meanwhile overshoot too, so
`check()` atomically (one Lua script over all matching policies) admits a request only while
`spent + reserved < limit`, and reserves an estimate of its cost against each policy: the
alias's recent average request cost (an exponential moving average kept in Redis,
`t:<tenant>:budget:avg:<alias>`; `default_estimate_usd` until the alias has history).
`add_spend()` adds the real cost and drops the reservation. While estimates match real costs,
the spend of everything admitted stays within the limit plus the cost of the last request
admitted; a replica that dies mid-request loses its reservation after a lease, not forever.

Redis is a cache of spend, the ledger (Postgres) its record: `reconcile_from_ledger()` raises
each counter to the ledger's sum for the period, every 60 s once a check has run, so a Redis
restart or flush does not forgive spend.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.periods import budget_counter_key, format_reset, period_end, period_start
from tenantgw.gateway.ratelimit import SKIP_AFTER_ERROR, rules_dict

log = logging.getLogger("tenantgw.gateway.budgets")

MICRO = 1_000_000
DEFAULT_ESTIMATE_USD = 0.01
"""Reserved per request for an alias without cost history yet."""
ESTIMATE_WEIGHT = 0.2
"""Weight of the newest request in the moving average of an alias's request cost."""
LEASE_SECONDS = 660
"""How long a reservation holds if its request never reports its cost (600 s timeout + margin)."""
RECONCILE_INTERVAL = 60.0
COUNTER_GRACE = timedelta(days=7)
"""How long a counter outlives its period (for reports of the period just ended)."""
TIER_RANK = {"low": 0, "medium": 1, "high": 2}

Action = Literal["allow", "block", "downgrade"]


@dataclass(frozen=True)
class Decision:
    """What to do with a request: allow it, block it, or send it to the cheaper `to_alias`.

    `policy` names the BudgetPolicy that decided (None for allow); `resets_at` is the UTC
    boundary where that policy's period ends.
    """

    action: Action
    policy: str | None = None
    message: str = ""
    to_alias: str | None = None
    resets_at: datetime | None = None


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

    def matches(self, key_name: str, alias: str) -> bool:
        if self.kind == "Tenant":
            return True
        if self.kind == "Key":
            return self.scope_name == key_name
        return self.kind == "ModelAlias" and self.scope_name == alias

    def scope(self) -> dict[str, str | None]:
        return {"kind": self.kind, "name": self.scope_name}

    def describe(self) -> str:
        if self.kind == "Key":
            return f"key {self.scope_name}"
        if self.kind == "ModelAlias":
            return f"model alias {self.scope_name}"
        return "tenant"


@dataclass(frozen=True)
class Spend:
    """A policy's spend in the current period after `add_spend()`."""

    policy: str
    spent_usd: float
    limit_usd: float

    @property
    def utilization_percent(self) -> float:
        if self.limit_usd <= 0:
            return 100.0
        return self.spent_usd / self.limit_usd * 100


class LedgerReader(Protocol):
    """What reconciliation needs from the ledger."""

    async def spent_since(self, period_start: datetime, scope: Mapping[str, Any]) -> float: ...


_policies_cache: tuple[Any, list[Policy]] | None = None


def policies(rules: Any) -> list[Policy]:
    """The BudgetPolicies of a rules file (dict or model), sorted by name.

    Parsed once per rules object (the gateway keeps one until the file changes).
    """
    global _policies_cache
    cached = _policies_cache
    if cached is not None and cached[0] is rules:
        return cached[1]
    parsed = _parse_policies(rules)
    _policies_cache = (rules, parsed)
    return parsed


def _parse_policies(rules: Any) -> list[Policy]:
    found: list[Policy] = []
    for raw in rules_dict(rules).get("budgets") or ():
        if not isinstance(raw, Mapping) or not raw.get("name"):
            continue
        scope = raw.get("scope") or {}
        on_exceeded = raw.get("on_exceeded") or {}
        refused = raw.get("unenforceable")
        found.append(
            Policy(
                name=str(raw["name"]),
                kind=str(scope.get("kind") or "Tenant"),
                scope_name=scope.get("name"),
                period=str(raw.get("period") or "monthly"),
                limit_usd=float(raw.get("limit_usd") or 0.0),
                action=str(on_exceeded.get("action") or "block"),
                to_cost_tier=on_exceeded.get("to_cost_tier"),
                unenforceable=(
                    f"{refused.get('reason')}: {refused.get('message')}"
                    if isinstance(refused, Mapping)
                    else None
                ),
            )
        )
    return sorted(found, key=lambda policy: policy.name)


def alias_tier(rules: Any, alias: str) -> str | None:
    """The cost tier of a ModelAlias in the rules, None when unknown."""
    entry = (rules_dict(rules).get("aliases") or {}).get(alias)
    tier = entry.get("cost_tier") if isinstance(entry, Mapping) else None
    return str(tier) if tier else None


def downgrade_alias(rules: Any, tier: str, exclude: str | None = None) -> str | None:
    """The first ModelAlias (by name) of cost tier `tier`, None when the tenant has none."""
    aliases = rules_dict(rules).get("aliases") or {}
    for name in sorted(aliases):
        if name != exclude and alias_tier(rules, name) == tier:
            return str(name)
    return None


def _rank(tier: str | None) -> int:
    return TIER_RANK.get(tier or "", len(TIER_RANK))


def _usd(micro: int) -> str:
    return f"${micro / MICRO:,.2f}"


def _block(policy: Policy, spent: int, reserved: int, now: datetime) -> Decision:
    resets_at = period_end(policy.period, now)
    head = f"budget {policy.name} ({policy.describe()})"
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
    return Decision(action="block", policy=policy.name, message=message, resets_at=resets_at)


def refuse_unenforceable(covering: Sequence[Policy]) -> Decision | None:
    """A block for the first covering policy the operator could not apply (fail closed)."""
    for policy in covering:
        if policy.unenforceable is not None:
            message = (
                f"budget {policy.name} ({policy.describe()}) cannot be enforced "
                f"({policy.unenforceable}); requests in its scope are refused until the "
                "BudgetPolicy is fixed"
            )
            return Decision(action="block", policy=policy.name, message=message)
    return None


def decide(
    rules: Any,
    covering: Sequence[Policy],
    state: Mapping[str, tuple[int, int]],
    alias: str,
    tier: str | None,
    now: datetime,
) -> Decision:
    """The decision for a request to `alias` (cost tier `tier`), given its covering policies.

    `state` maps each policy to (spent, reserved by requests in progress), in micro-USD; a
    policy is at its limit when their sum reaches it. A block policy at its limit blocks (the
    first by name). Otherwise downgrade policies at their limit whose `to_cost_tier` is cheaper
    than `tier` downgrade to the first alias (by name) of the cheapest such tier; when the
    tenant has no alias of that tier, the request is blocked. A covering policy marked
    unenforceable blocks whatever the spend. Pure: no I/O.
    """
    refused = refuse_unenforceable(covering)
    if refused is not None:
        return refused
    for policy in covering:
        spent, reserved = state.get(policy.name, (0, 0))
        if policy.action == "block" and spent + reserved >= policy.limit_micro:
            return _block(policy, spent, reserved, now)
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
        f"budget {policy.name} ({policy.describe()}) has reached its {policy.period} limit "
        f"of {_usd(policy.limit_micro)} ({_usd(state[policy.name][0])} spent)"
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


_CHECK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rid, lease, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local est = tonumber(redis.call('GET', KEYS[3 * n + 1]) or ARGV[4])
local out = {0, est}
for i = 1, n do
  local spent_key, resv_key, exp_key = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local limit, block = tonumber(ARGV[3 + 2 * i]), ARGV[4 + 2 * i] == '1'
  local expired = redis.call('ZRANGEBYSCORE', exp_key, '-inf', now)
  if #expired > 0 then
    redis.call('HDEL', resv_key, unpack(expired))
    redis.call('ZREM', exp_key, unpack(expired))
  end
  local spent = tonumber(redis.call('GET', spent_key) or '0')
  local reserved = 0
  for _, v in ipairs(redis.call('HVALS', resv_key)) do reserved = reserved + tonumber(v) end
  reserved = reserved - tonumber(redis.call('HGET', resv_key, rid) or '0')
  out[#out + 1] = spent
  out[#out + 1] = reserved
  if block and spent + reserved >= limit and out[1] == 0 then out[1] = i end
end
if out[1] == 0 then
  for i = 1, n do
    redis.call('HSET', KEYS[3 * i - 1], rid, est)
    redis.call('ZADD', KEYS[3 * i], now + lease, rid)
    redis.call('EXPIRE', KEYS[3 * i - 1], lease)
    redis.call('EXPIRE', KEYS[3 * i], lease)
  end
end
return out
"""

_UNRESERVE = """
for i = 1, #KEYS, 2 do
  redis.call('HDEL', KEYS[i], ARGV[1])
  redis.call('ZREM', KEYS[i + 1], ARGV[1])
end
return 0
"""

_ADD_SPEND = """
local rid, cost = ARGV[1], tonumber(ARGV[2])
local ns, nr = tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for i = 1, ns do
  out[i] = redis.call('INCRBY', KEYS[i], cost)
  redis.call('EXPIREAT', KEYS[i], tonumber(ARGV[5 + i]))
end
for j = 1, nr do
  redis.call('HDEL', KEYS[ns + 2 * j - 1], rid)
  redis.call('ZREM', KEYS[ns + 2 * j], rid)
end
if ARGV[5] ~= '' then
  local avg_key = KEYS[ns + 2 * nr + 1]
  local avg = redis.call('GET', avg_key)
  local w = tonumber(ARGV[5])
  local new = cost
  if avg then new = math.floor(tonumber(avg) * (1 - w) + cost * w + 0.5) end
  redis.call('SET', avg_key, new, 'EX', 604800)
end
return out
"""

_RAISE = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
local want = tonumber(ARGV[1])
if cur < want then
  redis.call('SET', KEYS[1], want)
  redis.call('EXPIREAT', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
"""


@dataclass
class _Held:
    """Reservations of one request in this process, dropped by add_spend() or release()."""

    since: float
    keys: list[str]


class BudgetGuard:
    """The tenant's BudgetPolicies, enforced through counters shared by all replicas.

    `check()` before the request, `add_spend()` once after it with its cost (0 for a failure);
    `release()` drops the reservation of a request that will never report a cost. On a Redis
    error the request is allowed, and Redis left alone for SKIP_AFTER_ERROR seconds
    (`fail_open=False` raises instead): the ledger still records the spend and reconciliation
    puts it back into the counters once Redis is back.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        tenant: str,
        ledger_reader: LedgerReader | None = None,
        *,
        default_estimate_usd: float = DEFAULT_ESTIMATE_USD,
        lease_seconds: int = LEASE_SECONDS,
        reconcile_interval: float = RECONCILE_INTERVAL,
        fail_open: bool = True,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.redis = redis
        self.tenant = tenant
        self.ledger_reader = ledger_reader
        self.prefix = f"t:{tenant}:budget"
        self.default_estimate_usd = default_estimate_usd
        self.lease_seconds = lease_seconds
        self.reconcile_interval = reconcile_interval
        self.fail_open = fail_open
        self._skip_until = 0.0
        self.rules: Mapping[str, Any] | None = None
        """The rules of the last check(), used by add_spend() and reconciliation by default."""
        self._now: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self._check = redis.register_script(_CHECK)
        self._unreserve = redis.register_script(_UNRESERVE)
        self._add_spend = redis.register_script(_ADD_SPEND)
        self._raise = redis.register_script(_RAISE)
        self._held: dict[str, _Held] = {}
        self._reconciler: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ keys

    def counter_key(self, policy: str, when: datetime, period: str) -> str:
        """`t:<tenant>:budget:<policy>:<period start>`: micro-USD spent in that period.

        The operator reads the same key (tenantgw.api.periods) for the BudgetPolicy's status.
        """
        return budget_counter_key(self.tenant, policy, period, when)

    def _reservation_keys(self, covering: Sequence[Policy], now: datetime) -> list[str]:
        keys: list[str] = []
        for policy in covering:
            counter = self.counter_key(policy.name, now, policy.period)
            keys += [f"{counter}:resv", f"{counter}:resv:exp"]
        return keys

    def estimate_key(self, alias: str) -> str:
        return f"{self.prefix}:avg:{alias}"

    def _expires_at(self, policy: Policy, when: datetime) -> int:
        return int((period_end(policy.period, when) + COUNTER_GRACE).timestamp())

    # ------------------------------------------------------------------ check

    async def check(self, ctx: RequestContext, rules: Any) -> Decision:
        """Allow, block or downgrade the request by the spend of every policy that covers it."""
        self.rules = raw = rules_dict(rules)
        self._start_reconciler()
        all_policies = policies(raw)
        if not all_policies:
            return ALLOW
        # Needs no counter, so it holds while Redis is unavailable too.
        refused = refuse_unenforceable(
            [p for p in all_policies if p.matches(ctx.key_name, ctx.alias)]
        )
        if refused is not None:
            return refused
        if self.fail_open and time.monotonic() < self._skip_until:
            return Decision(action="allow", message="budgets not checked: Redis unavailable")
        now = self._now()
        try:
            return await self._decide(ctx, raw, all_policies, now)
        except RedisError as exc:
            if not self.fail_open:
                raise
            self._skip_until = time.monotonic() + SKIP_AFTER_ERROR
            log.warning(
                "budgets not checked for %.0f s (Redis: %s); allowing requests",
                SKIP_AFTER_ERROR,
                exc,
            )
            return Decision(action="allow", message=f"budgets not checked: {exc}")

    async def _decide(
        self, ctx: RequestContext, rules: Mapping[str, Any], every: list[Policy], now: datetime
    ) -> Decision:
        covering = [p for p in every if p.matches(ctx.key_name, ctx.alias)]
        state = await self._reserve(ctx.request_id, covering, ctx.alias, now)
        tier = alias_tier(rules, ctx.alias) or ctx.cost_tier
        decision = decide(rules, covering, state, ctx.alias, tier, now)
        if decision.action == "allow":
            return decision
        await self._drop(ctx.request_id)
        if decision.action == "block" or decision.to_alias is None:
            return decision
        # Re-check as the cheaper alias, whose own alias-scoped policies may block it. The
        # downgrade policies that sent it there are satisfied by its tier.
        to_alias = decision.to_alias
        covering = [p for p in every if p.matches(ctx.key_name, to_alias)]
        state = await self._reserve(ctx.request_id, covering, to_alias, now)
        again = decide(rules, covering, state, to_alias, alias_tier(rules, to_alias), now)
        if again.action == "block":
            await self._drop(ctx.request_id)
            return again
        return decision

    async def _reserve(
        self, request_id: str, covering: Sequence[Policy], alias: str, now: datetime
    ) -> dict[str, tuple[int, int]]:
        """Reserve the alias's cost estimate under every covering policy, unless one blocks.

        Returns {policy: (spent, reserved by other requests)} as the script saw it; nothing is
        reserved when a block policy is at its limit (`decide()` then finds the same one).
        """
        if not covering:
            return {}
        keys: list[str] = []
        args: list[Any] = [
            request_id,
            self.lease_seconds,
            len(covering),
            round(self.default_estimate_usd * MICRO),
        ]
        for policy in covering:
            counter = self.counter_key(policy.name, now, policy.period)
            keys += [counter, f"{counter}:resv", f"{counter}:resv:exp"]
            args += [policy.limit_micro, 1 if policy.action == "block" else 0]
        keys.append(self.estimate_key(alias))
        result = [int(x) for x in await self._check(keys=keys, args=args)]
        state = {
            policy.name: (result[2 + 2 * i], result[3 + 2 * i]) for i, policy in enumerate(covering)
        }
        if not result[0]:
            self._forget_stale()
            resv = [k for i, k in enumerate(keys[:-1]) if i % 3 != 0]
            self._held[request_id] = _Held(since=time.monotonic(), keys=resv)
        return state

    def _forget_stale(self) -> None:
        deadline = time.monotonic() - self.lease_seconds
        for request_id in [r for r, held in self._held.items() if held.since < deadline]:
            del self._held[request_id]

    async def _drop(self, request_id: str) -> None:
        held = self._held.pop(request_id, None)
        if held is not None and held.keys:
            await self._unreserve(keys=held.keys, args=[request_id])

    async def release(self, ctx: RequestContext) -> None:
        """Drop the reservation of a request that ends without add_spend()."""
        try:
            await self._drop(ctx.request_id)
        except RedisError as exc:
            log.warning("reservation of %s not dropped (Redis: %s)", ctx.request_id, exc)

    # ------------------------------------------------------------------ spend

    async def add_spend(
        self,
        ctx: RequestContext,
        cost_usd: float,
        rules: Any = None,
        *,
        update_estimate: bool = True,
    ) -> list[Spend]:
        """Add a request's cost to every policy covering its key and alias; drop its reservation.

        `rules` defaults to those of the last check(). `update_estimate=False` (failures) keeps
        the request out of the alias's average cost. Returns each covering policy's spend.
        """
        raw = rules_dict(rules) if rules is not None else (self.rules or {})
        now = self._now()
        covering = [p for p in policies(raw) if p.matches(ctx.key_name, ctx.alias)]
        held = self._held.pop(ctx.request_id, None)
        # Without a local record (another guard instance checked it, or this process
        # restarted), drop whatever reservation the request holds under the covering policies.
        resv = held.keys if held is not None else self._reservation_keys(covering, now)
        # Rounded up, so the counter never trails the ledger it is reconciled with.
        cost = max(math.ceil(cost_usd * MICRO - 1e-6), 0)
        keys = [self.counter_key(p.name, now, p.period) for p in covering] + resv
        args: list[Any] = [
            ctx.request_id,
            cost,
            len(covering),
            len(resv) // 2,
            ESTIMATE_WEIGHT if update_estimate else "",
        ]
        args += [self._expires_at(p, now) for p in covering]
        if update_estimate:
            keys.append(self.estimate_key(ctx.alias))
        if not keys:
            return []
        if self.fail_open and time.monotonic() < self._skip_until:
            return []  # the ledger has it; reconciliation restores the counter
        try:
            totals = [int(x) for x in await self._add_spend(keys=keys, args=args)]
        except RedisError as exc:
            if not self.fail_open:
                raise
            self._skip_until = time.monotonic() + SKIP_AFTER_ERROR
            log.warning("spend of %s not counted in Redis (%s)", ctx.request_id, exc)
            return []
        return [
            Spend(policy=p.name, spent_usd=total / MICRO, limit_usd=p.limit_usd)
            for p, total in zip(covering, totals, strict=True)
        ]

    async def spent(self, policy: str, rules: Any = None) -> float:
        """USD the policy's counter holds for the current period (0 when it has none)."""
        found = {p.name: p for p in policies(rules if rules is not None else self.rules)}
        if policy not in found:
            raise KeyError(f"no BudgetPolicy {policy!r} in the rules")
        value = await self.redis.get(self.counter_key(policy, self._now(), found[policy].period))
        return int(value or 0) / MICRO

    # ------------------------------------------------------------------ reconciliation

    async def reconcile_from_ledger(self, rules: Any = None) -> int:
        """Raise each counter of the current periods to the ledger's spend; how many it raised.

        max(counter, ledger) never lowers a counter: Redis is ahead of the ledger while records
        wait to be written, and behind it only after losing data.
        """
        if self.ledger_reader is None:
            return 0
        raw = rules_dict(rules) if rules is not None else (self.rules or {})
        now = self._now()
        raised = 0
        for policy in policies(raw):
            start = period_start(policy.period, now)
            spent = await self.ledger_reader.spent_since(start, policy.scope())
            key = self.counter_key(policy.name, now, policy.period)
            args = [round(spent * MICRO), self._expires_at(policy, now)]
            raised += int(await self._raise(keys=[key], args=args))
        if raised:
            log.warning("restored %d budget counters of %s from the ledger", raised, self.tenant)
        return raised

    def _start_reconciler(self) -> None:
        if self.ledger_reader is None or self.reconcile_interval <= 0:
            return
        if self._reconciler is None or self._reconciler.done():
            self._reconciler = asyncio.get_running_loop().create_task(
                self._reconcile_loop(), name=f"tenantgw-budget-reconcile-{self.tenant}"
            )

    async def _reconcile_loop(self) -> None:
        while True:
            try:
                await self.reconcile_from_ledger()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep reconciling after a Redis or Postgres hiccup
                log.exception("budget reconciliation of %s failed", self.tenant)
            await asyncio.sleep(self.reconcile_interval)

    async def aclose(self) -> None:
        """Stop the reconciliation timer."""
        task, self._reconciler = self._reconciler, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def from_env() -> BudgetGuard | None:
    """The process's BudgetGuard (`metering.state()`), None when the environment configures none.

    Everything that enforces and meters a request shares these instances.
    """
    from tenantgw.gateway import metering

    current = metering.state()
    return current.budgets if current is not None else None
