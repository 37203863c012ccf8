"""A request's rate limits and budgets in two Redis round trips: one ADMIT, one SETTLE.

`Enforcer.admit()` runs the rate limiter's and the budget guard's parts of the ADMIT script
(`scripts.py`) in one call: the limits are checked, then the budgets, and only a request that
all of them admit takes its rate-limit slot and its budget reservation. `Enforcer.settle()`
runs their parts of SETTLE in one call when the request is over: the slot freed, the tokens
counted, the cost added, the reservation dropped.

When Redis does not answer, `admit()` raises `StoreUnavailable` for the first step that
applies (the caller applies the Tenant's onStoreUnavailable) and gives back, once Redis
answers, whatever the call may have taken; `settle()` waits in `store` until Redis answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from tenantgw.gateway.budget_policy import ALLOW, Decision, Spend
from tenantgw.gateway.budgets import STEP as BUDGET_STEP
from tenantgw.gateway.budgets import BudgetGuard
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.files import Rules
from tenantgw.gateway.ratelimit import STEP as RATELIMIT_STEP
from tenantgw.gateway.ratelimit import RateLimiter
from tenantgw.gateway.scripts import NO_BUDGETS_ADMIT, NO_BUDGETS_SETTLE, NO_LIMITS, Scripts
from tenantgw.gateway.storehealth import STORE_ERRORS, StoreHealth


@dataclass(frozen=True)
class Admitted:
    """What ADMIT decided for a request the rate limits let through."""

    holds_slot: bool
    """The request took a rate-limit slot: SETTLE with `free_slot=True` gives it back."""
    decision: Decision
    """The budgets' decision (allow, block, downgrade); a blocked request holds nothing."""


class Enforcer:
    """The rate limiter and the budget guard of one gateway process, called together."""

    def __init__(
        self,
        limiter: RateLimiter | None,
        budgets: BudgetGuard | None,
        store: StoreHealth,
        scripts: Scripts,
    ) -> None:
        self.limiter = limiter
        self.budgets = budgets
        self.store = store
        self.scripts = scripts

    @property
    def rules(self) -> Rules | None:
        """The rules of the last budget check."""
        return self.budgets.rules if self.budgets is not None else None

    async def admit(self, ctx: RequestContext, rules: Rules) -> Admitted:
        """Check and take, in one call: RateLimited when a limit refuses the request; the
        budgets' decision otherwise. Raises StoreUnavailable when Redis does not answer."""
        limits = self.limiter.admit_part(ctx, rules) if self.limiter is not None else None
        budget = self.budgets.admit_part(ctx, rules) if self.budgets is not None else None
        if limits is None and budget is None:
            return Admitted(holds_slot=False, decision=ALLOW)
        step = RATELIMIT_STEP if limits is not None else BUDGET_STEP
        self.store.check(step)
        try:
            result = await self.scripts.run_admit(
                ctx.request_id,
                limits or NO_LIMITS,
                budget.part if budget is not None else NO_BUDGETS_ADMIT,
            )
        except STORE_ERRORS as exc:
            unavailable = self.store.failed(step, exc)
            if limits is not None and self.limiter is not None:
                self.limiter.undo(ctx, limits)
            if budget is not None and self.budgets is not None:
                self.budgets.undo(ctx, rules, budget)
            raise unavailable from None
        self.store.answered()
        if limits is not None and self.limiter is not None:
            self.limiter.check_result(ctx, result)
        if budget is None or self.budgets is None:
            return Admitted(holds_slot=limits is not None, decision=ALLOW)
        decision = self.budgets.decision_of(ctx, rules, budget, result)
        # The script takes the slot only when the budgets admit the request (any plan).
        return Admitted(holds_slot=limits is not None and result[3] > 0, decision=decision)

    async def settle(
        self,
        ctx: RequestContext,
        rules: Rules | None,
        *,
        cost_usd: float | None,
        tokens: int = 0,
        free_slot: bool = False,
        update_estimate: bool = False,
    ) -> list[Spend]:
        """End the request, or account for one of its attempts, in one call: free its slot
        (`free_slot`) counting `tokens`, add `cost_usd` (None: no spend to add) to every policy
        covering its key and alias, drop its reservation. Each covering policy's spend, or
        nothing when Redis does not answer (the call then waits in `store`)."""
        limits = None
        if free_slot and self.limiter is not None:
            limits = self.limiter.settle_part(ctx, tokens)
        budget = None
        if rules is not None and self.budgets is not None:
            budget = self.budgets.settle_part(ctx, cost_usd, rules, update_estimate=update_estimate)
            if not budget.needed:
                budget = None
        if limits is None and budget is None:
            return []
        call = self.scripts.settle_call(
            ctx.request_id,
            limits or NO_LIMITS,
            budget.part if budget is not None else NO_BUDGETS_SETTLE,
        )
        step = BUDGET_STEP if budget is not None else RATELIMIT_STEP
        result = await self.store.write(step, f"settlement of {ctx.request_id}", call)
        if not result or budget is None or self.budgets is None:
            return []
        return self.budgets.spends(budget, result)
