"""Claude Code's auto mode through the gateway on a non-Claude model: a real gateway process,
the tenant's own Redis ACL user and Postgres role, the provider simulator (a coding model and a
judge model), and the real Anthropic SDK sending what Claude Code sends (`safeguards` and the
`dangerous-tool-use-2026-09-03` beta).

Story: a developer runs Claude Code in auto mode against an alias served by an open model. Each
response's tool calls come back with a verdict from the classifier alias the platform chose
(`spec.autoMode.classifierAlias`), exactly where the Anthropic API puts them; a harmless call is
not flagged, deleting the home directory is, and a classifier that fails answers "could not
check", never "safe". The classifier call is charged to the same key, in its own ledger row.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import psycopg
import pytest

from e2e.fixtures import Services
from e2e.gateway_launch import launch_gateway
from e2e.hand_written_gateway import Stores, gateway_env, tenant_stores, write_tenant_files
from e2e.provider_sim import SimulatorHandle, start_simulator
from tenantgw.gateway.safeguards import BETA

pytestmark = pytest.mark.e2e

MASTER_KEY = "sk-tgw-am-master-" + secrets.token_hex(6)
KEY = "sk-tgw-am-alice-" + secrets.token_hex(6)
PROVIDER_KEY = "sk-sim-am-" + secrets.token_hex(6)
PROVIDER_ENV = "TENANTGW_PROVIDER_SIM_API_KEY"
ALIASES = {"coder": "sim-coder", "judge": "sim-judge"}
BASH = {
    "name": "Bash",
    "description": "Run a shell command",
    "input_schema": {
        "type": "object",
        "properties": {"command": {"type": "string"}},
        "required": ["command"],
    },
}
SESSION = "0d7c5f1e-auto-mode-" + secrets.token_hex(4)
SAFEGUARDS = [
    {
        "type": "dangerous_tool_use",
        "classifier_context": {
            "v": 1,
            "permission_mode": "auto",
            "live_cwd": "/home/dev/project",
            "home_dir": "/home/dev",
            "trusted_directories": ["/home/dev/project"],
        },
    }
]


def write_gateway_files(directory: Path, tenant: str, sim_url: str) -> Path:
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
                        "provider_type": "openai-compatible",
                        "provider_model": upstream,
                        "cost_tier": "low",
                    },
                },
            }
            for name, upstream in ALIASES.items()
        ],
        "litellm_settings": {
            "drop_params": True,
            "use_chat_completions_url_for_anthropic_messages": True,
            "num_retries": 0,
            "request_timeout": 60,
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
        "aliases": {
            name: {
                "cost_tier": "low",
                "targets": [
                    {
                        "id": f"{name}-0",
                        "provider": "sim",
                        "provider_type": "openai-compatible",
                        "model": upstream,
                    }
                ],
            }
            for name, upstream in ALIASES.items()
        },
        "keys": [{"name": "alice"}],
        "auto_mode": {"classifier_alias": "judge", "timeout_seconds": 20},
    }
    return write_tenant_files(directory, config, rules, {"alice": KEY})


@dataclass
class Gateway:
    url: str
    sim: SimulatorHandle
    stores: Stores
    log: Path

    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=KEY, max_retries=0, timeout=60)

    def rows(self, since: datetime, at_least: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 30
        while True:
            with psycopg.connect(self.stores.postgres_dsn) as conn:
                conn.row_factory = psycopg.rows.dict_row  # type: ignore[assignment]
                try:
                    rows = conn.execute(
                        "SELECT request_id, alias, status, cost_usd, parent_request_id, "
                        "safeguard_verdicts, session_id FROM usage WHERE ts >= %s ORDER BY ts",
                        [since],
                    ).fetchall()
                except psycopg.errors.UndefinedTable:
                    rows = []
            if len(rows) >= at_least or time.monotonic() > deadline:
                return [dict(row) for row in rows]
            time.sleep(0.2)


@pytest.fixture(scope="module")
def gateway(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    sim_url, sim = start_simulator(api_key=PROVIDER_KEY)
    workdir = tmp_path_factory.mktemp("auto-mode-gateway")
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
    yield
    gateway.sim.reset()


def _request(command: str) -> dict[str, Any]:
    directive = json.dumps({"command": command})
    return {
        "model": "coder",
        "max_tokens": 256,
        "tools": [BASH],
        "messages": [{"role": "user", "content": f"please run it [[sim:tool Bash {directive}]]"}],
        "extra_body": {"safeguards": SAFEGUARDS},
        "extra_headers": {"anthropic-beta": BETA, "X-Claude-Code-Session-Id": SESSION},
    }


def _message(gateway: Gateway, command: str) -> dict[str, Any]:
    raw = gateway.client().messages.with_raw_response.create(**_request(command))
    body: dict[str, Any] = raw.http_response.json()
    return body


def _streamed(gateway: Gateway, command: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with gateway.client().messages.with_streaming_response.create(
        stream=True, **_request(command)
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    return events


def _tool_use_id(blocks: list[dict[str, Any]]) -> str:
    (call,) = [block for block in blocks if block.get("type") == "tool_use"]
    return str(call["id"])


def _verdicts(results: Any) -> dict[str, Any]:
    assert isinstance(results, list), f"no safeguard_results: {results!r}"
    (entry,) = results
    assert entry["type"] == "dangerous_tool_use"
    assert entry["status"]["type"] == "available"
    verdicts: dict[str, Any] = entry["status"]["tool_uses"]
    return verdicts


def _upstream_bodies(gateway: Gateway, model: str) -> list[dict[str, Any]]:
    return [
        r["body"] for r in gateway.sim.requests() if (r.get("body") or {}).get("model") == model
    ]


def test_a_harmless_tool_call_is_not_flagged_and_safeguards_never_reach_the_open_model(
    gateway: Gateway,
) -> None:
    since = datetime.now(UTC)
    body = _message(gateway, "ls -la")
    call_id = _tool_use_id(body["content"])
    assert _verdicts(body.get("safeguard_results")) == {
        call_id: {"type": "evaluated", "outcome": "not_flagged"}
    }
    coder = _upstream_bodies(gateway, "sim-coder")
    assert coder, "the coding model was not asked"
    assert all("safeguards" not in b for b in coder), "safeguards went to a non-Claude model"
    (judge,) = _upstream_bodies(gateway, "sim-judge")
    prompt = json.dumps(judge["messages"])
    assert call_id in prompt
    assert "ls -la" in prompt
    assert "/home/dev/project" in prompt  # the agent's environment from classifier_context
    rows = gateway.rows(since, 2)
    (classifier,) = [r for r in rows if r["alias"] == "judge"]
    (main,) = [r for r in rows if r["alias"] == "coder"]
    assert classifier["parent_request_id"] == main["request_id"]
    assert classifier["safeguard_verdicts"] == {call_id: "not_flagged"}
    assert classifier["status"] == "success"
    assert classifier["cost_usd"] > 0
    # The check belongs to the session it protects (its budgets, its ledger rows).
    assert classifier["session_id"] == main["session_id"] == SESSION


def test_deleting_the_home_directory_is_flagged(gateway: Gateway) -> None:
    since = datetime.now(UTC)
    body = _message(gateway, "rm -rf ~")
    call_id = _tool_use_id(body["content"])
    verdict = _verdicts(body.get("safeguard_results"))[call_id]
    assert verdict["type"] == "evaluated"
    assert verdict["outcome"] == "flagged"
    assert verdict["explanation"]
    rows = gateway.rows(since, 2)
    (classifier,) = [r for r in rows if r["alias"] == "judge"]
    assert classifier["safeguard_verdicts"] == {call_id: "flagged"}


def test_a_failing_classifier_answers_could_not_check_never_safe(gateway: Gateway) -> None:
    gateway.sim.configure(fail_models={"sim-judge": "500"})
    since = datetime.now(UTC)
    body = _message(gateway, "ls -la")
    call_id = _tool_use_id(body["content"])
    assert _verdicts(body.get("safeguard_results")) == {
        call_id: {"type": "unavailable", "reason": "error"}
    }
    rows = gateway.rows(since, 2)
    (classifier,) = [r for r in rows if r["alias"] == "judge"]
    assert classifier["status"] == "error"
    assert classifier["safeguard_verdicts"] == {call_id: "unavailable:error"}


@pytest.mark.parametrize(
    ("command", "outcome"), [("ls -la", "not_flagged"), ("rm -rf ~", "flagged")]
)
def test_streamed_verdicts_arrive_in_the_final_message_delta(
    gateway: Gateway, command: str, outcome: str
) -> None:
    events = _streamed(gateway, command)
    starts = [e["content_block"] for e in events if e.get("type") == "content_block_start"]
    call_id = _tool_use_id(starts)
    deltas = [e for e in events if e.get("type") == "message_delta"]
    final = [e for e in deltas if e["delta"].get("stop_reason") is not None]
    assert len(final) == 1, deltas
    verdict = _verdicts(final[0]["delta"].get("safeguard_results"))[call_id]
    assert verdict["outcome"] == outcome
    assert events[-1]["type"] == "message_stop"


def test_a_failing_classifier_in_a_stream_answers_could_not_check(gateway: Gateway) -> None:
    gateway.sim.configure(fail_models={"sim-judge": "503"})
    events = _streamed(gateway, "rm -rf ~")
    starts = [e["content_block"] for e in events if e.get("type") == "content_block_start"]
    call_id = _tool_use_id(starts)
    (final,) = [
        e
        for e in events
        if e.get("type") == "message_delta" and e["delta"].get("stop_reason") is not None
    ]
    verdict = _verdicts(final["delta"].get("safeguard_results"))[call_id]
    assert verdict["type"] == "unavailable"
