"""OpenAI's Responses API in the provider simulator: ``POST /v1/responses``.

As OpenAI checks: a bearer key (401 in OpenAI's shape), ``model``, ``input`` (a string or a
list of items: messages with ``input_text`` / ``output_text`` parts, ``function_call`` and
``function_call_output`` items whose ``call_id`` must name an earlier call), ``tools`` of type
``function`` (``name`` and ``parameters`` at the top level, not under ``function``),
``max_output_tokens`` at least 16.

Non-streaming, a ``response`` object: ``output`` holds a ``reasoning`` item for a reasoning
model (``REASONING_MODELS``), then a ``message`` (``output_text``) or a ``function_call``
item; ``usage`` has ``input_tokens``, ``output_tokens`` (reasoning included),
``output_tokens_details.reasoning_tokens``, ``total_tokens``. Streamed, SSE events with
``sequence_number``: ``response.created``, ``response.in_progress``, per output item
``response.output_item.added`` / (``response.content_part.added``,
``response.output_text.delta``..., ``response.output_text.done``, ``response.content_part.done``
| ``response.function_call_arguments.delta``..., ``response.function_call_arguments.done``) /
``response.output_item.done``, then ``response.completed`` with the whole response and usage.

``RESPONSES_ONLY`` models (``o3-pro``, ``gpt-5-codex``, ...) exist only here: the chat
completions route refuses them with OpenAI's 404 (``chat_refusal``).

Faults in OpenAI's error shape (429 with ``retry-after``); "disconnect" cuts a stream after its
first token, "malformed" sends a data line that is not JSON.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from aiohttp import web

from e2e.provider_sim.server import (
    ChatRequest,
    Message,
    ProviderError,
    Reply,
    Simulator,
    ToolSpec,
    bearer_token,
    check_key,
    content_text,
    estimate_tokens,
    plan_reply,
    read_json,
    split_tokens,
    sse,
    start_sse,
)
from e2e.provider_sim.wire import Streamer, take_fault, whole_answer

RESPONSES_ONLY = frozenset(
    {"o3-pro", "o1-pro", "gpt-5-codex", "gpt-5-pro", "codex-mini-latest", "o3-deep-research"}
)
"""Models OpenAI serves only on /v1/responses (LiteLLM 1.106.12's map: mode "responses")."""
REASONING_MODELS = RESPONSES_ONLY | {"o3", "o4-mini", "gpt-5"}
MIN_OUTPUT_TOKENS = 16


def chat_refusal(model: str) -> ProviderError | None:
    """OpenAI's answer to a chat completion for a Responses-only model, or None."""
    if model not in RESPONSES_ONLY:
        return None
    return ProviderError(
        404,
        "This model is only supported in v1/responses and not in v1/chat/completions.",
        type_="invalid_request_error",
        code=None,
    )


def openai_error(fault: ProviderError, param: str | None = None) -> web.Response:
    headers = (
        {"retry-after": "1", "x-request-id": "req_" + uuid.uuid4().hex}
        if fault.status == 429
        else None
    )
    body = {
        "error": {"message": fault.message, "type": fault.type, "param": param, "code": fault.code}
    }
    return web.json_response(body, status=fault.status, headers=headers)


def invalid(message: str, param: str | None = None) -> ProviderError:
    error = ProviderError(400, message, type_="invalid_request_error")
    error.code = param  # rendered as "param" by the handler
    return error


def _item_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return content_text(content)


def parse_responses(body: Any) -> ChatRequest:
    if not isinstance(body, Mapping):
        raise invalid("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("Missing required parameter: 'model'.", "model")
    raw = body.get("input")
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise invalid("Missing required parameter: 'input'.", "input")
    messages: list[Message] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append(Message(role="system", text=instructions))
    calls: set[str] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise invalid(f"Invalid type for 'input[{i}]': expected an object.", f"input[{i}]")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise invalid(
                    f"Invalid value: '{role}'. Supported values are: 'assistant', 'system', "
                    "'developer', and 'user'.",
                    f"input[{i}].role",
                )
            role = "system" if role == "developer" else role
            messages.append(Message(role=str(role), text=_item_text(item.get("content"))))
        elif kind == "function_call":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not isinstance(item.get("arguments"), str):
                raise invalid(
                    f"Missing required parameter: 'input[{i}].call_id'.", f"input[{i}].call_id"
                )
            calls.add(call_id)
            messages.append(
                Message(role="assistant", text=f"{item.get('name', '')}{item['arguments']}")
            )
        elif kind == "function_call_output":
            if item.get("call_id") not in calls:
                raise invalid(
                    f"No tool call found for function call output with call_id "
                    f"{item.get('call_id')}.",
                    "input",
                )
            messages.append(Message(role="tool", text=content_text(item.get("output"))))
        elif kind == "reasoning":
            continue
        else:
            raise invalid(f"Invalid value: '{kind}'.", f"input[{i}].type")
    tools: list[ToolSpec] = []
    for t, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, Mapping) or tool.get("type") != "function":
            continue
        if not tool.get("name"):
            raise invalid(f"Missing required parameter: 'tools[{t}].name'.", f"tools[{t}].name")
        tools.append(ToolSpec(name=str(tool["name"]), parameters=tool.get("parameters") or {}))
    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or max_tokens < MIN_OUTPUT_TOKENS
    ):
        raise invalid(
            f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
            f"{MIN_OUTPUT_TOKENS}, but got {max_tokens} instead.",
            "max_output_tokens",
        )
    choice = body.get("tool_choice")
    tool_choice = "none" if choice == "none" else None
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        tool_choice = str(choice.get("name"))
    return ChatRequest(
        model=model,
        messages=messages,
        tools=tools,
        tool_choice=tool_choice,
        stream=bool(body.get("stream")),
        max_tokens=max_tokens,
    )


