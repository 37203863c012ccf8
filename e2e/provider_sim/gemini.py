"""Gemini (Google AI Studio) and Vertex AI protocols of the provider simulator.

Routes:

* ``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``
  (also under ``/v1``): Gemini API. The key comes in ``x-goog-api-key`` or ``?key=``; none is a
  403 PERMISSION_DENIED, a wrong one (``SimConfig.api_key`` when set) a 400 INVALID_ARGUMENT
  ``API_KEY_INVALID``, as Google answers.
* ``POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent`` /
  ``:streamGenerateContent`` (also ``/v1beta1``): Vertex AI. It takes an OAuth bearer token
  issued by ``POST /token`` below (401 UNAUTHENTICATED otherwise), for a service account of
  project ``p`` (403 PERMISSION_DENIED otherwise).
* ``POST /v1/projects/{p}/locations/{l}/publishers/anthropic/models/{m}:rawPredict`` /
  ``:streamRawPredict``: Claude on Vertex. The body is an Anthropic Messages body without
  ``model`` and with ``anthropic_version: "vertex-2023-10-16"``; the answer is Anthropic's
  (``anthropic.py``), errors in Google's shape.
* ``POST /token``: Google's OAuth 2.0 token endpoint for the JWT-bearer grant a service-account
  key makes (``google.oauth2.service_account``): the assertion must be RS256-signed with the key
  of ``service_account_info()``, for ``aud`` = this endpoint, with a scope. Tokens are stateless
  (HMAC-signed), so they survive ``/_sim/reset``.

Bodies are checked as Gemini checks them: ``contents`` with roles ``user`` / ``model``, parts
``text`` / ``functionCall`` / ``functionResponse``; ``tools[].functionDeclarations``;
``toolConfig.functionCallingConfig.mode`` (NONE forbids a call); ``generationConfig``. A model
not in ``SimConfig.models`` is a 404 NOT_FOUND. The answer is a ``GenerateContentResponse``
(``candidates[0].content.parts``, ``finishReason``, ``usageMetadata``, ``modelVersion``,
``responseId``); streamed, one such object per SSE ``data:`` line, the last with
``finishReason`` and the usage. A ``functionCall`` part comes whole, in one chunk, as Gemini
sends it.

Faults in Google's shape ``{"error": {"code", "message", "status", "details"}}``: 429
RESOURCE_EXHAUSTED with a ``RetryInfo`` detail (Google sends no ``retry-after`` header), 500
INTERNAL, 503 UNAVAILABLE, "timeout" (504 DEADLINE_EXCEEDED after hanging), "disconnect" (the
stream cut after its first token), "malformed" (a chunk that is not JSON).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from e2e.provider_sim.anthropic import Answer, parse_messages
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
    plan_reply,
    read_json,
    split_tokens,
    sse,
    start_sse,
)
from e2e.provider_sim.wire import Streamer, take_fault, whole_answer

GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_use": "STOP"}
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"
TOKEN_LIFETIME_S = 3600
_TOKEN_KEY = b"provider-sim-google-oauth"


# --------------------------------------------------------------------------- errors


def google_error(fault: ProviderError) -> web.Response:
    status = GOOGLE_STATUS.get(fault.status, "UNKNOWN")
    error: dict[str, Any] = {"code": fault.status, "message": fault.message, "status": status}
    if fault.status == 429:
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}
        ]
    elif fault.code:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": fault.code,
                "domain": "googleapis.com",
            }
        ]
    return web.json_response({"error": error}, status=fault.status)


def _google(status: int, message: str, reason: str | None = None) -> ProviderError:
    return ProviderError(status, message, type_=GOOGLE_STATUS.get(status, "UNKNOWN"), code=reason)


def invalid(message: str) -> ProviderError:
    return _google(400, message)


# --------------------------------------------------------------------------- credentials


@cache
def _service_account_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
"""The `aud` google-auth puts in every service-account grant, whatever the key's token_uri."""


