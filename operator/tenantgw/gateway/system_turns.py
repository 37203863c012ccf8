"""Mid-conversation `system` turns of `/v1/messages`, for upstreams that take only user/assistant.

Claude Code (2.1.332) puts `{"role": "system", ...}` entries into `messages` when its model
is not named like a Claude model (a tenant alias such as `fast-code`): it expects a gateway to
translate them. LiteLLM 1.106.12 does for the providers it calls through chat completions,
but it sends an Anthropic Messages body as it is to an `anthropic` provider and to DeepSeek's
Anthropic API (`llms/deepseek/messages`), and Anthropic refuses the role with a 400
(`messages.N.role: Input should be 'user' or 'assistant'`). The request is one of Claude
Code's own, so the developer sees a failed turn.

Repair, for those deployments only: each such entry becomes a `user` turn whose text blocks
are wrapped in `<system-reminder>` tags, the form Claude Code itself gives reminders when it
talks to a Claude model. Its place in the conversation is kept; Anthropic accepts
consecutive user turns. docs/litellm-notes.md (m).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ANTHROPIC_WIRE_PROVIDER_TYPES = frozenset({"anthropic", "deepseek"})
"""Provider types whose `/v1/messages` body LiteLLM forwards without translating roles."""
MESSAGES_CALL_TYPES = frozenset({"anthropic_messages", "aanthropic_messages"})
"""LiteLLM's call types of `/v1/messages` (a chat completion's `system` message is valid)."""


def _reminder(content: Any) -> list[dict[str, Any]]:
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
    out: list[dict[str, Any]] = []
    for block in blocks if isinstance(blocks, list) else []:
        if isinstance(block, Mapping) and block.get("type") == "text":
            text = block.get("text")
            out.append({**block, "text": f"<system-reminder>\n{text}\n</system-reminder>"})
        elif isinstance(block, Mapping):
            out.append(dict(block))
    return out


def for_deployment(kwargs: Mapping[str, Any], call_type: Any) -> dict[str, Any] | None:
    """The call's kwargs with `system` turns made user reminders, for a `/v1/messages` call
    of a deployment of an `ANTHROPIC_WIRE_PROVIDER_TYPES` provider (None: unchanged)."""
    if getattr(call_type, "value", call_type) not in MESSAGES_CALL_TYPES:
        return None
    info = kwargs.get("model_info")
    tg = info.get("tenantgw") if isinstance(info, Mapping) else None
    if not isinstance(tg, Mapping) or tg.get("provider_type") not in ANTHROPIC_WIRE_PROVIDER_TYPES:
        return None
    messages = kwargs.get("messages")
    if not isinstance(messages, list) or not any(
        isinstance(m, Mapping) and m.get("role") == "system" for m in messages
    ):
        return None
    repaired = [
        {**m, "role": "user", "content": _reminder(m.get("content"))}
        if isinstance(m, Mapping) and m.get("role") == "system"
        else m
        for m in messages
    ]
    return {**kwargs, "messages": repaired}
