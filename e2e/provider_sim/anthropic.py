"""Anthropic Messages protocol of the provider simulator: ``/v1/messages`` and ``count_tokens``.

What the real API checks, this module checks, in the real API's error shape
(``{"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...}``):

* a key in ``x-api-key`` or ``Authorization: Bearer`` (the simulator's ``api_key`` when set);
* ``anthropic-version`` present and a version the API knows;
* every ``anthropic-beta`` value one the API knows (``SimConfig.anthropic_betas``, default
  ``KNOWN_BETAS``): an unknown one is a 400 "Unexpected value(s) ... for the `anthropic-beta`
  header", as Anthropic answers it;
* ``model``, ``max_tokens`` (not for count_tokens) and ``messages`` with roles user/assistant;
  ``thinking.budget_tokens`` at least 1024 and below ``max_tokens``;
* the signature of every ``thinking`` block sent back in the history: it must be the one this
  simulator issued for that text (Anthropic refuses altered thinking);
* ``safeguards`` only with the ``dangerous-tool-use-2026-09-03`` beta.

It answers with the engine's reply (``server.plan_reply``) as Anthropic content blocks: a
``thinking`` block first when thinking is requested, then ``text`` or ``tool_use``. Streamed,
the exact event sequence: ``message_start``, ``ping``, per block ``content_block_start`` /
``content_block_delta`` (``thinking_delta`` + ``signature_delta``, ``text_delta``,
``input_json_delta``) / ``content_block_stop``, ``message_delta`` (stop_reason, usage), then
``message_stop``.

Prompt caching: a request with ``cache_control`` on blocks caches the prompt up to each such
block (when at least ``cache_min_tokens`` long): what an earlier request cached is reported in
``cache_read_input_tokens``, what this one adds in ``cache_creation_input_tokens``;
``input_tokens`` is the rest.

Safeguards: with ``safeguards: [{"type": "dangerous_tool_use", ...}]`` the answer carries
``safeguard_results`` (top level; streamed, in the final ``message_delta``'s ``delta``): one
verdict per ``tool_use`` id, ``flagged`` when the tool input matches
``SimConfig.dangerous_pattern``.

Tokens: Anthropic has not published the tokenizer of Claude 3 and later, so input tokens
(``usage.input_tokens``, ``count_tokens``) are the simulator's estimate: one token per four
characters plus one, over the system prompt, the messages and the JSON of the tools. With
``SimConfig.context_windows`` a model has a window: a prompt above it is refused with 400
``invalid_request_error`` "prompt is too long: N tokens > M maximum", a prompt that fits but
leaves no room for ``max_tokens`` with "input length and `max_tokens` exceed context limit".

Faults (``fail_next`` / ``fail_models``) come back in Anthropic's shape: 429
``rate_limit_error`` and 529 ``overloaded_error`` with ``retry-after``, 5xx ``api_error``,
"timeout" (504 ``timeout_error`` after hanging), "disconnect" (a stream cut after its first
token).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from aiohttp import web

from e2e.provider_sim.server import (
    ChatRequest,
    Message,
    ProviderError,
    Reply,
    SimConfig,
    Simulator,
    ToolSpec,
    apply_fault,
    bearer_token,
    content_text,
    drop_connection,
    estimate_tokens,
    plan_reply,
    read_json,
    split_tokens,
    sse,
    start_sse,
)
from e2e.provider_sim.tokens import anthropic_context_error, window_of

API_VERSIONS = ("2023-06-01", "2023-01-01")
DANGEROUS_TOOL_USE = "dangerous_tool_use"
DANGEROUS_TOOL_USE_BETA = "dangerous-tool-use-2026-09-03"
MIN_THINKING_BUDGET = 1024
KNOWN_BETAS = frozenset(
    {
        # Betas of Anthropic's API that Claude Code 2.1.332 knows (strings of its binary) ...
        "advanced-tool-use-2025-11-20",
        "advisor-tool-2026-03-01",
        "afk-mode-2026-01-31",
        "agent-memory-2026-07-22",
        "auto-mode-classifier-2026-07-16",
        "cache-diagnosis-2026-04-07",
        "cache-keepalive-2026-09-03",
        "ccr-byoc-2025-07-29",
        "ccr-triggers-2026-01-30",
        "claude-code-20250219",
        "claude-code-side-query-2026-09-29",
        "context-1m-2025-08-07",
        "context-hint-2026-04-09",
        "context-management-2025-06-27",
        "dangerous-tool-use-2026-09-03",
        "dreaming-2026-04-21",
        "effort-2025-11-24",
        "environments-2025-11-01",
        "extended-cache-ttl-2025-04-11",
        "fallback-credit-2026-06-01",
        "fast-mode-2026-02-01",
        "files-api-2025-04-14",
        "inline-tools-2026-09-15",
        "interleaved-thinking-2025-05-14",
        "managed-agents-2026-04-01",
        "mcp-servers-2025-12-04",
        "mcp-tunnels-2026-06-22",
        "message-batches-2024-09-24",
        "message-threads-2026-08-12",
        "mid-conversation-system-2026-04-07",
        "mid-conversation-system-clear-at-2026-08-21",
        "mid-conversation-tool-changes-2026-07-01",
        "oauth-2025-04-20",
        "oidc-federation-2026-04-01",
        "per-turn-control-2026-07-01",
        "program-use-case-ids-2026-09-17",
        "prompt-caching-evict-2026-05-12",
        "prompt-caching-scope-2026-01-05",
        "redact-thinking-2026-02-12",
        "request-tags-2026-08-21",
        "resumption-2026-10-08",
        "server-side-fallback-2026-06-01",
        "server-side-fallback-2026-07-01",
        "structured-outputs-2025-12-15",
        "subagent-review-2026-11-17",
        "task-budgets-2026-03-13",
        "thinking-binding-controls-2026-08-01",
        "thinking-display-updates-2026-08-18",
        "thinking-resumption-2026-07-17",
        "thinking-token-count-2026-05-13",
        "timing-2026-09-09",
        "token-counting-2024-11-01",
        "tool-provenance-2026-10-26",
        "tool-search-tool-2025-10-19",
        "user-profiles-2026-08-18",
        "web-search-2025-03-05",
        "web-search-results-only-2026-11-15",
        # ... and the other public ones (LiteLLM 1.106.12's map of Anthropic's betas).
        "code-execution-2025-08-25",
        "compact-2026-01-12",
        "compact-2026-09-04",
        "computer-use-2025-01-24",
        "computer-use-2025-11-24",
        "fine-grained-tool-streaming-2025-05-14",
        "mcp-client-2025-04-04",
        "mcp-client-2025-11-20",
        "mid-conversation-output-config-2026-07-01",
        "output-128k-2025-02-19",
        "prompt-caching-2024-07-31",
        "skills-2025-10-02",
        "structured-outputs-2025-11-13",
        "token-efficient-tools-2025-02-19",
        "web-fetch-2025-09-10",
    }
)
"""``anthropic-beta`` values the simulated API accepts by default."""

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_use": "tool_use"}
# Signs thinking blocks; a thinking block sent back must carry the signature issued for it.
_SIGNING_KEY = b"provider-sim-thinking"


def request_id() -> str:
    return "req_sim" + uuid.uuid4().hex[:20]


def anthropic_error(fault: ProviderError) -> web.Response:
    """An error in Anthropic's shape; 429 and 529 say when to retry."""
    kind = ERROR_TYPES.get(fault.status, "api_error")
    rid = request_id()
    headers = {"request-id": rid}
    if fault.status in (429, 529):
        headers["retry-after"] = str(fault.retry_after or 1)
    body = {"type": "error", "error": {"type": kind, "message": fault.message}, "request_id": rid}
    return web.json_response(body, status=fault.status, headers=headers)


