"""BudgetPolicy enforcement: per-period spend counters in Redis, checked before each request.

Counters. Each policy has one counter per period, `t:{<tenant>}:budget:<policy>:<YYYY-MM-DD of
the period start>`, in micro-USD (integers, INCRBY). `add_spend()` adds a request's cost to
every policy whose scope matches it: the tenant, its key, its ModelAlias.

Reservations keep concurrent requests from overshooting a limit. A request that reaches the
limit only when it completes would let every request admitted meanwhile overshoot too, so
the request's ADMIT script (`scripts.py`; `check()` alone, or with the rate limits through
`enforcer.Enforcer`) atomically admits a request only while `spent + reserved < limit` for
every matching policy, and reserves an estimate of its cost against each: the alias's recent
average request cost (an exponential moving average kept in Redis,
`t:{<tenant>}:budget:avg:<alias>`; `default_estimate_usd` until the alias has history). A
downgrade is decided in the same call: the guard prepares the plans (the alias, and each
cheaper alias a downgrade policy may send it to) and the script runs `decide()`'s rules on
them. SETTLE (`add_spend()`) adds the real cost and drops the reservation. Reservations are
kept with running totals (`<counter>:resv`, request id -> micro-USD plus the `#total` field,
and `<counter>:resv:exp` by deadline), so a check reads one field whatever the number of
requests in flight. While estimates match real costs, the spend of everything admitted stays
within the limit plus the cost of the last request admitted; a replica that dies mid-request
loses its reservation after a lease, not forever (the next check sweeps it off the total).

Redis is a cache of spend, the ledger (Postgres) its record: `reconcile_from_ledger()` raises
each counter to the ledger's sum for the period, every 60 s once a check has run, so a Redis
restart or flush does not forgive spend.

Session policies (`scope: {kind: Session}`) count each session apart: one sorted set per policy
and period, `t:{<tenant>}:budget:<policy>:<period start>:sessions`, scores are a session's
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
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import psycopg

from tenantgw.api.markers import tenant_key
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
from tenantgw.gateway.redisclient import RedisClient, register_script
from tenantgw.gateway.scripts import NO_LIMITS, Part, Scripts
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

RECONCILE_OUTAGES: tuple[type[BaseException], ...] = (*STORE_ERRORS, psycopg.OperationalError)
"""A store not answering the ledger reconciliation: a warning, the next round retries."""

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


@dataclass(frozen=True)
class _Plan:
    """An alias a request may be served by, and the policies that cover it there."""

    alias: str
    tier: str | None
    policies: list[Policy]


@dataclass(frozen=True)
class BudgetAdmit:
    """The guard's part of an ADMIT, and what it needs to read the answer."""

    part: Part
    policies: list[Policy]
    """Every policy of every plan, in the order of the script's answer."""
    plans: list[_Plan]
    """The request's alias first, then the aliases a downgrade may send it to."""
    now: datetime
    dropped: int
    """Keys of the request's earlier reservation the call drops (a fallback hop)."""


@dataclass(frozen=True)
class BudgetSettle:
    """The guard's part of a SETTLE, and what it needs to read the answer."""

    part: Part
    covering: list[Policy]
    session_id: str | None
    needed: bool
    """False when the call would change nothing: no cost, no reservation, no estimate."""


def _no_alias(rules: Rules, policy: Policy, alias: str) -> bool:
    """Whether a downgrade policy finds no alias (other than `alias`) of its tier."""
    return downgrade_alias(rules, policy.to_cost_tier or "low", exclude=alias) is None


