"""Savings to the cent: Claude names served by cheaper models, as `tenantctl report` shows them.

The anthropic SDK asks the example tenant's gateway for `claude-opus-5-5` and
`claude-sonnet-4-5`, the names Claude Code sends and that the example's `fast-code` alias
answers to (80 % Qwen3-Coder at the catalog's price, 20 % GPT-4o-mini at LiteLLM's). Each
request's tokens are what the SDK reads in the response's usage, the model that served it is
what the provider simulator received, and the price arithmetic is done here from the sources
the platform names: LiteLLM's cost map of the pinned release for the Claude list prices and
GPT-4o-mini, examples/tenant.yaml's catalog for Qwen3-Coder. `tenantctl report` (the CLI, with
the admin DSN and the kubeconfig, as a platform engineer runs it) must report the same spend,
list cost and savings to the cent, per key, project and requested model, and the example's
BudgetPolicy (examples/budget.yaml, read from the cluster) in its burn-down.

The scenario's requests carry a session id of their own (`X-Claude-Code-Session-Id`), and the
report is grouped by session, so traffic of other tests in the same window does not count.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import anthropic
import psycopg
import pytest

from e2e.demo import traffic as demo_traffic
from e2e.fixtures import ROOT, Cluster, Services
from e2e.gateway_fixture import ExampleGateway, load_examples

pytestmark = pytest.mark.e2e

SESSION_HEADER = "X-Claude-Code-Session-Id"
PROJECT_HEADER = "X-Project"  # examples/tenant.yaml spec.costLabels.header
LONG_REPLY = (
    "Here is the plan for the change you asked about. First, move the queue consumer behind "
    "an interface so the retry policy can be swapped in tests. Second, bound the batch size "
    "by bytes rather than by items, since a few large messages dominate the latency tail. "
    "Third, record the time each message waited in the queue and alert on its percentile. "
) * 6
FILLER = (
    "the checkout service reads orders from a queue and writes receipts to the ledger while "
    "the search service indexes catalogs overnight and answers queries within a few hundred "
    "milliseconds for every storefront of the company "
)


@dataclass(frozen=True)
class Planned:
    key: str
    model: str  # the Claude name the client asks for
    project: str | None  # the X-Project header, None: the key's own label
    stream: bool
    words: int  # prompt length


# 17 requests: Opus and Sonnet names, both keys, a project chosen per request, two streams.
PLAN: tuple[Planned, ...] = (
    *(Planned("alice", "claude-opus-5-5", None, False, 3000 + 1400 * i) for i in range(5)),
    Planned("alice", "claude-opus-5-5", None, True, 8400),
    Planned("alice", "claude-opus-5-5", "search", True, 5200),
    *(Planned("alice", "claude-sonnet-4-5", None, False, 4000 + 1800 * i) for i in range(4)),
    Planned("alice", "claude-sonnet-4-5", "search", False, 10400),
    Planned("alice", "claude-sonnet-4-5", "search", False, 6200),
    *(Planned("ci", "claude-opus-5-5", None, False, 6000 + 1000 * i) for i in range(3)),
    Planned("ci", "claude-sonnet-4-5", "checkout", False, 4800),  # overrides the key's ci
)
KEY_PROJECT = {"alice": "checkout", "ci": "ci"}  # examples/tenant.yaml spec.keys[].labels


@dataclass(frozen=True)
class Served:
    planned: Planned
    served_model: str  # what the simulator received
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int

    @property
    def project(self) -> str:
        return self.planned.project or KEY_PROJECT[self.planned.key]


# --------------------------------------------------------------------------- prices


def litellm_cost_map() -> dict[str, Any]:
    """LiteLLM's cost map as the pinned release ships it (no network fetch)."""
    import importlib.util

    spec = importlib.util.find_spec("litellm")
    assert spec is not None
    assert spec.origin is not None
    path = Path(spec.origin).parent / "model_prices_and_context_window_backup.json"
    cost_map: dict[str, Any] = json.loads(path.read_text())
    return cost_map


