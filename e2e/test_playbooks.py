"""The model selection and cost playbooks hold: their YAML runs, their commands print as shown.

docs/model-selection.md and docs/cost-optimization.md are run as written (e2e/playbooks.py):
their `apply` blocks are the tenant this test applies to the real control plane (the operator
reconciles it), its gateway runs from exactly what its pod would mount (`tenantctl dev
gateway`) in front of the provider simulator (OpenRouter and Anthropic, each on its own wire
protocol), and the anthropic SDK sends what Claude Code sends, in three phases the docs name
by time (09:00 the A/B, 10:00 the Claude Code jobs, 11:00 the cost levers). Then every
`console` block runs against that tenant (tenantctl, psql, kubectl as a platform engineer) and
its output must be the documented one. Beside the text, the outcomes each doc states are
asserted from the ledger: the background call served by the low-tier alias, the fallback on
the other protocol, the A/B split by chi-square, the downgrade after the key's budget, the
cache read cheaper than the write.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from subprocess import Popen
from typing import Any

import anthropic
import psycopg
import pytest
from kubernetes.client import ApiClient

from e2e import playbooks
from e2e.fixtures import DEV, ROOT, Cluster, Services
from e2e.gateway_fixture import simulator_upstreams, wait_ready
from e2e.helpers import K8s, eventually, secret_body
from e2e.operator_fixture import RunningOperator, free_port
from e2e.provider_sim import SimulatorHandle, start_simulator
from tenantgw.cli import devgateway

pytestmark = pytest.mark.e2e

MODEL_SELECTION, COST = playbooks.checked_docs(ROOT)
PHASES = ("2026-03-02T09:00Z", "2026-03-02T10:00Z", "2026-03-02T11:00Z")
"""The times the docs give to the run's three phases: A/B, Claude Code jobs, cost levers."""
REPLY = (
    "Done. The retry policy now lives behind an interface, the batch is bounded by bytes, and "
    "the time each message waits in the queue is recorded so that its percentile can alert. "
) * 3
FILLER = "the checkout service reads orders from a queue and writes receipts to the ledger "
AB_REQUESTS = 60
CHI2_CRITICAL_1DF_P001 = 10.828
SYSTEM_PROMPT = ("You are Claude Code, working in the checkout repository. " * 150)[:8000]


@dataclass
class Playbook:
    tenant: str
    namespace: str
    url: str
    keys: dict[str, str]
    postgres_dsn: str
    simulator: SimulatorHandle
    sub: playbooks.Substitution


