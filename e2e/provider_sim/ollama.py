"""Ollama's native API in the provider simulator: ``POST /api/chat`` and ``GET /api/tags``.

As the Ollama server does: no authentication; ``stream`` defaults to **true**; a streamed
answer is NDJSON (``application/x-ndjson``), one object per line with ``message.content``
pieces and ``done: false``, then a last object with ``done: true``, ``done_reason`` and the
counters (``prompt_eval_count``, ``eval_count``, durations in nanoseconds). Tool calls come in
``message.tool_calls`` with ``function.arguments`` as a JSON **object** (not a string), whole,
in one chunk; a tool result is a message with role ``tool``. A model that is not pulled (not in
``SimConfig.models``) is a 404 ``model "x" not found, try pulling it first``.

Errors are ``{"error": "..."}``. Faults: 429 / 5xx with that body ("timeout": 504 after
hanging), "disconnect" (the stream cut after its first token), "malformed" (a line that is not
JSON).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from e2e.provider_sim.server import (
    ChatRequest,
    Message,
    ProviderError,
    Reply,
    Simulator,
    ToolSpec,
    content_text,
    plan_reply,
    read_json,
    split_tokens,
)
from e2e.provider_sim.wire import Streamer, take_fault, whole_answer

NS_PER_TOKEN = 20_000_000


def ollama_error(fault: ProviderError) -> web.Response:
    headers = {"retry-after": "1"} if fault.status == 429 else None
    return web.json_response({"error": fault.message}, status=fault.status, headers=headers)


def bad(message: str) -> ProviderError:
    return ProviderError(400, message, type_="bad_request")


def parse_chat(body: Any) -> ChatRequest:
    if not isinstance(body, Mapping):
        raise bad("invalid request body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("model is required")
    raw = body.get("messages")
    if raw is not None and not isinstance(raw, list):
        raise bad("json: cannot unmarshal messages into Go struct field ChatRequest.messages")
    messages: list[Message] = []
    for i, message in enumerate(raw or []):
        role = message.get("role") if isinstance(message, Mapping) else None
        if role not in ("system", "user", "assistant", "tool"):
            raise bad(f"invalid role {role!r} in message {i}")
        text = content_text(message.get("content"))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            arguments = function.get("arguments")
            if not isinstance(arguments, Mapping):
                raise bad(
                    "json: cannot unmarshal string into Go struct field "
                    "ToolCallFunction.messages.tool_calls.function.arguments of type "
                    "api.ToolCallFunctionArguments"
                )
            text += f"{function.get('name', '')}{json.dumps(arguments)}"
        messages.append(Message(role=str(role), text=text))
    tools = []
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and function.get("name"):
            tools.append(
                ToolSpec(name=str(function["name"]), parameters=function.get("parameters") or {})
            )
    options = body.get("options") or {}
    max_tokens = options.get("num_predict") if isinstance(options, Mapping) else None
    return ChatRequest(
        model=model,
        messages=messages,
        tools=tools,
        stream=body.get("stream", True) is not False,
        max_tokens=max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else None,
    )


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _message(reply: Reply, text: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.text or "" if text is None else text,
    }
    if reply.tool_call is not None and text is None:
        message["content"] = ""
        message["tool_calls"] = [
            {"function": {"name": reply.tool_call.name, "arguments": reply.tool_call.arguments}}
        ]
    return message


def final(req: ChatRequest, reply: Reply, message: dict[str, Any]) -> dict[str, Any]:
    eval_ns = reply.completion_tokens * NS_PER_TOKEN
    prompt_ns = reply.prompt_tokens * NS_PER_TOKEN // 10
    return {
        "model": req.model,
        "created_at": _now(),
        "message": message,
        "done_reason": "length" if reply.finish_reason == "length" else "stop",
        "done": True,
        "total_duration": eval_ns + prompt_ns + 1_000_000,
        "load_duration": 1_000_000,
        "prompt_eval_count": reply.prompt_tokens,
        "prompt_eval_duration": prompt_ns,
        "eval_count": reply.completion_tokens,
        "eval_duration": eval_ns,
    }


def stream_lines(req: ChatRequest, reply: Reply) -> Iterator[tuple[dict[str, Any], bool]]:
    if reply.tool_call is not None:
        yield (
            {"model": req.model, "created_at": _now(), "message": _message(reply), "done": False},
            True,
        )
    else:
        for piece in split_tokens(reply.text or ""):
            chunk = {"model": req.model, "created_at": _now(), "message": _message(reply, piece)}
            yield {**chunk, "done": False}, True
    yield final(req, reply, {"role": "assistant", "content": ""}), False


class Ollama:
    protocol = "ollama"

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/chat", self.chat), web.get("/api/tags", self.tags)]

    async def tags(self, request: web.Request) -> web.StreamResponse:
        models = [
            {
                "name": m if ":" in m else f"{m}:latest",
                "model": m if ":" in m else f"{m}:latest",
                "modified_at": _now(),
                "size": 4_683_087_332,
                "digest": f"{abs(hash(m)):064x}"[:64],
                "details": {
                    "format": "gguf",
                    "family": "qwen2",
                    "parameter_size": "7.6B",
                    "quantization_level": "Q4_K_M",
                },
            }
            for m in self.sim.config_snapshot().models
        ]
        return web.json_response({"models": models})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            try:
                body = await read_json(request)
            except ProviderError:
                self.sim.record(request, None, protocol=self.protocol, model=None)
                raise bad("invalid character in request body") from None
            model = body.get("model") if isinstance(body, Mapping) else None
            self.sim.record(request, body, protocol=self.protocol, model=model)
            req = parse_chat(body)
            cfg = self.sim.config_snapshot()
            pulled = {m if ":" in m else f"{m}:latest" for m in cfg.models}
            if req.model not in cfg.models and req.model not in pulled:
                raise ProviderError(
                    404, f'model "{req.model}" not found, try pulling it first', type_="not_found"
                )
            await self.sim.sleep(cfg.latency_ms)
            action = await take_fault(self.sim, req.model)
        except ProviderError as f:
            return ollama_error(f)
        reply = plan_reply(req, cfg)
        if not req.stream:
            return await whole_answer(
                self.sim, request, cfg, action, reply, lambda: final(req, reply, _message(reply))
            )
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        lines = (
            (json.dumps(line).encode() + b"\n", token) for line, token in stream_lines(req, reply)
        )
        return await Streamer(self.sim, request, cfg, action, frame=lambda raw: raw + b"\n").run(
            resp, lines
        )


def ollama_routes(sim: Simulator) -> list[web.RouteDef]:
    return Ollama(sim).routes()


__all__ = ["Ollama", "ollama_error", "ollama_routes", "parse_chat"]