def per_token_prices() -> dict[str, tuple[Decimal, Decimal]]:
    """(input, output) USD per token: Claude list prices, GPT-4o-mini, the catalog's Qwen."""
    cost_map = litellm_cost_map()
    prices = {}
    for model in ("claude-opus-5-5", "claude-sonnet-4-5", "gpt-4o-mini"):
        entry = cost_map[model]
        prices[model] = (
            Decimal(str(entry["input_cost_per_token"])),
            Decimal(str(entry["output_cost_per_token"])),
        )
    tenant = load_examples()["tenant"][0]
    qwen = next(e for e in tenant["spec"]["catalog"] if e["model"] == "qwen/qwen3-coder")
    million = Decimal(1_000_000)
    prices["qwen/qwen3-coder"] = (
        Decimal(str(qwen["pricing"]["inputPerMillion"])) / million,
        Decimal(str(qwen["pricing"]["outputPerMillion"])) / million,
    )
    return prices


def cost(prices: dict[str, tuple[Decimal, Decimal]], model: str, s: Served) -> Decimal:
    assert (s.cache_read_tokens, s.cache_write_tokens) == (0, 0), "no cache in this scenario"
    price_in, price_out = prices[model]
    return price_in * s.input_tokens + price_out * s.output_tokens


def cents(value: Decimal | float) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


# --------------------------------------------------------------------------- running it


def prompt(marker: str, words: int) -> str:
    filler = FILLER.split()
    return f"{marker}: " + " ".join(filler[i % len(filler)] for i in range(words))


def served_model(gw: ExampleGateway, marker: str) -> str:
    """The model the simulator received the request marked `marker` for."""
    hits = [
        r["model"]
        for r in gw.simulator.requests()
        if marker in json.dumps(r.get("body"), ensure_ascii=False)
    ]
    assert len(hits) == 1, f"{marker}: the simulator received {len(hits)} requests"
    model = str(hits[0])
    for known in ("qwen/qwen3-coder", "gpt-4o-mini"):
        if model.endswith(known):
            return known
    raise AssertionError(f"{marker} was served by {model}, not a fast-code target")


def send(gw: ExampleGateway, session: str, planned: Planned, n: int) -> Served:
    headers = {SESSION_HEADER: session}
    if planned.project is not None:
        headers[PROJECT_HEADER] = planned.project
    client = anthropic.Anthropic(
        base_url=gw.url, api_key=gw.keys[planned.key], max_retries=0, default_headers=headers
    )
    marker = f"{session}-req-{n}"
    messages: list[Any] = [{"role": "user", "content": prompt(marker, planned.words)}]
    if planned.stream:
        with client.messages.stream(
            model=planned.model, max_tokens=2048, messages=messages
        ) as stream:
            text = "".join(stream.text_stream)
            usage = stream.get_final_message().usage
    else:
        reply = client.messages.create(model=planned.model, max_tokens=2048, messages=messages)
        text = "".join(b.text for b in reply.content if b.type == "text")
        usage = reply.usage
    assert text.strip() == LONG_REPLY.strip()
    return Served(
        planned=planned,
        served_model=served_model(gw, marker),
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_input_tokens or 0,
        cache_write_tokens=usage.cache_creation_input_tokens or 0,
    )


