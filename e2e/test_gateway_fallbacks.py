"""Fallbacks are checked like primaries, and a spent budget is final: a real gateway process,
the tenant's own Redis ACL user and Postgres role, the provider simulator's injected faults,
and the real Anthropic and OpenAI SDKs and Claude Code CLI.

The gateway runs from hand-written config.yaml, tenantgw.json and keys.json in the shapes the
operator renders, because one story needs what the operator would never render: a fallback of a
fallback outside the tenant's regions (a hand-edited or stale config). The gateway must hold
the line without the control plane's help.

Aliases (every target on the simulator, us-east-1 unless noted):
    primary -> spare -> backup      spare has a ModelAlias budget the tests spend or clear
    edge -> mid -> far              far is in eu-west-1, outside the tenant's regions
    plain                           no fallbacks
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import openai
import psycopg
import pytest

from e2e.claude import ClaudeCodeError, run_claude, seed_home
from e2e.fixtures import Services
from e2e.gateway_launch import launch_gateway
from e2e.hand_written_gateway import Stores, gateway_env, tenant_stores, write_tenant_files
from e2e.provider_sim import SimulatorHandle, start_simulator
from tenantgw.api.periods import budget_counter_key
from tenantgw.render.litellm_config import NUM_RETRIES

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
MASTER_KEY = "sk-tgw-fb-master-" + secrets.token_hex(6)
KEYS = {
    "alice": "sk-tgw-fb-alice-" + secrets.token_hex(6),
    "spent": "sk-tgw-fb-spent-" + secrets.token_hex(6),
}
PROVIDER_KEY = "sk-sim-fb-" + secrets.token_hex(6)
PROVIDER_ENV = "TENANTGW_PROVIDER_SIM_API_KEY"
M = 1_000_000  # micro-USD per USD: the budget counters' unit

# alias -> (upstream model, region, fallbacks)
ALIASES: dict[str, tuple[str, str, list[str]]] = {
    "primary": ("sim-primary", "us-east-1", ["spare"]),
    "spare": ("sim-spare", "us-east-1", ["backup"]),
    "backup": ("sim-backup", "us-east-1", []),
    "edge": ("sim-edge", "us-east-1", ["mid"]),
    "mid": ("sim-mid", "us-east-1", ["far"]),
    "far": ("sim-far", "eu-west-1", []),
    "plain": ("sim-plain", "us-east-1", []),
}
BUDGETS: list[dict[str, Any]] = [
    {"name": "spare-daily", "scope": {"kind": "ModelAlias", "name": "spare"}, "limit_usd": 0.01},
    {"name": "backup-daily", "scope": {"kind": "ModelAlias", "name": "backup"}, "limit_usd": 100},
    {"name": "primary-daily", "scope": {"kind": "ModelAlias", "name": "primary"}, "limit_usd": 100},
    {"name": "spent-daily", "scope": {"kind": "Key", "name": "spent"}, "limit_usd": 1},
]


def write_gateway_files(directory: Path, tenant: str, sim_url: str) -> Path:
    """config.yaml, tenantgw.json and keys.json as render/ writes them; returns config.yaml."""
    config = {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {
                    "model": f"openai/{upstream}",
                    "api_base": sim_url,
                    "api_key": f"os.environ/{PROVIDER_ENV}",
                    "weight": 1,
                },
                "model_info": {
                    "id": f"{name}-0",
                    "input_cost_per_token": 3.0e-07,
                    "output_cost_per_token": 1.2e-06,
                    "tenantgw": {
                        "alias": name,
                        "provider": "sim",
                        "provider_model": upstream,
                        "region": region,
                        "cost_tier": "medium",
                    },
                },
            }
            for name, (upstream, region, _) in ALIASES.items()
        ],
        "litellm_settings": {
            "drop_params": True,
            "use_chat_completions_url_for_anthropic_messages": True,
            "num_retries": NUM_RETRIES,
            "request_timeout": 60,
            # What a stale or hand-edited config could say: edge -> mid -> far is all there.
            "fallbacks": [{name: fbs} for name, (_, _, fbs) in ALIASES.items() if fbs],
            "callbacks": ["tenantgw.gateway.callbacks.handler"],
        },
        "general_settings": {
            "master_key": "os.environ/LITELLM_MASTER_KEY",
            "custom_auth": "tenantgw.gateway.auth.user_api_key_auth",
        },
        "router_settings": {"routing_strategy": "simple-shuffle"},
    }
    rules = {
        "tenant": tenant,
        "namespace": f"tenant-{tenant}",
        "default_alias": None,
        "rules": [],
        "aliases": {
            name: {
                "cost_tier": "medium",
                "client_names": [],
                "fallbacks": fbs,
                "targets": [
                    {
                        "id": f"{name}-0",
                        "provider": "sim",
                        "provider_type": "openai-compatible",
                        "model": upstream,
                        "region": region,
                        "weight": 1,
                    }
                ],
            }
            for name, (upstream, region, fbs) in ALIASES.items()
        },
        "keys": [{"name": name} for name in KEYS],
        "compliance": {"data_residency": {"allowed_regions": ["us-east-1"]}},
        "budgets": [{**b, "period": "daily", "on_exceeded": {"action": "block"}} for b in BUDGETS],
    }
    return write_tenant_files(directory, config, rules, KEYS)


@dataclass
class Gateway:
    url: str
    sim: SimulatorHandle
    stores: Stores
    log: Path

    def anthropic(self, key: str = "alice", max_retries: int = 0) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=self.url, api_key=KEYS[key], max_retries=max_retries, timeout=60
        )

    def openai(self, key: str = "alice", max_retries: int = 0) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.url + "/v1", api_key=KEYS[key], max_retries=max_retries, timeout=60
        )

    def counter_key(self, policy: str) -> str:
        return budget_counter_key(self.stores.tenant, policy, "daily", datetime.now(UTC))

    def spent_micro(self, policy: str) -> int:
        return int(self.stores.admin_redis.get(self.counter_key(policy)) or 0)

    def set_spent(self, policy: str, micro: int | None) -> None:
        if micro is None:
            self.stores.admin_redis.delete(self.counter_key(policy))
        else:
            self.stores.admin_redis.set(self.counter_key(policy), micro, ex=3600)

    def upstream_models(self, marker: str) -> list[str]:
        """The upstream models the simulator was asked, for requests containing `marker`."""
        return [
            str(r.get("body", {}).get("model"))
            for r in self.sim.requests()
            if marker in json.dumps(r.get("body"))
        ]

    def ledger_rows(self, key: str, since: datetime) -> list[dict[str, Any]]:
        with psycopg.connect(self.stores.postgres_dsn) as conn:
            conn.row_factory = psycopg.rows.dict_row  # type: ignore[assignment]
            try:
                cur = conn.execute(
                    "SELECT request_id, alias, status, http_status, cost_usd FROM usage "
                    "WHERE key_name = %s AND ts >= %s ORDER BY ts",
                    [key, since],
                )
            except psycopg.errors.UndefinedTable:
                return []
            return [dict(row) for row in cur.fetchall()]

    def settled_rows(self, key: str, since: datetime, at_least: int) -> list[dict[str, Any]]:
        """The ledger rows of `key` since `since`, once there are `at_least` and no more come."""
        deadline = time.monotonic() + 30
        rows = self.ledger_rows(key, since)
        while time.monotonic() < deadline and len(rows) < at_least:
            time.sleep(0.2)
            rows = self.ledger_rows(key, since)
        assert len(rows) >= at_least, f"expected {at_least} ledger rows of {key}, got {rows}"
        time.sleep(1.5)  # the ledger flushes every 0.2 s: a late retry would show by now
        return self.ledger_rows(key, since)


@pytest.fixture(scope="module")
def gateway(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    sim_url, sim = start_simulator(api_key=PROVIDER_KEY)
    workdir = tmp_path_factory.mktemp("fallbacks-gateway")
    with tenant_stores(services) as stores:
        config_file = write_gateway_files(workdir, stores.tenant, sim_url)
        env = {
            "LITELLM_MASTER_KEY": MASTER_KEY,
            PROVIDER_ENV: PROVIDER_KEY,
            **gateway_env(workdir, stores.tenant, stores.redis_url, stores.postgres_dsn),
        }
        try:
            with launch_gateway(workdir, config_file, env) as launched:
                yield Gateway(url=launched.url, sim=sim, stores=stores, log=launched.log)
        finally:
            sim.stop()


@pytest.fixture(autouse=True)
def _fresh(gateway: Gateway) -> Iterator[None]:
    gateway.sim.reset()
    gateway.set_spent("spare-daily", None)
    yield
    gateway.sim.reset()


def _marker() -> str:
    return f"fb-{uuid.uuid4().hex[:10]}"


def _text(message: anthropic.types.Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


# --------------------------------------------------------------------------- fallbacks


def test_a_fallback_whose_alias_budget_is_spent_is_skipped_for_its_own_fallback(
    gateway: Gateway,
) -> None:
    """primary fails; spare's budget is spent, so spare never serves; backup serves, charged."""
    gateway.set_spent("spare-daily", 2 * 10_000)  # twice its $0.01 limit
    gateway.sim.configure(fail_models={"sim-primary": "500"})
    backup_before = gateway.spent_micro("backup-daily")
    since = datetime.now(UTC)
    marker = _marker()
    reply = gateway.anthropic().messages.create(
        model="primary", max_tokens=64, messages=[{"role": "user", "content": f"hi {marker}"}]
    )
    assert _text(reply) == "Hello from sim-backup"
    asked = gateway.upstream_models(marker)
    assert "sim-primary" in asked
    assert "sim-spare" not in asked, "a fallback over its own alias budget served"
    assert asked[-1] == "sim-backup"
    (row,) = gateway.settled_rows("alice", since, 1)
    assert (row["alias"], row["status"]) == ("backup", "success")
    assert row["cost_usd"] > 0
    # Spend lands on the alias that served: backup's budget, not primary's or spare's.
    assert gateway.spent_micro("backup-daily") > backup_before
    assert gateway.spent_micro("spare-daily") == 2 * 10_000
    assert gateway.spent_micro("primary-daily") == 0