def invalid(message: str) -> ProviderError:
    return ProviderError(400, message, type_="invalid_request_error")


def sign(thinking: str) -> str:
    digest = hmac.new(_SIGNING_KEY, thinking.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def request_betas(request: web.Request) -> list[str]:
    """The values of every ``anthropic-beta`` header, comma-separated or repeated."""
    return [
        value.strip()
        for header in request.headers.getall("anthropic-beta", [])
        for value in header.split(",")
        if value.strip()
    ]


def check_headers(request: web.Request, cfg: SimConfig) -> list[str]:
    """401/400 for what Anthropic checks in the headers; returns the betas."""
    key = request.headers.get("x-api-key") or bearer_token(request)
    if not key:
        raise ProviderError(401, "x-api-key header is required", type_="authentication_error")
    if cfg.api_key is not None and key != cfg.api_key:
        raise ProviderError(401, "invalid x-api-key", type_="authentication_error")
    version = request.headers.get("anthropic-version")
    if not version:
        raise invalid("anthropic-version: header is required")
    if version not in API_VERSIONS:
        raise invalid(f"anthropic-version: invalid version {version!r}")
    betas = request_betas(request)
    known = set(cfg.anthropic_betas) if cfg.anthropic_betas is not None else KNOWN_BETAS
    unknown = [beta for beta in betas if beta not in known]
    if unknown:
        values = ", ".join(f"`{beta}`" for beta in unknown)
        raise invalid(
            f"Unexpected value(s) {values} for the `anthropic-beta` header. Please consult our "
            "documentation at docs.anthropic.com or try again without the header."
        )
    return betas


# --------------------------------------------------------------------------- request parsing


def _blocks(content: Any) -> list[Mapping[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, Mapping)]
    return []


def check_thinking_signatures(messages: list[Any]) -> None:
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        for j, block in enumerate(_blocks(message.get("content"))):
            if block.get("type") != "thinking":
                continue
            text, signature = block.get("thinking"), block.get("signature")
            if not isinstance(text, str) or not isinstance(signature, str) or not signature:
                raise invalid(f"messages.{i}.content.{j}.thinking.signature: Field required")
            if not hmac.compare_digest(signature, sign(text)):
                raise invalid(f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")


def parse_messages(body: Mapping[str, Any], *, count_only: bool = False) -> ChatRequest:
    """Validate an Anthropic request body and turn it into the engine's ``ChatRequest``."""
    if not isinstance(body, Mapping):
        raise invalid("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model: Field required")
    max_tokens = body.get("max_tokens")
    if not count_only:
        if max_tokens is None:
            raise invalid("max_tokens: Field required")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise invalid("max_tokens: Input should be a valid integer greater than 0")
    raw = body.get("messages")
    if not isinstance(raw, list):
        raise invalid("messages: Field required")
    if not raw:
        raise invalid("messages: at least one message is required")
    messages: list[Message] = []
    system = body.get("system")
    if system:
        messages.append(Message(role="system", text=content_text(system)))
    for i, message in enumerate(raw):
        if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant"):
            raise invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        blocks = _blocks(message.get("content"))
        results = [b for b in blocks if b.get("type") == "tool_result"]
        if message["role"] == "user" and results:
            messages.append(Message(role="tool", text=content_text(results)))
            continue
        text = content_text([b for b in blocks if b.get("type") == "text"])
        for block in blocks:
            if block.get("type") == "tool_use":
                text += f"{block.get('name', '')}{json.dumps(block.get('input'))}"
        messages.append(Message(role=str(message["role"]), text=text))
    check_thinking_signatures(raw)
    tools = [
        ToolSpec(name=str(t["name"]), parameters=t.get("input_schema") or {})
        for t in body.get("tools") or []
        if isinstance(t, Mapping) and t.get("name") and "input_schema" in t
    ]
    choice = body.get("tool_choice")
    tool_choice: str | None = None
    if isinstance(choice, Mapping):
        kind = choice.get("type")
        if kind == "tool":
            tool_choice = str(choice.get("name"))
        elif kind == "none":
            tool_choice = "none"
    thinking = body.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") == "enabled" and not count_only:
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < MIN_THINKING_BUDGET:
            raise invalid(
                f"thinking.enabled.budget_tokens: Input should be greater than or equal to "
                f"{MIN_THINKING_BUDGET}"
            )
        if isinstance(max_tokens, int) and budget >= max_tokens:
            raise invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")
    return ChatRequest(
        model=model,
        messages=messages,
        tools=tools,
        tool_choice=tool_choice,
        stream=bool(body.get("stream")),
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
    )


def wants_thinking(body: Mapping[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive")


def dangerous_tool_use(body: Mapping[str, Any], betas: list[str]) -> Mapping[str, Any] | None:
    """The request's ``dangerous_tool_use`` safeguard, if any (400 without its beta)."""
    safeguards = body.get("safeguards")
    if safeguards is None:
        return None
    if DANGEROUS_TOOL_USE_BETA not in betas:
        raise invalid("safeguards: Extra inputs are not permitted")
    if not isinstance(safeguards, list):
        raise invalid("safeguards: Input should be a valid list")
    for i, entry in enumerate(safeguards):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("type"), str):
            raise invalid(f"safeguards.{i}.type: Field required")
    return next((e for e in safeguards if e.get("type") == DANGEROUS_TOOL_USE), None)


def prompt_estimate(req: ChatRequest, body: Mapping[str, Any]) -> int:
    """The simulator's estimate of a request's input tokens (Anthropic's tokenizer is not
    public): the text of system and messages, and the JSON of the tools."""
    text = "\n".join(m.text for m in req.messages) + json.dumps(body.get("tools") or [])
    return estimate_tokens(text)


def check_window(cfg: SimConfig, req: ChatRequest) -> None:
    """Anthropic's 400 when the prompt (or prompt plus max_tokens) exceeds the window."""
    window = window_of(cfg.context_windows, req.model)
    if window is None or req.prompt_tokens is None:
        return
    message = anthropic_context_error(window, req.prompt_tokens, req.max_tokens)
    if message is not None:
        raise invalid(message)


# --------------------------------------------------------------------------- prompt caching


def _cache_prefixes(body: Mapping[str, Any]) -> list[tuple[str, int]]:
    """(key text, tokens) of the prompt up to each block marked ``cache_control``.

    Tokens are counted as the engine counts the prompt (the text of system and messages).
    """
    parts: list[Any] = [*(body.get("tools") or [])]
    system = body.get("system")
    parts.extend(_blocks(system) if system else [])
    for message in body.get("messages") or []:
        if isinstance(message, Mapping):
            parts.extend(_blocks(message.get("content")))
    marked = [i for i, p in enumerate(parts) if isinstance(p, Mapping) and p.get("cache_control")]
    return [
        (json.dumps(parts[: i + 1], sort_keys=True), estimate_tokens(content_text(parts[: i + 1])))
        for i in marked
    ]


def cache_usage(sim: Simulator, body: Mapping[str, Any], prompt_tokens: int) -> tuple[int, int]:
    """(cache_creation_input_tokens, cache_read_input_tokens) of a request; remembers it.

    As Anthropic does: the longest prefix ending at a breakpoint that an earlier request cached
    is read; the prompt from there up to the last breakpoint is written.
    """
    cache: dict[str, int] = sim.state.setdefault("anthropic_prompt_cache", {})
    read = written = 0
    for prefix, counted in _cache_prefixes(body):
        tokens = min(counted, prompt_tokens)
        if tokens < sim.config.cache_min_tokens:
            continue
        key = hashlib.sha256(f"{body.get('model')}\n{prefix}".encode()).hexdigest()
        if key in cache:
            read = tokens
            written = 0
        else:
            cache[key] = tokens
            written = tokens - read
    return written, read


# --------------------------------------------------------------------------- rendering


class Answer:
    """One reply as Anthropic content blocks, with its usage and safeguard verdicts."""

    def __init__(
        self,
        req: ChatRequest,
        reply: Reply,
        *,
        thinking: bool,
        cache: tuple[int, int],
        safeguard: Mapping[str, Any] | None,
        pattern: str,
    ) -> None:
        self.id = "msg_sim" + uuid.uuid4().hex[:20]
        self.model = req.model
        self.reply = reply
        self.blocks: list[dict[str, Any]] = []
        if thinking:
            text = f"The user wants an answer from {req.model}; I will give it."
            self.blocks.append({"type": "thinking", "thinking": text, "signature": sign(text)})
        if reply.tool_call is not None:
            call = reply.tool_call
            self.blocks.append(
                {
                    "type": "tool_use",
                    "id": "toolu_" + call.id.removeprefix("call_"),
                    "name": call.name,
                    "input": call.arguments,
                }
            )
        else:
            self.blocks.append({"type": "text", "text": reply.text or ""})
        thinking_tokens = sum(estimate_tokens(b["thinking"]) for b in self.blocks[:1] if thinking)
        self.output_tokens = reply.completion_tokens + thinking_tokens
        created, read = cache
        self.cache_creation, self.cache_read = created, read
        self.input_tokens = max(1, reply.prompt_tokens - created - read)
        self.safeguard_results: list[dict[str, Any]] | None = None
        if safeguard is not None:
            self.safeguard_results = [
                {
                    "type": DANGEROUS_TOOL_USE,
                    "status": {
                        "type": "available",
                        "tool_uses": {
                            b["id"]: verdict(b, pattern)
                            for b in self.blocks
                            if b["type"] == "tool_use"
                        },
                    },
                }
            ]

    @property
    def stop_reason(self) -> str:
        return STOP_REASONS[self.reply.finish_reason]

    def usage(self, *, output_tokens: int | None = None) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_creation,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_tokens": self.output_tokens if output_tokens is None else output_tokens,
            "service_tier": "standard",
        }

    def message(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.blocks,
            "stop_reason": self.stop_reason,
            "stop_sequence": None,
            "usage": self.usage(),
        }
        if self.safeguard_results is not None:
            out["safeguard_results"] = self.safeguard_results
        return out

    def events(self) -> Iterator[tuple[str, dict[str, Any], bool]]:
        """(event name, payload, carries_a_token) of the streamed answer, in order."""
        start = {**self.message(), "content": [], "stop_reason": None}
        start.pop("safeguard_results", None)
        start["usage"] = self.usage(output_tokens=1)
        yield "message_start", {"type": "message_start", "message": start}, False
        yield "ping", {"type": "ping"}, False
        for index, block in enumerate(self.blocks):
            kind = block["type"]
            if kind == "thinking":
                opening: dict[str, Any] = {"type": "thinking", "thinking": "", "signature": ""}
                deltas = [
                    {"type": "thinking_delta", "thinking": piece}
                    for piece in split_tokens(block["thinking"])
                ]
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
            elif kind == "tool_use":
                opening = {**block, "input": {}}
                args = json.dumps(block["input"], separators=(",", ":"))
                step = max(1, len(args) // 3)
                deltas = [
                    {"type": "input_json_delta", "partial_json": args[i : i + step]}
                    for i in range(0, len(args), step)
                ]
            else:
                opening = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": p} for p in split_tokens(block["text"])]
            yield (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
                False,
            )
            for piece in deltas:
                payload = {"type": "content_block_delta", "index": index, "delta": piece}
                yield "content_block_delta", payload, True
            yield "content_block_stop", {"type": "content_block_stop", "index": index}, False
        final: dict[str, Any] = {"stop_reason": self.stop_reason, "stop_sequence": None}
        if self.safeguard_results is not None:
            final["safeguard_results"] = self.safeguard_results
        usage = self.usage()
        usage.pop("cache_creation")
        usage.pop("service_tier")
        yield "message_delta", {"type": "message_delta", "delta": final, "usage": usage}, False
        yield "message_stop", {"type": "message_stop"}, False


def verdict(block: Mapping[str, Any], pattern: str) -> dict[str, Any]:
    """The dangerous_tool_use verdict of one tool_use block."""
    rendered = json.dumps(block.get("input"), ensure_ascii=False)
    if re.search(pattern, rendered):
        return {
            "type": "evaluated",
            "outcome": "flagged",
            "explanation": f"{block.get('name')} matches the dangerous pattern {pattern!r}",
        }
    return {"type": "evaluated", "outcome": "not_flagged"}


# --------------------------------------------------------------------------- handlers


class AnthropicMessages:
    """``POST /v1/messages`` and ``POST /v1/messages/count_tokens``."""

    protocol = "anthropic"

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/messages", self.messages),
            web.post("/v1/messages/count_tokens", self.count_tokens),
        ]

    async def _read(self, request: web.Request, endpoint: str) -> Any:
        try:
            body = await read_json(request)
        except ProviderError:
            self.sim.record(request, None, protocol=self.protocol, model=None, endpoint=endpoint)
            raise
        model = body.get("model") if isinstance(body, Mapping) else None
        self.sim.record(
            request,
            body,
            protocol=self.protocol,
            model=model,
            endpoint=endpoint,
            betas=request_betas(request),
        )
        return body

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._read(request, "count_tokens")
            check_headers(request, self.sim.config_snapshot())
            req = parse_messages(body, count_only=True)
        except ProviderError as f:
            return anthropic_error(f)
        return web.json_response({"input_tokens": prompt_estimate(req, body)})

    async def messages(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._read(request, "messages")
            cfg = self.sim.config_snapshot()
            betas = check_headers(request, cfg)
            req = parse_messages(body)
            safeguard = dangerous_tool_use(body, betas)
            req.prompt_tokens = prompt_estimate(req, body)
            check_window(cfg, req)
            await self.sim.sleep(cfg.latency_ms)
            action = await apply_fault(self.sim, self.sim.take_fault(req.model))
        except ProviderError as f:
            return anthropic_error(f)
        reply = plan_reply(req, cfg)
        answer = Answer(
            req,
            reply,
            thinking=wants_thinking(body),
            cache=cache_usage(self.sim, body, reply.prompt_tokens),
            safeguard=safeguard,
            pattern=cfg.dangerous_pattern,
        )
        headers = {"request-id": request_id(), "anthropic-organization-id": "provider-sim"}
        if req.stream:
            return await self._stream(request, answer, cfg, headers, cut=action == "disconnect")
        if action == "disconnect":
            drop_connection(request)
            return web.Response(status=500)
        await self.sim.sleep(cfg.ttft_ms + cfg.token_delay_ms * answer.output_tokens)
        return web.json_response(answer.message(), headers=headers)

    async def _stream(
        self,
        request: web.Request,
        answer: Answer,
        cfg: SimConfig,
        headers: dict[str, str],
        *,
        cut: bool,
    ) -> web.StreamResponse:
        resp = await start_sse(request, headers)
        first = True
        for event, payload, is_token in answer.events():
            if is_token:
                await self.sim.sleep(cfg.ttft_ms if first else cfg.token_delay_ms)
                first = False
            await resp.write(sse(payload, event=event))
            if is_token and cut:  # the "disconnect" fault: cut the stream after one token
                drop_connection(request)
                return resp
        await resp.write_eof()
        return resp


def anthropic_routes(sim: Simulator) -> list[web.RouteDef]:
    return AnthropicMessages(sim).routes()


__all__ = [
    "KNOWN_BETAS",
    "AnthropicMessages",
    "anthropic_error",
    "anthropic_routes",
    "parse_messages",
    "sign",
]
