"""Provider simulator: an LLM provider that speaks the real wire protocols, on loopback.

The simulator is split in three layers so that further provider protocols (Anthropic
``/v1/messages``, Gemini, Bedrock, ...) slot in as extra route modules:

* ``Simulator`` holds the shared state: configuration (latency, fault injection, reply text),
  the recorded requests and the fault queue. It is protocol-neutral and thread-safe, so tests can
  drive a simulator that serves from another thread.
* The engine (``ChatRequest`` -> ``plan_reply`` -> ``Reply``) decides what the "model" answers:
  a tool call, an echo of a tool result, or the configured text. It knows no wire format.
* A protocol module parses its wire format into a ``ChatRequest``, renders the ``Reply``
  (non-streaming and streaming) and its own error shape. A module is any callable
  ``(Simulator) -> list[web.RouteDef]`` listed in ``PROTOCOLS``: ``openai_routes`` below (OpenAI,
  OpenRouter-style and Azure's v1 paths), ``anthropic_routes`` (Anthropic Messages, in
  ``e2e/provider_sim/anthropic.py``), ``azure_routes`` (Azure OpenAI deployments and Entra ID,
  ``azure.py``) and ``bedrock_routes`` (Bedrock Converse / InvokeModel and AWS STS,
  ``bedrock.py``; workload identity tokens in ``identity.py``).

Control endpoints (not recorded, no auth): ``GET/POST /_sim/config``, ``GET /_sim/requests``,
``POST /_sim/reset``, ``GET /_sim/health``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from e2e.provider_sim import scripted
from e2e.provider_sim.tokens import openai_context_error, openai_prompt_tokens, window_of

log = logging.getLogger("provider_sim")

FinishReason = Literal["stop", "length", "tool_use"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ProtocolModule = Callable[["Simulator"], list[web.RouteDef]]

DEFAULT_MODELS = ("sim-fast", "sim-reasoning", "gpt-4o-mini", "qwen/qwen3-coder")
# What the dangerous_tool_use safeguard flags by default: deleting a home or root directory.
DEFAULT_DANGEROUS_PATTERN = (
    r"rm\s+-[a-zA-Z]*[rf][a-zA-Z]*\s+(~|/|\$HOME)"  # deleting the home or root directory
    r"|(curl|wget)\b[^|]*\|\s*(ba|z)?sh\b"  # running a downloaded script
)


# --------------------------------------------------------------------------- configuration


@dataclass
class SimConfig:
    """Behaviour of the simulator. Every field can be changed at runtime (``POST /_sim/config``).

    Timing: ``latency_ms`` passes before any response byte; a stream then waits ``ttft_ms``
    before its first token and ``token_delay_ms`` between tokens. A non-streaming answer waits
    the same total time before it is sent, as a real model would.

    Faults: ``fail_next`` is a queue consumed one entry per model request (chat completions;
    not ``/models``). ``fail_models`` fails every request for a model, until changed. A fault is
    an HTTP status as a string ("500", "429", "503", ...), "timeout" (hang ``timeout_s`` seconds,
    then 504) or "disconnect" (drop the connection; a stream is cut after its first token).
    OpenAI's chat completions answer a 429 with ``retry-after: <retry_after_s>`` (and the
    ``x-ratelimit-*`` headers OpenAI sends with it), as OpenAI and Azure do.

    Tools: by default the model calls the first tool a request offers (arguments from its
    schema). ``tool_plan`` = ``{"tool": NAME, "arguments": {...}}`` makes it call only tool NAME,
    with exactly those arguments, when a request offers it; a request that does not offer it is
    answered with text. An agent such as Claude Code offers a dozen tools on every turn, so the
    plan says which one a scripted turn runs (``{"tool": "Read", "arguments": {"file_path":
    ...}}``). Either way, a request whose last message is a tool result is answered with
    "Tool said: <result>" (the results of parallel calls, one a line).
    ``[[sim:tool NAME {json}]]`` in a request's last user message is a plan for that request
    alone.

    Judges: a request for one of ``judge_models`` is answered like a safety classifier asked
    for ``{"verdicts": {id: {"flagged", "reason"}}}`` on the tool calls its prompt lists, flagging
    those whose input matches the regex ``dangerous_pattern``; fail it with ``fail_models``.

    Anthropic (``anthropic.py``): ``anthropic_betas`` lists the ``anthropic-beta`` values the
    API accepts (None: the real API's list, ``anthropic.KNOWN_BETAS``); any other value is
    refused with 400, as the real API does. The ``dangerous_tool_use`` safeguard flags a tool
    call whose input matches ``dangerous_pattern``, as the judges do. ``cache_min_tokens`` is
    the shortest prefix prompt caching stores.

    Clouds (``bedrock.py``, ``azure.py``): ``aws_region`` is the region SigV4 signatures must be
    scoped to; ``aws_access_keys`` the static key pairs (id -> secret); ``bedrock_api_keys`` the
    Bedrock API keys accepted as bearer tokens; ``aws_roles`` the IAM roles STS lets a web
    identity assume (role ARN -> the ServiceAccount subject its trust policy names);
    ``eks_pod_identity_associations`` the EKS Pod Identity associations the simulated agent
    knows (ServiceAccount subject ``system:serviceaccount:<ns>:<sa>`` -> role ARN).
    ``azure_api_versions`` the ``api-version`` values Azure accepts (None: ``azure.API_VERSIONS``),
    ``azure_deployments`` its deployments (None: any), ``entra_apps`` the Entra ID apps with a
    federated credential (client id -> {"tenant": tenant id, "subject": ServiceAccount subject}).
    GCP (``gemini.py``): ``gcp_workload_pools`` the workload identity pool providers
    (``projects/N/locations/global/workloadIdentityPools/P/providers/Q``) that trust the
    simulated cluster's issuer; ``gcp_service_accounts`` who may impersonate each service
    account (e-mail -> federated principals granted roles/iam.workloadIdentityUser).

    Context windows: ``context_windows`` = ``{model: tokens}`` gives models a window, as real
    providers do: a request whose prompt, or prompt plus ``max_tokens``, does not fit is refused
    with the provider's own 400 (OpenAI ``context_length_exceeded``, Anthropic "prompt is too
    long"). Chat completions count the prompt with tiktoken as OpenAI reports it; Anthropic
    requests with the simulator's estimate (``tokens.py``).
    """

    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    token_delay_ms: float = 0.0
    reply: str | None = None
    fail_next: list[str] = field(default_factory=list)
    fail_models: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None
    timeout_s: float = 300.0
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    max_recorded: int = 1000
    tool_plan: dict[str, Any] | None = None
    judge_models: list[str] = field(default_factory=lambda: ["sim-judge"])
    anthropic_betas: list[str] | None = None
    dangerous_pattern: str = DEFAULT_DANGEROUS_PATTERN
    cache_min_tokens: int = 1024
    aws_region: str = "us-east-1"
    aws_access_keys: dict[str, str] = field(default_factory=dict)
    bedrock_api_keys: list[str] = field(default_factory=list)
    aws_roles: dict[str, str] = field(default_factory=dict)
    eks_pod_identity_associations: dict[str, str] = field(default_factory=dict)
    azure_api_versions: list[str] | None = None
    azure_deployments: list[str] | None = None
    entra_apps: dict[str, dict[str, str]] = field(default_factory=dict)
    gcp_workload_pools: list[str] = field(default_factory=list)
    gcp_service_accounts: dict[str, list[str]] = field(default_factory=dict)
    context_windows: dict[str, int] = field(default_factory=dict)
    retry_after_s: int = 1

    def update(self, changes: Mapping[str, Any]) -> None:
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        for key, value in changes.items():
            if key == "tool_plan":
                value = check_tool_plan(value)
            elif key == "fail_next":
                value = [str(v) for v in (value or [])]
            elif key == "fail_models":
                value = {str(k): str(v) for k, v in (value or {}).items()}
            elif key in {"latency_ms", "ttft_ms", "token_delay_ms", "timeout_s"}:
                value = float(value)
            elif key in {"max_recorded", "cache_min_tokens"}:
                value = int(value)
            elif key == "anthropic_betas":
                value = None if value is None else [str(v) for v in value]
            elif key == "context_windows":
                value = check_context_windows(value)
            elif key == "dangerous_pattern":
                re.compile(str(value))  # a bad pattern is refused here, not mid-request
                value = str(value)
            setattr(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_context_windows(value: Any) -> dict[str, int]:
    """A valid ``context_windows`` (model -> positive token count), or ValueError."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError("context_windows must be a JSON object {model: tokens}")
    windows = {}
    for model, tokens in value.items():
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
            raise ValueError(f"context_windows.{model} must be a positive integer")
        windows[str(model)] = tokens
    return windows


def check_tool_plan(value: Any) -> dict[str, Any] | None:
    """A valid ``tool_plan`` (a copy), or ValueError saying what is wrong."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError('tool_plan must be {"tool": NAME, "arguments": {...}} or null')
    unknown = sorted(set(value) - {"tool", "arguments"})
    if unknown:
        raise ValueError(f"tool_plan: unknown keys: {', '.join(unknown)}")
    tool, arguments = value.get("tool"), value.get("arguments", {})
    if not isinstance(tool, str) or not tool:
        raise ValueError("tool_plan.tool must be the name of a tool")
    if not isinstance(arguments, Mapping):
        raise ValueError("tool_plan.arguments must be a JSON object")
    return {"tool": tool, "arguments": json.loads(json.dumps(arguments))}


# --------------------------------------------------------------------------- shared state


class Simulator:
    """Protocol-neutral state shared by all route modules. Safe to use from any thread."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self._lock = threading.Lock()
        self.config = config or SimConfig()
        self._baseline: SimConfig | None = None
        self._requests: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=self.config.max_recorded
        )
        self.last_authorization: str | None = None
        # What protocol modules remember between requests (e.g. Anthropic's prompt cache).
        self.state: dict[str, Any] = {}
        # Set by the server loop when it shuts down, so that "timeout" faults stop hanging.
        self.stopping: asyncio.Event | None = None

    # ---- configuration
    def configure(self, **changes: Any) -> dict[str, Any]:
        with self._lock:
            self.config.update(changes)
            if self._requests.maxlen != self.config.max_recorded:
                self._requests = collections.deque(self._requests, maxlen=self.config.max_recorded)
            return self.config.to_dict()

    def config_snapshot(self) -> SimConfig:
        with self._lock:
            plan = self.config.tool_plan
            return dataclasses.replace(
                self.config,
                fail_next=list(self.config.fail_next),
                fail_models=dict(self.config.fail_models),
                models=list(self.config.models),
                context_windows=dict(self.config.context_windows),
                tool_plan=json.loads(json.dumps(plan)) if plan is not None else None,
                anthropic_betas=(
                    list(self.config.anthropic_betas)
                    if self.config.anthropic_betas is not None
                    else None
                ),
            )

    def keep_as_baseline(self) -> None:
        """Make the current configuration the one `reset` restores (the defaults until then)."""
        snapshot = self.config_snapshot()
        with self._lock:
            self._baseline = snapshot

    def reset(self) -> None:
        """Forget recorded requests and restore the configuration the simulator started with."""
        with self._lock:
            self.config = SimConfig()
            if self._baseline is not None:
                self.config.update(self._baseline.to_dict())  # asdict: a deep copy
            self._requests = collections.deque(maxlen=self.config.max_recorded)
            self.last_authorization = None
            self.state = {}

    # ---- faults
    def take_fault(self, model: str) -> str | None:
        with self._lock:
            if self.config.fail_next:
                return self.config.fail_next.pop(0)
            return self.config.fail_models.get(model)

    # ---- recording
    def record(
        self, request: web.Request, body: Any, *, protocol: str, model: str | None, **extra: Any
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": len(self._requests),
            "time": time.time(),
            "protocol": protocol,
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": dict(request.headers),
            "model": model,
            "body": body,
            **extra,
        }
        with self._lock:
            entry["id"] = (self._requests[-1]["id"] + 1) if self._requests else 0
            self._requests.append(entry)
            auth = (
                request.headers.get("Authorization")
                or request.headers.get("api-key")
                or request.headers.get("x-api-key")
            )
            if auth is not None:
                self.last_authorization = auth
        return entry

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    # ---- timing
    async def sleep(self, ms: float) -> None:
        if ms > 0:
            await asyncio.sleep(ms / 1000.0)

    async def hang(self) -> None:
        """The "timeout" fault: wait until the client gives up, the limit passes or we stop."""
        timeout = self.config.timeout_s
        if self.stopping is None:
            await asyncio.sleep(timeout)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout)


