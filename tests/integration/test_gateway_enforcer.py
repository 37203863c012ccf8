"""Rate limits and budgets together, as the gateway runs them: one ADMIT, one SETTLE per request.

Against a redis-server of the test's own (so that MONITOR sees only this test's commands):
every request costs at most two round trips whatever covers it (limits, tenant/key/alias/
session budgets, a downgrade); the two steps are all-or-nothing (a refused budget uses up no
rate-limit slot, a rate-limited request reserves no budget); the running totals of budget
reservations stay equal to their members through settles, crashes and lease expiry.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import redis
import redis.asyncio as aioredis

from e2e.throwaway_redis import CommandLog, ThrowawayRedis, script_sha, throwaway_redis
from tenantgw.api.markers import key_prefix
from tenantgw.gateway.budgets import BudgetGuard
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.enforcer import Enforcer
from tenantgw.gateway.files import Rules
from tenantgw.gateway.metrics import GatewayMetrics
from tenantgw.gateway.ratelimit import RateLimited, RateLimiter
from tenantgw.gateway.scripts import ADMIT, NO_LIMITS, SETTLE, TOTAL_FIELD, Scripts
from tenantgw.gateway.storehealth import StoreHealth

pytestmark = pytest.mark.integration

RNG = random.Random(20261201)  # noqa: S311 (test timings, not secrets)
ALIASES = {
    "reasoning": {"cost_tier": "high"},
    "fast-code": {"cost_tier": "medium"},
    "docs": {"cost_tier": "low"},
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    with throwaway_redis(tmp_path) as redis_server:
        yield redis_server


def budget(
    name: str, limit: float, kind: str = "Tenant", scope: str | None = None, **kw: Any
) -> Any:
    return {
        "name": name,
        "scope": {"kind": kind, "name": scope},
        "period": "daily",
        "limit_usd": limit,
        "alert_thresholds": [],
        "on_exceeded": {"action": kw.get("action", "block"), "to_cost_tier": kw.get("to_tier")},
    }


def rules(*budgets: Any, rpm: int | None = None, parallel: int | None = None, **kw: Any) -> Rules:
    return Rules.model_validate(
        {
            "tenant": "en",
            "aliases": ALIASES,
            "keys": [{"name": "alice", "rpm": kw.get("alice_rpm"), "tpm": kw.get("alice_tpm")}],
            "limits": {"rpm": rpm, "tpm": kw.get("tpm"), "max_parallel_requests": parallel},
            "budgets": list(budgets),
        }
    )


def request(
    tenant: str, alias: str = "fast-code", key: str = "alice", session: str | None = None
) -> RequestContext:
    return RequestContext(
        tenant=tenant,
        key_name=key,
        request_id=uuid.uuid4().hex,
        requested_model=alias,
        alias=alias,
        cost_tier=ALIASES[alias]["cost_tier"],
        session_id=session,
    )


@asynccontextmanager
async def enforcer(server: ThrowawayRedis, tenant: str, **kw: Any) -> AsyncIterator[Enforcer]:
    """A gateway process's enforcer, with its own connection."""
    client = aioredis.Redis.from_url(server.url, socket_timeout=5)
    store = StoreHealth(tenant, GatewayMetrics.registered(), redis=client)
    scripts = Scripts(client, tenant)
    limiter = RateLimiter(client, tenant, store, scripts=scripts, **kw)
    guard = BudgetGuard(client, tenant, store, scripts=scripts, default_estimate_usd=0.01, **kw)
    try:
        yield Enforcer(limiter, guard, store, scripts)
    finally:
        await guard.aclose()
        await store.aclose()
        await client.aclose()


def reservations(server: ThrowawayRedis, tenant: str) -> dict[str, dict[str, int]]:
    """Every reservation hash of the tenant: {key: {member or #total: micro-USD}}."""
    admin = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        return {
            key: {k: int(v) for k, v in cast("dict[str, str]", admin.hgetall(key)).items()}
            for key in admin.scan_iter(match=f"*{tenant}*:resv")
        }
    finally:
        admin.close()


def assert_totals_match(server: ThrowawayRedis, tenant: str) -> None:
    for key, fields in reservations(server, tenant).items():
        members = sum(v for k, v in fields.items() if k != TOTAL_FIELD)
        assert fields.get(TOTAL_FIELD, 0) == members, key


