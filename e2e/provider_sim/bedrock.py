"""Amazon Bedrock runtime in the provider simulator: Converse, ConverseStream, InvokeModel, and STS.

Routes (bedrock-runtime's REST paths; the model id is URL-encoded, ``:`` as ``%3A``):

* ``POST /model/{modelId}/converse`` and ``/converse-stream``: the Converse API. The stream is
  the AWS event-stream binary framing (``event_message``): each message a prelude (total and
  headers length, CRC32), headers ``:event-type`` / ``:content-type`` / ``:message-type``, a
  JSON payload and the message's CRC32; events ``messageStart``, ``contentBlockStart`` (tool
  use only, as Bedrock sends it), ``contentBlockDelta`` (``text`` or ``toolUse.input``),
  ``contentBlockStop``, ``messageStop`` and ``metadata`` (usage, metrics).
* ``POST /model/{modelId}/invoke`` and ``/invoke-with-response-stream``: InvokeModel with
  Anthropic's Messages body (``anthropic_version: bedrock-2023-05-31``, no ``model`` nor
  ``stream`` key, betas in ``anthropic_beta``), which LiteLLM uses for Claude on ``/v1/messages``.
  Streamed, each Anthropic event is base64 in the ``bytes`` of a ``chunk`` event, the last one
  carrying ``amazon-bedrock-invocationMetrics``.
* ``POST /`` with ``Action=AssumeRoleWithWebIdentity``: AWS STS. It checks the web identity
  token (``identity.verify_service_account_token``, audience ``sts.amazonaws.com``) against
  the trust of the role (``SimConfig.aws_roles``: role ARN -> the ServiceAccount subject it
  trusts) and answers temporary credentials (``ASIA...`` key, secret, session token) in STS's
  XML.
* ``GET /v1/credentials``: the EKS Pod Identity Agent (on a node, ``http://169.254.170.23``;
  a test reaches it here). As the agent and the EKS Auth API behind it
  (``AssumeRoleForPodIdentity``) do, it takes the projected ServiceAccount token as the raw
  ``Authorization`` header, checks it (``identity.verify_service_account_token``, audience
  ``pods.eks.amazonaws.com``), finds the association of its subject
  (``SimConfig.eks_pod_identity_associations``) and answers the container credential
  provider's JSON (``AccessKeyId``, ``SecretAccessKey``, ``Token``, ``AccountId``,
  ``Expiration``). No token: 400; a bad, expired or foreign-audience one: 401; no
  association: 403; each as ``{"code", "message"}``.

Authentication, checked on every runtime request as Bedrock does:

* SigV4 (``verify_sigv4``): the signature is recomputed from the AWS spec (canonical request,
  string to sign, signing key for service ``bedrock`` and ``SimConfig.aws_region``) with the
  secret of the access key: a static pair of ``SimConfig.aws_access_keys``, or temporary
  credentials this STS issued, which also need their ``x-amz-security-token`` (signed). A
  request older than 15 minutes, a tampered body or header, an unknown key: 403 in Bedrock's
  shape (``UnrecognizedClientException``, ``InvalidSignatureException``, ...).
* Bedrock API keys: ``Authorization: Bearer <key>``, one of ``SimConfig.bedrock_api_keys`` (when
  set; else the simulator's ``api_key``; any non-empty key when neither is set).

Errors have Bedrock's shape: ``{"message": ...}`` with the type in ``x-amzn-ErrorType``.
Faults (``fail_next`` / ``fail_models``, by model id): "429" ``ThrottlingException``, "408"
``ModelTimeoutException``, "503" ``ServiceUnavailableException``, "500"
``InternalServerException``, "400" ``ValidationException``; "timeout" hangs, then
``ModelTimeoutException``; "disconnect" cuts a stream after its first token; "reset" closes
the connection before the first response byte (plain and streamed);
"stream-exception" sends one token then a ``throttlingException`` exception event, as Bedrock
reports an error in the middle of a stream.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import re
import struct
import uuid
import zlib
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs, quote
from xml.sax.saxutils import escape

from aiohttp import web

from e2e.provider_sim.anthropic import Answer, cache_usage, parse_messages, wants_thinking
from e2e.provider_sim.identity import (
    AWS_AUDIENCE,
    POD_IDENTITY_AUDIENCE,
    IdentityError,
    aws_session_secret,
    issue_aws_session,
    verify_service_account_token,
)
from e2e.provider_sim.server import (
    ChatRequest,
    Message,
    ProviderError,
    Reply,
    SimConfig,
    Simulator,
    ToolSpec,
    bearer_token,
    content_text,
    drop_connection,
    plan_reply,
    split_tokens,
)

SERVICE = "bedrock"
ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = dt.timedelta(minutes=15)
BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
EVENTSTREAM = "application/vnd.amazon.eventstream"
CONVERSE_KEYS = frozenset(
    {
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "guardrailConfig",
        "additionalModelRequestFields",
        "promptVariables",
        "additionalModelResponseFieldPaths",
        "requestMetadata",
        "performanceConfig",
        "serviceTier",
    }
)
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_use": "tool_use"}
FAULTS: dict[int, str] = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
FAULT_MESSAGES = {
    "ThrottlingException": "Too many requests, please wait before trying again.",
    "ModelTimeoutException": "Model has timed out in processing the request. Try your request "
    "again.",
    "ServiceUnavailableException": "Bedrock is unable to process your request.",
    "InternalServerException": "The server encountered an internal error while processing the "
    "request.",
    "ValidationException": "Malformed input request, please reformat your input and try again.",
}


class BedrockError(Exception):
    """An error Bedrock answers: HTTP status, ``x-amzn-ErrorType`` and message."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


