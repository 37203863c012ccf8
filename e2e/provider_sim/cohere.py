"""Cohere's v2 Chat API in the provider simulator: ``POST /v2/chat``.

What Cohere checks, this module checks: a key in ``Authorization: Bearer`` (401
``{"id": ..., "message": "invalid api token"}``), ``model`` and ``messages`` with roles
system / user / assistant / tool, an assistant's ``tool_calls`` (``function.arguments`` a JSON
**string**), a tool message's ``tool_call_id`` naming a call of the conversation. The answer:
``{"id", "finish_reason": "COMPLETE" | "TOOL_CALL" | "MAX_TOKENS", "message": {"role":
"assistant", "content": [{"type": "text", "text"}] | "tool_plan" + "tool_calls"}, "usage":
{"billed_units": {...}, "tokens": {...}}}``.

Streamed (``stream: true``), SSE events whose ``type`` is also the ``event:`` name:
``message-start``, then ``content-start`` / ``content-delta`` (``delta.message.content.text``)
/ ``content-end``, or ``tool-plan-delta`` and ``tool-call-start`` / ``tool-call-delta``
(``delta.message.tool_calls.function.arguments``) / ``tool-call-end``, and ``message-end``
(``delta.finish_reason``, ``delta.usage``).

Cohere's Compatibility API, ``POST /compatibility/v1/chat/completions``, answers OpenAI's
chat completions for the same models with the same bearer key (OpenAI's shapes, streamed as
``data:`` chunks ending in ``[DONE]``); the simulator records it as protocol
``cohere-compat``. tenantgw calls Cohere there (render/litellm_config.api_base).

Errors are ``{"id", "message"}``. Faults: 429 (with ``retry-after``) and 5xx in that shape,
"timeout" (504 after hanging), "disconnect" (the stream cut after its first token),
"malformed" (a data line that is not JSON).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from aiohttp import web

from e2e.provider_sim.server import (
    ChatRequest,
    Message,
    OpenAIChat,
    ProviderError,
    Reply,
    Simulator,
    ToolSpec,
    bearer_token,
    content_text,
    plan_reply,
    read_json,
    split_tokens,
    sse,
    start_sse,
)
from e2e.provider_sim.wire import Streamer, take_fault, whole_answer

FINISH = {"stop": "COMPLETE", "length": "MAX_TOKENS", "tool_use": "TOOL_CALL"}


def cohere_error(fault: ProviderError) -> web.Response:
    headers = {"retry-after": "1"} if fault.status == 429 else None
    body = {"id": str(uuid.uuid4()), "message": fault.message}
    return web.json_response(body, status=fault.status, headers=headers)


def bad(message: str) -> ProviderError:
    return ProviderError(400, message, type_="invalid_request")


def parse_chat(body: Any) -> ChatRequest:
    if not isinstance(body, Mapping):
        raise bad("invalid request: body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("invalid request: model must be specified")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad("invalid request: messages must be a non-empty list")
    messages: list[Message] = []
    calls: set[str] = set()
    for i, message in enumerate(raw):
        role = message.get("role") if isinstance(message, Mapping) else None
        if role not in ("system", "user", "assistant", "tool"):
            raise bad(
                f"invalid request: messages[{i}].role must be one of system, user, assistant, tool"
            )
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in calls:
                raise bad(
                    f"invalid request: messages[{i}].tool_call_id {call_id!r} does not "
                    "match a tool call of an earlier assistant message"
                )
            messages.append(Message(role="tool", text=_tool_content(message.get("content"))))
            continue
        text = content_text(message.get("content"))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            if not isinstance(function.get("arguments"), str):
                raise bad(
                    f"invalid request: messages[{i}].tool_calls.function.arguments must be a string"
                )
            calls.add(str(call.get("id")))
            text += f"{function.get('name', '')}{function['arguments']}"
        messages.append(Message(role=str(role), text=text))
    tools = []
    for t, tool in enumerate(body.get("tools") or []):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not function.get("name"):
            raise bad(f"invalid request: tools[{t}].function.name is required")
        tools.append(
            ToolSpec(name=str(function["name"]), parameters=function.get("parameters") or {})
        )
    choice = body.get("tool_choice")
    max_tokens = body.get("max_tokens")
    return ChatRequest(
        model=model,
        messages=messages,
        tools=tools,
        tool_choice="none" if choice == "NONE" else None,
        stream=bool(body.get("stream")),
        max_tokens=max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else None,
    )


def _tool_content(content: Any) -> str:
    """A tool result: a string, or content blocks (``text`` or ``document``)."""
    if isinstance(content, list):
        out = []
        for block in content:
            if isinstance(block, Mapping) and block.get("type") == "document":
                data = (block.get("document") or {}).get("data")
                out.append(data if isinstance(data, str) else json.dumps(data))
            else:
                out.append(content_text([block]))
        return "".join(out)
    return content_text(content)


def _usage(reply: Reply) -> dict[str, Any]:
    counts = {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens}
    return {"billed_units": dict(counts), "tokens": dict(counts)}


def _plan(reply: Reply) -> str:
    assert reply.tool_call is not None
    return f"I will call {reply.tool_call.name}."


def chat_response(reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant"}
    if reply.tool_call is not None:
        call = reply.tool_call
        message["tool_plan"] = _plan(reply)
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
        ]
    else:
        message["content"] = [{"type": "text", "text": reply.text or ""}]
    return {
        "id": str(uuid.uuid4()),
        "finish_reason": FINISH[reply.finish_reason],
        "message": message,
        "usage": _usage(reply),
    }


def stream_events(reply: Reply) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(event type, payload, carries_a_token) of a streamed answer, in order."""
    start = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
    yield "message-start", {"id": str(uuid.uuid4()), "delta": {"message": start}}, False
    if reply.tool_call is not None:
        call = reply.tool_call
        for piece in split_tokens(_plan(reply)):
            yield "tool-plan-delta", {"delta": {"message": {"tool_plan": piece}}}, True
        opening: dict[str, Any] = {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        yield "tool-call-start", {"index": 0, "delta": {"message": {"tool_calls": opening}}}, False
        args = call.arguments_json
        step = max(1, len(args) // 3)
        for i in range(0, len(args), step):
            part = {"function": {"arguments": args[i : i + step]}}
            yield "tool-call-delta", {"index": 0, "delta": {"message": {"tool_calls": part}}}, True
        yield "tool-call-end", {"index": 0}, False
    else:
        opening = {"type": "text", "text": ""}
        yield "content-start", {"index": 0, "delta": {"message": {"content": opening}}}, False
        for piece in split_tokens(reply.text or ""):
            delta = {"message": {"content": {"text": piece}}}
            yield "content-delta", {"index": 0, "delta": delta}, True
        yield "content-end", {"index": 0}, False
    end = {"finish_reason": FINISH[reply.finish_reason], "usage": _usage(reply)}
    yield "message-end", {"delta": end}, False


class CohereChat:
    protocol = "cohere"

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v2/chat", self.chat)]

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            try:
                body = await read_json(request)
            except ProviderError:
                self.sim.record(request, None, protocol=self.protocol, model=None)
                raise bad("invalid request: body is not valid JSON") from None
            model = body.get("model") if isinstance(body, Mapping) else None
            self.sim.record(request, body, protocol=self.protocol, model=model)
            key = bearer_token(request)
            cfg = self.sim.config_snapshot()
            if not key:
                raise ProviderError(401, "no api key supplied", type_="unauthorized")
            if cfg.api_key is not None and key != cfg.api_key:
                raise ProviderError(401, "invalid api token", type_="unauthorized")
            req = parse_chat(body)
            if req.model not in cfg.models:
                raise ProviderError(
                    404,
                    f"model '{req.model}' not found, make sure the correct model ID was used "
                    "and that you have access to the model.",
                    type_="not_found",
                )
            await self.sim.sleep(cfg.latency_ms)
            action = await take_fault(self.sim, req.model)
        except ProviderError as f:
            return cohere_error(f)
        reply = plan_reply(req, cfg)
        if not req.stream:
            return await whole_answer(
                self.sim, request, cfg, action, reply, lambda: chat_response(reply)
            )
        resp = await start_sse(request)
        pieces = (
            (sse({"type": kind, **payload}, event=kind), token)
            for kind, payload, token in stream_events(reply)
        )
        streamer = Streamer(
            self.sim, request, cfg, action, frame=lambda raw: b"data: " + raw + b"\n\n"
        )
        return await streamer.run(resp, pieces)


class CohereCompat(OpenAIChat):
    """Cohere's OpenAI-compatible chat completions."""

    protocol = "cohere-compat"

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/compatibility/v1/chat/completions", self.chat_completions)]


def cohere_routes(sim: Simulator) -> list[web.RouteDef]:
    return CohereChat(sim).routes() + CohereCompat(sim).routes()


__all__ = ["CohereChat", "CohereCompat", "cohere_error", "cohere_routes", "parse_chat"]
