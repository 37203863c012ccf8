"""Azure OpenAI in the provider simulator: deployment paths, api-version, api-key or Entra ID.

Routes:

* ``POST /openai/deployments/{deployment}/chat/completions?api-version=...``: chat
  completions of a deployment. As Azure does: no ``api-version`` is a 404 "Resource not
  found"; one outside ``SimConfig.azure_api_versions`` (default ``API_VERSIONS``) a 400
  ``BadRequest`` "API version not supported"; a deployment outside
  ``SimConfig.azure_deployments`` (when set) a 404 ``DeploymentNotFound``.
  Authentication: an ``api-key`` header (the simulator's ``api_key`` when set, any otherwise)
  or ``Authorization: Bearer`` with an Entra ID access token this simulator issued for
  ``https://cognitiveservices.azure.com`` (a wrong, expired or foreign token is a 401).
  Answers carry Azure's content-filter fields: ``prompt_filter_results`` and per choice
  ``content_filter_results``; streamed, a first chunk with no choices carries the prompt's.
  A prompt with ``[[sim:content-filter]]`` is refused as Azure refuses a filtered prompt
  (400, code ``content_filter``, ``innererror.code`` ``ResponsibleAIPolicyViolation``).
* ``POST /{tenant}/oauth2/v2.0/token``: Entra ID's token endpoint for workload identity
  (client credentials with a ``client_assertion``): the assertion must be a ServiceAccount
  token for ``api://AzureADTokenExchange`` whose subject the app's federated credential trusts
  (``SimConfig.entra_apps``: client id -> {"tenant": ..., "subject": ...}); errors are AADSTS
  errors in Entra's shape.

Faults come back in Azure's error shape (``{"error": {"code", "message", ...}}``), 429 with
``retry-after``; "timeout" and "disconnect" as for OpenAI.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from aiohttp import web

from e2e.provider_sim.identity import (
    AZURE_AUDIENCE,
    AZURE_RESOURCE,
    IdentityError,
    issue_entra_token,
    verify_entra_token,
    verify_service_account_token,
)
from e2e.provider_sim.server import (
    OpenAIChat,
    ProviderError,
    Reply,
    Simulator,
    bearer_token,
)

API_VERSIONS = (
    "2023-05-15",
    "2024-02-01",
    "2024-06-01",
    "2024-10-21",
    "2024-08-01-preview",
    "2024-10-01-preview",
    "2024-12-01-preview",
    "2025-01-01-preview",
    "2025-02-01-preview",
    "2025-03-01-preview",
    "2025-04-01-preview",
)
"""GA and preview ``api-version`` values of the data-plane API the simulator accepts."""
CONTENT_FILTER_MARKER = "[[sim:content-filter]]"
SCOPE = AZURE_RESOURCE + "/.default"
_SAFE = {"filtered": False, "severity": "safe"}


def _categories() -> dict[str, Any]:
    return {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}


def prompt_filter_results() -> list[dict[str, Any]]:
    results = {**_categories(), "jailbreak": {"filtered": False, "detected": False}}
    return [{"prompt_index": 0, "content_filter_results": results}]


def completion_filter_results() -> dict[str, Any]:
    return {
        **_categories(),
        "protected_material_code": {"filtered": False, "detected": False},
        "protected_material_text": {"filtered": False, "detected": False},
    }


def azure_error(fault: ProviderError) -> web.Response:
    body: dict[str, Any] = {
        "error": {
            "code": fault.code or str(fault.status),
            "message": fault.message,
            "param": None,
            "type": None,
        }
    }
    if fault.code == "content_filter":
        filtered = {**_categories(), "violence": {"filtered": True, "severity": "high"}}
        body["error"]["innererror"] = {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": filtered,
        }
    headers = {"apim-request-id": str(uuid.uuid4())}
    if fault.status == 429:
        headers["retry-after"] = str(fault.retry_after or 1)
    return web.json_response(body, status=fault.status, headers=headers)


def entra_error(status: int, error: str, code: int, description: str) -> web.Response:
    trace = str(uuid.uuid4())
    return web.json_response(
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace}",
            "error_codes": [code],
            "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
            "trace_id": trace,
            "correlation_id": str(uuid.uuid4()),
        },
        status=status,
    )


class AzureOpenAI(OpenAIChat):
    protocol = "azure"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/openai/deployments/{deployment}/chat/completions", self.deployment_chat),
            web.post("/{tenant}/oauth2/v2.0/token", self.entra_token),
        ]

    def authenticate(self, request: web.Request) -> dict[str, Any]:
        key = request.headers.get("api-key")
        cfg = self.sim.config_snapshot()
        if key is not None:
            if not key or (cfg.api_key is not None and not hmac.compare_digest(key, cfg.api_key)):
                raise ProviderError(
                    401,
                    "Access denied due to invalid subscription key or wrong API endpoint. Make "
                    "sure to provide a valid key for an active subscription and use a correct "
                    "regional API endpoint for your resource.",
                    type_="invalid_request_error",
                    code="401",
                )
            return {"kind": "api-key"}
        token = bearer_token(request)
        if token is None:
            raise ProviderError(
                401,
                "Access denied due to missing subscription key. Make sure to include "
                "subscription key when making requests to an API.",
                type_="invalid_request_error",
                code="401",
            )
        try:
            claims = verify_entra_token(token)
        except IdentityError as exc:
            raise ProviderError(
                401,
                "Unauthorized. Access token is missing, invalid, audience is incorrect "
                f"({AZURE_RESOURCE}), or have expired.",
                type_="invalid_request_error",
                code="401",
            ) from exc
        return {"kind": "entra", "client_id": claims["appid"], "tenant_id": claims["tid"]}

    async def deployment_chat(self, request: web.Request) -> web.StreamResponse:
        deployment = request.match_info["deployment"]
        version = request.query.get("api-version")
        cfg = self.sim.config_snapshot()
        if version is None:
            self.sim.record(request, None, protocol=self.protocol, model=deployment)
            return azure_error(ProviderError(404, "Resource not found", type_="", code="404"))
        known = cfg.azure_api_versions if cfg.azure_api_versions is not None else API_VERSIONS
        if version not in known:
            self.sim.record(request, None, protocol=self.protocol, model=deployment)
            return azure_error(
                ProviderError(400, "API version not supported", type_="", code="BadRequest")
            )
        if cfg.azure_deployments is not None and deployment not in cfg.azure_deployments:
            self.sim.record(request, None, protocol=self.protocol, model=deployment)
            return azure_error(
                ProviderError(
                    404,
                    "The API deployment for this resource does not exist. If you created the "
                    "deployment within the last 5 minutes, please wait a moment and try again.",
                    type_="",
                    code="DeploymentNotFound",
                )
            )

        def authenticate() -> dict[str, Any]:
            identity = self.authenticate(request)
            if CONTENT_FILTER_MARKER in raw:
                raise ProviderError(
                    400,
                    "The response was filtered due to the prompt triggering Azure OpenAI's "
                    "content management policy. Please modify your prompt and retry.",
                    type_="",
                    code="content_filter",
                )
            return {"azure_identity": identity}

        raw = await request.text()
        return await self._chat(
            request,
            render_error=azure_error,
            deployment=deployment,
            authenticate=authenticate,
            extra={"api_version": version},
        )

    # ---- rendering: OpenAI's, plus Azure's content-filter fields
    def completion(self, req: Any, reply: Reply) -> dict[str, Any]:
        out = super().completion(req, reply)
        out["prompt_filter_results"] = prompt_filter_results()
        for choice in out["choices"]:
            choice["content_filter_results"] = completion_filter_results()
        out.pop("service_tier", None)
        return out

    def chunks(self, req: Any, reply: Reply) -> Iterator[tuple[dict[str, Any], bool]]:
        yield (
            {
                "choices": [],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
                "prompt_filter_results": prompt_filter_results(),
            },
            False,
        )
        for chunk, is_token in super().chunks(req, reply):
            for choice in chunk.get("choices") or []:
                choice["content_filter_results"] = (
                    completion_filter_results() if is_token or choice["finish_reason"] else {}
                )
            yield chunk, is_token

    # ---- Entra ID
    async def entra_token(self, request: web.Request) -> web.StreamResponse:
        tenant = request.match_info["tenant"]
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.sim.record(
            request,
            {k: v for k, v in form.items() if k != "client_assertion"},
            protocol="entra",
            model=None,
        )
        cfg = self.sim.config_snapshot()
        client_id = str(form.get("client_id", ""))
        app: Mapping[str, str] | None = cfg.entra_apps.get(client_id)
        if form.get("grant_type") != "client_credentials":
            return entra_error(
                400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
            )
        if app is None or app.get("tenant") != tenant:
            return entra_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant}'.",
            )
        if form.get("client_assertion_type") != (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ):
            return entra_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_assertion_type'.",
            )
        try:
            claims = verify_service_account_token(
                str(form.get("client_assertion", "")), AZURE_AUDIENCE
            )
        except IdentityError as exc:
            return entra_error(
                401, "invalid_client", 700024, f"Client assertion is not valid: {exc.message}."
            )
        if claims["sub"] != app.get("subject"):
            return entra_error(
                400,
                "invalid_client",
                70021,
                "No matching federated identity record found for presented assertion subject "
                f"'{claims['sub']}'.",
            )
        if form.get("scope") != SCOPE:
            return entra_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {form.get('scope')} is not valid.",
            )
        ttl = 3599
        token = issue_entra_token(tenant, client_id, claims["sub"], ttl)
        return web.json_response(
            {
                "token_type": "Bearer",
                "expires_in": ttl,
                "ext_expires_in": ttl,
                "access_token": token,
            }
        )


def azure_routes(sim: Simulator) -> list[web.RouteDef]:
    return AzureOpenAI(sim).routes()


__all__ = ["API_VERSIONS", "AzureOpenAI", "azure_error", "azure_routes"]