async def test_a_request_costs_one_admit_and_one_settle(server: ThrowawayRedis) -> None:
    tenant = f"rt-{uuid.uuid4().hex[:8]}"
    every_kind = rules(
        budget("team", 100),
        budget("alice-cap", 100, "Key", "alice"),
        budget("reasoning-cap", 0.01, "ModelAlias", "reasoning", action="downgrade", to_tier="low"),
        budget("per-session", 100, "Session"),
        rpm=1000,
        parallel=10,
        alice_rpm=1000,
        alice_tpm=10**6,
        tpm=10**6,
    )
    admit, settle = script_sha(ADMIT), script_sha(SETTLE)
    async with enforcer(server, tenant) as enf:
        # Once to load the scripts (EVALSHA, NOSCRIPT, EVAL: once per server, not per request).
        warm = request(tenant, "reasoning", session="s-1")
        await enf.admit(warm, every_kind)
        await enf.settle(warm, every_kind, cost_usd=0.02, tokens=10, free_slot=True)
        with CommandLog(server.url) as log:
            calls = []
            for alias in ("reasoning", "fast-code"):  # downgraded (reasoning is spent), plain
                mark = log.mark()
                ctx = request(tenant, alias, session="s-1")
                admitted = await enf.admit(ctx, every_kind)
                ctx.alias = admitted.decision.to_alias or alias
                await enf.settle(
                    ctx, every_kind, cost_usd=0.001, tokens=99, free_slot=admitted.holds_slot
                )
                await asyncio.sleep(0.2)  # MONITOR's lines arrive after the replies
                calls.append((admitted.decision.action, log.round_trips(mark)))
    for action, trips in calls:
        assert [words[:2] for _, words in trips] == [["EVALSHA", admit], ["EVALSHA", settle]], (
            action,
            trips,
        )
    assert [action for action, _ in calls] == ["downgrade", "allow"]
    assert_totals_match(server, tenant)


async def test_a_refused_budget_takes_no_rate_limit_slot(server: ThrowawayRedis) -> None:
    tenant = f"rb-{uuid.uuid4().hex[:8]}"
    limits = rules(budget("team", 0.01), alice_rpm=3, parallel=5)
    async with enforcer(server, tenant) as enf:
        paying = request(tenant)
        assert (await enf.admit(paying, limits)).holds_slot
        await enf.settle(paying, limits, cost_usd=0.01, free_slot=True)  # the budget is spent
        refused = [await enf.admit(request(tenant), limits) for _ in range(5)]
        admin = redis.Redis.from_url(server.url)
        window = cast("list[bytes]", admin.hvals(f"{key_prefix(tenant)}rl:req:key:alice"))
        inflight = admin.zcard(f"{key_prefix(tenant)}rl:inflight")
        admin.close()
    # Five refusals by the budget, none counted against the key's 3 requests per minute.
    assert [(a.decision.action, a.holds_slot) for a in refused] == [("block", False)] * 5
    assert sum(int(v) for v in window) == 1
    assert inflight == 0
    assert reservations(server, tenant) == {}


async def test_a_rate_limited_request_reserves_no_budget(server: ThrowawayRedis) -> None:
    tenant = f"rl-{uuid.uuid4().hex[:8]}"
    limits = rules(budget("team", 100), parallel=1)
    async with enforcer(server, tenant) as enf:
        holder = request(tenant)
        assert (await enf.admit(holder, limits)).holds_slot
        for _ in range(3):
            with pytest.raises(RateLimited):
                await enf.admit(request(tenant), limits)
        held = reservations(server, tenant)
        (fields,) = held.values()
        assert fields == {holder.request_id: 10_000, TOTAL_FIELD: 10_000}
        await enf.settle(holder, limits, cost_usd=0.0, free_slot=True)
        assert reservations(server, tenant) == {}


