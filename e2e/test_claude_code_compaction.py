"""A long Claude Code session compacts before the upstream's context window refuses it.

The tenant's only model has a 64k-token window, set once in the Tenant's catalog
(`contextWindow`) and enforced by the simulator as OpenAI does (prompt plus `max_tokens`,
tiktoken counts, 400 `context_length_exceeded` beyond). `tenantctl onboard`'s arguments hand
Claude Code (the pinned CLI, headless) that window and an answer size that fits in it. Each
`claude -p --continue` run has the model Read a ~14k-token file and answer with its text:
the conversation grows by about 28k tokens a run, far beyond the window over five runs. When
Claude Code compacts in the middle of a run (after the tool result), the simulated model
answers the continued conversation with plain text: the run still ends without an error.

What a compaction looks like, read from the CLI (strings of the pinned binary, see
`COMPACTION_PROMPT` and `CONTINUATION`): Claude Code sends the whole conversation with its
summary prompt ("Your task is to create a detailed summary of the conversation so far...",
"Respond with TEXT ONLY"), and continues with a conversation that starts "This session is
being continued from a previous conversation that ran out of context" and the summary.
"""

from __future__ import annotations

import json
import mmap
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.claude import ClaudeCodeError, claude_binary, run_claude, seed_home
from e2e.compaction_gateway import ALIAS, MODEL, CompactionGateway, compaction_gateway
from e2e.fixtures import Services
from e2e.provider_sim.tokens import openai_prompt_tokens

pytestmark = pytest.mark.e2e

WINDOW = 64_000
RUNS = 5
COMPACTION_PROMPT = "Your task is to create a detailed summary of the conversation"
CONTINUATION = (
    "This session is being continued from a previous conversation that ran out of context"
)


@pytest.fixture(scope="module")
def gateway(
    services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CompactionGateway]:
    with compaction_gateway(services, tmp_path_factory.mktemp("compaction"), WINDOW) as gw:
        yield gw


def big_file(project: Path, run: int, marker: str) -> Path:
    """~14k tokens of Python (tiktoken), with `marker` in its last line."""
    lines = [
        f"def function_{run}_{n}(value):\n    return value * {n} + {run}  # line {n}\n"
        for n in range(600)
    ]
    path = project / f"module{run}.py"
    path.write_text("".join(lines) + f"# {marker}\n")
    return path


def last_user_text(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    return json.dumps(messages[-1].get("content")) if messages else ""


def test_the_cli_compacts_with_this_prompt_and_continues_with_this_text() -> None:
    """The markers the session test looks for are the pinned CLI's own strings."""
    with (
        claude_binary().open("rb") as f,
        mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as binary,
    ):
        assert binary.find(COMPACTION_PROMPT.encode()) >= 0
        assert binary.find(CONTINUATION.encode()) >= 0


def test_a_long_session_compacts_before_the_upstream_refuses_it(
    gateway: CompactionGateway, tmp_path: Path
) -> None:
    onboarding = gateway.onboarding()
    # The catalog's window reaches Claude Code through the gateway's /v1/models and onboard.
    assert onboarding.context_window() == WINDOW
    settings = json.loads(onboarding.claude_args()[1])["env"]
    assert settings["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == str(WINDOW)
    assert int(settings["CLAUDE_CODE_MAX_OUTPUT_TOKENS"]) <= WINDOW // 4
    # The model calls a tool only when a prompt says which ([[sim:tool ...]]); other requests
    # (Claude Code's side queries) get text rather than the first tool offered (its Agent).
    gateway.sim.configure(tool_plan={"tool": "NoSuchTool", "arguments": {}})
    project, home = tmp_path / "project", tmp_path / "home"
    project.mkdir()
    seed_home(home, [project])
    markers = []
    for run in range(RUNS):
        marker = f"marker-{run}-{secrets.token_hex(4)}"
        markers.append(marker)
        path = big_file(project, run, marker)
        prompt = f'Read module{run}.py [[sim:tool Read {{"file_path": "{path}"}}]]'
        try:
            result = run_claude(
                prompt,
                project=project,
                home=home,
                gateway_env=onboarding.env(),
                model=ALIAS,
                args=[*onboarding.claude_args(), *(["--continue"] if run else [])],
                max_retries=0,
                timeout=300,
            )
        except ClaudeCodeError as exc:
            pytest.fail(f"run {run}: {exc}\n{gateway.log.read_text()[-3000:]}", pytrace=False)
        assert result.returncode == 0, f"run {run}: {result.describe()}"
        assert result.result["is_error"] is False, f"run {run}: {result.describe()}"

    chats = [r for r in gateway.sim.requests() if r["path"].endswith("/chat/completions")]
    assert chats
    assert all(r["model"] == MODEL for r in chats)
    # Every file was read, and its text sent upstream as a tool result.
    for marker in markers:
        assert any(
            m["role"] == "tool" and marker in json.dumps(m)
            for r in chats
            for m in r["body"]["messages"]
        ), f"{marker} never reached the model"
    # The upstream never refused a request for its length: every request fit the window.
    sizes = [
        (openai_prompt_tokens(r["body"], MODEL), r["body"].get("max_tokens") or 0) for r in chats
    ]
    assert all(prompt + answer <= WINDOW for prompt, answer in sizes), sizes
    assert "context_length_exceeded" not in gateway.log.read_text()
    # The session read far more than the window holds ...
    read = sum(
        openai_prompt_tokens({"messages": [{"role": "tool", "content": m}]}, MODEL)
        for m in (path.read_text() for path in project.glob("module*.py"))
    )
    assert read > WINDOW
    # ... so Claude Code compacted: it asked for a summary, then went on from the summary.
    summaries = [i for i, r in enumerate(chats) if COMPACTION_PROMPT in last_user_text(r["body"])]
    assert summaries, "Claude Code never compacted"
    after = [
        r for r in chats[summaries[0] + 1 :] if CONTINUATION in json.dumps(r["body"]["messages"])
    ]
    assert after, "no request continued from the summary"
    summary_size = openai_prompt_tokens(chats[summaries[0]]["body"], MODEL)
    assert openai_prompt_tokens(after[0]["body"], MODEL) < summary_size
    # The first file is no longer in the conversation: compacted away, not resent.
    assert markers[0] not in json.dumps(chats[-1]["body"]["messages"])
