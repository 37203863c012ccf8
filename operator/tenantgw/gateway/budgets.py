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

Session policies (`scope: {kind: Session}`) count each session apart: one sorted set per policy
and period, `t:<tenant>:budget:<policy>:<period start>:sessions`, scores are a session's
micro-USD (ZINCRBY), members its validated id. It expires with the period like the other
counters, and holds at most `MAX_SESSIONS` members: past that, the session that spent least is
dropped to make room (a client rotating ids per request, to bloat it, only forgets the
cheapest sessions; its key and tenant policies still count everything). Reservations of a
session's requests in progress go in `<that key>:session:<id>:resv` (and `:resv:exp`), which
live no longer than the lease. Reconciliation raises the top `RECONCILED_SESSIONS` sessions of
the ledger. The operator reads the sorted set for the policy's status (top session, sessions
over the limit).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import redis.asyncio as aioredis

from tenantgw.gateway import tasks
from tenantgw.gateway.budget_policy import (
    ALLOW,
    MICRO,
    TIER_RANK,
    Action,
    Decision,
    Policy,
    Spend,
    alias_tier,
    covering,
    decide,
    downgrade_alias,
    policies,
    refuse_unenforceable,
)
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.files import Rules
from tenantgw.gateway.periods import (
    budget_counter_key,
    period_end,
    period_start,
    session_spend_key,
)
from tenantgw.gateway.storehealth import STORE_ERRORS, StoreHealth

__all__ = [
    "ALLOW",
    "MICRO",
    "TIER_RANK",
    "Action",
    "BudgetGuard",
    "Decision",
    "LedgerReader",
    "Policy",
    "Spend",
    "alias_tier",
    "covering",
    "decide",
    "downgrade_alias",
    "policies",
    "refuse_unenforceable",
]

log = logging.getLogger("tenantgw.gateway.budgets")

STEP = "budget"
DEFAULT_ESTIMATE_USD = 0.01
"""Reserved per request for an alias without cost history yet."""
ESTIMATE_WEIGHT = 0.2
"""Weight of the newest request in the moving average of an alias's request cost."""
LEASE_SECONDS = 660
"""How long a reservation holds if its request never reports its cost (600 s timeout + margin)."""
RECONCILE_INTERVAL = 60.0
COUNTER_GRACE = timedelta(days=7)
"""How long a counter outlives its period (for reports of the period just ended)."""
MAX_SESSIONS = 100_000
"""Sessions one Session policy counts per period; past it, the cheapest is dropped."""
RECONCILED_SESSIONS = 1000
"""Sessions (the top spenders of the ledger) that reconciliation raises per Session policy."""


class LedgerReader(Protocol):
    """What reconciliation needs from the ledger."""

    async def spent_since(self, period_start: datetime, scope: Mapping[str, Any]) -> float: ...

    async def session_spend_since(
        self, period_start: datetime, limit: int = ...
    ) -> list[tuple[str, float]]: ...


_CHECK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rid, lease, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local est = tonumber(redis.call('GET', KEYS[3 * n + 1]) or ARGV[4])
local out = {0, est}
for i = 1, n do
  local spent_key, resv_key, exp_key = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local limit, block = tonumber(ARGV[2 + 3 * i]), ARGV[3 + 3 * i] == '1'
  local member = ARGV[4 + 3 * i]
  local expired = redis.call('ZRANGEBYSCORE', exp_key, '-inf', now)
  if #expired > 0 then
    redis.call('HDEL', resv_key, unpack(expired))
    redis.call('ZREM', exp_key, unpack(expired))
  end
  local spent
  if member == '' then
    spent = tonumber(redis.call('GET', spent_key) or '0')
  else
    spent = math.floor(tonumber(redis.call('ZSCORE', spent_key, member) or '0'))
  end
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
local max_sessions = tonumber(ARGV[5 + 2 * ns + 1])
local out = {}
for i = 1, ns do
  local member = ARGV[5 + 2 * i]
  if member == '' then
    out[i] = redis.call('INCRBY', KEYS[i], cost)
  else
    if not redis.call('ZSCORE', KEYS[i], member)
        and redis.call('ZCARD', KEYS[i]) >= max_sessions then
      redis.call('ZPOPMIN', KEYS[i])
    end
    out[i] = math.floor(tonumber(redis.call('ZINCRBY', KEYS[i], cost, member)))
  end
  redis.call('EXPIREAT', KEYS[i], tonumber(ARGV[4 + 2 * i]))
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