def tenantctl(cluster: Cluster, services: Services, *args: str) -> str:
    """`tenantctl ...` as a platform engineer runs it: the admin DSN and kubeconfig."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'operator'}{os.pathsep}{ROOT}",
        "TENANTGW_POSTGRES_DSN": services.postgres_dsn,
        "KUBECONFIG": str(cluster.kubeconfig),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tenantgw.cli.main", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"tenantctl {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def ledger_count(gw: ExampleGateway, session: str) -> int:
    with psycopg.connect(gw.postgres_dsn, connect_timeout=5) as conn:
        row = conn.execute("select count(*) from usage where session_id = %s", (session,))
        return int(row.fetchone()[0])  # type: ignore[index]


@dataclass
class Scenario:
    session: str
    started: datetime
    served: list[Served]


@pytest.fixture(scope="module")
def scenario(example_gateway: ExampleGateway) -> Scenario:
    """The scripted requests, sent once; every row of the session in the ledger."""
    gw = example_gateway
    session = f"savings-{secrets.token_hex(6)}"
    started = datetime.now(UTC) - timedelta(seconds=5)
    previous_reply = gw.simulator.sim.config.reply
    gw.simulator.configure(reply=LONG_REPLY)
    try:
        served = [send(gw, session, planned, n) for n, planned in enumerate(PLAN)]
    finally:
        gw.simulator.configure(reply=previous_reply)
    deadline = time.monotonic() + 60
    while ledger_count(gw, session) < len(PLAN) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ledger_count(gw, session) == len(PLAN)
    return Scenario(session=session, started=started, served=served)


def report_json(cluster: Cluster, services: Services, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        tenantctl(cluster, services, "report", "engineering-team", "--format", "json", *args)
    )
    return result


# --------------------------------------------------------------------------- the tests


def test_report_shows_the_savings_of_the_price_arithmetic_to_the_cent(
    scenario: Scenario, cluster: Cluster, services: Services
) -> None:
    prices = per_token_prices()
    served = scenario.served
    # both targets of fast-code, never the Claude model asked for
    assert {s.served_model for s in served} <= {"qwen/qwen3-coder", "gpt-4o-mini"}
    assert all(s.input_tokens > 1000 and s.output_tokens > 300 for s in served)

    expected: dict[tuple[str, str, str], dict[str, Any]] = defaultdict(
        lambda: {"requests": 0, "cost": Decimal(0), "list": Decimal(0), "in": 0, "out": 0}
    )
    for s in served:
        group = expected[(s.planned.key, s.project, s.planned.model)]
        group["requests"] += 1
        group["cost"] += cost(prices, s.served_model, s)
        group["list"] += cost(prices, s.planned.model, s)
        group["in"] += s.input_tokens
        group["out"] += s.output_tokens

    report = report_json(
        cluster,
        services,
        "--since",
        scenario.started.isoformat(),
        "--by",
        "session,key,project,requested",
    )
    mine = {
        (g["key"], g["project"], g["requested"]): g
        for g in report["groups"]
        if g["session"] == scenario.session
    }
    assert set(mine) == set(expected)
    for where, want in expected.items():
        got = mine[where]
        assert got["requests"] == want["requests"], where
        assert got["errors"] == 0, where
        assert (got["input_tokens"], got["output_tokens"]) == (want["in"], want["out"]), where
        assert cents(got["cost_usd"]) == cents(want["cost"]), where
        assert cents(got["list_cost_usd"]) == cents(want["list"]), where
        assert cents(got["savings_usd"]) == cents(want["list"] - want["cost"]), where
        # and beyond the cent: the ledger keeps 10 decimals
        assert abs(Decimal(str(got["cost_usd"])) - want["cost"]) < Decimal("1e-8"), where
        assert abs(Decimal(str(got["list_cost_usd"])) - want["list"]) < Decimal("1e-8"), where

    total_cost = sum((g["cost"] for g in expected.values()), Decimal(0))
    total_list = sum((g["list"] for g in expected.values()), Decimal(0))
    got_cost = sum(Decimal(str(g["cost_usd"])) for g in mine.values())
    got_list = sum(Decimal(str(g["list_cost_usd"])) for g in mine.values())
    assert cents(got_cost) == cents(total_cost)
    assert cents(got_list) == cents(total_list)
    assert cents(got_list - got_cost) == cents(total_list - total_cost)
    assert total_list > Decimal("0.50"), "the scenario should be worth real cents"
    # Opus and Sonnet served by Qwen3-Coder / GPT-4o-mini: well past the KPI's 40 %.
    pct = 100 * (total_list - total_cost) / total_list
    assert pct > 90
    by_session = report_json(
        cluster, services, "--since", scenario.started.isoformat(), "--by", "session"
    )
    session = next(g for g in by_session["groups"] if g["session"] == scenario.session)
    assert session["requests"] == len(PLAN)
    assert session["unpriced_cost_usd"] == 0
    assert session["savings_pct"] == pytest.approx(float(pct), abs=0.01)
    print(
        f"\nscenario {scenario.session}: {len(PLAN)} requests, spent ${total_cost:.6f}, "
        f"Claude list price ${total_list:.6f}, saved ${total_list - total_cost:.6f} "
        f"({pct:.2f} %)"
    )
    for (key, project, model), g in sorted(expected.items()):
        print(
            f"  {key:5} {project:8} {model:17} {g['requests']:2} req  in {g['in']:6} "
            f"out {g['out']:5}  cost ${g['cost']:.6f}  list ${g['list']:.6f}"
        )


def test_project_header_lands_in_the_report_or_is_refused_naming_it(
    scenario: Scenario, example_gateway: ExampleGateway, cluster: Cluster, services: Services
) -> None:
    """X-Project among the Tenant's values lands under that project; any other value is a 400
    naming the header, before any provider is asked, and leaves no ledger row."""
    gw = example_gateway
    report = report_json(
        cluster, services, "--since", scenario.started.isoformat(), "--by", "session,project,key"
    )
    projects = {
        (g["project"], g["key"]): g["requests"]
        for g in report["groups"]
        if g["session"] == scenario.session
    }
    # alice's key says checkout, ci's says ci; the header moved some of each elsewhere
    assert projects == {
        ("checkout", "alice"): 10,
        ("search", "alice"): 3,
        ("ci", "ci"): 3,
        ("checkout", "ci"): 1,
    }

    session = f"refused-{secrets.token_hex(6)}"
    before = len(gw.simulator.requests())
    # lower-case header names are the same header (HTTP); values are exact, case included
    for header, value in (
        ("X-Project", "marketing"),
        ("x-project", "Search"),
        ("X-Project", ""),
        ("X-Project", "checkout,search"),
    ):
        client = anthropic.Anthropic(
            base_url=gw.url,
            api_key=gw.keys["alice"],
            max_retries=0,
            default_headers={header: value, SESSION_HEADER: session},
        )
        with pytest.raises(anthropic.BadRequestError) as refused:
            client.messages.create(
                model="claude-opus-5-5",
                max_tokens=64,
                messages=[{"role": "user", "content": f"{session}: charge this elsewhere"}],
            )
        assert refused.value.status_code == 400
        body = refused.value.body
        assert isinstance(body, dict), body
        assert body.get("type") == "error", body
        error = body["error"]
        assert error["type"] == "invalid_request_error"
        assert "header x-project:" in error["message"].lower(), error
        assert "checkout, search, ci" in error["message"], error
    assert not any(
        session in json.dumps(r.get("body")) for r in gw.simulator.requests()[before:]
    ), "a refused request reached a provider"
    time.sleep(2)  # the ledger writer flushes within a second: nothing of this session comes
    assert ledger_count(gw, session) == 0


def test_burn_down_reads_the_example_budget_policy_from_the_cluster(
    scenario: Scenario,
    example_gateway: ExampleGateway,
    cluster: Cluster,
    services: Services,
    tmp_path: Path,
) -> None:
    """examples/budget.yaml's engineering-daily: its limit, thresholds and today's spend (SQL
    over the same ledger up to the report's --until), in json and as the html's plot."""
    gw = example_gateway
    until = datetime.now(UTC)
    day_start = until.replace(hour=0, minute=0, second=0, microsecond=0)

    def spent_sql() -> Decimal:
        with psycopg.connect(gw.postgres_dsn, connect_timeout=5) as conn:
            row = conn.execute(
                "select coalesce(sum(cost_usd), 0) from usage where ts >= %s and ts < %s",
                (day_start, until),
            ).fetchone()
        assert row is not None
        return Decimal(row[0])

    # A stray row of an earlier test could still land before `until`: read until it is stable.
    for _ in range(5):
        first = spent_sql()
        report = report_json(cluster, services, "--until", until.isoformat(), "--by", "session")
        if spent_sql() == first:
            break
        time.sleep(2)
    budgets = {b["name"]: b for b in report["budgets"]}
    assert set(budgets) == {"engineering-daily"}
    budget = budgets["engineering-daily"]
    assert budget["scope"] == "Tenant"
    assert budget["period"] == "daily"
    assert budget["limit_usd"] == 100
    assert budget["thresholds"] == [50, 80, 100]
    assert datetime.fromisoformat(budget["period_start"]) == day_start
    assert datetime.fromisoformat(budget["period_end"]) == day_start + timedelta(days=1)
    assert abs(Decimal(str(budget["spent_usd"])) - first) < Decimal("1e-8")
    scenario_spend = next(
        Decimal(str(g["cost_usd"])) for g in report["groups"] if g["session"] == scenario.session
    )
    assert Decimal(str(budget["spent_usd"])) >= scenario_spend > 0

    table = tenantctl(cluster, services, "report", "engineering-team", "--until", until.isoformat())
    assert re.search(
        r"budget engineering-daily \(Tenant, daily\): \$[\d,.]+ of \$100 \([\d.]+%\), "
        r"thresholds 50%, 80%, 100%",
        table,
    ), table

    page = tmp_path / "report.html"
    plots = tmp_path / "plots"
    tenantctl(
        cluster, services, "report", "engineering-team", "--format", "html",
        "-o", str(page), "--plot", str(plots), "--until", until.isoformat(),
    )  # fmt: skip
    html = page.read_text()
    figure = re.search(
        r'<figure id="budget-burn-down"><img[^>]*src="data:image/png;base64,([^"]+)"', html
    )
    assert figure is not None, "no burn-down plot in the html"
    png = base64.b64decode(figure.group(1))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert png == (plots / "budget-burn-down.png").read_bytes()
    # the plot drew the policy (a report without policies draws an empty frame)
    empty = tenantctl_png_without_budgets(cluster, services, until, tmp_path)
    assert png != empty


def tenantctl_png_without_budgets(
    cluster: Cluster, services: Services, until: datetime, tmp_path: Path
) -> bytes:
    plots = tmp_path / "plots-no-budgets"
    tenantctl(
        cluster, services, "report", "engineering-team", "--no-budgets", "--plot", str(plots),
        "--until", until.isoformat(), "--format", "csv",
    )  # fmt: skip
    return (plots / "budget-burn-down.png").read_bytes()


def test_demo_traffic_and_its_report_in_a_headless_browser(
    example_gateway: ExampleGateway, cluster: Cluster, services: Services, tmp_path: Path
) -> None:
    """`make demo`'s traffic (e2e/demo/traffic.py) through the example gateway: every request
    served, the refused project named; the report's totals are SQL's over the same ledger, and
    its html opens in headless Chromium with the four plots."""
    gw = example_gateway
    since = datetime.now(UTC) - timedelta(seconds=2)
    calls = demo_traffic.plan()
    assert len(calls) >= 30
    assert {c.key for c in calls} == {"alice", "ci"}
    sent = demo_traffic.send_traffic(gw.url, gw.keys, calls)
    assert sent.sent == len(calls)
    assert set(sent.by_project) == {"checkout", "search", "ci"}
    assert "header x-project:" in sent.refusal.lower()
    assert "'marketing'" in sent.refusal
    until = datetime.now(UTC) + timedelta(seconds=1)
    aliases = {"fast-code", "documentation", "reasoning", "refactoring", "security-analysis"}

    def window() -> list[tuple[Any, ...]]:
        with psycopg.connect(gw.postgres_dsn, connect_timeout=5) as conn:
            return conn.execute(
                "select key_name, labels->>'project', alias, status, cost_usd, list_cost_usd"
                " from usage where ts >= %s and ts < %s",
                (since, until),
            ).fetchall()

    deadline = time.monotonic() + 60
    rows = window()
    while len(rows) < len(calls) and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = window()
    # The ledger names the alias that served: each one's own provider, no fallback alias.
    assert {r[2] for r in rows if r[3] == "success"} == aliases
    projects: dict[tuple[str, str], int] = defaultdict(int)
    for key, project, *_ in rows:
        projects[(key, project)] += 1
    assert projects[("alice", "search")] >= 7
    assert projects[("ci", "checkout")] >= 3
    assert projects[("ci", "search")] >= 2
    time.sleep(2)  # let the last rows of the window land before comparing totals
    rows = window()
    report = report_json(
        cluster, services, "--since", since.isoformat(), "--until", until.isoformat(),
        "--by", "key,project,alias",
    )  # fmt: skip
    total = report["total"]
    assert total["requests"] == len(rows)
    assert total["errors"] == sum(1 for r in rows if r[3] != "success")
    assert abs(Decimal(str(total["cost_usd"])) - sum(r[4] for r in rows)) < Decimal("1e-8")
    listed = sum(r[5] for r in rows if r[5] is not None)
    assert abs(Decimal(str(total["list_cost_usd"])) - listed) < Decimal("1e-8")
    unpriced = sum(r[4] for r in rows if r[5] is None)
    assert abs(Decimal(str(total["unpriced_cost_usd"])) - unpriced) < Decimal("1e-8")

    page = tmp_path / "report.html"
    tenantctl(
        cluster, services, "report", "engineering-team", "--format", "html", "-o", str(page),
        "--since", since.isoformat(), "--until", until.isoformat(), "--by", "key,project",
    )  # fmt: skip
    browser = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    if browser is None:
        pytest.fail("chromium-headless-shell is not installed: run make setup")
    dom = subprocess.run(
        [browser, "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    for plot in ("spend-over-time", "spend-by-model", "budget-burn-down", "savings"):
        assert f'<figure id="{plot}">' in dom.stdout, plot
    shown = re.search(r'<b id="total-cost">([\d.]+)</b>', dom.stdout)
    assert shown is not None
    assert Decimal(shown.group(1)) == Decimal(str(total["cost_usd"])).quantize(Decimal("1e-6"))
    shot = tmp_path / "report.png"
    subprocess.run(
        [browser, "--no-sandbox", "--disable-gpu", "--window-size=1400,1800",
         f"--screenshot={shot}", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
