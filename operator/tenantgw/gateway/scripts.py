"""The two Lua scripts of a request: ADMIT before it goes upstream, SETTLE once it is over.

A request costs Redis at most two round trips, whatever limits and budgets cover it: ADMIT
checks the rate limits (`ratelimit.py`) and the BudgetPolicies (`budgets.py`) and, only when
all of them admit it, takes the rate-limit slot and reserves the budget estimate, atomically
(a request a budget refuses uses up no rate-limit slot, and a rate-limited one reserves no
budget); SETTLE frees the slot, counts the tokens, adds the cost to every covering policy and
drops the reservation. A fallback hop costs one more ADMIT (it moves the reservation to the
alias that will serve).

Each caller contributes a `Part` (its keys and arguments, headed by its own counts), so the
limiter and the budget guard build their halves and `admit_call()` / `settle_call()` put them
together. Every key a script touches is in KEYS, and all of them carry the tenant's hash tag
(`tenantgw.api.rediskeys`), so each call runs in one slot of a Redis Cluster.

Each call runs once in effect, even when the server runs it twice (redis-py resends a call whose
reply was lost): SETTLE skips a call whose marker exists, and ADMIT, when its call admitted the
request already, answers the stored answer instead of deciding again.

Budget reservations keep running totals: per reservation hash, field `#total` is the sum of
its members (request id -> micro-USD), updated by every reserve, drop and sweep, so a check
reads one field instead of summing every request in flight. A reservation whose request never
settles (its replica died) expires: its member of the `:exp` sorted set (score: its deadline)
is swept by the next ADMIT that touches the policy, which subtracts it from the total.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from tenantgw.api.markers import tenant_key
from tenantgw.gateway.redisclient import LuaScript, RedisClient, register_script

TOTAL_FIELD = "#total"
"""The field of a reservation hash that holds the sum of its reservations."""
SWEEP_BATCH = 1000
"""Expired reservations one ADMIT sweeps per policy at most (more wait for the next one)."""
SETTLED_SECONDS = 900
"""How long SETTLE remembers a call it ran (`t:{<tenant>}:settled:<request id>:<call>`), so
that the same call run again within that time (a retry after a reply that was lost, a
failover right after it ran) adds nothing twice."""
ADMITTED_SECONDS = 60
"""How long ADMIT remembers the answer of a call that admitted its request
(`t:{<tenant>}:admitted:<request id>:<call>`), so that the same call run again (redis-py resends
it when the reply was lost) answers the same instead of refusing the request on account of the
slot and reservation its first run took. The client resends within seconds."""

_COMMON = f"""
local rid = ARGV[1]
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec + tonumber(t[2]) / 1000000

local function tidy(resv)
  if redis.call('HLEN', resv) <= 1
      and tonumber(redis.call('HGET', resv, '{TOTAL_FIELD}') or '0') <= 0 then
    redis.call('DEL', resv)
  end
end

local function unreserve(resv, exp)
  local v = redis.call('HGET', resv, rid)
  if v then
    redis.call('HDEL', resv, rid)
    redis.call('HINCRBY', resv, '{TOTAL_FIELD}', 0 - tonumber(v))
    tidy(resv)
  end
  redis.call('ZREM', exp, rid)
end
"""

ADMIT = (
    _COMMON
    + f"""