def prompt(tag: str, chars: int) -> str:
    return f"{tag}: " + (FILLER * (chars // len(FILLER) + 1))[:chars]


def client(pb: Playbook, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=pb.url, api_key=pb.keys[key], max_retries=0)


def ask(pb: Playbook, key: str, model: str, text: str, **extra: Any) -> None:
    reply = client(pb, key).messages.create(
        model=model, max_tokens=extra.pop("max_tokens", 1024), messages=[
            {"role": "user", "content": text}
        ], **extra,
    )  # fmt: skip
    assert any(b.type == "text" for b in reply.content), reply


def ledger_rows(pb: Playbook) -> int:
    with psycopg.connect(pb.postgres_dsn, connect_timeout=5) as conn:
        row = conn.execute("select count(*) from usage").fetchone()
    assert row is not None
    return int(row[0])


def boundary(pb: Playbook, rows: int) -> datetime:
    """Wait until the ledger holds `rows` rows; the time after them (the next phase starts)."""
    eventually(lambda: ledger_rows(pb) >= rows, 60, f"{rows} ledger rows")
    assert ledger_rows(pb) == rows
    time.sleep(0.05)  # a row's ts is its request's start: keep the phases apart
    when = datetime.now(UTC)
    time.sleep(0.05)
    return when


def send_phases(pb: Playbook) -> dict[str, datetime]:
    times: list[datetime] = [datetime.now(UTC)]
    time.sleep(0.05)
    # 09:00 the A/B of model-selection.md
    for i in range(AB_REQUESTS):
        ask(pb, "alice", "ab-code", prompt(f"ab-{i}", 2000))
    rows = AB_REQUESTS
    times.append(boundary(pb, rows))
    # 10:00 Claude Code's jobs: main loop, background calls, thinking, long context, fallback
    for i in range(3):
        ask(pb, "alice", "claude-sonnet-4-5", prompt(f"main-{i}", 12000))
    for i in range(3):
        ask(pb, "alice", "claude-haiku-4-5-20251001", prompt(f"title-{i}", 1200))
    ask(
        pb, "alice", "claude-sonnet-4-5", prompt("think", 6000), max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 1024},
    )  # fmt: skip
    ask(pb, "alice", "claude-sonnet-4-5", prompt("long", 260_000))
    pb.simulator.configure(fail_models={"qwen/qwen3-coder": "503"})
    try:
        ask(pb, "alice", "claude-sonnet-4-5", prompt("main-fallback", 12000))
    finally:
        pb.simulator.configure(fail_models={})
    rows += 9
    times.append(boundary(pb, rows))
    # 11:00 the levers of cost-optimization.md: ci's budget, prompt caching
    for i in range(6):
        ask(pb, "ci", "claude-sonnet-4-5", prompt(f"ci-{i}", 40000))
    for i in range(2):
        ask(
            pb, "alice", "reasoning", f"cache-{i}: what changed?",
            system=[{"type": "text", "text": SYSTEM_PROMPT,
                     "cache_control": {"type": "ephemeral"}}],
        )  # fmt: skip
    rows += 8
    eventually(lambda: ledger_rows(pb) >= rows, 60, f"{rows} ledger rows")
    assert ledger_rows(pb) == rows
    return dict(zip(PHASES, times, strict=True))


@pytest.fixture(scope="module")
def playbook(kube: ApiClient, cluster: Cluster, operator: RunningOperator) -> Iterator[Playbook]:
    k8s = K8s(kube)
    name = f"checkout-team-{secrets.token_hex(3)}"
    sub = playbooks.Substitution(name, {})
    objects = [o for doc in (MODEL_SELECTION, COST) for o in playbooks.apply_objects(doc, sub)]
    tenant = next(o for o in objects if o["kind"] == "Tenant")
    namespace = tenant["spec"]["namespace"]
    assert namespace == f"tenant-{name}"
    k8s.apply(tenant)
    simulator: SimulatorHandle | None = None
    process: Popen[bytes] | None = None
    try:
        eventually(lambda: k8s.namespace_exists(namespace), 30, f"namespace {namespace}")
        for secret in ("openrouter", "anthropic"):
            k8s.apply(secret_body(namespace, secret, {"apiKey": f"{secret}-{name}"}))
        for obj in objects:
            if obj["kind"] != "Tenant":
                k8s.apply(obj)
        k8s.wait_condition(lambda: k8s.tenant(name), "Ready", "True", timeout=90)
        k8s.wait_condition(lambda: k8s.alias(namespace, "ab-code"), "Accepted", "True", 60)
        _, simulator = start_simulator(reply=REPLY)
        port = free_port()
        spec = devgateway.build_spec(
            kube, name, workdir=DEV / "gateways" / name, port=port,
            upstreams=simulator_upstreams(tenant, simulator.root_url),
        )  # fmt: skip
        spec.env["PYTHONPATH"] = str(ROOT / "operator")
        log_file = DEV / "logs" / f"gateway-{name}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        process = devgateway.run(spec, log_file=log_file)
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process, log_file)
        pb = Playbook(
            tenant=name,
            namespace=namespace,
            url=url,
            keys={
                key: k8s.secret_value(namespace, f"gateway-key-{key}", "apiKey")
                for key in ("alice", "ci")
            },
            postgres_dsn=k8s.secret_value(namespace, "gateway", "postgresDsn"),
            simulator=simulator,
            sub=sub,
        )
        pb.sub = playbooks.Substitution(name, send_phases(pb))
        # The operator's budget loop writes the downgrade into the policy's status.
        eventually(
            lambda: (
                k8s.custom.get_namespaced_custom_object(
                    "tenantgw.io", "v1alpha1", namespace, "budgetpolicies", "ci-daily"
                )
                .get("status", {})
                .get("state")
                == "Exceeded"
            ),
            120,
            "ci-daily Exceeded",
        )
        yield pb
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except Exception:
                process.kill()
        if simulator is not None:
            simulator.stop()
        k8s.delete("tenantgw.io/v1alpha1", "Tenant", name)


def shell_env(cluster: Cluster, services: Services) -> dict[str, str]:
    env = cluster.env()
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env['PATH']}"
    env["PYTHONPATH"] = f"{ROOT / 'operator'}{os.pathsep}{ROOT}"
    env["TENANTGW_POSTGRES_DSN"] = services.postgres_dsn
    return env


def rows(pb: Playbook, where: str = "true") -> list[dict[str, Any]]:
    with psycopg.connect(pb.postgres_dsn, connect_timeout=5) as conn:
        found = conn.execute(f"select to_jsonb(u) from usage u where {where} order by ts")  # noqa: S608
        return [r[0] for r in found.fetchall()]


def in_phase(pb: Playbook, row: dict[str, Any], phase: int) -> bool:
    ts = datetime.fromisoformat(row["ts"])
    times = list(pb.sub.times.values())
    return times[phase] <= ts and (phase + 1 == len(times) or ts < times[phase + 1])


# --------------------------------------------------------------------------- the tests


