"""Run the pinned Claude Code CLI headless against a tenant's gateway.

`claude -p` needs no login and no prompt when it gets, in a throwaway HOME:

* `ANTHROPIC_BASE_URL` (the gateway) and `ANTHROPIC_AUTH_TOKEN` (a tenant key, sent as
  `Authorization: Bearer`; unlike `ANTHROPIC_API_KEY` it never asks to approve the key), plus
  the model names from `tenantctl onboard`;
* a `~/.claude.json` that says onboarding is done and the project directory is trusted (the
  print mode does not ask either, but an interactive run would, so the seed keeps both right);
* `--allowedTools`: Claude Code refuses `--dangerously-skip-permissions` as root, and in print
  mode a tool that is not allowed is denied rather than asked for;
* no traffic beyond the gateway: `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1` (and the
  autoupdater, telemetry and error reporting off one by one), and every other host behind a
  proxy that does not exist (`HTTPS_PROXY=http://127.0.0.1:9`, loopback in `NO_PROXY`), so an
  unexpected call fails at once instead of waiting for a network.

Nothing here depends on pytest: `e2e/demo.py` uses it too.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INSTALLER = ROOT / "e2e" / "install-claude-code.sh"
VERSIONS = ROOT / "e2e" / "versions.env"
DEAD_PROXY = "http://127.0.0.1:9"
"""Nothing listens on the discard port: a request that is not for loopback fails at once."""
QUIET = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
    "HTTPS_PROXY": DEAD_PROXY,
    "HTTP_PROXY": DEAD_PROXY,
    "NO_PROXY": "127.0.0.1,localhost,::1",
}


class ClaudeCodeError(RuntimeError):
    """The CLI could not be installed, started, or its output is not what it should be."""


@dataclass(frozen=True)
class ClaudeRun:
    """One finished `claude -p` run."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def result(self) -> dict[str, Any]:
        """The JSON result object of `--output-format json` (the last JSON line of stdout)."""
        for line in reversed(self.stdout.strip().splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    value = json.loads(line)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    return value
        raise ClaudeCodeError(f"claude printed no JSON result:\n{self.describe()}")

    def describe(self) -> str:
        """Exit code and output, for a failure message."""
        return (
            f"exit code {self.returncode}\n--- stdout\n{self.stdout[-4000:]}\n"
            f"--- stderr\n{self.stderr[-4000:]}"
        )


def check_tool_turn(run: ClaudeRun, token: str) -> ClaudeRun:
    """`run` ended well after at least one tool turn, with `token` in its answer; else
    ClaudeCodeError with its output."""
    result = run.result
    if run.returncode != 0 or result.get("is_error") is not False:
        raise ClaudeCodeError(f"claude -p failed:\n{run.describe()}")
    if result.get("num_turns", 0) < 2:
        raise ClaudeCodeError(f"no tool turn happened:\n{run.describe()}")
    if token not in str(result.get("result")):
        raise ClaudeCodeError(f"the answer lacks {token!r}:\n{run.describe()}")
    return run


def pinned_version() -> str:
    """CLAUDE_CODE_VERSION from e2e/versions.env."""
    for line in VERSIONS.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == "CLAUDE_CODE_VERSION":
            return value.strip().strip("\"'")
    raise ClaudeCodeError(f"{VERSIONS} sets no CLAUDE_CODE_VERSION")


@cache
def claude_binary() -> Path:
    """The pinned CLI, installed into the cache by e2e/install-claude-code.sh if missing."""
    proc = subprocess.run(
        ["bash", str(INSTALLER)], capture_output=True, text=True, timeout=900, check=False
    )
    path = Path(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
    if proc.returncode != 0 or path is None or not os.access(path, os.X_OK):
        raise ClaudeCodeError(
            f"could not install Claude Code {pinned_version()} "
            f"({INSTALLER.name} exited {proc.returncode}); run `make claude-code`:\n"
            f"{proc.stderr[-3000:]}"
        )
    return path


def seed_home(home: Path, projects: Sequence[Path] = ()) -> None:
    """A HOME in which Claude Code starts without onboarding or trust questions."""
    home.mkdir(parents=True, exist_ok=True)
    (home / ".claude").mkdir(exist_ok=True)
    state = {
        "hasCompletedOnboarding": True,
        "lastOnboardingVersion": pinned_version(),
        "numStartups": 1,
        "autoUpdates": False,
        "projects": {
            str(project.resolve()): {
                "hasTrustDialogAccepted": True,
                "hasCompletedProjectOnboarding": True,
                "allowedTools": [],
            }
            for project in projects
        },
    }
    (home / ".claude.json").write_text(json.dumps(state, indent=2))


def claude_env(home: Path, gateway_env: Mapping[str, str]) -> dict[str, str]:
    """The whole environment of a run: nothing inherited but PATH (for the Bash tool)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        **QUIET,
        **gateway_env,
    }


def run_claude(
    prompt: str,
    *,
    project: Path,
    home: Path,
    gateway_env: Mapping[str, str],
    model: str,
    allowed_tools: Sequence[str] = ("Read",),
    max_turns: int = 6,
    max_retries: int | None = None,
    timeout: float = 240,
    settings: Path | None = None,
    args: Sequence[str] = (),
) -> ClaudeRun:
    """`claude -p PROMPT --output-format json` in `project`, as the user of `home`.

    `max_retries` sets CLAUDE_CODE_MAX_RETRIES: Claude Code retries even a 401 about ten
    times with backoff (minutes) unless told otherwise. `settings` is a settings file loaded
    with `--settings` (above the user's and project's; the pinned CLI reads managed settings
    only from the system path, /etc/claude-code, which a test must not write). `args` are
    more arguments (e.g. `Onboarding.claude_args()`, `--continue`).
    """
    argv = [
        str(claude_binary()),
        "-p",
        prompt,
        "--model",
        model,
        "--output-format",
        "json",
        "--max-turns",
        str(max_turns),
        "--allowedTools",
        ",".join(allowed_tools),
    ]
    if settings is not None:
        argv += ["--settings", str(settings)]
    argv += list(args)
    env = claude_env(home, gateway_env)
    if max_retries is not None:
        env["CLAUDE_CODE_MAX_RETRIES"] = str(max_retries)
    try:
        proc = subprocess.run(
            argv,
            cwd=project,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        raise ClaudeCodeError(
            f"claude -p did not finish in {timeout:.0f}s\n--- stdout\n{out[-3000:]}\n"
            f"--- stderr\n{err[-3000:]}"
        ) from None
    return ClaudeRun(argv=argv, returncode=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)