-- Once per call: run again (redis-py resends a call whose reply was lost, e.g. a connection
-- closed under it while the client follows a failover), a call that admitted answers what it
-- answered the first time instead of deciding again: a second decision would count the
-- request's own slot and reservation against it, refuse it, and leave both held.
local admitted = redis.call('GET', KEYS[1])
if admitted then
  local again = {{}}
  for n in string.gmatch(admitted, '%-?%d+') do again[#again + 1] = tonumber(n) end
  return again
end
local a, k = 3, 2
local rl = nil
if ARGV[2] == '1' then
  rl = {{req = KEYS[2], req_key = KEYS[3], tok = KEYS[4], tok_key = KEYS[5], inflight = KEYS[6],
        rpm = tonumber(ARGV[3]), key_rpm = tonumber(ARGV[4]), tpm = tonumber(ARGV[5]),
        key_tpm = tonumber(ARGV[6]), parallel = tonumber(ARGV[7]), lease = tonumber(ARGV[8]),
        window = tonumber(ARGV[9])}}
  a, k = 10, 7
end

local npol, nplans, ndrop = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
local blease, default_est = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
a = a + 5
local pol = {{}}
for i = 1, npol do
  pol[i] = {{spend = KEYS[k], resv = KEYS[k + 1], exp = KEYS[k + 2], limit = tonumber(ARGV[a]),
            block = ARGV[a + 1] == '1', member = ARGV[a + 2]}}
  k, a = k + 3, a + 3
end
local drop = {{}}
for j = 1, ndrop do
  drop[j] = {{KEYS[k], KEYS[k + 1]}}
  k = k + 2
end
local plans = {{}}
for p = 1, nplans do
  local plan = {{est = KEYS[k], refuse = ARGV[a] == '1', pols = {{}}, downs = {{}}}}
  k = k + 1
  local n = tonumber(ARGV[a + 1])
  a = a + 2
  for i = 1, n do plan.pols[i] = tonumber(ARGV[a + i - 1]) end
  a = a + n
  local nd = tonumber(ARGV[a])
  a = a + 1
  for i = 1, nd do plan.downs[i] = {{tonumber(ARGV[a]), tonumber(ARGV[a + 1])}}; a = a + 2 end
  plans[p] = plan
end

-- The request's own earlier reservation (the alias of a fallback hop that failed) goes first.
for j = 1, ndrop do unreserve(drop[j][1], drop[j][2]) end

-- Rate limits: sliding windows of one-second buckets, and the requests in flight.
local function load(key, window)
  local raw = redis.call('HGETALL', key)
  local buckets, total, stale = {{}}, 0, {{}}
  for i = 1, #raw, 2 do
    local s, n = tonumber(raw[i]), tonumber(raw[i + 1])
    if s <= sec - window then
      stale[#stale + 1] = raw[i]
    else
      buckets[#buckets + 1] = {{s, n}}
      total = total + n
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  return total, buckets
end

-- Seconds until the window's total falls to `target` as its oldest buckets expire.
local function wait(buckets, total, target, window)
  table.sort(buckets, function(x, y) return x[1] < y[1] end)
  for _, b in ipairs(buckets) do
    total = total - b[2]
    if total <= target then return math.max(1, math.ceil(b[1] + window - now)) end
  end
  return window
end

local rpm_checks = {{}}
if rl then
  if rl.parallel > 0 then
    redis.call('ZREMRANGEBYSCORE', rl.inflight, '-inf', now)
    if redis.call('ZCARD', rl.inflight) >= rl.parallel then return {{1, rl.parallel, 1, 0}} end
  end
  rpm_checks = {{{{rl.req_key, rl.key_rpm, 2}}, {{rl.req, rl.rpm, 3}}}}
  for _, c in ipairs(rpm_checks) do
    if c[2] > 0 then
      local total, buckets = load(c[1], rl.window)
      if total + 1 > c[2] then
        return {{c[3], c[2], wait(buckets, total, c[2] - 1, rl.window), 0}}
      end
    end
  end
  for _, c in ipairs({{{{rl.tok_key, rl.key_tpm, 4}}, {{rl.tok, rl.tpm, 5}}}}) do
    if c[2] > 0 then
      local total, buckets = load(c[1], rl.window)
      if total >= c[2] then
        return {{c[3], c[2], wait(buckets, total, c[2] - 1, rl.window), 0}}
      end
    end
  end
end

-- Budgets: each policy's expired reservations go, then its spend and what others hold.
local out = {{0, 0, 0, 0}}
for i = 1, npol do
  local p = pol[i]
  local expired = redis.call('ZRANGEBYSCORE', p.exp, '-inf', now, 'LIMIT', 0, {SWEEP_BATCH})
  if #expired > 0 then
    local gone = 0
    for _, m in ipairs(expired) do gone = gone + tonumber(redis.call('HGET', p.resv, m) or '0') end
    redis.call('HDEL', p.resv, unpack(expired))
    redis.call('ZREM', p.exp, unpack(expired))
    redis.call('HINCRBY', p.resv, '{TOTAL_FIELD}', 0 - gone)
    tidy(p.resv)
  end
  if p.member == '' then
    p.spent = tonumber(redis.call('GET', p.spend) or '0')
  else
    p.spent = math.floor(tonumber(redis.call('ZSCORE', p.spend, p.member) or '0'))
  end
  local total = tonumber(redis.call('HGET', p.resv, '{TOTAL_FIELD}') or '0')
  p.held = total - tonumber(redis.call('HGET', p.resv, rid) or '0')
  out[#out + 1] = p.spent
  out[#out + 1] = p.held
end

-- budget_policy.decide(), on the plans the guard prepared: 0 allow, -1 block, n > 0
-- downgrade to plan n.
local function at_limit(i) return pol[i].spent + pol[i].held >= pol[i].limit end
local function decide(plan)
  if plan.refuse then return -1 end
  for _, i in ipairs(plan.pols) do
    if pol[i].block and at_limit(i) then return -1 end
  end
  for _, d in ipairs(plan.downs) do
    if at_limit(d[1]) then
      if d[2] == 0 then return -1 end
      return d[2]
    end
  end
  return 0
end

local chosen = 0
if nplans > 0 then
  local d = decide(plans[1])
  if d == 0 then
    chosen = 1
  elseif d > 0 and decide(plans[d]) >= 0 then
    chosen = d
  end
  if chosen == 0 then return out end
end

-- Admitted by everything: take the slot, reserve the estimate under the chosen plan.
if rl then
  for _, c in ipairs(rpm_checks) do
    if c[2] > 0 then
      redis.call('HINCRBY', c[1], sec, 1)
      redis.call('EXPIRE', c[1], rl.window + 1)
    end
  end
  if rl.parallel > 0 then
    redis.call('ZADD', rl.inflight, now + rl.lease, rid)
    redis.call('EXPIRE', rl.inflight, rl.lease)
  end
end
if chosen > 0 then
  local plan = plans[chosen]
  local est = tonumber(redis.call('GET', plan.est) or default_est)
  for _, i in ipairs(plan.pols) do
    local p = pol[i]
    local old = tonumber(redis.call('HGET', p.resv, rid) or '0')
    redis.call('HSET', p.resv, rid, est)
    redis.call('HINCRBY', p.resv, '{TOTAL_FIELD}', est - old)
    redis.call('ZADD', p.exp, now + blease, rid)
    redis.call('EXPIRE', p.resv, blease)
    redis.call('EXPIRE', p.exp, blease)
  end
end
out[4] = chosen
local answer = {{}}
for i, n in ipairs(out) do answer[i] = string.format('%d', n) end
redis.call('SET', KEYS[1], table.concat(answer, ' '), 'EX', {ADMITTED_SECONDS})
return out
"""
)

SETTLE = (
    _COMMON
    + f"""
-- Once per call: run again (a retry after a reply that was lost, or a failover right after
-- it ran), it adds nothing twice.
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', {SETTLED_SECONDS}) then return {{}} end
local a, k = 3, 2
if ARGV[2] == '1' then
  local tokens, window = tonumber(ARGV[4]), tonumber(ARGV[5])
  if ARGV[3] == '1' then redis.call('ZREM', KEYS[4], rid) end
  if tokens > 0 then
    for i = 2, 3 do
      redis.call('HINCRBY', KEYS[i], sec, tokens)
      redis.call('EXPIRE', KEYS[i], window + 1)
    end
  end
  a, k = 6, 5
end

local ns, nr, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
local weight, max_sessions = ARGV[a + 3], tonumber(ARGV[a + 4])
a = a + 5
local out = {{}}
for i = 1, ns do
  local key, expire_at, member = KEYS[k], tonumber(ARGV[a]), ARGV[a + 1]
  if member == '' then
    out[i] = redis.call('INCRBY', key, cost)
  else
    if not redis.call('ZSCORE', key, member) and redis.call('ZCARD', key) >= max_sessions then
      redis.call('ZPOPMIN', key)
    end
    out[i] = math.floor(tonumber(redis.call('ZINCRBY', key, cost, member)))
  end
  redis.call('EXPIREAT', key, expire_at)
  k, a = k + 1, a + 2
end
for j = 1, nr do
  unreserve(KEYS[k], KEYS[k + 1])
  k = k + 2
end
if weight ~= '' then
  local avg = redis.call('GET', KEYS[k])
  local w = tonumber(weight)
  local new = cost
  if avg then new = math.floor(tonumber(avg) * (1 - w) + cost * w + 0.5) end
  redis.call('SET', KEYS[k], new, 'EX', 604800)
end
return out
"""
)


@contextlib.contextmanager
def torn_connections() -> Iterator[None]:
    """A connection the server closed, as the ConnectionError it is.

    redis-py's asyncio clients (plain and cluster, 7.4) raise AttributeError or TypeError from
    the transport when they write to a connection the peer closed, as during a failover
    (redis/redis-py#4287): neither is a RedisError, so without this a request would fail with
    a 500 instead of the Tenant's onStoreUnavailable.
    """
    try:
        yield
    except (AttributeError, TypeError) as exc:
        raise RedisConnectionError(f"connection lost ({type(exc).__name__}: {exc})") from exc


@dataclass(frozen=True)
class Part:
    """One caller's share of a script call: its keys, and its arguments headed by its counts."""

    keys: Sequence[str]
    args: Sequence[Any]


NO_LIMITS = Part(keys=(), args=(0,))
"""The rate-limit part of a call that has no rate limit to check or free."""
NO_BUDGETS_ADMIT = Part(keys=(), args=(0, 0, 0, 0, 0))
"""The budget part of an ADMIT without BudgetPolicies."""
NO_BUDGETS_SETTLE = Part(keys=(), args=(0, 0, 0, "", 0))
"""The budget part of a SETTLE that adds no spend and drops no reservation."""


class Scripts:
    """ADMIT and SETTLE of one tenant, registered on one Redis client (EVALSHA, loaded on
    first use)."""

    def __init__(self, redis: RedisClient, tenant: str) -> None:
        self.tenant = tenant
        self.admit: LuaScript = register_script(redis, ADMIT)
        self.settle: LuaScript = register_script(redis, SETTLE)

    async def run_admit(self, request_id: str, limits: Part, budgets: Part) -> list[int]:
        """One ADMIT: [rate-limit code, its value, its wait, chosen plan, (spent, held)...].

        The call may run twice on the server (redis-py resends it when the reply was lost); a
        run that admitted leaves its answer under the call's own key, which a second run
        returns."""
        once = tenant_key(self.tenant, "admitted", f"{request_id}:{secrets.token_hex(6)}")
        with torn_connections():
            result = await self.admit(
                keys=[once, *limits.keys, *budgets.keys],
                args=[request_id, *limits.args, *budgets.args],
            )
        return [int(x) for x in result]

    def settle_call(
        self, request_id: str, limits: Part, budgets: Part
    ) -> Callable[[], Awaitable[list[int] | None]]:
        """One SETTLE, ready to run (and to run again: a retry of the same call adds nothing
        twice). Its result: each spend policy's total after adding the cost; None when this
        call had run already."""
        once = tenant_key(self.tenant, "settled", f"{request_id}:{secrets.token_hex(6)}")
        keys = [once, *limits.keys, *budgets.keys]
        args = [request_id, *limits.args, *budgets.args]

        async def run() -> list[int] | None:
            with torn_connections():
                result = await self.settle(keys=keys, args=args)
            return [int(x) for x in result] if result else None

        return run
