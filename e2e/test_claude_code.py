"""The real Claude Code CLI through the example tenant's gateway, as a developer runs it.

Claude Code (the version pinned in e2e/versions.env) runs headless (`claude -p`) with the
environment `tenantctl onboard` prints, in a throwaway HOME, with no network but loopback. The
provider simulator plays the model: its `tool_plan` makes the first turn call Claude Code's
Read tool on a file of the test, and it answers the tool result with "Tool said: <result>".
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import httpx
import psycopg
import pytest
import redis
from kubernetes.client import ApiClient

from e2e.claude import ClaudeCodeError, ClaudeRun, run_claude, seed_home
from e2e.fixtures import Services
from e2e.gateway_fixture import ExampleGateway
from e2e.helpers import K8s, eventually, secret_body, tenant_body
from tenantgw.api.periods import budget_counter_key
from tenantgw.cli.onboard import onboard

pytestmark = pytest.mark.e2e

BUDGET_POLICY = "engineering-daily"  # examples/budget.yaml: the tenant's daily budget
OTHER_TENANT = "claude-other-team"


@pytest.fixture(autouse=True)
def _fresh_simulator(example_gateway: ExampleGateway) -> Iterator[None]:
    """Every test starts and ends with the simulator's default behaviour."""
    example_gateway.simulator.reset()
    yield
    example_gateway.simulator.reset()


def _onboarding_env(kube: ApiClient, gw: ExampleGateway, key: str = "alice") -> dict[str, str]:
    """What `tenantctl onboard engineering-team --key <key> --url <gateway>` prints."""
    return onboard(kube, gw.tenant, key, base_url=gw.url).env()


def _claude(prompt: str, project: Path, home: Path, env: dict[str, str], **kw: Any) -> ClaudeRun:
    try:
        return run_claude(
            prompt, project=project, home=home, gateway_env=env, model="fast-code", **kw
        )
    except ClaudeCodeError as exc:
        pytest.fail(str(exc), pytrace=False)


def _budget_spent(services: Services, tenant: str) -> int:
    """Micro-USD counted today under the example's daily BudgetPolicy (0 before any spend)."""
    key = budget_counter_key(tenant, BUDGET_POLICY, "daily", datetime.now(UTC))
    client = redis.Redis.from_url(services.redis_url, socket_timeout=5)
    try:
        raw: bytes | None = client.get(key)  # type: ignore[assignment]
    finally:
        client.close()
    return int(raw) if raw is not None else 0