async def test_running_totals_hold_through_settles_crashes_and_expiry(
    server: ThrowawayRedis,
) -> None:
    """Clients on two processes; a third of the requests never settle (their process dies):
    the totals always equal the members, and once the lease is over only live ones count."""
    tenant = f"tot-{uuid.uuid4().hex[:8]}"
    limits = rules(
        budget("team", 1000),
        budget("alice-cap", 1000, "Key", "alice"),
        budget("per-session", 1000, "Session"),
    )
    async with (
        enforcer(server, tenant, lease_seconds=1) as one,
        enforcer(server, tenant, lease_seconds=1) as two,
    ):

        async def client(i: int) -> None:
            enf = (one, two)[i % 2]
            for _ in range(10):
                ctx = request(tenant, session=f"s-{i % 3}")
                await enf.admit(ctx, limits)
                await asyncio.sleep(RNG.uniform(0.001, 0.01))
                if RNG.random() < 0.33:
                    enf.budgets._held.pop(ctx.request_id, None)  # type: ignore[union-attr]
                    continue  # crashed: never settles
                await enf.settle(ctx, limits, cost_usd=RNG.uniform(0, 0.002), free_slot=True)

        await asyncio.gather(*(client(i) for i in range(20)))
        assert_totals_match(server, tenant)
        assert any(f.get(TOTAL_FIELD, 0) > 0 for f in reservations(server, tenant).values())
        await asyncio.sleep(1.2)  # every crashed reservation's lease is over
        live = request(tenant, session="s-0")
        admitted = await one.admit(live, limits)  # sweeps them
        assert admitted.decision.action == "allow"
        assert_totals_match(server, tenant)
        for fields in reservations(server, tenant).values():
            assert set(fields) == {live.request_id, TOTAL_FIELD}


async def test_a_settlement_run_twice_counts_once(server: ThrowawayRedis) -> None:
    """A retry of a SETTLE whose reply was lost (or a failover right after it ran) must not
    charge the request twice; a second settlement of the same request (a fallback's) does."""
    tenant = f"once-{uuid.uuid4().hex[:8]}"
    limits = rules(budget("team", 100), alice_tpm=10**6)
    async with enforcer(server, tenant) as enf:
        assert enf.budgets is not None
        assert enf.limiter is not None
        ctx = request(tenant)
        await enf.admit(ctx, limits)
        settle = enf.budgets.settle_part(ctx, 0.25, limits)
        call = enf.scripts.settle_call(
            ctx.request_id, enf.limiter.settle_part(ctx, 500), settle.part
        )
        assert await call() == [250_000]
        assert await call() is None  # the same call again: nothing added
        again = enf.budgets.settle_part(ctx, 0.25, limits)
        second = enf.scripts.settle_call(ctx.request_id, NO_LIMITS, again.part)
        assert await second() == [500_000]  # another settlement of the request counts
        admin = redis.Redis.from_url(server.url)
        tokens = cast("list[bytes]", admin.hvals(f"{key_prefix(tenant)}rl:tok:key:alice"))
        admin.close()
    assert sum(int(t) for t in tokens) == 500


async def test_an_admit_run_twice_answers_once_and_takes_once(server: ThrowawayRedis) -> None:
    """redis-py resends an ADMIT whose reply was lost (a connection closed under it while a
    Cluster client follows MOVED or a failover): the server then runs the call twice. The
    second run must answer what the first did, not decide again: counting the request's own
    slot against it, it would answer "parallel limit reached", and the caller, refused, would
    never give back the slot and the reservation the first run took."""
    tenant = f"twice-{uuid.uuid4().hex[:8]}"
    limits = rules(budget("team", 100), parallel=1, alice_rpm=5)
    async with enforcer(server, tenant) as enf:
        script = enf.scripts.admit
        answers: list[Any] = []

        class ResentAfterLostReply:
            async def __call__(self, keys: Any = (), args: Any = ()) -> Any:
                answers.append(await script(keys=keys, args=args))  # its reply lost
                answers.append(await script(keys=keys, args=args))  # the resend
                return answers[-1]

        enf.scripts.admit = ResentAfterLostReply()  # type: ignore[assignment]
        ctx = request(tenant)
        admitted = await enf.admit(ctx, limits)
        enf.scripts.admit = script
        assert answers[0] == answers[1]
        assert (admitted.holds_slot, admitted.decision.action) == (True, "allow")
        admin = redis.Redis.from_url(server.url)
        window = cast("list[bytes]", admin.hvals(f"{key_prefix(tenant)}rl:req:key:alice"))
        assert sum(int(v) for v in window) == 1  # one request, counted once
        (fields,) = reservations(server, tenant).values()
        assert fields == {ctx.request_id: 10_000, TOTAL_FIELD: 10_000}
        await enf.settle(ctx, limits, cost_usd=0.001, free_slot=admitted.holds_slot)
        inflight = admin.zcard(f"{key_prefix(tenant)}rl:inflight")
        admin.close()
        assert inflight == 0
        assert reservations(server, tenant) == {}
        # A later ADMIT of the same request (a fallback hop) is another call: it decides anew.
        other = request(tenant)
        assert (await enf.admit(other, limits)).holds_slot
        with pytest.raises(RateLimited):
            await enf.admit(ctx, limits)
