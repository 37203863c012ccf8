"""The tmux driver's reading of Claude Code's input box (e2e/claude_tui.py)."""

from __future__ import annotations

import pytest

from e2e.claude_tui import input_box, still_in_input

pytestmark = pytest.mark.unit

RULE = "\u2500" * 60
PROMPT = 'compute the answer [[sim:tool Bash {"command": "python3 -c \\"print(6*7)\\""}]]'


def screen(history: str, box: str) -> str:
    return "\n".join(
        [
            " Claude Code v2.1.332",
            history,
            "  \u25cf high \u00b7 /effort",
            RULE,
            f"\u276f {box}",
            RULE,
            "  \u23f5\u23f5 auto mode on (shift+tab to cycle)",
        ]
    )


def test_a_submitted_prompt_is_in_the_history_not_the_box() -> None:
    shown = screen(f"\u276f {PROMPT}\n\u25cf Tool said: 42", "")
    assert input_box(shown) == ""
    assert not still_in_input(shown, PROMPT)


def test_a_prompt_left_in_the_box_is_seen_even_when_wrapped() -> None:
    shown = screen("", PROMPT[:30] + "\n  " + PROMPT[30:])
    assert still_in_input(shown, PROMPT)
    assert still_in_input(screen("", "/status"), "/status")


def test_no_box_on_screen_means_nothing_waits() -> None:
    dialog = " Do you want to proceed?\n \u276f 1. Yes\n   2. No"
    assert input_box(dialog) is None
    assert not still_in_input(dialog, PROMPT)