def _usage_rows(gw: ExampleGateway, since: float) -> list[dict[str, Any]]:
    with psycopg.connect(gw.postgres_dsn, connect_timeout=5) as conn:
        cur = conn.execute(
            "select request_id, key_name, requested_model, alias, provider, status,"
            " input_tokens, output_tokens, cost_usd, stream, session_id, ts"
            " from usage where ts >= to_timestamp(%s) order by ts",
            (since,),
        )
        names = [column.name for column in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# --------------------------------------------------------------------------- one tool turn


@dataclass
class ToolTurn:
    """Claude Code asked about a file; the model had it read with the Read tool."""

    run: ClaudeRun
    token: str
    notes: Path
    started: float
    spent_before: int
    ended: float


@pytest.fixture(scope="module")
def tool_turn(
    example_gateway: ExampleGateway,
    kube: ApiClient,
    services: Services,
    tmp_path_factory: pytest.TempPathFactory,
) -> ToolTurn:
    gw = example_gateway
    project = tmp_path_factory.mktemp("project")
    home = tmp_path_factory.mktemp("home")
    token = f"tgw-{secrets.token_hex(6)}"
    notes = project / "notes.txt"
    notes.write_text(f"The release codename is {token}.\n")
    seed_home(home, [project])
    env = _onboarding_env(kube, gw)
    spent_before = _budget_spent(services, gw.tenant)
    # The ledger's ts is the gateway's clock, this machine's: rows from here on are the turn's
    # (no margin, or the requests of the test before would count as Claude Code's).
    started = time.time()
    gw.simulator.reset()
    gw.simulator.configure(tool_plan={"tool": "Read", "arguments": {"file_path": str(notes)}})
    try:
        run = _claude("What is the release codename in notes.txt?", project, home, env)
    finally:
        gw.simulator.reset()
    return ToolTurn(
        run=run,
        token=token,
        notes=notes,
        started=started,
        spent_before=spent_before,
        ended=time.time(),
    )


def test_claude_code_runs_a_tool_and_answers_from_its_output(tool_turn: ToolTurn) -> None:
    """US-001: a developer's `claude -p` through the tenant gateway runs Read and answers."""
    run = tool_turn.run
    assert run.returncode == 0, run.describe()
    result = run.result
    assert result["is_error"] is False, run.describe()
    assert result["subtype"] == "success"
    assert result["num_turns"] >= 2, "no tool turn happened"
    assert tool_turn.token in result["result"], run.describe()
    assert result["permission_denials"] == []


def test_claude_codes_calls_are_metered_for_alice_and_counted_in_the_budget(
    tool_turn: ToolTurn, example_gateway: ExampleGateway, services: Services
) -> None:
    """US-003: each Claude Code call is one usage row of key alice, and the budget moved."""
    gw = example_gateway
    assert tool_turn.run.returncode == 0, tool_turn.run.describe()

    def fast_code_rows() -> list[dict[str, Any]]:
        rows = [r for r in _usage_rows(gw, tool_turn.started) if r["alias"] == "fast-code"]
        return rows if len(rows) >= 2 else []

    rows = eventually(fast_code_rows, 30, "usage rows of Claude Code's two fast-code calls")
    claude_rows = [r for r in rows if r["requested_model"] == "fast-code"]
    assert len(claude_rows) >= 2  # the tool_use turn and the answer to the tool result
    for row in claude_rows:
        assert row["key_name"] == "alice"
        assert row["status"] == "success"
        assert row["stream"] is True  # Claude Code streams
        assert row["input_tokens"] > 1000  # its system prompt and tools
        assert row["output_tokens"] > 0
        assert row["cost_usd"] > 0

    # The gateway adds each request's cost when it finishes; its ledger reconcile (every 60 s)
    # raises the counter to the ledger's sum should that addition have been lost.
    def spent_more() -> int:
        now = _budget_spent(services, gw.tenant)
        return now if now > tool_turn.spent_before else 0

    spent = eventually(
        spent_more, 90, f"the {BUDGET_POLICY} budget counter to move past {tool_turn.spent_before}"
    )
    assert spent - tool_turn.spent_before >= sum(
        int(row["cost_usd"] * 1_000_000) for row in claude_rows[:1]
    )


def _session_of(rows: list[dict[str, Any]]) -> str:
    """The one session id of a `claude -p` run's rows (a UUID); fails if they differ."""
    sessions = {r["session_id"] for r in rows}
    assert len(sessions) == 1, f"one run, several sessions: {sessions}"
    (session,) = sessions
    assert isinstance(session, str)
    assert str(uuid.UUID(session)) == session.lower()
    return session


def test_claude_codes_session_id_is_on_every_row_of_its_run(
    tool_turn: ToolTurn, example_gateway: ExampleGateway
) -> None:
    """Usage by session: the CLI's X-Claude-Code-Session-Id is each of its ledger rows'."""
    assert tool_turn.run.returncode == 0, tool_turn.run.describe()

    def claude_rows() -> list[dict[str, Any]]:
        rows = [
            r
            for r in _usage_rows(example_gateway, tool_turn.started)
            if r["requested_model"] == "fast-code" and r["ts"].timestamp() <= tool_turn.ended
        ]
        return rows if len(rows) >= 2 else []

    rows = eventually(claude_rows, 30, "usage rows of Claude Code's calls")
    _session_of(rows)


# --------------------------------------------------------------------------- a fleet machine


def test_a_fleet_machines_managed_settings_reach_the_gateway_through_the_key_helper(
    tool_turn: ToolTurn, example_gateway: ExampleGateway, kube: ApiClient, tmp_path: Path
) -> None:
    """Fleet rollout: `tenantctl onboard --format managed-settings` is all a machine needs.

    The settings file carries the gateway URL and the models; the key is only in the
    developer's own key file, printed by the apiKeyHelper. Nothing in the environment points
    Claude Code at the gateway. The pinned CLI reads managed settings only from the system
    path (/etc/claude-code), which a test on a shared machine must not write, so the same file
    is given with `--settings`.
    """
    gw = example_gateway
    info = onboard(kube, gw.tenant, "alice", base_url=gw.url)
    settings = tmp_path / "managed-settings.json"
    settings.write_text(info.managed_settings_json(gw.tenant))
    assert info.token not in settings.read_text()
    project, home = tmp_path / "project", tmp_path / "home"
    project.mkdir()
    seed_home(home, [project])
    key_file = home / ".config" / "tenantgw" / f"{gw.tenant}.key"
    key_file.parent.mkdir(parents=True)
    key_file.write_text(info.token + "\n")
    key_file.chmod(0o600)
    token = f"tgw-{secrets.token_hex(6)}"
    notes = project / "notes.txt"
    notes.write_text(f"The fleet codename is {token}.\n")
    # The simulated model reads the file (else it would call the first tool offered: Agent).
    gw.simulator.configure(tool_plan={"tool": "Read", "arguments": {"file_path": str(notes)}})
    started = time.time()
    try:
        run = run_claude(
            "What is the fleet codename in notes.txt?",
            project=project,
            home=home,
            gateway_env={},
            model="fast-code",
            settings=settings,
            max_retries=0,
        )
    except ClaudeCodeError as exc:
        pytest.fail(str(exc), pytrace=False)
    finally:
        gw.simulator.reset()
    assert run.returncode == 0, run.describe()
    assert run.result["is_error"] is False, run.describe()
    assert token in run.result["result"], run.describe()

    def fleet_rows() -> list[dict[str, Any]]:
        rows = [r for r in _usage_rows(gw, started) if r["requested_model"] == "fast-code"]
        return rows if rows else []

    rows = eventually(fleet_rows, 30, "usage rows of the fleet machine's run")
    assert {r["key_name"] for r in rows} == {"alice"}
    assert {r["status"] for r in rows} == {"success"}
    # Another `claude` run is another session.
    tool_rows = [
        r
        for r in _usage_rows(gw, tool_turn.started)
        if r["requested_model"] == "fast-code" and r["ts"].timestamp() <= tool_turn.ended
    ]
    assert _session_of(rows) != _session_of(tool_rows)


# --------------------------------------------------------------------------- the other endpoints


def test_count_tokens_answers_for_alice(example_gateway: ExampleGateway) -> None:
    """Claude Code's /v1/messages/count_tokens is served (locally, no upstream call)."""
    gw = example_gateway
    resp = httpx.post(
        f"{gw.url}/v1/messages/count_tokens",
        headers={"x-api-key": gw.keys["alice"], "anthropic-version": "2023-06-01"},
        json={
            "model": "fast-code",
            "messages": [{"role": "user", "content": "How many tokens is this sentence?"}],
        },
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["input_tokens"] > 0
    assert gw.simulator.requests() == []


@pytest.fixture(scope="module")
def other_tenants_key(kube: ApiClient, example_gateway: ExampleGateway) -> Iterator[str]:
    """A real key of another tenant, minted by the operator."""
    k8s = K8s(kube)
    ns = f"tenant-{OTHER_TENANT}"
    k8s.apply(
        tenant_body(
            OTHER_TENANT,
            providers=[
                {
                    "name": "sim",
                    "type": "openai-compatible",
                    "apiBase": example_gateway.simulator_url,
                    "region": "us-east-1",
                    "credentialsSecretRef": {"name": "sim", "key": "apiKey"},
                }
            ],
            keys=[{"name": "bob"}],
            gateway={"replicas": 1},
        )
    )
    try:
        eventually(lambda: k8s.namespace_exists(ns), 60, f"namespace {ns}")
        k8s.apply(secret_body(ns, "sim", {"apiKey": "sim-credential"}))
        key: str = eventually(
            lambda: k8s.secret_value(ns, "gateway-key-bob", "apiKey"), 60, "bob's key Secret"
        )
        yield key
    finally:
        k8s.delete("tenantgw.io/v1alpha1", "Tenant", OTHER_TENANT)


@pytest.mark.parametrize("which", ["another tenant's key", "a bogus key"])
def test_claude_code_with_a_foreign_key_fails_with_an_authentication_error(
    which: str,
    example_gateway: ExampleGateway,
    kube: ApiClient,
    other_tenants_key: str,
    tmp_path: Path,
) -> None:
    """Isolation: a key that is not this tenant's gets a clean 401, never a 500 or a reply."""
    gw = example_gateway
    key = other_tenants_key if which == "another tenant's key" else "sk-tgw-" + "0" * 43
    env = {**_onboarding_env(kube, gw), "ANTHROPIC_AUTH_TOKEN": key}
    project, home = tmp_path / "project", tmp_path / "home"
    project.mkdir()
    seed_home(home, [project])
    # Claude Code retries even a 401 about ten times with backoff; the first answer is the point.
    run = _claude("hello", project, home, env, max_retries=0, timeout=120)
    assert run.returncode != 0, run.describe()
    result = run.result
    assert result["is_error"] is True
    assert result["api_error_status"] == 401, run.describe()
    assert result["api_error_type"] == "authentication_error"
    assert "tenant engineering-team" in result["result"]
    assert gw.simulator.requests() == []


# --------------------------------------------------------------------------- thinking


def test_thinking_requests_reach_providers_without_anthropic_thinking(
    example_gateway: ExampleGateway,
) -> None:
    """Claude Code's adaptive thinking, and an explicit budget, work on OpenAI-type providers.

    LiteLLM would send a `/v1/messages` request with `thinking` for an `openai/` deployment to
    `{api_base}/responses`; the gateway takes `thinking` out for such aliases (an explicit
    budget becomes `reasoning_effort`), so the request goes to chat/completions.
    """
    gw = example_gateway
    client = anthropic.Anthropic(base_url=gw.url, api_key=gw.keys["alice"], max_retries=0)
    adaptive = client.messages.create(
        model="claude-sonnet-4-5",  # fast-code: OpenRouter and OpenAI targets
        max_tokens=256,
        thinking={"type": "adaptive"},
        messages=[{"role": "user", "content": "adaptive please"}],
    )
    assert adaptive.content[0].type == "text"
    explicit = client.messages.create(
        model="claude-haiku-4-5",  # documentation: OpenAI gpt-4o-mini
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "explicit please"}],
    )
    assert explicit.content[0].type == "text"

    upstream = {
        text: r
        for r in gw.simulator.requests()
        for text in ("adaptive please", "explicit please")
        if text in str(r["body"])
    }
    assert upstream["adaptive please"]["path"].endswith("/chat/completions")
    assert "reasoning_effort" not in upstream["adaptive please"]["body"]
    assert upstream["explicit please"]["path"].endswith("/chat/completions")
    assert upstream["explicit please"]["model"] == "gpt-4o-mini"
    # the budget became reasoning_effort "low", which LiteLLM drops for gpt-4o-mini (drop_params)
    assert upstream["explicit please"]["body"].get("reasoning_effort") in (None, "low")
    assert all("thinking" not in r["body"] for r in upstream.values())