class Response:
    """One answer as a Responses API ``response`` object, and its streamed events."""

    def __init__(self, req: ChatRequest, reply: Reply, body: Mapping[str, Any]) -> None:
        self.id = "resp_" + uuid.uuid4().hex
        self.created = int(time.time())
        self.req, self.reply, self.body = req, reply, body
        self.reasoning_tokens = (
            estimate_tokens("thinking about " + req.model) if req.model in REASONING_MODELS else 0
        )
        self.items: list[dict[str, Any]] = []
        if self.reasoning_tokens:
            self.items.append({"id": "rs_" + uuid.uuid4().hex, "type": "reasoning", "summary": []})
        if reply.tool_call is not None:
            call = reply.tool_call
            self.items.append(
                {
                    "id": "fc_" + uuid.uuid4().hex,
                    "type": "function_call",
                    "status": "completed",
                    "arguments": call.arguments_json,
                    "call_id": call.id,
                    "name": call.name,
                }
            )
        else:
            self.items.append(
                {
                    "id": "msg_" + uuid.uuid4().hex,
                    "type": "message",
                    "status": "completed",
                    "role": "assistant",
                    "content": [
                        {
                            "type": "output_text",
                            "text": reply.text or "",
                            "annotations": [],
                            "logprobs": [],
                        }
                    ],
                }
            )

    def usage(self) -> dict[str, Any]:
        output = self.reply.completion_tokens + self.reasoning_tokens
        return {
            "input_tokens": self.reply.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.reply.prompt_tokens + output,
        }

    def obj(
        self, *, status: str = "completed", output: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        incomplete = self.reply.finish_reason == "length" and status == "completed"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": "incomplete" if incomplete else status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": self.body.get("instructions"),
            "max_output_tokens": self.body.get("max_output_tokens"),
            "model": self.req.model,
            "output": self.items if output is None else output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": "medium", "summary": None},
            "store": bool(self.body.get("store", True)),
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": self.body.get("tool_choice", "auto"),
            "tools": self.body.get("tools") or [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": self.usage() if status == "completed" else None,
            "user": None,
            "metadata": {},
        }

    def events(self) -> Iterator[tuple[str, dict[str, Any], bool]]:
        yield "response.created", {"response": self.obj(status="in_progress", output=[])}, False
        yield "response.in_progress", {"response": self.obj(status="in_progress", output=[])}, False
        for index, item in enumerate(self.items):
            where = {"output_index": index}
            if item["type"] == "reasoning":
                yield "response.output_item.added", {**where, "item": item}, False
                yield "response.output_item.done", {**where, "item": item}, False
            elif item["type"] == "function_call":
                yield (
                    "response.output_item.added",
                    {**where, "item": {**item, "arguments": "", "status": "in_progress"}},
                    False,
                )
                args = item["arguments"]
                step = max(1, len(args) // 3)
                for i in range(0, len(args), step):
                    delta = {**where, "item_id": item["id"], "delta": args[i : i + step]}
                    yield "response.function_call_arguments.delta", delta, True
                yield (
                    "response.function_call_arguments.done",
                    {**where, "item_id": item["id"], "arguments": args},
                    False,
                )
                yield "response.output_item.done", {**where, "item": item}, False
            else:
                text = item["content"][0]["text"]
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                at = {**where, "item_id": item["id"], "content_index": 0}
                yield (
                    "response.output_item.added",
                    {**where, "item": {**item, "content": [], "status": "in_progress"}},
                    False,
                )
                yield "response.content_part.added", {**at, "part": part}, False
                for piece in split_tokens(text):
                    yield "response.output_text.delta", {**at, "delta": piece, "logprobs": []}, True
                yield "response.output_text.done", {**at, "text": text, "logprobs": []}, False
                yield "response.content_part.done", {**at, "part": {**part, "text": text}}, False
                yield "response.output_item.done", {**where, "item": item}, False
        final = (
            "response.incomplete" if self.reply.finish_reason == "length" else "response.completed"
        )
        yield final, {"response": self.obj()}, False


class Responses:
    protocol = "openai-responses"

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/responses", self.create), web.post("/responses", self.create)]

    async def create(self, request: web.Request) -> web.StreamResponse:
        try:
            try:
                body = await read_json(request)
            except ProviderError as f:
                self.sim.record(request, None, protocol=self.protocol, model=None)
                raise invalid(
                    f"We could not parse the JSON body of your request. ({f.message})"
                ) from f
            model = body.get("model") if isinstance(body, Mapping) else None
            self.sim.record(request, body, protocol=self.protocol, model=model)
            check_key(self.sim, bearer_token(request))
            req = parse_responses(body)
            cfg = self.sim.config_snapshot()
            if req.model not in cfg.models and req.model not in RESPONSES_ONLY:
                raise ProviderError(
                    404,
                    f"The model `{req.model}` does not exist or you do not have access to it.",
                    type_="invalid_request_error",
                    code="model_not_found",
                )
            await self.sim.sleep(cfg.latency_ms)
            action = await take_fault(self.sim, req.model)
        except ProviderError as f:
            param = f.code if f.status == 400 else None
            if f.status == 400:
                f.code = None
            return openai_error(f, param)
        reply = plan_reply(req, cfg)
        response = Response(req, reply, body)
        if not req.stream:
            return await whole_answer(self.sim, request, cfg, action, reply, response.obj)
        resp = await start_sse(request)
        pieces = (
            (sse({"type": kind, "sequence_number": n, **payload}, event=kind), token)
            for n, (kind, payload, token) in enumerate(response.events())
        )
        streamer = Streamer(
            self.sim, request, cfg, action, frame=lambda raw: b"data: " + raw + b"\n\n"
        )
        return await streamer.run(resp, pieces)


def responses_routes(sim: Simulator) -> list[web.RouteDef]:
    return Responses(sim).routes()


__all__ = [
    "RESPONSES_ONLY",
    "Responses",
    "chat_refusal",
    "parse_responses",
    "responses_routes",
]