def test_a_fallback_within_its_budget_serves_and_is_charged_for_it(gateway: Gateway) -> None:
    gateway.sim.configure(fail_models={"sim-primary": "503"})
    since = datetime.now(UTC)
    marker = _marker()
    reply = gateway.openai().chat.completions.create(
        model="primary", messages=[{"role": "user", "content": f"hi {marker}"}]
    )
    assert reply.choices[0].message.content == "Hello from sim-spare"
    (row,) = gateway.settled_rows("alice", since, 1)
    assert (row["alias"], row["status"]) == ("spare", "success")
    assert gateway.spent_micro("spare-daily") > 0
    assert gateway.spent_micro("primary-daily") == 0


def test_when_every_admitted_fallback_fails_the_spent_one_still_never_serves(
    gateway: Gateway,
) -> None:
    gateway.set_spent("spare-daily", 2 * 10_000)
    gateway.sim.configure(fail_models={"sim-primary": "500", "sim-backup": "500"})
    marker = _marker()
    with pytest.raises(anthropic.APIStatusError):
        gateway.anthropic().messages.create(
            model="primary", max_tokens=64, messages=[{"role": "user", "content": marker}]
        )
    asked = gateway.upstream_models(marker)
    assert "sim-backup" in asked  # the nested fallback behind the skipped one was tried
    assert "sim-spare" not in asked


