"""`system` turns of `/v1/messages` become user reminders for Anthropic-wire deployments only."""

from __future__ import annotations

from typing import Any

import pytest

from tenantgw.gateway import system_turns

pytestmark = pytest.mark.unit


def kwargs(provider_type: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "model": "anthropic/claude-sonnet-4-5",
        "messages": messages,
        "model_info": {"id": "fast-code-0", "tenantgw": {"provider_type": provider_type}},
    }


CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "hi"},
    {
        "role": "system",
        "content": [
            {"type": "text", "text": "# Environment", "cache_control": {"type": "ephemeral"}}
        ],
    },
    {"role": "assistant", "content": "hello"},
    {"role": "system", "content": "be brief"},
]


@pytest.mark.parametrize("provider_type", ["anthropic", "deepseek"])
def test_system_turns_become_user_reminders_in_place(provider_type: str) -> None:
    out = system_turns.for_deployment(kwargs(provider_type, CONVERSATION), "anthropic_messages")
    assert out is not None
    assert [m["role"] for m in out["messages"]] == ["user", "user", "assistant", "user"]
    assert out["messages"][1]["content"] == [
        {
            "type": "text",
            "text": "<system-reminder>\n# Environment\n</system-reminder>",
            "cache_control": {"type": "ephemeral"},
        }
    ]
    assert out["messages"][3]["content"] == [
        {"type": "text", "text": "<system-reminder>\nbe brief\n</system-reminder>"}
    ]
    assert CONVERSATION[1]["role"] == "system", "the caller's kwargs are not changed"


@pytest.mark.parametrize("provider_type", ["bedrock", "openai", "gemini", "azure"])
def test_other_providers_are_left_to_litellms_translation(provider_type: str) -> None:
    assert (
        system_turns.for_deployment(kwargs(provider_type, CONVERSATION), "anthropic_messages")
        is None
    )


def test_chat_completions_keep_their_system_messages() -> None:
    assert system_turns.for_deployment(kwargs("anthropic", CONVERSATION), "acompletion") is None


def test_a_conversation_without_system_turns_is_unchanged() -> None:
    plain = [{"role": "user", "content": "hi"}]
    assert system_turns.for_deployment(kwargs("anthropic", plain), "anthropic_messages") is None
    assert system_turns.for_deployment({"messages": CONVERSATION}, "anthropic_messages") is None