def test_model_selection_playbook_runs_as_written(
    playbook: Playbook, cluster: Cluster, services: Services
) -> None:
    pb = playbook
    problems = playbooks.run_commands(MODEL_SELECTION, pb.sub, shell_env(cluster, services), ROOT)
    assert not problems, "\n\n".join(problems)

    jobs = [r for r in rows(pb) if in_phase(pb, r, 1)]
    served = {(r["requested_model"], r["alias"], r["provider_model"]) for r in jobs}
    assert served == {
        ("claude-sonnet-4-5", "fast-code", "qwen/qwen3-coder"),
        ("claude-haiku-4-5-20251001", "background", "deepseek/deepseek-chat"),
        ("claude-sonnet-4-5", "reasoning", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5", "long-context", "google/gemini-2.5-flash"),
        ("claude-sonnet-4-5", "anthropic-haiku", "claude-haiku-4-5"),
    }, served
    assert all(r["status"] == "success" and float(r["cost_usd"]) > 0 for r in jobs), jobs
    # the fallback crossed protocols: OpenRouter (OpenAI wire) failed, Anthropic answered
    (fallback,) = [r for r in jobs if r["failed_attempts"]]
    assert fallback["alias"] == "anthropic-haiku"
    assert [a["provider"] for a in fallback["failed_attempts"]] == ["openrouter"]
    protocols = {
        c["protocol"] for c in pb.simulator.requests() if "main-fallback" in json.dumps(c["body"])
    }
    assert protocols == {"openai", "anthropic"}, protocols
    # the background calls cost less than a tenth of what Claude Haiku would have charged
    background = [r for r in jobs if r["alias"] == "background"]
    assert sum(float(r["cost_usd"]) for r in background) * 4 < sum(
        float(r["list_cost_usd"]) for r in background
    )
    # the A/B: both arms served, the split within chance of 50/50
    ab = Counter(r["provider_model"] for r in rows(pb) if in_phase(pb, r, 0))
    assert sum(ab.values()) == AB_REQUESTS
    assert set(ab) == {"qwen/qwen3-coder", "deepseek/deepseek-chat"}, ab
    expected = AB_REQUESTS / 2
    chi2 = sum((n - expected) ** 2 / expected for n in ab.values())
    assert chi2 < CHI2_CRITICAL_1DF_P001, ab


def test_cost_playbook_runs_as_written(
    playbook: Playbook, cluster: Cluster, services: Services
) -> None:
    pb = playbook
    problems = playbooks.run_commands(COST, pb.sub, shell_env(cluster, services), ROOT)
    assert not problems, "\n\n".join(problems)

    levers = [r for r in rows(pb) if in_phase(pb, r, 2)]
    ci = [r for r in levers if r["key_name"] == "ci"]
    # the first requests within the limit stay on fast-code, every one after goes to the low
    # tier, and the downgrade is recorded
    aliases = [r["alias"] for r in ci]
    first = aliases.index("background")
    assert first >= 1, aliases
    assert set(aliases[:first]) == {"fast-code"}, aliases
    assert set(aliases[first:]) == {"background"}, aliases
    assert {r["downgraded_from"] for r in ci[first:]} == {"fast-code"}
    spent_before = sum(float(r["cost_usd"]) for r in ci[:first])
    (policy,) = [o for o in playbooks.apply_objects(COST, pb.sub) if o["kind"] == "BudgetPolicy"]
    limit = float(policy["spec"]["limitUSD"])
    assert spent_before >= limit > spent_before - float(ci[first - 1]["cost_usd"])
    # caching: the second request reads what the first wrote, and costs less
    cached = [r for r in levers if r["alias"] == "reasoning"]
    assert len(cached) == 2
    assert cached[0]["cache_write_tokens"] > 1024
    assert cached[0]["cache_read_tokens"] == 0
    assert cached[1]["cache_read_tokens"] == cached[0]["cache_write_tokens"]
    assert float(cached[1]["cost_usd"]) < float(cached[0]["cost_usd"]) / 2


def test_the_runner_catches_a_wrong_output(
    playbook: Playbook, cluster: Cluster, services: Services, tmp_path: Path
) -> None:
    """The check can fail: a doc whose documented output differs, or whose command fails, is
    reported (and a masked block still catches a different line)."""
    doc = tmp_path / "wrong.md"
    doc.write_text(
        "<!-- playbook: run exact -->\n```console\n$ kubectl -n tenant-checkout-team get "
        "modelalias eu-sonnet -o jsonpath='{.metadata.name}'\nus-sonnet\n```\n\n"
        "<!-- playbook: run shape -->\n```console\n$ echo 12 requests\n3 errors\n```\n\n"
        "<!-- playbook: run exact -->\n```console\n$ tenantctl report no-such-tenant\n```\n"
    )
    if playbooks.UPDATE:
        pytest.skip("the runner rewrites docs in update mode")
    problems = playbooks.run_commands(doc, playbook.sub, shell_env(cluster, services), ROOT)
    assert len(problems) == 4, problems
    assert "eu-sonnet" in problems[0]
    assert "us-sonnet" in problems[0]
    assert "12 requests" in problems[1]
    assert "failed" in problems[2]