# --------------------------------------------------------------------------- engine


@dataclass
class ToolSpec:
    name: str
    parameters: dict[str, Any]


@dataclass
class Message:
    role: str  # system | user | assistant | tool
    text: str


@dataclass
class ChatRequest:
    """A chat request in protocol-neutral form."""

    model: str
    messages: list[Message]
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: str | None = None  # None/"auto"/"required" | "none" | a tool name
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    prompt_tokens: int | None = None
    """The provider's count of the prompt, when the protocol module made one (else the
    engine's estimate)."""


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(",", ":"))


@dataclass
class Reply:
    text: str | None
    tool_call: ToolCall | None
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def estimate_tokens(text: str) -> int:
    """The simulator's tokenizer: one token per four characters, plus one."""
    return len(text) // 4 + 1


def split_tokens(text: str) -> list[str]:
    """Stream pieces: words with their leading whitespace (joined, they give back ``text``)."""
    pieces = re.findall(r"\s*\S+|\s+$", text)
    if "".join(pieces) != text:  # pragma: no cover - defensive, the regex covers all text
        return [text]
    return pieces or [text]


def example_value(schema: Mapping[str, Any]) -> Any:
    """A value that satisfies a JSON schema's type, used to fill a tool call's arguments."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind is None:
        for combo in ("anyOf", "oneOf", "allOf"):
            if schema.get(combo):
                return example_value(schema[combo][0])
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return example_arguments(schema)
    if kind == "null":
        return None
    return "echo"


def example_arguments(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """Arguments with every required property of ``schema`` set to an example value."""
    if not schema:
        return {}
    properties = schema.get("properties") or {}
    return {
        name: example_value(properties.get(name) or {}) for name in schema.get("required") or []
    }


def plan_reply(req: ChatRequest, cfg: SimConfig) -> Reply:
    """Decide what the simulated model answers.

    * last message from a tool -> "Tool said: <tool result>" (the result verbatim; the
      results of parallel calls, the tool messages that end the request, one a line)
    * tools offered and the last message is the user's -> a call of a tool: with a
      ``tool_plan``, its tool with its arguments (text instead when that tool is not offered);
      else the first (or chosen) tool with its required arguments filled from the schema
    * otherwise the configured reply, default "Hello from <model>"
    """
    prompt_text = "\n".join(m.text for m in req.messages)
    prompt_tokens = (
        req.prompt_tokens if req.prompt_tokens is not None else estimate_tokens(prompt_text)
    )
    last = req.messages[-1] if req.messages else None
    if req.model in cfg.judge_models:
        text = judge_reply(last.text if last is not None else "", cfg.dangerous_pattern)
        return Reply(
            text=text,
            tool_call=None,
            finish_reason="stop",
            prompt_tokens=prompt_tokens,
            completion_tokens=estimate_tokens(text),
        )
    plan = cfg.tool_plan
    turn = latest_user_turn(req.messages)
    # the last one: a summary of earlier turns may come first in the turn
    directive = next(reversed(list(TOOL_DIRECTIVE.finditer(turn))), None)
    if directive is not None:
        plan = {"tool": directive.group(1), "arguments": json.loads(directive.group(2))}
    offered = {t.name for t in req.tools}
    may_call = bool(req.tools) and last is not None and last.role == "user"
    if TEXT_ONLY.search(turn):
        may_call = False  # "Respond with TEXT ONLY. Do NOT call any tools." is obeyed
    if last is not None and last.role == "user" and SUMMARY_REQUEST.search(turn):
        text = summary_reply(req.messages)
        return Reply(
            text=text,
            tool_call=None,
            finish_reason="stop",
            prompt_tokens=prompt_tokens,
            completion_tokens=estimate_tokens(text),
        )

    call: ToolCall | None = None
    if last is not None and last.role == "tool":
        text = "Tool said: " + "\n".join(m.text for m in trailing_tool_results(req.messages))
    elif may_call and plan is not None and req.tool_choice != "none" and plan["tool"] in offered:
        call = ToolCall(
            id="call_" + uuid.uuid4().hex[:24],
            name=plan["tool"],
            arguments=dict(plan.get("arguments") or {}),
        )
    elif may_call and plan is None and req.tool_choice != "none":
        tool = next((t for t in req.tools if t.name == req.tool_choice), req.tools[0])
        call = ToolCall(
            id="call_" + uuid.uuid4().hex[:24],
            name=tool.name,
            arguments=example_arguments(tool.parameters),
        )
    else:
        text = cfg.reply if cfg.reply is not None else f"Hello from {req.model}"
    if call is not None:
        return Reply(
            text=None,
            tool_call=call,
            finish_reason="tool_use",
            prompt_tokens=prompt_tokens,
            completion_tokens=estimate_tokens(call.name + call.arguments_json),
        )

    finish: FinishReason = "stop"
    if req.max_tokens is not None and req.max_tokens > 0 and estimate_tokens(text) > req.max_tokens:
        text = text[: max(0, (req.max_tokens - 1) * 4)] or text[:1]
        finish = "length"
    return Reply(
        text=text,
        tool_call=None,
        finish_reason=finish,
        prompt_tokens=prompt_tokens,
        completion_tokens=estimate_tokens(text),
    )


def latest_user_turn(messages: list[Message]) -> str:
    """Text of the user messages after the last non-user one: the turn being answered.

    Claude Code sends its reminders as user messages of their own after the typed prompt, so
    the prompt is not always the last message; once a tool answers, the turn is over.
    """
    turn: list[str] = []
    for message in reversed(messages):
        if message.role != "user":
            break
        turn.append(message.text)
    return "\n".join(reversed(turn))


def trailing_tool_results(messages: list[Message]) -> list[Message]:
    """The tool messages after the last other one: the results of the latest (parallel)
    tool calls, in order."""
    results: list[Message] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.append(message)
    return results[::-1]


TEXT_ONLY = re.compile(r"\b(respond with text only|do not call any tools)\b", re.I)
"""A turn that forbids tool calls (Claude Code's compaction request says both)."""
SUMMARY_REQUEST = re.compile(r"create a detailed summary of the conversation", re.I)
"""Claude Code's compaction request: summarise the conversation so far."""


def summary_reply(messages: list[Message]) -> str:
    """What the simulated model answers to a compaction request: the ``<analysis>`` and
    ``<summary>`` blocks Claude Code asks for, listing the user's requests and the tool
    results seen (their first line), so that the summary is short and says what happened."""
    users = [m for m in messages[:-1] if m.role == "user" and "<system-reminder>" not in m.text]
    tools = [m for m in messages if m.role == "tool"]
    requests = [" ".join(TOOL_DIRECTIVE.sub("", m.text).split())[:200] for m in users][-10:]
    results = [(m.text.strip().splitlines() or [""])[0][:120] for m in tools][-10:]
    lines = [
        "<analysis>",
        f"The conversation has {len(messages) - 1} messages: {len(users)} from the user and "
        f"{len(tools)} tool results.",
        "</analysis>",
        "",
        "<summary>",
        "1. Primary Request and Intent:",
        *(f"   - {r}" for r in requests),
        "3. Files and Code Sections:",
        *(f"   - a tool returned: {r}" for r in results),
        "8. Current Work:",
        "   The last request was answered; nothing is pending.",
        "</summary>",
    ]
    return "\n".join(lines)


TOOL_DIRECTIVE = re.compile(r"\[\[sim:tool (\S+) (\{.*?\})\]\]", re.DOTALL)
"""``[[sim:tool NAME {json arguments}]]`` in the user's last message: call NAME with those
arguments on this request (a ``tool_plan`` for one request)."""


def judge_reply(prompt: str, dangerous: str) -> str:
    """What a judge model (``judge_models``) answers: the verdicts JSON a safety classifier is
    asked for, for the tool calls listed in the prompt (the last JSON array of objects with an
    ``id``), flagging those whose input matches the regex ``dangerous``."""
    calls: list[Any] = []
    decoder = json.JSONDecoder()
    start = prompt.rfind("[")
    while start >= 0:
        try:
            value, _ = decoder.raw_decode(prompt[start:])
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, dict) and "id" in v for v in value):
            calls = value
            break
        start = prompt.rfind("[", 0, start)
    pattern = re.compile(dangerous)
    verdicts = {}
    for call in calls:
        flagged = bool(pattern.search(json.dumps(call.get("input"))))
        reason = "matches a destructive or remote-code pattern" if flagged else "routine"
        verdicts[str(call["id"])] = {"flagged": flagged, "reason": reason}
    return json.dumps({"verdicts": verdicts})


