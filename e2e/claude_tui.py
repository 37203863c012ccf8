"""Drive the pinned Claude Code CLI interactively, in a tmux pane, as a developer types.

The headless mode (`claude -p`, e2e/claude.py) skips what a person sees first: the start-up
screen with its warnings, the permission mode, the auto-mode dialogs, `/status` and the model
picker. `ClaudeSession` starts the real TUI in a detached tmux session of a fixed size with the
same throwaway HOME and quiet environment as `run_claude`, types into it, waits for text on the
screen and keeps every screen it looked at in a transcript (the test log shows what the user saw).

Nothing here depends on pytest: the demo uses it too.
"""

from __future__ import annotations

import re
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from e2e.claude import ClaudeCodeError, claude_binary, claude_env

WIDTH, HEIGHT = 180, 50
PICKER_CURSOR = "\u276f"
"""The heavy angle quote Claude Code draws before the prompt and the selected choice."""
BUSY = re.compile(rf"esc to interrupt|Do you want|Enter to|{PICKER_CURSOR} \d\.")
"""A turn still running, or a question or a menu waiting for an answer."""


def _tmux(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise ClaudeCodeError(f"tmux {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


class ClaudeSession:
    """One interactive `claude` in a detached tmux session; a context manager that kills it."""

    def __init__(
        self,
        *,
        project: Path,
        home: Path,
        gateway_env: Mapping[str, str],
        args: tuple[str, ...] = (),
        transcript: Path | None = None,
    ) -> None:
        if shutil.which("tmux") is None:
            raise ClaudeCodeError("tmux is not installed: run `make setup`")
        self.name = "claude-" + secrets.token_hex(4)
        self.project = project
        self.transcript = transcript
        env = claude_env(home, gateway_env)
        env["TERM"] = "xterm-256color"
        # tmux starts the command through a shell: the environment is spelled out, nothing of
        # the test process (credentials, proxies) leaks into the CLI.
        words = [
            "exec",
            "env",
            "-i",
            *(f"{k}={shlex.quote(v)}" for k, v in env.items()),
            shlex.quote(str(claude_binary())),
            *(shlex.quote(a) for a in args),
        ]
        command = " ".join(words)
        _tmux(
            "new-session", "-d", "-s", self.name, "-x", str(WIDTH), "-y", str(HEIGHT),
            "-c", str(project), command,
        )  # fmt: skip
        _tmux("set-option", "-t", self.name, "remain-on-exit", "on")

    def __enter__(self) -> ClaudeSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Kill the session (and the CLI in it)."""
        _tmux("kill-session", "-t", self.name, check=False)

    def screen(self) -> str:
        """What the pane shows now, blank lines dropped."""
        text = _tmux("capture-pane", "-p", "-t", self.name)
        return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())

    def snapshot(self, label: str) -> str:
        """The screen, appended to the transcript under `label`; returned too."""
        text = self.screen()
        if self.transcript is not None:
            with self.transcript.open("a", encoding="utf-8") as out:
                out.write(f"\n===== {label} ({time.strftime('%H:%M:%S')})\n{text}\n")
        return text

    def type(self, text: str, *, enter: bool = True) -> None:
        """Type `text` literally, then Enter (as a separate key, as a person would)."""
        _tmux("send-keys", "-t", self.name, "-l", text)
        if enter:
            time.sleep(0.3)
            _tmux("send-keys", "-t", self.name, "Enter")

    def press(self, *keys: str) -> None:
        """Press tmux-named keys: Enter, Escape, BTab (shift+tab), Up, Down, C-c, ..."""
        _tmux("send-keys", "-t", self.name, *keys)

    def wait_for(self, pattern: str, *, timeout: float = 60, label: str | None = None) -> str:
        """Wait until the screen matches the regex `pattern`; return the screen.

        On timeout raise ClaudeCodeError with the last screen, so the failure shows what the
        user was looking at.
        """
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if regex.search(text):
                return self.snapshot(label or f"seen /{pattern}/")
            time.sleep(0.5)
        self.snapshot(f"timed out waiting for /{pattern}/")
        raise ClaudeCodeError(f"waited {timeout:.0f}s for /{pattern}/; the screen was:\n{text}")

    def wait_idle(self, *, timeout: float = 120, label: str = "idle") -> str:
        """Wait until a turn is over: the prompt is back and nothing is running or asked."""
        deadline = time.monotonic() + timeout
        previous, text = None, ""
        while time.monotonic() < deadline:
            text = self.screen()
            busy = BUSY.search(text)
            if not busy and text == previous:
                return self.snapshot(label)
            previous = text
            time.sleep(1.0)
        self.snapshot(f"not idle after {timeout:.0f}s")
        raise ClaudeCodeError(f"the session was still busy after {timeout:.0f}s:\n{text}")