@pytest.mark.parametrize("alias", ["edge", "mid"])
def test_a_nested_fallback_outside_residency_never_serves(gateway: Gateway, alias: str) -> None:
    """edge -> mid -> far, far in eu-west-1: edge is refused before anything goes upstream."""
    gateway.sim.configure(fail_models={"sim-edge": "500", "sim-mid": "500"})
    marker = _marker()
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        gateway.anthropic().messages.create(
            model=alias, max_tokens=64, messages=[{"role": "user", "content": marker}]
        )
    assert caught.value.status_code == 403
    message = caught.value.message
    assert "edge -> mid -> far" in message or "mid -> far" in message
    assert "eu-west-1" in message
    assert gateway.upstream_models(marker) == []


def test_a_client_cannot_send_its_request_to_a_fallback_of_its_choosing(gateway: Gateway) -> None:
    """LiteLLM honours `fallbacks` in the body; tenantgw drops it: far never serves."""
    gateway.sim.configure(fail_models={"sim-plain": "500"})
    marker = _marker()
    with pytest.raises(openai.APIStatusError):
        gateway.openai().chat.completions.create(
            model="plain",
            messages=[{"role": "user", "content": marker}],
            extra_body={
                "fallbacks": ["far", "spare"],
                "context_window_fallbacks": [{"plain": ["far"]}],
            },
        )
    asked = gateway.upstream_models(marker)
    assert asked, "the request did not reach its own alias"
    assert set(asked) == {"sim-plain"}