def content_text(content: Any) -> str:
    """Text of a message content: a string, or a list of parts with ``text`` (images ignored)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, Mapping):
                if isinstance(part.get("text"), str):
                    out.append(part["text"])
                elif "content" in part:  # nested results (e.g. Anthropic tool_result blocks)
                    out.append(content_text(part["content"]))
        return "".join(out)
    return json.dumps(content)


# --------------------------------------------------------------------------- helpers for modules


class ProviderError(Exception):
    """Raised inside a handler to answer with an HTTP error in the protocol's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.retry_after = retry_after
        """Seconds of the ``retry-after`` header, for the renderers that send one."""


FAULT_MESSAGES: dict[int, tuple[str, str, str | None]] = {
    400: ("Simulated bad request", "invalid_request_error", None),
    401: ("Simulated authentication failure", "invalid_request_error", "invalid_api_key"),
    403: ("Simulated permission denied", "permission_error", None),
    404: ("Simulated not found", "invalid_request_error", "model_not_found"),
    429: ("Rate limit reached (simulated)", "requests", "rate_limit_exceeded"),
    500: (
        "The server had an error while processing your request (simulated)",
        "server_error",
        None,
    ),
    502: ("Bad gateway (simulated)", "server_error", None),
    503: ("The engine is currently overloaded (simulated)", "server_error", None),
    504: ("Gateway timeout (simulated)", "server_error", None),
    529: ("Overloaded (simulated)", "overloaded_error", None),
}