def service_account_info(project: str, token_uri: str, name: str = "gateway") -> dict[str, str]:
    """A service-account key file (JSON) whose tokens this simulator's ``/token`` issues."""
    pem = _service_account_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    email = f"{name}@{project}.iam.gserviceaccount.com"
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": hashlib.sha1(pem).hexdigest(),  # noqa: S324 - an id, not a digest
        "private_key": pem.decode(),
        "client_email": email,
        "client_id": str(int(hashlib.sha256(email.encode()).hexdigest()[:15], 16)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }


def issue_token(email: str, now: float | None = None) -> str:
    """An access token for ``email``, valid ``TOKEN_LIFETIME_S``."""
    claims = f"{email}|{int((now or time.time()) + TOKEN_LIFETIME_S)}".encode()
    mac = hmac.new(_TOKEN_KEY, claims, hashlib.sha256).hexdigest()[:32]
    return "ya29.sim." + base64.urlsafe_b64encode(claims).decode().rstrip("=") + "." + mac


def token_subject(token: str) -> str | None:
    """The service account a token of ``issue_token`` was issued to, if valid and unexpired."""
    prefix, _, rest = token.partition("ya29.sim.")
    payload, _, mac = rest.partition(".")
    if prefix or not payload or not mac:
        return None
    try:
        claims = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    except ValueError:
        return None
    wanted = hmac.new(_TOKEN_KEY, claims, hashlib.sha256).hexdigest()[:32]
    if not hmac.compare_digest(mac, wanted):
        return None
    email, _, expiry = claims.decode(errors="replace").rpartition("|")
    if not expiry.isdigit() or int(expiry) < time.time():
        return None
    return email


def project_of(email: str) -> str:
    """The project of a service account e-mail (NAME@PROJECT.iam.gserviceaccount.com)."""
    domain = email.partition("@")[2]
    return domain.removesuffix(".iam.gserviceaccount.com")


# --------------------------------------------------------------------------- request parsing


def field(obj: Mapping[str, Any], camel: str) -> Any:
    """A field of a proto3 JSON message: lowerCamelCase or its snake_case name (both accepted)."""
    if camel in obj:
        return obj[camel]
    return obj.get(re.sub(r"([A-Z])", lambda m: "_" + str(m.group(1)).lower(), camel))