def validation(message: str) -> BedrockError:
    return BedrockError(400, "ValidationException", message)


def bedrock_error(error: BedrockError) -> web.Response:
    rid = str(uuid.uuid4())
    headers = {
        "x-amzn-ErrorType": f"{error.kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        "x-amzn-RequestId": rid,
    }
    return web.json_response({"message": error.message}, status=error.status, headers=headers)


def fault_error(status: int) -> BedrockError:
    kind = FAULTS.get(status, "InternalServerException")
    return BedrockError(status, kind, FAULT_MESSAGES.get(kind, f"Simulated HTTP {status}"))


# --------------------------------------------------------------------------- event stream


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (
        struct.pack(">B", len(raw_name))
        + raw_name
        + b"\x07"  # header value type 7: string
        + struct.pack(">H", len(raw_value))
        + raw_value
    )


def event_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude, prelude CRC, headers, payload, message CRC."""
    encoded = b"".join(_header(name, value) for name, value in headers.items())
    total = 4 + 4 + 4 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    head = prelude + struct.pack(">I", zlib.crc32(prelude))
    body = head + encoded + payload
    return body + struct.pack(">I", zlib.crc32(body))


def event(kind: str, payload: Mapping[str, Any]) -> bytes:
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return event_message(headers, json.dumps(payload, separators=(",", ":")).encode())


def exception_event(kind: str, message: str) -> bytes:
    headers = {
        ":exception-type": kind,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return event_message(headers, json.dumps({"message": message}).encode())


def decode_events(data: bytes) -> list[tuple[dict[str, str], bytes]]:
    """(headers, payload) of each message in ``data``; ValueError on a bad length or CRC."""
    out = []
    offset = 0
    while offset < len(data):
        total, headers_len = struct.unpack_from(">II", data, offset)
        (prelude_crc,) = struct.unpack_from(">I", data, offset + 8)
        if zlib.crc32(data[offset : offset + 8]) != prelude_crc:
            raise ValueError("prelude CRC mismatch")
        message = data[offset : offset + total]
        (message_crc,) = struct.unpack_from(">I", message, total - 4)
        if len(message) != total or zlib.crc32(message[:-4]) != message_crc:
            raise ValueError("message CRC mismatch")
        headers: dict[str, str] = {}
        pos = 12
        while pos < 12 + headers_len:
            name_len = message[pos]
            name = message[pos + 1 : pos + 1 + name_len].decode()
            pos += 1 + name_len
            if message[pos] != 7:
                raise ValueError("only string headers are expected")
            (value_len,) = struct.unpack_from(">H", message, pos + 1)
            headers[name] = message[pos + 3 : pos + 3 + value_len].decode()
            pos += 3 + value_len
        out.append((headers, message[12 + headers_len : total - 4]))
        offset += total
    return out


# --------------------------------------------------------------------------- SigV4


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = _hmac(("AWS4" + secret).encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def canonical_uri(raw_path: str) -> str:
    """The path as sent, each segment URI-encoded once more (every service but S3 does)."""
    return quote(raw_path, safe="/~")


def canonical_query(query_string: str) -> str:
    pairs = []
    for name, values in parse_qs(query_string, keep_blank_values=True).items():
        for value in values:
            pairs.append((quote(name, safe="-_.~"), quote(value, safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_request(
    request: web.Request, body: bytes, signed_headers: list[str], payload_hash: str
) -> str:
    lines = []
    for name in signed_headers:
        values = request.headers.getall(name, [])
        lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}\n")
    return "\n".join(
        [
            request.method.upper(),
            canonical_uri(request.raw_path.split("?", 1)[0]),
            canonical_query(request.query_string),
            "".join(lines),
            ";".join(signed_headers),
            payload_hash,
        ]
    )


_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)


def verify_sigv4(
    request: web.Request, body: bytes, cfg: SimConfig, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Check a SigV4-signed request; returns who signed it (key id, kind, role)."""
    header = request.headers.get("Authorization", "")
    match = _AUTH_RE.match(header.strip())
    if match is None:
        raise BedrockError(
            400,
            "IncompleteSignatureException",
            f"Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' "
            f"parameters. Authorization={header[:40]}",
        )
    key_id, date, region, service, terminator = (match["credential"].split("/") + [""] * 5)[:5]
    signed = match["signed"].split(";")
    if terminator != "aws4_request" or service != SERVICE:
        raise BedrockError(
            403,
            "InvalidSignatureException",
            f"Credential should be scoped to correct service: '{SERVICE}'.",
        )
    if region != cfg.aws_region:
        raise BedrockError(
            403,
            "InvalidSignatureException",
            f"Credential should be scoped to a valid region, not '{region}'.",
        )
    if "host" not in signed or "x-amz-date" not in signed:
        raise BedrockError(
            403, "InvalidSignatureException", "'Host' and 'X-Amz-Date' must be signed headers."
        )
    amz_date = request.headers.get("X-Amz-Date", "")
    try:
        when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError as exc:
        raise BedrockError(
            400, "IncompleteSignatureException", "X-Amz-Date is missing or malformed."
        ) from exc
    current = now or dt.datetime.now(dt.UTC)
    if abs(current - when) > MAX_SKEW or not amz_date.startswith(date):
        raise BedrockError(
            403,
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is now earlier than "
            f"{(current - MAX_SKEW).strftime('%Y%m%dT%H%M%SZ')}.",
        )
    token = request.headers.get("X-Amz-Security-Token")
    who: dict[str, Any] = {"access_key_id": key_id}
    if key_id in cfg.aws_access_keys:
        secret = cfg.aws_access_keys[key_id]
        who["kind"] = "access-key"
        if token is not None:
            raise BedrockError(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
    elif key_id.startswith("ASIA"):
        try:
            secret, session = aws_session_secret(key_id, token)
        except IdentityError as exc:
            raise BedrockError(403, exc.code, exc.message) from exc
        if "x-amz-security-token" not in signed:
            raise BedrockError(
                403, "InvalidSignatureException", "'X-Amz-Security-Token' must be signed."
            )
        who.update(kind="sts", role_arn=session["r"], session_name=session["s"])
    else:
        raise BedrockError(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    actual_hash = hashlib.sha256(body).hexdigest()
    claimed = request.headers.get("X-Amz-Content-Sha256", actual_hash)
    payload_hash = actual_hash if claimed == actual_hash else "tampered"
    creq = canonical_request(request, body, signed, payload_hash)
    to_sign = "\n".join(
        [
            ALGORITHM,
            amz_date,
            f"{date}/{region}/{service}/aws4_request",
            hashlib.sha256(creq.encode()).hexdigest(),
        ]
    )
    expected = hmac.new(
        signing_key(secret, date, region, service), to_sign.encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, match["signature"]):
        raise BedrockError(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service "
            "documentation for details.",
        )
    return who


def authenticate(request: web.Request, body: bytes, cfg: SimConfig) -> dict[str, Any]:
    """SigV4 or a Bedrock API key (bearer); returns who is calling, for the record."""
    header = request.headers.get("Authorization", "")
    if header.startswith(ALGORITHM):
        return verify_sigv4(request, body, cfg)
    key = bearer_token(request)
    if key is None:
        raise BedrockError(
            403, "MissingAuthenticationTokenException", "Missing Authentication Token"
        )
    allowed = set(cfg.bedrock_api_keys) or ({cfg.api_key} if cfg.api_key else set())
    if allowed and key not in allowed:
        raise BedrockError(
            403,
            "AccessDeniedException",
            "Authentication failed: Please make sure your API Key is valid.",
        )
    return {"kind": "api-key"}


# --------------------------------------------------------------------------- Converse


def _block_kind(block: Any, where: str) -> str:
    if not isinstance(block, Mapping) or len(block) != 1:
        raise validation(f"{where}: a ContentBlock must have exactly one member set.")
    return str(next(iter(block)))


def parse_converse(model: str, body: Any, *, stream: bool) -> ChatRequest:
    """Validate a Converse body as Bedrock does and turn it into the engine's ChatRequest."""
    if not isinstance(body, Mapping):
        raise validation("Malformed input request, please reformat your input and try again.")
    extra = sorted(set(body) - CONVERSE_KEYS)
    if extra:
        raise validation(f"Malformed input request: extraneous key [{extra[0]}] is not permitted")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise validation("The messages field is required and must contain at least one message.")
    messages: list[Message] = []
    for block in body.get("system") or []:
        if isinstance(block, Mapping) and isinstance(block.get("text"), str):
            messages.append(Message(role="system", text=block["text"]))
    tool_config = body.get("toolConfig")
    previous_uses: set[str] = set()
    uses_tools = False
    for i, message in enumerate(raw):
        role = message.get("role") if isinstance(message, Mapping) else None
        if role not in ("user", "assistant"):
            raise validation(f"messages.{i}.role: must be one of [user, assistant]")
        if i == 0 and role != "user":
            raise validation(
                "A conversation must start with a user message. Try again with a conversation "
                "that starts with a user message."
            )
        if i > 0 and raw[i - 1].get("role") == role:
            raise validation(
                "A conversation must alternate between user and assistant roles. Make sure the "
                "conversation alternates between user and assistant roles and try again."
            )
        content = message.get("content")
        if not isinstance(content, list) or not content:
            raise validation(f"messages.{i}.content: must contain at least one ContentBlock.")
        texts: list[str] = []
        results: list[str] = []
        uses: set[str] = set()
        for j, block in enumerate(content):
            where = f"messages.{i}.content.{j}"
            kind = _block_kind(block, where)
            value = block[kind]
            if kind == "text":
                if not isinstance(value, str) or not value.strip():
                    raise validation(
                        f"The text field in the ContentBlock object at {where} is blank. Add "
                        "text to the text field, and try again."
                    )
                texts.append(value)
            elif kind == "toolUse":
                uses_tools = True
                if role != "assistant":
                    raise validation(
                        f"{where}: toolUse blocks are only allowed in assistant turns."
                    )
                uses.add(str(value.get("toolUseId")))
                texts.append(f"{value.get('name', '')}{json.dumps(value.get('input'))}")
            elif kind == "toolResult":
                uses_tools = True
                use_id = str(value.get("toolUseId"))
                if role != "user" or use_id not in previous_uses:
                    raise validation(
                        f"{where}: the toolResult block's toolUseId {use_id} does not match a "
                        "toolUse block of the previous turn."
                    )
                parts = value.get("content") or []
                results.append(
                    "".join(
                        p["text"] if "text" in p else json.dumps(p.get("json"))
                        for p in parts
                        if isinstance(p, Mapping)
                    )
                )
            elif kind not in ("image", "document", "reasoningContent", "cachePoint", "video"):
                raise validation(f"{where}: unknown ContentBlock member {kind}.")
        previous_uses = uses
        if results:
            messages.append(Message(role="tool", text="".join(results)))
        else:
            messages.append(Message(role=str(role), text="".join(texts)))
    if uses_tools and not tool_config:
        raise validation(
            "The toolConfig field must be defined when using toolUse and toolResult content blocks."
        )
    tools: list[ToolSpec] = []
    tool_choice: str | None = None
    if isinstance(tool_config, Mapping):
        for k, tool in enumerate(tool_config.get("tools") or []):
            spec = tool.get("toolSpec") if isinstance(tool, Mapping) else None
            if not isinstance(spec, Mapping) or not spec.get("name"):
                if isinstance(tool, Mapping) and "cachePoint" in tool:
                    continue
                raise validation(f"toolConfig.tools.{k}.toolSpec.name: required")
            schema = (spec.get("inputSchema") or {}).get("json")
            if not isinstance(schema, Mapping):
                raise validation(f"toolConfig.tools.{k}.toolSpec.inputSchema.json: required")
            tools.append(ToolSpec(name=str(spec["name"]), parameters=dict(schema)))
        choice = tool_config.get("toolChoice") or {}
        if isinstance(choice, Mapping) and "tool" in choice:
            tool_choice = str(choice["tool"].get("name"))
    inference = body.get("inferenceConfig") or {}
    max_tokens = inference.get("maxTokens") if isinstance(inference, Mapping) else None
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise validation("inferenceConfig.maxTokens: must be an integer of at least 1")
    return ChatRequest(
        model=model,
        messages=messages,
        tools=tools,
        tool_choice=tool_choice,
        stream=stream,
        max_tokens=max_tokens,
    )


def _usage(reply: Reply) -> dict[str, int]:
    return {
        "inputTokens": reply.prompt_tokens,
        "outputTokens": reply.completion_tokens,
        "totalTokens": reply.total_tokens,
    }


def converse_response(reply: Reply) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.tool_call is not None:
        call = reply.tool_call
        content.append(
            {
                "toolUse": {
                    "toolUseId": "tooluse_" + call.id.removeprefix("call_"),
                    "name": call.name,
                    "input": call.arguments,
                }
            }
        )
    else:
        content.append({"text": reply.text or ""})
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": STOP_REASONS[reply.finish_reason],
        "usage": _usage(reply),
        "metrics": {"latencyMs": 42},
    }


def converse_events(reply: Reply) -> Iterator[tuple[bytes, bool]]:
    """(event-stream message, carries_a_token) of a ConverseStream answer, in order."""
    yield event("messageStart", {"role": "assistant", "p": "abcdefghijkl"}), False
    if reply.tool_call is not None:
        call = reply.tool_call
        start = {
            "toolUse": {"toolUseId": "tooluse_" + call.id.removeprefix("call_"), "name": call.name}
        }
        yield event("contentBlockStart", {"contentBlockIndex": 0, "start": start}), False
        args = call.arguments_json
        step = max(1, len(args) // 3)
        for i in range(0, len(args), step):
            delta = {"toolUse": {"input": args[i : i + step]}}
            yield event("contentBlockDelta", {"contentBlockIndex": 0, "delta": delta}), True
    else:
        for piece in split_tokens(reply.text or ""):
            yield (
                event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}}),
                True,
            )
    yield event("contentBlockStop", {"contentBlockIndex": 0}), False
    yield event("messageStop", {"stopReason": STOP_REASONS[reply.finish_reason]}), False
    yield event("metadata", {"usage": _usage(reply), "metrics": {"latencyMs": 42}}), False