def fault_for_status(status: int) -> ProviderError:
    message, type_, code = FAULT_MESSAGES.get(
        status, (f"Simulated HTTP {status}", "server_error", None)
    )
    return ProviderError(status, message, type_=type_, code=code)


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw) if raw else {}
    except ValueError as exc:
        raise ProviderError(
            400, f"invalid JSON body: {exc}", type_="invalid_request_error"
        ) from exc


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def check_key(sim: Simulator, key: str | None) -> None:
    """401 unless ``key`` is non-empty and, when the simulator requires one, the right one."""
    if not key:
        raise ProviderError(
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization "
            "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            type_="invalid_request_error",
        )
    wanted = sim.config.api_key
    if wanted is not None and key != wanted:
        raise ProviderError(
            401,
            f"Incorrect API key provided: {key[:3]}***{key[-2:]}.",
            type_="invalid_request_error",
            code="invalid_api_key",
        )


async def apply_fault(sim: Simulator, fault: str | None) -> str | None:
    """Turn a queued fault into an error; returns "disconnect" for the caller to act on."""
    if fault is None:
        return None
    if fault == "timeout":
        await sim.hang()
        raise fault_for_status(504)
    if fault == "disconnect":
        return fault
    try:
        status = int(fault)
    except ValueError:
        log.warning("unknown fault %r ignored", fault)
        return None
    error = fault_for_status(status)
    if status == 429:
        error.retry_after = sim.config_snapshot().retry_after_s
    raise error


