"""Paths of the OpenAI-compatible family that are not OpenAI's.

* DeepSeek serves Anthropic Messages at ``/anthropic/v1/messages`` (and ``count_tokens``), and
  LiteLLM 1.106.12 sends a ``deepseek/`` model's ``/v1/messages`` requests there
  (``llms/deepseek/messages``), not to chat completions. The simulator answers them with its
  Anthropic module (``anthropic.py``): same checks, same shapes.
"""

from __future__ import annotations

from aiohttp import web

from e2e.provider_sim.anthropic import AnthropicMessages
from e2e.provider_sim.server import Simulator


def compat_routes(sim: Simulator) -> list[web.RouteDef]:
    messages = AnthropicMessages(sim)
    return [
        web.post("/anthropic/v1/messages", messages.messages),
        web.post("/anthropic/v1/messages/count_tokens", messages.count_tokens),
    ]


__all__ = ["compat_routes"]