# --------------------------------------------------------------------------- InvokeModel (Claude)


def parse_invoke(model: str, body: Any) -> ChatRequest:
    """An Anthropic body as Bedrock's InvokeModel takes it for a Claude model."""
    if not isinstance(body, Mapping):
        raise validation("Malformed input request, please reformat your input and try again.")
    if "anthropic." not in model:
        raise validation(
            f"The provided model identifier is invalid: {model} is not a Claude model."
        )
    for key in ("model", "stream"):
        if key in body:
            raise validation(f"Malformed input request: #: extraneous key [{key}] is not permitted")
    version = body.get("anthropic_version")
    if version != BEDROCK_ANTHROPIC_VERSION:
        raise validation(
            "Malformed input request: #: required key [anthropic_version] not found"
            if version is None
            else f"Invalid anthropic_version {version!r}; expected {BEDROCK_ANTHROPIC_VERSION}"
        )
    betas = body.get("anthropic_beta", [])
    if not isinstance(betas, list) or not all(isinstance(b, str) for b in betas):
        raise validation("anthropic_beta: must be an array of strings")
    try:
        return parse_messages({**body, "model": model})
    except ProviderError as exc:
        raise validation(exc.message) from exc


# --------------------------------------------------------------------------- handlers


class Bedrock:
    protocol = "bedrock"

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/model/{model_id}/converse", self.converse),
            web.post("/model/{model_id}/converse-stream", self.converse_stream),
            web.post("/model/{model_id}/invoke", self.invoke),
            web.post("/model/{model_id}/invoke-with-response-stream", self.invoke_stream),
            web.post("/", self.sts),
            web.get("/v1/credentials", self.pod_identity_agent),
        ]

    async def _begin(self, request: web.Request, operation: str) -> tuple[str, Any, SimConfig]:
        """Read, record and authenticate a runtime request; returns (model id, body, config)."""
        model = request.match_info["model_id"]
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        cfg = self.sim.config_snapshot()
        entry = self.sim.record(
            request, body, protocol=self.protocol, model=model, operation=operation
        )
        entry["aws_identity"] = authenticate(request, raw, cfg)
        if body is None:
            raise BedrockError(400, "SerializationException", "Unable to parse the request body.")
        return model, body, cfg

    async def _fault(self, model: str, cfg: SimConfig) -> str | None:
        await self.sim.sleep(cfg.latency_ms)
        fault = self.sim.take_fault(model)
        if fault is None or fault in ("disconnect", "stream-exception", "reset"):
            return fault
        if fault == "timeout":
            await self.sim.hang()
            raise fault_error(408)
        try:
            raise fault_error(int(fault))
        except ValueError:
            return None

    async def converse(self, request: web.Request) -> web.StreamResponse:
        try:
            model, body, cfg = await self._begin(request, "Converse")
            req = parse_converse(model, body, stream=False)
            action = await self._fault(model, cfg)
        except BedrockError as err:
            return bedrock_error(err)
        reply = plan_reply(req, cfg)
        if action in ("disconnect", "reset"):
            drop_connection(request)
            return web.Response(status=500)
        await self.sim.sleep(cfg.ttft_ms + cfg.token_delay_ms * reply.completion_tokens)
        return web.json_response(
            converse_response(reply), headers={"x-amzn-RequestId": str(uuid.uuid4())}
        )

    async def converse_stream(self, request: web.Request) -> web.StreamResponse:
        try:
            model, body, cfg = await self._begin(request, "ConverseStream")
            req = parse_converse(model, body, stream=True)
            action = await self._fault(model, cfg)
        except BedrockError as err:
            return bedrock_error(err)
        reply = plan_reply(req, cfg)
        return await self._stream(request, converse_events(reply), cfg, action)

    async def invoke(self, request: web.Request) -> web.StreamResponse:
        try:
            model, body, cfg = await self._begin(request, "InvokeModel")
            req = parse_invoke(model, body)
            action = await self._fault(model, cfg)
        except BedrockError as err:
            return bedrock_error(err)
        answer = self._answer(req, body, cfg)
        if action in ("disconnect", "reset"):
            drop_connection(request)
            return web.Response(status=500)
        await self.sim.sleep(cfg.ttft_ms + cfg.token_delay_ms * answer.output_tokens)
        message = answer.message()
        message["id"] = "msg_bdrk_" + message["id"].removeprefix("msg_sim")
        headers = {
            "x-amzn-RequestId": str(uuid.uuid4()),
            "X-Amzn-Bedrock-Input-Token-Count": str(answer.input_tokens),
            "X-Amzn-Bedrock-Output-Token-Count": str(answer.output_tokens),
            "X-Amzn-Bedrock-Invocation-Latency": "42",
        }
        return web.json_response(message, headers=headers)

    async def invoke_stream(self, request: web.Request) -> web.StreamResponse:
        try:
            model, body, cfg = await self._begin(request, "InvokeModelWithResponseStream")
            req = parse_invoke(model, body)
            action = await self._fault(model, cfg)
        except BedrockError as err:
            return bedrock_error(err)
        answer = self._answer(req, body, cfg)

        def chunks() -> Iterator[tuple[bytes, bool]]:
            for name, payload, is_token in answer.events():
                if name == "ping":
                    continue
                if name == "message_start":
                    payload["message"]["id"] = "msg_bdrk_" + answer.id.removeprefix("msg_sim")
                if name == "message_stop":
                    payload = {
                        **payload,
                        "amazon-bedrock-invocationMetrics": {
                            "inputTokenCount": answer.input_tokens,
                            "outputTokenCount": answer.output_tokens,
                            "invocationLatency": 42,
                            "firstByteLatency": 21,
                        },
                    }
                data = base64.b64encode(json.dumps(payload, separators=(",", ":")).encode())
                yield event("chunk", {"bytes": data.decode(), "p": "abcdef"}), is_token

        return await self._stream(request, chunks(), cfg, action)

    def _answer(self, req: ChatRequest, body: Mapping[str, Any], cfg: SimConfig) -> Answer:
        reply = plan_reply(req, cfg)
        return Answer(
            req,
            reply,
            thinking=wants_thinking(body),
            cache=cache_usage(self.sim, body, reply.prompt_tokens),
            safeguard=None,
            pattern=cfg.dangerous_pattern,
        )

    async def _stream(
        self,
        request: web.Request,
        messages: Iterator[tuple[bytes, bool]],
        cfg: SimConfig,
        action: str | None,
    ) -> web.StreamResponse:
        if action == "reset":  # nothing sent: not even the status line
            drop_connection(request)
            return web.Response(status=500)
        resp = web.StreamResponse(
            status=200,
            headers={"Content-Type": EVENTSTREAM, "x-amzn-RequestId": str(uuid.uuid4())},
        )
        await resp.prepare(request)
        first = True
        for message, is_token in messages:
            if is_token:
                await self.sim.sleep(cfg.ttft_ms if first else cfg.token_delay_ms)
            await resp.write(message)
            if is_token and first and action == "disconnect":
                drop_connection(request)
                return resp
            if is_token and first and action == "stream-exception":
                await resp.write(
                    exception_event("throttlingException", FAULT_MESSAGES["ThrottlingException"])
                )
                await resp.write_eof()
                return resp
            first = first and not is_token
        await resp.write_eof()
        return resp

    # ---- STS
    async def sts(self, request: web.Request) -> web.StreamResponse:
        form = {k: v[0] for k, v in parse_qs((await request.read()).decode()).items()}
        recorded = {k: v for k, v in form.items() if k != "WebIdentityToken"}
        self.sim.record(request, recorded, protocol="sts", model=None, operation=form.get("Action"))
        if form.get("Action") != "AssumeRoleWithWebIdentity":
            return sts_error(400, "InvalidAction", f"Could not find operation {form.get('Action')}")
        role = form.get("RoleArn", "")
        session_name = form.get("RoleSessionName", "")
        cfg = self.sim.config_snapshot()
        try:
            claims = verify_service_account_token(form.get("WebIdentityToken", ""), AWS_AUDIENCE)
        except IdentityError as exc:
            return sts_error(400, exc.code, exc.message)
        trusted = cfg.aws_roles.get(role)
        if trusted is None or trusted != claims["sub"]:
            return sts_error(
                403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity"
            )
        if not re.fullmatch(r"[\w+=,.@-]{2,64}", session_name):
            return sts_error(
                400, "ValidationError", "RoleSessionName must satisfy [\\w+=,.@-]{2,64}"
            )
        duration = int(form.get("DurationSeconds") or 3600)
        creds = issue_aws_session(role, session_name, duration)
        expires = dt.datetime.fromtimestamp(int(creds["Expiration"]), dt.UTC)
        account = role.split(":")[4] if role.count(":") >= 5 else "000000000000"
        role_name = role.rsplit("/", 1)[-1]
        xml = (
            '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            "<AssumeRoleWithWebIdentityResult>"
            f"<SubjectFromWebIdentityToken>{escape(claims['sub'])}</SubjectFromWebIdentityToken>"
            f"<Audience>{AWS_AUDIENCE}</Audience>"
            "<AssumedRoleUser>"
            f"<Arn>arn:aws:sts::{account}:assumed-role/{escape(role_name)}/{escape(session_name)}</Arn>"
            f"<AssumedRoleId>AROA{binascii.hexlify(role.encode()).decode()[:16].upper()}:"
            f"{escape(session_name)}</AssumedRoleId>"
            "</AssumedRoleUser>"
            "<Credentials>"
            f"<SessionToken>{creds['SessionToken']}</SessionToken>"
            f"<SecretAccessKey>{creds['SecretAccessKey']}</SecretAccessKey>"
            f"<Expiration>{expires.strftime('%Y-%m-%dT%H:%M:%SZ')}</Expiration>"
            f"<AccessKeyId>{creds['AccessKeyId']}</AccessKeyId>"
            "</Credentials>"
            f"<Provider>{escape(claims['iss'])}</Provider>"
            "</AssumeRoleWithWebIdentityResult>"
            f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
            "</AssumeRoleWithWebIdentityResponse>"
        )
        return web.Response(text=xml, content_type="text/xml")

    # ---- EKS Pod Identity Agent
    async def pod_identity_agent(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("Authorization", "")
        entry = self.sim.record(
            request, None, protocol="eks-pod-identity", model=None, operation="credentials"
        )
        # The token is a credential: not kept in what the simulator reports.
        entry["headers"] = {
            k: v for k, v in entry["headers"].items() if k.lower() != "authorization"
        }
        entry["token_sent"] = bool(token)
        if not token.strip():
            return agent_error(400, "InvalidTokenException", "Service account token missing")
        try:
            claims = verify_service_account_token(token, POD_IDENTITY_AUDIENCE)
        except IdentityError as exc:
            entry["refused"] = exc.code
            return agent_error(401, exc.code, exc.message)
        entry["subject"] = claims["sub"]
        role = self.sim.config_snapshot().eks_pod_identity_associations.get(claims["sub"])
        if role is None:
            entry["refused"] = "AccessDeniedException"
            return agent_error(
                403, "AccessDeniedException", f"No pod identity association for {claims['sub']}"
            )
        namespace, _, account = claims["sub"].removeprefix("system:serviceaccount:").partition(":")
        session_name = f"eks-sim-{namespace}-{account}"[:64]
        creds = issue_aws_session(role, session_name, 6 * 3600)
        expires = dt.datetime.fromtimestamp(int(creds["Expiration"]), dt.UTC)
        return web.json_response(
            {
                "AccessKeyId": creds["AccessKeyId"],
                "SecretAccessKey": creds["SecretAccessKey"],
                "Token": creds["SessionToken"],
                "AccountId": role.split(":")[4],
                "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )


def agent_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


def sts_error(status: int, code: str, message: str) -> web.Response:
    xml = (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )
    return web.Response(text=xml, status=status, content_type="text/xml")


def bedrock_routes(sim: Simulator) -> list[web.RouteDef]:
    return Bedrock(sim).routes()


__all__ = [
    "Bedrock",
    "BedrockError",
    "bedrock_routes",
    "content_text",
    "decode_events",
    "event_message",
    "parse_converse",
    "verify_sigv4",
]