def drop_connection(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


def sse(payload: Mapping[str, Any] | str, event: str | None = None) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data}\n\n".encode()


async def start_sse(
    request: web.Request, headers: Mapping[str, str] | None = None
) -> web.StreamResponse:
    resp = web.StreamResponse(
        status=200,
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            **(headers or {}),
        },
    )
    await resp.prepare(request)
    return resp


# --------------------------------------------------------------------------- OpenAI protocol


def openai_error(fault: ProviderError) -> web.Response:
    body = {
        "error": {"message": fault.message, "type": fault.type, "param": None, "code": fault.code}
    }
    headers = None
    if fault.status == 429:
        wait = fault.retry_after or 1
        headers = {
            "retry-after": str(wait),
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{wait}s",
        }
    return web.json_response(body, status=fault.status, headers=headers)


def parse_openai_chat(body: Mapping[str, Any], default_model: str | None = None) -> ChatRequest:
    if not isinstance(body, Mapping):
        raise ProviderError(
            400, "request body must be a JSON object", type_="invalid_request_error"
        )
    model = body.get("model") or default_model
    if not model:
        raise ProviderError(
            400, "you must provide a model parameter", type_="invalid_request_error"
        )
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise ProviderError(
            400, "'messages' must be a non-empty array", type_="invalid_request_error"
        )
    messages = []
    for m in raw_messages:
        role = str(m.get("role", "user"))
        text = content_text(m.get("content"))
        for call in m.get("tool_calls") or []:
            fn = call.get("function") or {}
            text += f"{fn.get('name', '')}{fn.get('arguments', '')}"
        messages.append(Message(role="system" if role == "developer" else role, text=text))
    tools = []
    for t in body.get("tools") or []:
        fn = t.get("function") or {}
        if fn.get("name"):
            tools.append(ToolSpec(name=fn["name"], parameters=fn.get("parameters") or {}))
    choice = body.get("tool_choice")
    tool_choice: str | None
    if isinstance(choice, Mapping):
        tool_choice = (choice.get("function") or {}).get("name")
    else:
        tool_choice = choice if isinstance(choice, str) else None
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    return ChatRequest(
        model=str(model),
        messages=messages,
        tools=tools,
        tool_choice=tool_choice,
        stream=bool(body.get("stream")),
        include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
        max_tokens=int(max_tokens) if max_tokens else None,
    )


