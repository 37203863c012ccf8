"""Claude Code in a terminal, as a developer uses it, through the example tenant's gateway.

The real CLI runs interactively in a tmux pane (e2e/claude_tui.py) with the environment
`tenantctl onboard` prints, in its default permission mode, auto mode. The gateway is the one the
operator rendered for the example tenant; its `fast-code` alias is served by open models (the
provider simulator plays them), and the Tenant's `spec.autoMode.classifierAlias` names
`safety-review`, whose model the simulator plays as a safety classifier: it flags running a
downloaded script and deleting the home directory, and nothing else.

What the developer sees is kept: every screen the test looked at goes to
`.dev/logs/claude-interactive-<test>.txt` and into the test's output.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from kubernetes.client import ApiClient

from e2e.claude import seed_home
from e2e.claude_tui import AutoModeStory, ClaudeSession, auto_mode_story
from e2e.fixtures import DEV
from e2e.gateway_fixture import ExampleGateway
from tenantgw.api.audit_trail import audit_schema
from tenantgw.cli.onboard import onboard

pytestmark = pytest.mark.e2e


@dataclass
class Session:
    """One interactive session of the whole story, and what it left on the screen."""

    story: AutoModeStory
    window: int
    """The context window `tenantctl onboard` handed Claude Code."""
    started: float


def _rows(gw: ExampleGateway, since: float) -> list[dict[str, Any]]:
    with psycopg.connect(gw.postgres_dsn, connect_timeout=5) as conn:
        cur = conn.execute(
            "select request_id, key_name, alias, status, session_id, parent_request_id,"
            " safeguard_verdicts from usage where ts >= to_timestamp(%s) order by ts",
            (since,),
        )
        names = [column.name for column in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _wait_rows(gw: ExampleGateway, since: float, done: Any) -> list[dict[str, Any]]:
    """The ledger rows since `since`, once `done(rows)` holds (the ledger writes in batches)."""
    deadline = time.monotonic() + 30
    rows = _rows(gw, since)
    while not done(rows) and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = _rows(gw, since)
    return rows


@pytest.fixture(scope="module")
def session(
    example_gateway: ExampleGateway, kube: ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Session]:
    gw = example_gateway
    project = tmp_path_factory.mktemp("project")
    home = tmp_path_factory.mktemp("home")
    seed_home(home, [project])
    onboarding = onboard(kube, gw.tenant, "alice", base_url=gw.url)
    transcript = DEV / "logs" / "claude-interactive.txt"
    transcript.parent.mkdir(parents=True, exist_ok=True)
    transcript.write_text("")
    gw.simulator.reset()
    started = time.time()
    # What `eval "$(tenantctl onboard ...)"` gives a developer: the environment, and `claude`
    # aliased to pass the aliases' context window in its settings.
    with ClaudeSession(
        project=project,
        home=home,
        gateway_env=onboarding.env(),
        args=tuple(onboarding.claude_args()),
        transcript=transcript,
    ) as claude:
        story = auto_mode_story(claude)
    print(transcript.read_text())
    assert story.session_id, f"/status shows no session id:\n{story.status}"
    yield Session(story=story, window=onboarding.context_window(), started=started)
    gw.simulator.reset()


def test_start_up_screen_knows_the_tenants_model(session: Session) -> None:
    """A developer onboarded with `tenantctl onboard` sees no unrecognized-model warning."""
    assert "isn't recognized" not in session.story.start, session.story.start
    assert "fast-code" in session.story.start


def test_harmless_command_runs_without_a_prompt(session: Session) -> None:
    """Auto mode gets the gateway's verdict: the command runs and nobody is asked."""
    assert "Tool said: 42" in session.story.harmless
    for prompt in ("Do you want to proceed", "can't check actions", "approve"):
        assert prompt not in session.story.harmless, session.story.harmless


def test_dangerous_command_is_blocked_by_the_server_verdict(session: Session) -> None:
    """The classifier flags running a downloaded script: Claude Code blocks it, no prompt."""
    assert "Blocked by auto mode" in session.story.dangerous, session.story.dangerous
    assert "Do you want to proceed" not in session.story.dangerous


def test_status_shows_the_server_check_on(session: Session) -> None:
    """`/status` after two reviewed turns: the server check reaches the session."""
    line = next(ln for ln in session.story.status.splitlines() if "Auto mode server:" in ln)
    assert re.search(r"Auto mode server:\s+Enabled", line), line


def test_picker_shows_the_aliases_by_their_display_names(session: Session) -> None:
    """`/model` lists the tenant's aliases under the names and descriptions of their
    ModelAliases (spec.displayName, spec.description), not bare deployment ids."""
    assert "Fast code" in session.story.picker, session.story.picker
    assert "Everyday coding" in session.story.picker, session.story.picker


def test_context_window_is_the_aliases_own(session: Session) -> None:
    """`/context` counts against the window `tenantctl onboard` found, not an assumed 1M."""
    shown = f"{session.window / 1000:.1f}k".replace(".0k", "k")
    assert shown in session.story.context, (shown, session.story.context)
    assert "1m" not in session.story.context.lower().replace("1m tokens", "")


def test_ledger_holds_the_session_and_the_verdicts(
    session: Session, example_gateway: ExampleGateway
) -> None:
    """Every request of the session is alice's, under Claude Code's session id; the
    classifier's calls are rows of their own, linked to the request they judged."""

    def done(rows: list[dict[str, Any]]) -> bool:
        verdicts = [r["safeguard_verdicts"] for r in rows if r["safeguard_verdicts"]]
        return len(verdicts) >= 2

    rows = _wait_rows(example_gateway, session.started, done)
    assert rows, "the session left no ledger row"
    assert {r["key_name"] for r in rows} == {"alice"}
    assert {r["session_id"] for r in rows} == {session.story.session_id}, rows
    judged = [r for r in rows if r["safeguard_verdicts"]]
    assert {r["alias"] for r in judged} == {"safety-review"}
    outcomes = sorted(v for r in judged for v in r["safeguard_verdicts"].values())
    assert outcomes == ["flagged", "not_flagged"], judged
    served = {r["request_id"] for r in rows}
    assert all(r["parent_request_id"] in served for r in judged), judged


def test_audit_trail_names_the_session_and_the_verdicts(
    session: Session, example_gateway: ExampleGateway
) -> None:
    """The tenant's audit trail (compliance.audit) holds the same story: each request of the
    session under its id, and each auto-mode check with the request it judged and its verdicts."""
    schema = audit_schema(example_gateway.tenant)

    def records() -> list[dict[str, Any]]:
        with psycopg.connect(example_gateway.postgres_dsn, connect_timeout=5) as conn:
            rows = conn.execute(
                f'select content from "{schema}".records where ts >= to_timestamp(%s)'  # noqa: S608
                " and kind = 'request' order by seq",
                (session.started,),
            ).fetchall()
        return [json.loads(row[0]) for row in rows]

    deadline = time.monotonic() + 30
    found = records()
    while sum(1 for r in found if r.get("safeguard_verdicts")) < 2:
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
        found = records()
    assert found, "the session left no audit record"
    assert {r["session_id"] for r in found} == {session.story.session_id}, found
    judged = [r for r in found if r.get("safeguard_verdicts")]
    outcomes = sorted(v for r in judged for v in r["safeguard_verdicts"].values())
    assert outcomes == ["flagged", "not_flagged"], judged
    assert all(r["parent_request_id"] for r in judged)