def _parts(content: Any, where: str) -> list[Mapping[str, Any]]:
    parts = content.get("parts") if isinstance(content, Mapping) else None
    if not isinstance(parts, list) or not parts:
        raise invalid(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.")
    return [p for p in parts if isinstance(p, Mapping)]


def parse_generate_content(body: Any, model: str) -> ChatRequest:
    """Validate a ``GenerateContentRequest`` and turn it into the engine's ``ChatRequest``."""
    if not isinstance(body, Mapping):
        raise invalid("Invalid JSON payload received. Expected an object.")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise invalid("* GenerateContentRequest.contents: contents is not specified")
    messages: list[Message] = []
    system = field(body, "systemInstruction")
    if system:
        messages.append(
            Message(role="system", text=content_text(_parts(system, "system_instruction")))
        )
    for i, content in enumerate(contents):
        role = content.get("role", "user") if isinstance(content, Mapping) else None
        if role not in ("user", "model", "function"):
            raise invalid(f"Please use a valid role: user, model. (contents[{i}].role is {role!r})")
        parts = _parts(content, f"contents[{i}]")
        responses = [field(p, "functionResponse") for p in parts if field(p, "functionResponse")]
        if responses:
            for n, response in enumerate(responses):
                if not isinstance(response, Mapping) or not response.get("name"):
                    raise invalid(
                        f"* GenerateContentRequest.contents[{i}].parts[{n}].function_response"
                        ".name: Name cannot be empty."
                    )
            text = "".join(
                content_text(r.get("response", {}).get("content"))
                if isinstance(r.get("response"), Mapping) and "content" in r["response"]
                else json.dumps(r.get("response"))
                for r in responses
            )
            messages.append(Message(role="tool", text=text))
            continue
        text = "".join(p["text"] for p in parts if isinstance(p.get("text"), str))
        for part in parts:
            call = field(part, "functionCall")
            if isinstance(call, Mapping):
                text += f"{call.get('name', '')}{json.dumps(call.get('args'))}"
        messages.append(Message(role="assistant" if role == "model" else "user", text=text))
    tools: list[ToolSpec] = []
    for t, tool in enumerate(body.get("tools") or []):
        declarations = field(tool, "functionDeclarations")
        for d, decl in enumerate(declarations or []):
            if not isinstance(decl, Mapping) or not decl.get("name"):
                raise invalid(
                    f"* GenerateContentRequest.tools[{t}].function_declarations[{d}].name: "
                    "Name cannot be empty."
                )
            schema = decl.get("parameters") or field(decl, "parametersJsonSchema") or {}
            tools.append(ToolSpec(name=str(decl["name"]), parameters=dict(schema)))
    config = field(field(body, "toolConfig") or {}, "functionCallingConfig") or {}
    mode = str(config.get("mode", "AUTO")).upper()
    tool_choice: str | None = None
    if mode == "NONE":
        tool_choice = "none"
    elif mode == "ANY" and len(field(config, "allowedFunctionNames") or []) == 1:
        tool_choice = str(field(config, "allowedFunctionNames")[0])
    generation = field(body, "generationConfig") or {}
    max_tokens = field(generation, "maxOutputTokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise invalid(
            "* GenerateContentRequest.generation_config.max_output_tokens: must be positive"
        )
    return ChatRequest(
        model=model, messages=messages, tools=tools, tool_choice=tool_choice, max_tokens=max_tokens
    )


# --------------------------------------------------------------------------- rendering


def _usage(reply: Reply) -> dict[str, Any]:
    return {
        "promptTokenCount": reply.prompt_tokens,
        "candidatesTokenCount": reply.completion_tokens,
        "totalTokenCount": reply.total_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": reply.prompt_tokens}],
    }


def _candidate(parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    return candidate


def _call_part(reply: Reply) -> dict[str, Any]:
    assert reply.tool_call is not None
    return {"functionCall": {"name": reply.tool_call.name, "args": reply.tool_call.arguments}}


def generate_content_response(model: str, reply: Reply, response_id: str) -> dict[str, Any]:
    parts = [_call_part(reply)] if reply.tool_call is not None else [{"text": reply.text or ""}]
    return {
        "candidates": [_candidate(parts, FINISH[reply.finish_reason])],
        "usageMetadata": _usage(reply),
        "modelVersion": model,
        "responseId": response_id,
    }


def stream_chunks(
    model: str, reply: Reply, response_id: str
) -> Iterator[tuple[dict[str, Any], bool]]:
    """(GenerateContentResponse chunk, carries_a_token) of a streamed answer, in order."""

    def chunk(parts: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"candidates": [_candidate(parts, finish)]}
        prompt = {"promptTokenCount": reply.prompt_tokens, "totalTokenCount": reply.prompt_tokens}
        out["usageMetadata"] = _usage(reply) if finish is not None else prompt
        out["modelVersion"] = model
        out["responseId"] = response_id
        return out

    finish = FINISH[reply.finish_reason]
    if reply.tool_call is not None:
        yield chunk([_call_part(reply)], finish), True
        return
    pieces = split_tokens(reply.text or "")
    for n, piece in enumerate(pieces):
        yield chunk([{"text": piece}], finish if n == len(pieces) - 1 else None), True


# --------------------------------------------------------------------------- handlers


class Gemini:
    """Gemini API, Vertex AI (Gemini and Claude) and the OAuth token endpoint."""

    protocol = "gemini"

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def routes(self) -> list[web.RouteDef]:
        vertex = "/{version:v1|v1beta1}/projects/{project}/locations/{location}/publishers"
        return [
            web.post("/{version:v1beta|v1}/models/{call}", self.gemini),
            web.post(vertex + "/google/models/{call}", self.vertex),
            web.post(vertex + "/anthropic/models/{call}", self.vertex_anthropic),
            web.post("/token", self.token),
        ]

    # ---- auth
    def _gemini_key(self, request: web.Request, cfg: SimConfig) -> None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            raise _google(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
            )
        if cfg.api_key is not None and key != cfg.api_key:
            raise _google(400, "API key not valid. Please pass a valid API key.", "API_KEY_INVALID")

    def _vertex_token(self, request: web.Request) -> str:
        token = bearer_token(request)
        if not token:
            raise _google(
                401,
                "Request is missing required authentication credential. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
                "CREDENTIALS_MISSING",
            )
        subject = token_subject(token)
        if subject is None:
            raise _google(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                "login cookie or other valid authentication credential.",
                "ACCESS_TOKEN_TYPE_UNSUPPORTED",
            )
        project = request.match_info["project"]
        if project_of(subject) != project:
            raise _google(
                403,
                f"Permission 'aiplatform.endpoints.predict' denied on resource "
                f"'//aiplatform.googleapis.com/projects/{project}/locations/"
                f"{request.match_info['location']}/publishers/google/models/...' (or it may not "
                "exist).",
                "IAM_PERMISSION_DENIED",
            )
        return subject

    # ---- shared
    def _model_and_method(self, request: web.Request, methods: tuple[str, ...]) -> tuple[str, str]:
        model, _, method = request.match_info["call"].rpartition(":")
        if not model or method not in methods:
            raise _google(404, f"Method not found: {request.match_info['call']!r}.")
        return model, method

    async def _read(self, request: web.Request, model: str | None, **extra: Any) -> Any:
        try:
            body = await read_json(request)
        except ProviderError as f:
            self.sim.record(request, None, protocol=self.protocol, model=model, **extra)
            raise invalid(f"Invalid JSON payload received. {f.message}") from f
        self.sim.record(request, body, protocol=self.protocol, model=model, **extra)
        return body

    def _known_model(self, model: str, cfg: SimConfig, version: str) -> None:
        if model not in cfg.models:
            raise _google(
                404,
                f"models/{model} is not found for API version {version}, or is not supported "
                "for generateContent. Call ListModels to see the list of available models and "
                "their supported methods.",
            )

    # ---- Gemini API and Vertex (publishers/google)
    async def gemini(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, vertex=False)

    async def vertex(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, vertex=True)

    async def _generate(self, request: web.Request, *, vertex: bool) -> web.StreamResponse:
        try:
            model, method = self._model_and_method(
                request, ("generateContent", "streamGenerateContent")
            )
            body = await self._read(request, model, endpoint=method, vertex=vertex)
            cfg = self.sim.config_snapshot()
            if vertex:
                self._vertex_token(request)
            else:
                self._gemini_key(request, cfg)
            self._known_model(model, cfg, request.match_info["version"])
            req = parse_generate_content(body, model)
            await self.sim.sleep(cfg.latency_ms)
            action = await take_fault(self.sim, model)
        except ProviderError as f:
            return google_error(f)
        reply = plan_reply(req, cfg)
        response_id = uuid.uuid4().hex[:22]
        if method == "generateContent":
            return await whole_answer(
                self.sim,
                request,
                cfg,
                action,
                reply,
                lambda: generate_content_response(model, reply, response_id),
            )
        if request.query.get("alt") == "sse":
            resp = await start_sse(request)
            pieces = ((sse(c), token) for c, token in stream_chunks(model, reply, response_id))
            streamer = Streamer(
                self.sim, request, cfg, action, frame=lambda raw: b"data: " + raw + b"\r\n\r\n"
            )
            return await streamer.run(resp, pieces)
        # Without alt=sse Google streams one JSON array, written element by element.
        resp = web.StreamResponse(headers={"Content-Type": "application/json; charset=UTF-8"})
        await resp.prepare(request)
        chunks = list(stream_chunks(model, reply, response_id))
        body_pieces = [
            (("[" if n == 0 else ",\r\n").encode() + json.dumps(c).encode(), token)
            for n, (c, token) in enumerate(chunks)
        ]

        async def close(r: web.StreamResponse) -> None:
            await r.write(b"]")

        return await Streamer(self.sim, request, cfg, action).run(resp, body_pieces, close)

    # ---- Claude on Vertex (publishers/anthropic)
    async def vertex_anthropic(self, request: web.Request) -> web.StreamResponse:
        try:
            model, method = self._model_and_method(request, ("rawPredict", "streamRawPredict"))
            body = await self._read(request, model, endpoint=method, vertex=True)
            self._vertex_token(request)
            cfg = self.sim.config_snapshot()
            if not isinstance(body, Mapping):
                raise invalid("request body must be a JSON object")
            if "model" in body:
                raise invalid("model: Extra inputs are not permitted")
            if body.get("anthropic_version") != VERTEX_ANTHROPIC_VERSION:
                raise invalid(f"anthropic_version: Input should be '{VERTEX_ANTHROPIC_VERSION}'")
            try:
                req = parse_messages({**body, "model": model})
            except ProviderError as f:
                raise invalid(f.message) from f
            await self.sim.sleep(cfg.latency_ms)
            action = await take_fault(self.sim, model)
        except ProviderError as f:
            return google_error(f)
        reply = plan_reply(req, cfg)
        thinking = isinstance(body.get("thinking"), Mapping) and body["thinking"].get("type") in (
            "enabled",
            "adaptive",
        )
        answer = Answer(
            req,
            reply,
            thinking=thinking,
            cache=(0, 0),
            safeguard=None,
            pattern=cfg.dangerous_pattern,
        )
        if method == "rawPredict" and not req.stream:
            return await whole_answer(self.sim, request, cfg, action, reply, answer.message)
        resp = await start_sse(request)
        pieces = ((sse(payload, event=event), token) for event, payload, token in answer.events())
        streamer = Streamer(
            self.sim,
            request,
            cfg,
            action,
            frame=lambda raw: b"event: content_block_delta\ndata: " + raw + b"\n\n",
        )
        return await streamer.run(resp, pieces)

    # ---- OAuth 2.0 token endpoint (JWT-bearer grant of a service-account key)
    async def token(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        self.sim.record(
            request,
            {k: ("<assertion>" if k == "assertion" else str(v)) for k, v in form.items()},
            protocol="google-oauth",
            model=None,
            endpoint="token",
        )

        def refuse(error: str, description: str) -> web.Response:
            return web.json_response({"error": error, "error_description": description}, status=400)

        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return refuse("unsupported_grant_type", "Invalid grant_type.")
        assertion = form.get("assertion")
        if not isinstance(assertion, str):
            return refuse("invalid_request", "Missing required parameter: assertion")
        public = _service_account_key().public_key()
        token_uri = str(request.url.with_query(None))
        try:
            claims = jwt.decode(
                assertion,
                public,
                algorithms=["RS256"],
                # google-auth signs for Google's canonical endpoint whatever the key's
                # token_uri says (google/oauth2/service_account.py), and Google takes it.
                audience=[token_uri, GOOGLE_TOKEN_AUDIENCE],
                options={"require": ["iss", "aud", "exp", "iat"]},
            )
        except jwt.InvalidAudienceError:
            return refuse(
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token "
                f"(60 minutes) and in a reasonable timeframe. aud must be {token_uri}",
            )
        except jwt.InvalidSignatureError:
            return refuse("invalid_grant", "Invalid JWT Signature.")
        except jwt.PyJWTError as exc:
            return refuse("invalid_grant", f"Invalid JWT: {exc}")
        if not str(claims.get("scope", "")).strip():
            return refuse("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        email = str(claims["iss"])
        return web.json_response(
            {
                "access_token": issue_token(email),
                "expires_in": TOKEN_LIFETIME_S - 1,
                "token_type": "Bearer",
            }
        )


def gemini_routes(sim: Simulator) -> list[web.RouteDef]:
    return Gemini(sim).routes()


__all__ = [
    "SCOPE",
    "Gemini",
    "gemini_routes",
    "google_error",
    "issue_token",
    "parse_generate_content",
    "service_account_info",
    "token_subject",
]