def check_openai_window(cfg: SimConfig, req: ChatRequest) -> None:
    """OpenAI's 400 ``context_length_exceeded`` when the request does not fit the model."""
    window = window_of(cfg.context_windows, req.model)
    if window is None or req.prompt_tokens is None:
        return
    message = openai_context_error(window, req.prompt_tokens, req.max_tokens)
    if message is not None:
        raise ProviderError(
            400, message, type_="invalid_request_error", code="context_length_exceeded"
        )


OPENAI_FINISH = {"stop": "stop", "length": "length", "tool_use": "tool_calls"}


class OpenAIChat:
    """OpenAI chat completions; also serves OpenRouter-style and Azure v1 paths."""

    protocol = "openai"

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[web.RouteDef]:
        chat, models = self.chat_completions, self.models
        return [
            web.post("/v1/chat/completions", chat),
            web.post("/chat/completions", chat),
            web.post("/api/v1/chat/completions", chat),  # OpenRouter base .../api/v1
            web.post("/openai/v1/chat/completions", chat),  # Azure OpenAI v1 API
            web.get("/v1/models", models),
            web.get("/models", models),
            web.get("/api/v1/models", models),
        ]

    # ---- handlers
    async def models(self, request: web.Request) -> web.StreamResponse:
        try:
            check_key(self.sim, bearer_token(request))
        except ProviderError as f:
            return openai_error(f)
        created = int(time.time())
        data = [
            {"id": m, "object": "model", "created": created, "owned_by": "provider-sim"}
            for m in self.sim.config_snapshot().models
        ]
        return web.json_response({"object": "list", "data": data})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._chat(request, render_error=openai_error)

    async def _chat(
        self,
        request: web.Request,
        *,
        render_error: Callable[[ProviderError], web.Response],
        deployment: str | None = None,
        authenticate: Callable[[], dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> web.StreamResponse:
        """``authenticate`` checks the credential (default: a bearer key, ``check_key``) and
        returns what to add to the recorded request."""
        extra = {**(extra or {}), **({"deployment": deployment} if deployment else {})}
        try:
            body = await read_json(request)
        except ProviderError as f:
            self.sim.record(request, None, protocol=self.protocol, model=deployment, **extra)
            return render_error(f)
        model = body.get("model") if isinstance(body, Mapping) else None
        entry = self.sim.record(
            request, body, protocol=self.protocol, model=model or deployment, **extra
        )
        try:
            if authenticate is None:
                check_key(self.sim, bearer_token(request))
            else:
                entry.update(authenticate())
            req = parse_openai_chat(body, default_model=deployment)
            refusal = responses_only_refusal(req.model)
            if refusal is not None:
                raise refusal
            cfg = self.sim.config_snapshot()
            req.prompt_tokens = openai_prompt_tokens(body, req.model)
            check_openai_window(cfg, req)
            await self.sim.sleep(cfg.latency_ms)
            action = await apply_fault(self.sim, self.sim.take_fault(req.model))
        except ProviderError as f:
            return render_error(f)
        script = scripted.script_of(latest_user_turn(req.messages))
        if script is not None:  # e2e/provider_sim/scripted.py
            return await self._scripted(request, req, script)
        reply = plan_reply(req, cfg)
        if req.stream:
            return await self._stream(request, req, reply, cfg, cut=action == "disconnect")
        if action == "disconnect":
            drop_connection(request)
            return web.Response(status=500)
        await self.sim.sleep(cfg.ttft_ms + cfg.token_delay_ms * reply.completion_tokens)
        return web.json_response(self.completion(req, reply))

    # ---- rendering
    @staticmethod
    def _envelope(req: ChatRequest, cid: str, created: int, obj: str) -> dict[str, Any]:
        return {
            "id": cid,
            "object": obj,
            "created": created,
            "model": req.model,
            "system_fingerprint": "fp_provider_sim",
        }

    @staticmethod
    def _usage(reply: Reply) -> dict[str, Any]:
        return {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.total_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def completion(self, req: ChatRequest, reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.text,
            "refusal": None,
            "annotations": [],
        }
        if reply.tool_call is not None:
            call = reply.tool_call
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json},
                }
            ]
        out = self._envelope(
            req, "chatcmpl-" + uuid.uuid4().hex, int(time.time()), "chat.completion"
        )
        out["choices"] = [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": OPENAI_FINISH[reply.finish_reason],
            }
        ]
        out["usage"] = self._usage(reply)
        out["service_tier"] = "default"
        return out

    def chunks(self, req: ChatRequest, reply: Reply) -> Iterator[tuple[dict[str, Any], bool]]:
        """(chunk, carries_a_token) pairs of a streamed answer, without the final [DONE]."""
        cid, created = "chatcmpl-" + uuid.uuid4().hex, int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            c = self._envelope(req, cid, created, "chat.completion.chunk")
            c["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            if req.include_usage:
                c["usage"] = None
            return c

        if reply.tool_call is not None:
            call = reply.tool_call
            yield (
                chunk(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": call.id,
                                "type": "function",
                                "function": {"name": call.name, "arguments": ""},
                            }
                        ],
                    }
                ),
                False,
            )
            args = call.arguments_json
            step = max(1, len(args) // 3)
            for i in range(0, len(args), step):
                yield (
                    chunk(
                        {
                            "tool_calls": [
                                {"index": 0, "function": {"arguments": args[i : i + step]}}
                            ]
                        }
                    ),
                    True,
                )
        else:
            yield chunk({"role": "assistant", "content": "", "refusal": None}), False
            for piece in split_tokens(reply.text or ""):
                yield chunk({"content": piece}), True
        yield chunk({}, OPENAI_FINISH[reply.finish_reason]), False
        if req.include_usage:
            final = self._envelope(req, cid, created, "chat.completion.chunk")
            final["choices"] = []
            final["usage"] = self._usage(reply)
            yield final, False

    async def _scripted(
        self, request: web.Request, req: ChatRequest, script: scripted.Script
    ) -> web.StreamResponse:
        cid, created = "chatcmpl-" + uuid.uuid4().hex, int(time.time())
        prompt = req.prompt_tokens or 1
        usage = Reply(None, None, "stop", prompt, scripted.completion_tokens(script))
        if not req.stream:
            out = self._envelope(req, cid, created, "chat.completion")
            out["choices"] = [
                {
                    "index": 0,
                    "message": scripted.message(script),
                    "logprobs": None,
                    "finish_reason": script.finish_reason,
                }
            ]
            out["usage"] = self._usage(usage)
            return web.json_response(out)
        resp = await start_sse(request)
        finish: list[tuple[dict[str, Any], str | None]] = [({}, script.finish_reason)]
        for delta, reason in [*((d, None) for d in scripted.deltas(script)), *finish]:
            chunk = self._envelope(req, cid, created, "chat.completion.chunk")
            chunk["choices"] = [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
            ]
            await resp.write(sse(chunk))
        if req.include_usage:
            final = self._envelope(req, cid, created, "chat.completion.chunk")
            final["choices"] = []
            final["usage"] = self._usage(usage)
            await resp.write(sse(final))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _stream(
        self, request: web.Request, req: ChatRequest, reply: Reply, cfg: SimConfig, *, cut: bool
    ) -> web.StreamResponse:
        resp = await start_sse(request)
        first = True
        for payload, is_token in self.chunks(req, reply):
            if is_token:
                await self.sim.sleep(cfg.ttft_ms if first else cfg.token_delay_ms)
                first = False
            await resp.write(sse(payload))
            if is_token and cut:  # the "disconnect" fault: cut the stream after one token
                drop_connection(request)
                return resp
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def responses_only_refusal(model: str) -> ProviderError | None:
    """OpenAI's 404 for a Responses-only model on chat completions (responses.py)."""
    from e2e.provider_sim.responses import chat_refusal

    return chat_refusal(model)


def openai_routes(sim: Simulator) -> list[web.RouteDef]:
    return OpenAIChat(sim).routes()


# --------------------------------------------------------------------------- application


def anthropic_routes(sim: Simulator) -> list[web.RouteDef]:
    """Anthropic Messages (e2e/provider_sim/anthropic.py), imported here to avoid a cycle."""
    from e2e.provider_sim.anthropic import anthropic_routes as routes

    return routes(sim)


def azure_routes(sim: Simulator) -> list[web.RouteDef]:
    """Azure OpenAI and Entra ID (e2e/provider_sim/azure.py)."""
    from e2e.provider_sim.azure import azure_routes as routes

    return routes(sim)


def gemini_routes(sim: Simulator) -> list[web.RouteDef]:
    """Gemini and Vertex AI (e2e/provider_sim/gemini.py)."""
    from e2e.provider_sim.gemini import gemini_routes as routes

    return routes(sim)


def bedrock_routes(sim: Simulator) -> list[web.RouteDef]:
    """Bedrock runtime and AWS STS (e2e/provider_sim/bedrock.py)."""
    from e2e.provider_sim.bedrock import bedrock_routes as routes

    return routes(sim)


def ollama_routes(sim: Simulator) -> list[web.RouteDef]:
    """Ollama's native API (e2e/provider_sim/ollama.py)."""
    from e2e.provider_sim.ollama import ollama_routes as routes

    return routes(sim)


def cohere_routes(sim: Simulator) -> list[web.RouteDef]:
    """Cohere v2 chat (e2e/provider_sim/cohere.py)."""
    from e2e.provider_sim.cohere import cohere_routes as routes

    return routes(sim)


def responses_routes(sim: Simulator) -> list[web.RouteDef]:
    """OpenAI's Responses API (e2e/provider_sim/responses.py)."""
    from e2e.provider_sim.responses import responses_routes as routes

    return routes(sim)


def compat_routes(sim: Simulator) -> list[web.RouteDef]:
    """Non-OpenAI paths of the OpenAI-compatible family (e2e/provider_sim/compat.py)."""
    from e2e.provider_sim.compat import compat_routes as routes

    return routes(sim)


#: Route modules served by every simulator.
PROTOCOLS: list[ProtocolModule] = [
    openai_routes,
    anthropic_routes,
    azure_routes,
    bedrock_routes,
    gemini_routes,
    ollama_routes,
    cohere_routes,
    responses_routes,
    compat_routes,
]


def control_routes(sim: Simulator) -> list[web.RouteDef]:
    async def get_config(_: web.Request) -> web.StreamResponse:
        return web.json_response(sim.config_snapshot().to_dict())

    async def post_config(request: web.Request) -> web.StreamResponse:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object")
            return web.json_response(sim.configure(**changes))
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)

    async def get_requests(_: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"requests": sim.requests(), "last_authorization": sim.last_authorization}
        )

    async def post_reset(_: web.Request) -> web.StreamResponse:
        sim.reset()
        return web.json_response({"ok": True})

    async def health(_: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True})

    return [
        web.get("/_sim/config", get_config),
        web.post("/_sim/config", post_config),
        web.get("/_sim/requests", get_requests),
        web.post("/_sim/reset", post_reset),
        web.get("/_sim/health", health),
    ]


