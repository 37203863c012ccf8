"""`spec.gateway.workers: 2`: two worker processes in one gateway pod share its limits exactly.

The gateway process runs from what the operator renders for a Tenant with two workers
(e2e/replicas.py: the rendered `--num_workers 2`). Concurrent requests land on both workers
(each worker counts its requests in its own Prometheus file, `counter_<pid>.db`: two PIDs
counted requests: carol's key, without limits), and still:

- bob's key has `rpm: 6`: of 20 concurrent requests exactly 6 succeed, the rest get 429;
- alice's key has a BudgetPolicy of exactly 5 requests' cost: after a first request, of 15
  concurrent ones exactly 4 succeed (5 in all), the others are refused as budget refusals
  (402 spent, or 429 while the budget is held by requests in flight).

The counters are in Redis, one Lua script per check, so no worker can see a stale count.
"""

from __future__ import annotations

import concurrent.futures
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import pytest

from e2e.fixtures import Services
from e2e.helpers import eventually
from e2e.provider_sim import SimulatorHandle
from e2e.replicas import SIM_MODEL, Replicas, anthropic_tenant_inputs, run_replicas
from tenantgw.render import RenderInputs, StorageEndpoints

pytestmark = pytest.mark.e2e

TENANT = "workers-" + secrets.token_hex(3)
MODEL = SIM_MODEL
PROVIDER_KEY = "sk-ant-sim-provider-" + secrets.token_hex(6)
REPLY = "Counted across workers."
REPLY_TOKENS = len(REPLY) // 4 + 1  # the simulator's tokenizer
OUTPUT_PER_MILLION = 1000.0
REQUEST_COST = Decimal(REPLY_TOKENS) * Decimal("0.001")  # input tokens are free
BOB_RPM = 6
BUDGET_REQUESTS = 5


def tenant_inputs(
    sim: SimulatorHandle, storage: StorageEndpoints, keys: dict[str, str]
) -> RenderInputs:
    return anthropic_tenant_inputs(
        TENANT,
        sim,
        storage,
        keys,
        spec={
            "keys": [{"name": "alice"}, {"name": "bob", "rpm": BOB_RPM}, {"name": "carol"}],
            "gateway": {"replicas": 1, "workers": 2},
        },
        pricing={"inputPerMillion": 0, "outputPerMillion": OUTPUT_PER_MILLION},
        budgets=[
            {
                "scope": {"kind": "Key", "name": "alice"},
                "period": "daily",
                "limitUSD": float(REQUEST_COST * BUDGET_REQUESTS),
                "onExceeded": {"action": "block"},
            }
        ],
    )


@pytest.fixture(scope="module")
def gateway(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    with run_replicas(
        services,
        tmp_path_factory.mktemp("workers"),
        role_prefix="tg_workers",
        inputs=tenant_inputs,
        key_names=("alice", "bob", "carol"),
        provider_secrets={"anthropic": {"apiKey": PROVIDER_KEY}},
        count=1,
        # Slow enough that concurrent requests overlap and spread over both workers.
        simulator_kwargs={"api_key": PROVIDER_KEY, "reply": REPLY, "latency_ms": 300},
    ) as running:
        yield running


def call(gateway: Replicas, key_name: str, n: int) -> int:
    """One request with a fresh connection: its HTTP status."""
    client = anthropic.Anthropic(
        base_url=gateway.gateways[0].url,
        api_key=gateway.keys[key_name],
        max_retries=0,
        timeout=60,
    )
    try:
        client.messages.create(
            model=MODEL,
            max_tokens=256,
            messages=[{"role": "user", "content": f"{key_name} {n}"}],
        )
    except anthropic.APIStatusError as exc:
        return exc.status_code
    return 200


def concurrently(gateway: Replicas, key_name: str, count: int) -> Counter[int]:
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        return Counter(pool.map(lambda n: call(gateway, key_name, n), range(count)))


def test_the_rendered_pod_runs_two_workers_and_both_serve(gateway: Replicas) -> None:
    assert gateway.files.argv[gateway.files.argv.index("--num_workers") + 1] == "2"

    def both_counted() -> Counter[int] | None:
        # The kernel hands each connection to whichever worker accepts first: on a loaded
        # machine one worker (or one still importing LiteLLM) may miss a whole batch.
        assert concurrently(gateway, "carol", 16) == {200: 16}
        counted = gateway.requests_by_pid()
        return counted if len(counted) >= 2 else None

    served = eventually(both_counted, 90, "requests counted by two worker processes")
    assert all(count > 0 for count in served.values()), served


def test_an_rpm_limit_holds_exactly_across_both_workers(gateway: Replicas) -> None:
    statuses = concurrently(gateway, "bob", 20)
    assert statuses[200] == BOB_RPM, statuses
    assert statuses[429] == 20 - BOB_RPM, statuses


def test_a_budget_holds_exactly_across_both_workers(gateway: Replicas) -> None:
    since = time.time()
    assert call(gateway, "alice", 0) == 200
    (first,) = eventually(lambda: gateway.rows(since), 30, "the first request's ledger row")
    assert first["cost_usd"] == REQUEST_COST  # the budget is exactly 5 of these
    statuses = concurrently(gateway, "alice", 15)
    assert statuses[200] == BUDGET_REQUESTS - 1, statuses
    assert set(statuses) <= {200, 402, 429}, statuses

    def successes() -> list[dict[str, Any]]:
        rows = [r for r in gateway.rows(since) if r["status"] == "success"]
        return rows if len(rows) >= BUDGET_REQUESTS else []

    rows = eventually(successes, 30, "a ledger row per admitted request")
    assert len(rows) == BUDGET_REQUESTS
    assert sum(r["cost_usd"] for r in rows) == REQUEST_COST * BUDGET_REQUESTS