_RAISE_SESSIONS = """
local raised = 0
for j = 2, #ARGV, 2 do
  local member, want = ARGV[j], tonumber(ARGV[j + 1])
  local cur = tonumber(redis.call('ZSCORE', KEYS[1], member) or '-1')
  if cur < want then
    redis.call('ZADD', KEYS[1], want, member)
    raised = raised + 1
  end
end
if raised > 0 then redis.call('EXPIREAT', KEYS[1], tonumber(ARGV[1])) end
return raised
"""


@dataclass
class _Held:
    """Reservations of one request in this process, dropped by add_spend() or release()."""

    since: float
    keys: list[str]


class BudgetGuard:
    """The tenant's BudgetPolicies, enforced through counters shared by all replicas.

    `check()` before the request, `add_spend()` once after it with its cost (0 for a failure);
    `release()` drops the reservation of a request that will never report a cost. When Redis
    does not answer, `check()` raises `StoreUnavailable` (the caller applies the Tenant's
    onStoreUnavailable), and `add_spend()` / `release()` wait in `store` until it answers
    again; the ledger records the spend meanwhile and reconciliation raises the counters to it.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        tenant: str,
        store: StoreHealth,
        ledger_reader: LedgerReader | None = None,
        *,
        default_estimate_usd: float = DEFAULT_ESTIMATE_USD,
        lease_seconds: int = LEASE_SECONDS,
        reconcile_interval: float = RECONCILE_INTERVAL,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.redis = redis
        self.tenant = tenant
        self.store = store
        self.ledger_reader = ledger_reader
        self.prefix = f"t:{tenant}:budget"
        self.default_estimate_usd = default_estimate_usd
        self.lease_seconds = lease_seconds
        self.reconcile_interval = reconcile_interval
        self.rules: Rules | None = None
        """The rules of the last check(), used by add_spend() and reconciliation by default."""
        self._now: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self._check = redis.register_script(_CHECK)
        self._unreserve = redis.register_script(_UNRESERVE)
        self._add_spend = redis.register_script(_ADD_SPEND)
        self._raise = redis.register_script(_RAISE)
        self._raise_sessions = redis.register_script(_RAISE_SESSIONS)
        self._held: dict[str, _Held] = {}
        self._reconciler: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ keys

    def counter_key(self, policy: str, when: datetime, period: str) -> str:
        """`t:<tenant>:budget:<policy>:<period start>`: micro-USD spent in that period.

        The operator reads the same key (tenantgw.api.periods) for the BudgetPolicy's status.
        """
        return budget_counter_key(self.tenant, policy, period, when)

    def spend_key(self, policy: Policy, when: datetime) -> str:
        """Where a policy's spend is: its counter, or for a Session policy the sorted set of
        its sessions' spend (`<counter>:sessions`, read by the operator too)."""
        counter = self.counter_key(policy.name, when, policy.period)
        return session_spend_key(counter) if policy.per_session else counter

    def _reservation_base(self, policy: Policy, when: datetime, session_id: str | None) -> str:
        counter = self.counter_key(policy.name, when, policy.period)
        return f"{counter}:session:{session_id}" if policy.per_session else counter

    def _reservation_keys(
        self, covering: Sequence[Policy], now: datetime, session_id: str | None = None
    ) -> list[str]:
        keys: list[str] = []
        for policy in covering:
            base = self._reservation_base(policy, now, session_id)
            keys += [f"{base}:resv", f"{base}:resv:exp"]
        return keys

    def estimate_key(self, alias: str) -> str:
        return f"{self.prefix}:avg:{alias}"

    def _expires_at(self, policy: Policy, when: datetime) -> int:
        return int((period_end(policy.period, when) + COUNTER_GRACE).timestamp())

    # ------------------------------------------------------------------ check

    async def check(self, ctx: RequestContext, rules: Rules) -> Decision:
        """Allow, block or downgrade the request by the spend of every policy that covers it.

        Raises StoreUnavailable when Redis does not answer (only when a policy exists).
        """
        self.rules = rules
        self._start_reconciler()
        every = policies(rules)
        if not every:
            return ALLOW
        # Needs no counter, so it holds while Redis is unavailable too.
        refused = refuse_unenforceable(
            [p for p in every if p.matches(ctx.key_name, ctx.alias, ctx.session_id)],
            ctx.session_id,
        )
        if refused is not None:
            return refused
        self.store.check(STEP)
        now = self._now()
        try:
            decision = await self._decide(ctx, rules, every, now)
        except STORE_ERRORS as exc:
            unavailable = self.store.failed(STEP, exc)
            # A timeout may hide a reservation the script did make: drop it once Redis answers.
            self._held.pop(ctx.request_id, None)
            aliases = {ctx.alias, *(a for a in rules.aliases if a != ctx.alias)}
            applying = [
                p for p in every if any(p.matches(ctx.key_name, a, ctx.session_id) for a in aliases)
            ]
            keys = self._reservation_keys(applying, now, ctx.session_id)
            if keys:
                unreserve = functools.partial(self._unreserve, keys=keys, args=[ctx.request_id])
                self.store.defer(f"reservation of {ctx.request_id}", unreserve)
            raise unavailable from None
        self.store.answered()
        return decision

    async def _decide(
        self, ctx: RequestContext, rules: Rules, every: list[Policy], now: datetime
    ) -> Decision:
        session = ctx.session_id
        applying = [p for p in every if p.matches(ctx.key_name, ctx.alias, session)]
        state = await self._reserve(ctx.request_id, applying, ctx.alias, now, session)
        tier = alias_tier(rules, ctx.alias) or ctx.cost_tier
        decision = decide(rules, applying, state, ctx.alias, tier, now, session)
        if decision.action == "allow":
            return decision
        await self._drop(ctx.request_id)
        if decision.action == "block" or decision.to_alias is None:
            return decision
        # Re-check as the cheaper alias, whose own alias-scoped policies may block it. The
        # downgrade policies that sent it there are satisfied by its tier.
        to_alias = decision.to_alias
        applying = [p for p in every if p.matches(ctx.key_name, to_alias, session)]
        state = await self._reserve(ctx.request_id, applying, to_alias, now, session)
        again = decide(rules, applying, state, to_alias, alias_tier(rules, to_alias), now, session)
        if again.action == "block":
            await self._drop(ctx.request_id)
            return again
        return decision

    async def _reserve(
        self,
        request_id: str,
        covering: Sequence[Policy],
        alias: str,
        now: datetime,
        session_id: str | None = None,
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
            base = self._reservation_base(policy, now, session_id)
            keys += [self.spend_key(policy, now), f"{base}:resv", f"{base}:resv:exp"]
            member = (session_id or "") if policy.per_session else ""
            args += [policy.limit_micro, 1 if policy.action == "block" else 0, member]
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
        """Drop the reservation of a request that ends without add_spend().

        Never lost: when Redis does not answer, it waits in `store` until it does.
        """
        held = self._held.pop(ctx.request_id, None)
        if held is not None and held.keys:
            unreserve = functools.partial(self._unreserve, keys=held.keys, args=[ctx.request_id])
            await self.store.write(STEP, f"reservation of {ctx.request_id}", unreserve)

    # ------------------------------------------------------------------ spend

    async def add_spend(
        self,
        ctx: RequestContext,
        cost_usd: float,
        rules: Rules | None = None,
        *,
        update_estimate: bool = True,
    ) -> list[Spend]:
        """Add a request's cost to every policy covering its key and alias; drop its reservation.

        `rules` defaults to those of the last check(). `update_estimate=False` (failures) keeps
        the request out of the alias's average cost. Returns each covering policy's spend
        (nothing when Redis does not answer: the update then waits in `store` until it does).
        """
        rules = rules if rules is not None else self.rules
        if rules is None:
            return []
        now = self._now()
        session = ctx.session_id
        covering = [p for p in policies(rules) if p.matches(ctx.key_name, ctx.alias, session)]
        held = self._held.pop(ctx.request_id, None)
        # Without a local record (another guard instance checked it, or this process
        # restarted), drop whatever reservation the request holds under the covering policies.
        resv = held.keys if held is not None else self._reservation_keys(covering, now, session)
        # Rounded up, so the counter never trails the ledger it is reconciled with.
        cost = max(math.ceil(cost_usd * MICRO - 1e-6), 0)
        keys = [self.spend_key(p, now) for p in covering] + resv
        args: list[Any] = [
            ctx.request_id,
            cost,
            len(covering),
            len(resv) // 2,
            ESTIMATE_WEIGHT if update_estimate else "",
        ]
        for p in covering:
            args += [self._expires_at(p, now), (session or "") if p.per_session else ""]
        args.append(MAX_SESSIONS)
        if update_estimate:
            keys.append(self.estimate_key(ctx.alias))
        if not keys:
            return []
        add = functools.partial(self._add_spend, keys=keys, args=args)
        result = await self.store.write(STEP, f"spend of {ctx.request_id}", add)
        if result is None:
            return []
        totals = [int(x) for x in result]
        return [
            Spend(
                policy=p.name,
                spent_usd=total / MICRO,
                limit_usd=p.limit_usd,
                session_id=session if p.per_session else None,
            )
            for p, total in zip(covering, totals, strict=True)
        ]

    async def spent(
        self, policy: str, rules: Rules | None = None, session_id: str | None = None
    ) -> float:
        """USD the policy's counter holds for the current period (0 when it has none); for a
        Session policy, what session `session_id` spent under it."""
        rules = rules if rules is not None else self.rules
        found = {p.name: p for p in policies(rules)} if rules is not None else {}
        if policy not in found:
            raise KeyError(f"no BudgetPolicy {policy!r} in the rules")
        entry = found[policy]
        key = self.spend_key(entry, self._now())
        if entry.per_session:
            score = await self.redis.zscore(key, session_id or "") if session_id else None
            return int(score or 0) / MICRO
        value = await self.redis.get(key)
        return int(value or 0) / MICRO

    # ------------------------------------------------------------------ reconciliation

    async def reconcile_from_ledger(self, rules: Rules | None = None) -> int:
        """Raise each counter of the current periods to the ledger's spend; how many it raised.

        max(counter, ledger) never lowers a counter: Redis is ahead of the ledger while records
        wait to be written, and behind it only after losing data.
        """
        rules = rules if rules is not None else self.rules
        if self.ledger_reader is None or rules is None or not self.store.available:
            return 0
        now = self._now()
        raised = 0
        for policy in policies(rules):
            start = period_start(policy.period, now)
            key = self.spend_key(policy, now)
            if policy.per_session:
                top = await self.ledger_reader.session_spend_since(start, RECONCILED_SESSIONS)
                if top:
                    pairs = [v for sid, usd in top for v in (sid, round(usd * MICRO))]
                    args = [self._expires_at(policy, now), *pairs]
                    raised += int(await self._raise_sessions(keys=[key], args=args))
                continue
            spent = await self.ledger_reader.spent_since(start, policy.scope())
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
            if tasks.cancel_requested():
                raise asyncio.CancelledError
            await asyncio.sleep(self.reconcile_interval)

    async def aclose(self) -> None:
        """Stop the reconciliation timer."""
        task, self._reconciler = self._reconciler, None
        await tasks.stop(task)