# --------------------------------------------------------------------------- budget refusals


def _spend_the_key_budget(gateway: Gateway) -> None:
    gateway.set_spent("spent-daily", 2 * M)  # $2.00 of its $1.00


def test_a_spent_budget_is_final_for_the_anthropic_sdk(gateway: Gateway) -> None:
    _spend_the_key_budget(gateway)
    since = datetime.now(UTC)
    # Default retries (2): a 429 would be sent three times.
    client = gateway.anthropic("spent", max_retries=2)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(
            model="plain", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
    error = caught.value
    assert error.status_code == 402
    body = error.body if isinstance(error.body, dict) else {}
    assert body.get("type") == "error"
    assert body["error"]["type"] == "billing_error"
    assert "budget spent-daily (key spent)" in error.message
    assert "resets at" in error.message
    assert error.response.headers["x-should-retry"] == "false"
    assert 0 < int(error.response.headers["retry-after"]) <= 86400
    rows = gateway.settled_rows("spent", since, 1)
    assert len(rows) == 1, f"the SDK retried a budget refusal: {rows}"
    assert rows[0]["http_status"] == 402


def test_a_spent_budget_is_final_for_the_openai_sdk(gateway: Gateway) -> None:
    _spend_the_key_budget(gateway)
    since = datetime.now(UTC)
    client = gateway.openai("spent", max_retries=2)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="plain", messages=[{"role": "user", "content": "hi"}])
    error = caught.value
    assert error.status_code == 402
    body = error.body if isinstance(error.body, dict) else {}
    assert body.get("type") == "billing_error"  # the OpenAI SDK hands over body["error"]
    assert "budget spent-daily (key spent)" in str(body.get("message"))
    assert len(gateway.settled_rows("spent", since, 1)) == 1


def test_claude_code_stops_at_a_spent_budget_without_retrying(
    gateway: Gateway, tmp_path: Path
) -> None:
    """The real CLI with its default retries: one request, a message naming policy and reset."""
    _spend_the_key_budget(gateway)
    home, project = tmp_path / "home", tmp_path / "project"
    project.mkdir()
    seed_home(home, [project])
    since = datetime.now(UTC)
    env = {"ANTHROPIC_BASE_URL": gateway.url, "ANTHROPIC_AUTH_TOKEN": KEYS["spent"]}
    try:
        run = run_claude("say hello", project=project, home=home, gateway_env=env, model="plain")
    except ClaudeCodeError as exc:
        pytest.fail(str(exc), pytrace=False)
    assert run.returncode != 0, run.describe()
    result = run.result
    assert result.get("is_error") is True
    assert result.get("api_error_status") == 402, run.describe()
    text = str(result.get("result"))
    assert "budget spent-daily (key spent)" in text, text
    assert "resets at" in text, text
    rows = gateway.settled_rows("spent", since, 1)
    assert len(rows) == 1, f"Claude Code retried a budget refusal: {rows}"
