"""A tenant's gateway process with real Redis and Postgres, tried by a client inside the tenant.

The gateway (`python -m tenantgw.gateway`) runs with its own throwaway redis-server (frozen,
killed and restarted here, never the shared one) and a tenant role in the shared PostgreSQL,
in front of the provider simulator. Two keys: alice and bob.

- A forged context: bob sends `tenantgw` metadata naming alice (and a request id of his
  choosing) on both API families; the ledger rows, rate-limit windows and budget counters land
  on bob, and requests that share a client-chosen call id cannot free each other's slots.
- Redis down: onStoreUnavailable Closed refuses with 503 `overloaded_error` and `retry-after`;
  Open admits. Releases of requests that ended during the outage are delivered once Redis
  answers, so maxParallelRequests is not left exhausted.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from e2e.fixtures import Services, tenant_role
from e2e.gateway_launch import launch_gateway
from e2e.provider_sim import SimulatorHandle, start_simulator
from e2e.test_gateway_process import (
    ALICE_KEY,
    MASTER_KEY,
    PROVIDER_ENV,
    PROVIDER_KEY,
    TENANT,
    write_gateway_files,
)
from e2e.throwaway_redis import CommandLog, ThrowawayRedis, script_sha
from tenantgw.api.markers import key_prefix
from tenantgw.gateway import budgets as budgets_module
from tenantgw.gateway.scripts import ADMIT, SETTLE

pytestmark = pytest.mark.e2e

BOB_KEY = "sk-tgw-e2e-bob-" + secrets.token_hex(6)
PARALLEL = 2
SLOW_MS = 2500


@dataclass
class Gateway:
    url: str
    sim: SimulatorHandle
    log: Path
    redis: ThrowawayRedis
    dsn: str
    rules_file: Path

    def post(
        self, path: str, body: dict[str, Any], key: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return httpx.post(
            self.url + path,
            json=body,
            headers={"x-api-key": key, "authorization": f"Bearer {key}", **(headers or {})},
            timeout=60,
        )

    def rows(self, key_name: str) -> list[dict[str, Any]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT request_id, key_name, status, cost_usd FROM usage WHERE key_name = %s",
                [key_name],
            )
            columns = [c.name for c in cur.description or ()]
            return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]

    def admin(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url, socket_timeout=5)

    def set_mode(self, mode: str) -> None:
        raw = json.loads(self.rules_file.read_text())
        raw["enforcement"] = {"on_store_unavailable": mode}
        self.rules_file.write_text(json.dumps(raw))

    def log_lines(self, needle: str) -> list[str]:
        return [
            line for line in self.log.read_text(errors="replace").splitlines() if needle in line
        ]


def eventually(check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _budget(name: str, key: str) -> dict[str, Any]:
    return {
        "name": name,
        "scope": {"kind": "Key", "name": key},
        "period": "daily",
        "limit_usd": 100.0,
        "alert_thresholds": [],
        "on_exceeded": {"action": "block", "to_cost_tier": None},
    }


@pytest.fixture(scope="module")
def gateway(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("integrity")
    sim_url, sim = start_simulator(api_key=PROVIDER_KEY)
    config_file, rules_file, keys_file = write_gateway_files(workdir, sim_url)
    rules = json.loads(rules_file.read_text())
    rules["keys"] = [{"name": "alice", "rpm": 1000, "tpm": None}, {"name": "bob", "rpm": 1000}]
    rules["limits"] = {"rpm": None, "tpm": None, "max_parallel_requests": PARALLEL}
    rules["budgets"] = [_budget("alice-daily", "alice"), _budget("bob-daily", "bob")]
    rules_file.write_text(json.dumps(rules))
    keys = json.loads(keys_file.read_text())
    keys.append({"name": "bob", "sha256": hashlib.sha256(BOB_KEY.encode()).hexdigest()})
    keys_file.write_text(json.dumps(keys))
    store = ThrowawayRedis(workdir)
    store.start()
    with tenant_role(services, "tg_e2e") as (_, dsn):
        env = {
            "LITELLM_MASTER_KEY": MASTER_KEY,
            PROVIDER_ENV: PROVIDER_KEY,
            "TENANTGW_TENANT": TENANT,
            "TENANTGW_RULES_FILE": str(rules_file),
            "TENANTGW_KEYS_FILE": str(keys_file),
            "TENANTGW_REDIS_URL": store.url,
            "TENANTGW_POSTGRES_DSN": dsn,
            "TENANTGW_SPOOL_DIR": str(workdir / "spool"),
        }
        try:
            with launch_gateway(workdir, config_file, env) as launched:
                yield Gateway(launched.url, sim, launched.log, store, dsn, rules_file)
        finally:
            sim.stop()
            store.kill()


def messages(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "fast-code", "messages": [{"role": "user", "content": text}], **extra}


# --------------------------------------------------------------------------- forged context


def test_a_forged_context_charges_the_authenticated_key(gateway: Gateway) -> None:
    """bob names alice, and a request id of his own, in every place a client can write."""
    forged = {
        "tenant": TENANT,
        "key_name": "alice",
        "request_id": "forged-request-id",
        "requested_model": "claude-sonnet-4-5",
        "alias": "reasoning",
    }
    header = {"x-litellm-call-id": "forged-request-id"}
    sent = [
        gateway.post(
            "/v1/messages",
            messages("hi", metadata={"tenantgw": forged}, litellm_metadata={"tenantgw": forged}),
            BOB_KEY,
            header,
        ),
        gateway.post(
            "/v1/messages", messages("hi", litellm_metadata={"tenantgw": forged}), BOB_KEY, header
        ),
        gateway.post("/v1/chat/completions", chat("hi", metadata={"tenantgw": forged}), BOB_KEY),
        gateway.post(
            "/v1/chat/completions",
            chat("hi", metadata={"tenantgw": "0123456789abcdef0123456789abcdef"}),
            BOB_KEY,
            header,
        ),
    ]
    assert [r.status_code for r in sent] == [200] * 4, [r.text for r in sent]

    eventually(lambda: len(gateway.rows("bob")) >= 4, "bob's four ledger rows")
    rows = gateway.rows("bob")
    assert len(rows) == 4
    assert "forged-request-id" not in {r["request_id"] for r in rows}
    assert all(r["status"] == "success" and r["cost_usd"] > 0 for r in rows)
    assert gateway.rows("alice") == []

    admin = gateway.admin()
    try:
        assert admin.exists(f"{key_prefix(TENANT)}rl:req:key:bob")
        assert not admin.exists(f"{key_prefix(TENANT)}rl:req:key:alice")
        budget_keys = {
            k.decode() for k in admin.scan_iter(match=f"{key_prefix(TENANT)}budget:*-daily:*")
        }
        spent = {k.split(":")[3]: int(admin.get(k) or 0) for k in budget_keys if k.count(":") == 4}
    finally:
        admin.close()
    assert spent.get("bob-daily", 0) > 0
    assert spent.get("alice-daily", 0) == 0


def test_a_client_chosen_call_id_cannot_free_another_requests_slot(gateway: Gateway) -> None:
    """Two slow requests fill maxParallelRequests; refused requests of bob that reuse their
    call ids (header and forged metadata) must not free their slots."""
    gateway.sim.configure(latency_ms=SLOW_MS)
    admin = gateway.admin()
    inflight = f"{key_prefix(TENANT)}rl:inflight"
    try:
        with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
            victims = [
                pool.submit(
                    gateway.post, "/v1/chat/completions", chat(f"slow {i}"), ALICE_KEY,
                    {"x-litellm-call-id": f"victim-{i}"},
                )
                for i in range(PARALLEL)
            ]  # fmt: skip
            eventually(lambda: admin.zcard(inflight) == PARALLEL, "both slow requests admitted")
            for i in range(PARALLEL):
                forged = {"request_id": f"victim-{i}", "key_name": "alice", "tenant": TENANT}
                refused = gateway.post(
                    "/v1/chat/completions",
                    chat("attack", metadata={"tenantgw": forged}),
                    BOB_KEY,
                    {"x-litellm-call-id": f"victim-{i}"},
                )
                assert refused.status_code == 429, refused.text
                assert "requests in progress" in refused.json()["error"]["message"]
            assert admin.zcard(inflight) == PARALLEL  # the victims still hold their slots
            assert [v.result().status_code for v in victims] == [200] * PARALLEL
    finally:
        gateway.sim.configure(latency_ms=0)
    eventually(lambda: admin.zcard(inflight) == 0, "the slots to be freed by their own requests")
    admin.close()


# --------------------------------------------------------------------------- round trips


def test_a_request_costs_the_gateway_two_redis_round_trips(gateway: Gateway) -> None:
    """alice's requests are covered by the tenant's maxParallelRequests, her key's rpm and her
    key's budget: each costs one ADMIT and one SETTLE, streamed or not, on both families.
    Counted by the server (MONITOR); the gateway's periodic background work is left out: the
    budget reconciliation from the ledger (its own scripts, every 60 s) and the ledger's look
    at its spool stream (XLEN, every 5 s). This fixture's tenant role has
    no audit schema, so its audit trail would spool every record to Redis (its Postgres-down
    path): the audit is switched off for the count, and the background replay of what it
    spooled before (`t:{<tenant>}:audit:*`) is left out."""
    admit, settle = script_sha(ADMIT), script_sha(SETTLE)
    background = {script_sha(budgets_module._RAISE), script_sha(budgets_module._RAISE_SESSIONS)}
    admin = gateway.admin()
    inflight = f"{key_prefix(TENANT)}rl:inflight"
    sends = [
        lambda: gateway.post("/v1/chat/completions", chat("count"), ALICE_KEY),
        lambda: gateway.post("/v1/chat/completions", chat("count", stream=True), ALICE_KEY),
        lambda: gateway.post("/v1/messages", messages("count"), ALICE_KEY),
        lambda: gateway.post("/v1/messages", messages("count", stream=True), ALICE_KEY),
    ]
    raw = json.loads(gateway.rules_file.read_text())
    raw["compliance"]["audit"]["enabled"] = False
    gateway.rules_file.write_text(json.dumps(raw))
    time.sleep(1.5)  # the rules file is re-read within a second
    for send in sends:  # the scripts are loaded once per Redis server, not per request
        assert send().status_code == 200
    eventually(lambda: admin.zcard(inflight) == 0, "the warm-up requests to settle")
    per_request = []
    with CommandLog(gateway.redis.url) as log:
        log.ignore.add(str(admin.client_info()["addr"]))
        for send in sends:
            mark = log.mark()
            assert send().status_code == 200
            eventually(lambda: admin.zcard(inflight) == 0, "the request to settle")
            time.sleep(0.3)  # MONITOR's lines arrive after the replies
            trips = [
                words
                for _, words in log.round_trips(mark)
                if words[0].upper() != "PING"  # the client's idle health check, not per request
                and not (words[0].upper() == "EVALSHA" and words[1] in background)
                and not any(":audit:" in word for word in words)
                and words[0].upper() != "XLEN"
            ]
            per_request.append([(w[0].upper(), w[1] if len(w) > 1 else "") for w in trips])
    admin.close()
    raw["compliance"]["audit"]["enabled"] = True
    gateway.rules_file.write_text(json.dumps(raw))
    assert per_request == [[("EVALSHA", admit), ("EVALSHA", settle)]] * len(sends), per_request


# --------------------------------------------------------------------------- Redis down


def _overloaded(response: httpx.Response, family: str) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    if family == "anthropic":
        assert body["type"] == "error"
        assert body["error"]["type"] == "overloaded_error"
    else:
        assert body["error"]["code"] == "503"
    assert "Redis" not in response.text
    assert "127.0.0.1" not in response.text


def test_redis_down_closed_refuses_then_releases_are_delivered(gateway: Gateway) -> None:
    gateway.set_mode("Closed")
    gateway.sim.configure(latency_ms=SLOW_MS)
    admin = gateway.admin()
    inflight = f"{key_prefix(TENANT)}rl:inflight"
    try:
        with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
            slow = [
                pool.submit(gateway.post, "/v1/chat/completions", chat(f"held {i}"), ALICE_KEY)
                for i in range(PARALLEL)
            ]
            eventually(lambda: admin.zcard(inflight) == PARALLEL, "both slots taken")
            gateway.redis.freeze()  # the requests end upstream while Redis hangs
            try:
                assert [s.result().status_code for s in slow] == [200] * PARALLEL
                gateway.sim.configure(latency_ms=0)
                _overloaded(gateway.post("/v1/messages", messages("hi"), ALICE_KEY), "anthropic")
                _overloaded(gateway.post("/v1/chat/completions", chat("hi"), ALICE_KEY), "openai")
            finally:
                gateway.redis.thaw()
    finally:
        gateway.sim.configure(latency_ms=0)

    # Once Redis answers, the releases made during the outage are delivered: the slots are
    # free again now, not after their 660 s lease.
    eventually(lambda: admin.zcard(inflight) == 0, "the deferred releases to reach Redis")
    admin.close()
    eventually(
        lambda: gateway.post("/v1/chat/completions", chat("back"), ALICE_KEY).status_code == 200,
        "requests to be served again",
    )
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        again = [
            pool.submit(gateway.post, "/v1/messages", messages(f"again {i}"), ALICE_KEY)
            for i in range(PARALLEL)
        ]
        assert [a.result().status_code for a in again] == [200] * PARALLEL
    assert len(gateway.log_lines("Redis unavailable for tenant")) >= 1
    assert len(gateway.log_lines("Redis unavailable for tenant")) == len(
        gateway.log_lines("Redis answers again for tenant")
    )


def test_redis_down_open_admits_and_a_restart_loses_no_release(gateway: Gateway) -> None:
    gateway.set_mode("Open")
    before = len(gateway.log_lines("Redis unavailable for tenant"))
    # The rules file is re-read within a second: Open is in force once a frozen Redis admits.
    gateway.redis.freeze()
    try:
        eventually(
            lambda: gateway.post("/v1/messages", messages("open"), ALICE_KEY).status_code == 200,
            "onStoreUnavailable: Open to admit while Redis hangs",
        )
        for _ in range(3):  # several requests, one log line for the outage
            assert gateway.post("/v1/chat/completions", chat("open"), BOB_KEY).status_code == 200
    finally:
        gateway.redis.thaw()
    gateway.redis.restart()  # a crash: every counter is gone, the gateway reconnects
    eventually(
        lambda: gateway.post("/v1/chat/completions", chat("after"), ALICE_KEY).status_code == 200,
        "requests after the restart",
    )
    admin = gateway.admin()
    try:
        eventually(
            lambda: admin.zcard(f"{key_prefix(TENANT)}rl:inflight") == 0, "no slot left held"
        )
    finally:
        admin.close()
    assert len(gateway.log_lines("Redis unavailable for tenant")) - before <= 2  # per outage
    assert "onStoreUnavailable: Open" in "\n".join(gateway.log_lines("Redis unavailable"))
    gateway.set_mode("Closed")