def build_app(sim: Simulator, protocols: list[ProtocolModule] | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(control_routes(sim))
    for module in protocols if protocols is not None else PROTOCOLS:
        app.add_routes(module(sim))

    async def on_startup(_: web.Application) -> None:
        sim.stopping = asyncio.Event()

    async def on_shutdown(_: web.Application) -> None:
        if sim.stopping is not None:
            sim.stopping.set()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app


@contextlib.asynccontextmanager
async def serve(
    sim: Simulator, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[tuple[str, int]]:
    """Serve ``sim`` on the running loop; yields (host, bound port)."""
    runner = web.AppRunner(build_app(sim), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    try:
        server = site._server  # aiohttp exposes the bound port only here
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        yield host, int(bound)
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- background runner


class SimulatorHandle:
    """A simulator served from a daemon thread with its own event loop.

    Use ``handle.configure(...)``, ``handle.requests()``, ``handle.reset()`` directly (no HTTP),
    or the ``/_sim/*`` endpoints. ``stop()`` (or leaving the ``with`` block) shuts it down.
    """

    def __init__(self, sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="provider-sim", daemon=True)

    # ---- lifecycle
    def start(self, timeout: float = 10.0) -> SimulatorHandle:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("provider simulator did not start in time")
        if self._error is not None:
            raise RuntimeError("provider simulator failed to start") from self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # report start-up failures to start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self.sim, self.host, self.port) as (_, port):
            self.port = port
            self._ready.set()
            await self._stop.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)

    def __enter__(self) -> SimulatorHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- addresses
    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """OpenAI-style base URL (``.../v1``)."""
        return self.root_url + "/v1"

    # ---- state
    def configure(self, **changes: Any) -> dict[str, Any]:
        return self.sim.configure(**changes)

    def fail_next(self, *faults: str | int) -> None:
        self.sim.configure(fail_next=[*self.sim.config.fail_next, *map(str, faults)])

    def requests(self) -> list[dict[str, Any]]:
        return self.sim.requests()

    def reset(self) -> None:
        self.sim.reset()

    @property
    def last_authorization(self) -> str | None:
        return self.sim.last_authorization


def start_simulator(
    port: int = 0, host: str = "127.0.0.1", config: SimConfig | None = None, **changes: Any
) -> tuple[str, SimulatorHandle]:
    """Start a simulator in a background thread; returns (``http://host:port/v1``, handle).

    ``changes`` are config fields (``latency_ms=50``, ``reply="hi"`` ...). Stop it with
    ``handle.stop()`` or use the handle as a context manager.
    """
    sim = Simulator(config)
    if changes:
        sim.configure(**changes)
    sim.keep_as_baseline()
    handle = SimulatorHandle(sim, host, port).start()
    return handle.url, handle


@contextlib.asynccontextmanager
async def running_simulator(
    port: int = 0, host: str = "127.0.0.1", **changes: Any
) -> AsyncIterator[tuple[str, SimulatorHandle]]:
    """``async with running_simulator() as (url, handle):`` — for async fixtures."""
    url, handle = await asyncio.to_thread(start_simulator, port, host, **changes)
    try:
        yield url, handle
    finally:
        await asyncio.to_thread(handle.stop)