def _downgrades(plan: _Plan) -> list[Policy]:
    """The downgrade policies of a plan that may send it to a cheaper tier, in the order
    decide() prefers them (cheapest tier first, then by name)."""
    rank = TIER_RANK.get(plan.tier or "", len(TIER_RANK))
    eligible = [
        p
        for p in plan.policies
        if p.action == "downgrade" and rank > TIER_RANK.get(p.to_cost_tier or "", len(TIER_RANK))
    ]
    return sorted(
        eligible, key=lambda p: (TIER_RANK.get(p.to_cost_tier or "", len(TIER_RANK)), p.name)
    )


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
        redis: RedisClient,
        tenant: str,
        store: StoreHealth,
        ledger_reader: LedgerReader | None = None,
        *,
        default_estimate_usd: float = DEFAULT_ESTIMATE_USD,
        lease_seconds: int = LEASE_SECONDS,
        reconcile_interval: float = RECONCILE_INTERVAL,
        clock: Callable[[], datetime] | None = None,
        scripts: Scripts | None = None,
    ) -> None:
        self.redis = redis
        self.tenant = tenant
        self.store = store
        self.ledger_reader = ledger_reader
        self.prefix = tenant_key(tenant, "budget")
        self.default_estimate_usd = default_estimate_usd
        self.lease_seconds = lease_seconds
        self.reconcile_interval = reconcile_interval
        self.rules: Rules | None = None
        """The rules of the last check(), used by add_spend() and reconciliation by default."""
        self._now: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.scripts = scripts or Scripts(redis, tenant)
        self._raise = register_script(redis, _RAISE)
        self._raise_sessions = register_script(redis, _RAISE_SESSIONS)
        self._held: dict[str, _Held] = {}
        self._reconciler: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ keys

    def counter_key(self, policy: str, when: datetime, period: str) -> str:
        """`t:{<tenant>}:budget:<policy>:<period start>`: micro-USD spent in that period.

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

    def admit_part(self, ctx: RequestContext, rules: Rules) -> BudgetAdmit | None:
        """The budgets' part of the request's ADMIT; None when the tenant has no policy.

        Prepares every plan the decision may end in: the request's alias, and each alias a
        covering downgrade policy may send it to, so that one script decides and reserves.
        A reservation the request already holds (a fallback hop) is dropped by the same call.
        """
        self.rules = rules
        self._start_reconciler()
        every = policies(rules)
        if not every:
            return None
        now = self._now()
        session = ctx.session_id
        union: dict[str, int] = {}
        ordered: list[Policy] = []
        plans: list[_Plan] = []

        def index(policy: Policy) -> int:
            if policy.name not in union:
                ordered.append(policy)
                union[policy.name] = len(ordered)
            return union[policy.name]

        def plan_of(alias: str, tier: str | None) -> _Plan:
            covering = [p for p in every if p.matches(ctx.key_name, alias, session)]
            plan = _Plan(alias=alias, tier=tier, policies=covering)
            for policy in covering:
                index(policy)
            return plan

        primary = plan_of(ctx.alias, alias_tier(rules, ctx.alias) or ctx.cost_tier)
        plans.append(primary)
        targets: dict[str, int] = {}
        downs: list[list[tuple[int, int]]] = []
        for policy in _downgrades(primary):
            to_alias = downgrade_alias(rules, policy.to_cost_tier or "low", exclude=ctx.alias)
            target = 0
            if to_alias is not None:
                if to_alias not in targets:
                    plans.append(plan_of(to_alias, alias_tier(rules, to_alias)))
                    targets[to_alias] = len(plans)
                target = targets[to_alias]
            downs.append([(index(policy), target)])
        keys: list[str] = []
        args: list[Any] = []
        for policy in ordered:
            base = self._reservation_base(policy, now, session)
            keys += [self.spend_key(policy, now), f"{base}:resv", f"{base}:resv:exp"]
            member = (session or "") if policy.per_session else ""
            args += [policy.limit_micro, 1 if policy.action == "block" else 0, member]
        held = self._held.pop(ctx.request_id, None)
        drop = held.keys if held is not None else []
        keys += drop
        plan_args: list[Any] = []
        for n, plan in enumerate(plans):
            keys.append(self.estimate_key(plan.alias))
            if n == 0:
                pairs = [pair for d in downs for pair in d]
            else:
                # Only whether a target would itself be downgraded or refused matters here.
                pairs = [
                    (union[p.name], 0 if _no_alias(rules, p, plan.alias) else 1)
                    for p in _downgrades(plan)
                ]
            # decide() refuses a plan with a policy the operator could not apply.
            refuse = 1 if refuse_unenforceable(plan.policies) is not None else 0
            plan_args += [refuse, len(plan.policies), *(union[p.name] for p in plan.policies)]
            plan_args += [len(pairs), *(v for pair in pairs for v in pair)]
        header = [
            len(ordered),
            len(plans),
            len(drop) // 2,
            self.lease_seconds,
            round(self.default_estimate_usd * MICRO),
        ]
        return BudgetAdmit(
            part=Part(keys=keys, args=[*header, *args, *plan_args]),
            policies=ordered,
            plans=plans,
            now=now,
            dropped=len(drop),
        )

    def decision_of(
        self, ctx: RequestContext, rules: Rules, admit: BudgetAdmit, result: Sequence[int]
    ) -> Decision:
        """The decision ADMIT's answer means (`decide()`, with the spend the script saw), and
        the reservation it made recorded for SETTLE."""
        state = {
            p.name: (result[4 + 2 * i], result[5 + 2 * i]) for i, p in enumerate(admit.policies)
        }
        chosen = result[3]
        primary = admit.plans[0]
        session = ctx.session_id
        decision = decide(
            rules, primary.policies, state, primary.alias, primary.tier, admit.now, session
        )
        expected, final = 1, decision
        if decision.action == "block" or (
            decision.action == "downgrade" and decision.to_alias is None
        ):
            expected = 0
        elif decision.action == "downgrade":
            number, target = next(
                (n, plan)
                for n, plan in enumerate(admit.plans, start=1)
                if plan.alias == decision.to_alias
            )
            again = decide(
                rules, target.policies, state, target.alias, target.tier, admit.now, session
            )
            expected, final = (0, again) if again.action == "block" else (number, decision)
        if chosen != expected:  # the script and decide() disagree: a bug, decide() wins
            log.error(
                "budget script chose plan %d, decide() plan %d for %s",
                chosen,
                expected,
                ctx.request_id,
            )
        if chosen:
            keys = self._reservation_keys(admit.plans[chosen - 1].policies, admit.now, session)
            if expected:
                self._forget_stale()
                self._held[ctx.request_id] = _Held(since=time.monotonic(), keys=keys)
            else:
                unreserve = self._unreserve_call(ctx.request_id, keys)
                self.store.defer(f"reservation of {ctx.request_id}", unreserve)
        return final

    async def check(self, ctx: RequestContext, rules: Rules) -> Decision:
        """Allow, block or downgrade the request by the spend of every policy that covers it.

        Raises StoreUnavailable when Redis does not answer (only when a policy exists).
        """
        refused = self.refusal(ctx, rules)
        if refused is not None:
            return refused
        admit = self.admit_part(ctx, rules)
        if admit is None:
            return ALLOW
        self.store.check(STEP)
        try:
            result = await self.scripts.run_admit(ctx.request_id, NO_LIMITS, admit.part)
        except STORE_ERRORS as exc:
            unavailable = self.store.failed(STEP, exc)
            self.undo(ctx, rules, admit)
            raise unavailable from None
        self.store.answered()
        return self.decision_of(ctx, rules, admit, result)

    def refusal(self, ctx: RequestContext, rules: Rules) -> Decision | None:
        """A block for a covering policy the operator could not apply (needs no counter, so it
        holds while Redis is unavailable too)."""
        session = ctx.session_id
        covering = [p for p in policies(rules) if p.matches(ctx.key_name, ctx.alias, session)]
        return refuse_unenforceable(covering, ctx.session_id)

    def undo(self, ctx: RequestContext, rules: Rules, admit: BudgetAdmit) -> None:
        """After an ADMIT that got no answer: drop, once Redis answers, whatever reservation it
        may have made (a timeout may hide one) and the one the request held before."""
        every = policies(rules)
        aliases = {ctx.alias, *(a for a in rules.aliases if a != ctx.alias)}
        applying = [
            p for p in every if any(p.matches(ctx.key_name, a, ctx.session_id) for a in aliases)
        ]
        keys = self._reservation_keys(applying, admit.now, ctx.session_id)
        dropped = admit.part.keys[3 * len(admit.policies) : 3 * len(admit.policies) + admit.dropped]
        for i in range(0, len(dropped), 2):
            if dropped[i] not in keys:
                keys += dropped[i : i + 2]
        if keys:
            unreserve = self._unreserve_call(ctx.request_id, keys)
            self.store.defer(f"reservation of {ctx.request_id}", unreserve)

    def _forget_stale(self) -> None:
        deadline = time.monotonic() - self.lease_seconds
        for request_id in [r for r, held in self._held.items() if held.since < deadline]:
            del self._held[request_id]

    def _unreserve_call(self, request_id: str, keys: list[str]) -> Callable[[], Awaitable[Any]]:
        part = Part(keys=keys, args=(0, len(keys) // 2, 0, "", 0))
        return self.scripts.settle_call(request_id, NO_LIMITS, part)

    def holds(self, ctx: RequestContext) -> bool:
        """Whether the request holds a reservation this process made."""
        return ctx.request_id in self._held

    async def release(self, ctx: RequestContext) -> None:
        """Drop the reservation of a request that ends without add_spend().

        Never lost: when Redis does not answer, it waits in `store` until it does.
        """
        held = self._held.pop(ctx.request_id, None)
        if held is not None and held.keys:
            unreserve = self._unreserve_call(ctx.request_id, held.keys)
            await self.store.write(STEP, f"reservation of {ctx.request_id}", unreserve)

    # ------------------------------------------------------------------ spend

    def settle_part(
        self,
        ctx: RequestContext,
        cost_usd: float | None,
        rules: Rules,
        *,
        update_estimate: bool = True,
    ) -> BudgetSettle:
        """The budgets' part of the request's SETTLE: add its cost (None: none to add) to
        every policy covering its key and alias, drop its reservation, update the estimate.

        Without a local record of its reservation (another guard instance checked it, or this
        process restarted) it drops whatever reservation the request holds under the covering
        policies.
        """
        now = self._now()
        session = ctx.session_id
        every = policies(rules)
        covering = [p for p in every if p.matches(ctx.key_name, ctx.alias, session)]
        held = self._held.pop(ctx.request_id, None)
        resv = held.keys if held is not None else self._reservation_keys(covering, now, session)
        if cost_usd is None:
            covering, update_estimate = [], False
        # Rounded up, so the counter never trails the ledger it is reconciled with.
        cost = max(math.ceil((cost_usd or 0.0) * MICRO - 1e-6), 0)
        # Nothing reserves against a tenant without policies: no estimate to keep.
        update_estimate = update_estimate and bool(every)
        keys = [self.spend_key(p, now) for p in covering] + resv
        args: list[Any] = [
            len(covering),
            len(resv) // 2,
            cost,
            ESTIMATE_WEIGHT if update_estimate else "",
            MAX_SESSIONS,
        ]
        for p in covering:
            args += [self._expires_at(p, now), (session or "") if p.per_session else ""]
        if update_estimate:
            keys.append(self.estimate_key(ctx.alias))
        # A refused or failed request that holds nothing and cost nothing needs no call.
        needed = held is not None or update_estimate or (bool(covering) and cost > 0)
        return BudgetSettle(
            part=Part(keys=keys, args=args), covering=covering, session_id=session, needed=needed
        )

    def spends(self, settle: BudgetSettle, totals: Sequence[int]) -> list[Spend]:
        """Each covering policy's spend after SETTLE."""
        return [
            Spend(
                policy=p.name,
                spent_usd=total / MICRO,
                limit_usd=p.limit_usd,
                session_id=settle.session_id if p.per_session else None,
            )
            for p, total in zip(settle.covering, totals, strict=True)
        ]

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
        settle = self.settle_part(ctx, cost_usd, rules, update_estimate=update_estimate)
        if not settle.needed:
            return []
        add = self.scripts.settle_call(ctx.request_id, NO_LIMITS, settle.part)
        result = await self.store.write(STEP, f"spend of {ctx.request_id}", add)
        if not result:
            return []
        return self.spends(settle, result)

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
            except RECONCILE_OUTAGES as exc:
                # A store outage, already shown by the admission's metric and log: the next
                # round reconciles once it is back.
                log.warning(
                    "budget reconciliation of %s skipped: a store did not answer (%s: %s)",
                    self.tenant,
                    type(exc).__name__,
                    " ".join(str(exc).split())[:200],
                )
            except Exception:  # keep reconciling after anything else, loudly
                log.exception("budget reconciliation of %s failed", self.tenant)
            if tasks.cancel_requested():
                raise asyncio.CancelledError
            await asyncio.sleep(self.reconcile_interval)

    async def aclose(self) -> None:
        """Stop the reconciliation timer."""
        task, self._reconciler = self._reconciler, None
        await tasks.stop(task)
