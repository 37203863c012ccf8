"""The tenantgw plugin LiteLLM calls around every request (`litellm_settings.callbacks`).

Before a request goes upstream (`async_pre_call_hook`), in this order: routing picks the
ModelAlias, PII is redacted (or the request refused), the residency of the alias is checked,
then the rate limits and the budget are enforced (`admission`); last, Anthropic's `thinking`
is taken out of requests for aliases whose providers do not serve Claude natively
(`routing.adapt_thinking`). Call types the gateway does not meter are refused here, so no
route reaches a provider past these checks.

The `RequestContext` of a request is built from the authenticated key only and kept in this
process (`context.ContextStore`); the request metadata carries nothing but a ticket the server
drew, so no client-sent field decides which key is charged or which slot is freed. The success
and failure callbacks find the context by that ticket, meter the request and free its
rate-limit slot. The client's `X-Claude-Code-Session-Id`, when well-formed, is kept in the
context as a label under the key (`sessions.py`): the ledger row records it and Session-scoped
BudgetPolicies count it; a malformed one is dropped and counted, never an error.

The parts (rate limiter, budget guard, meter) come from one `runtime.GatewayRuntime`, attached
to `handler` by `app.create_app()`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from tenantgw.gateway import (
    access,
    admission,
    autoreview,
    costlabels,
    credfail,
    fallbacks,
    files,
    pii,
    pii_response,
    residency,
    routing,
    safeguards,
    system_turns,
)
from tenantgw.gateway.audit import AuditTrail
from tenantgw.gateway.context import (
    ContextStore,
    RequestContext,
    Tracked,
    drop_client_context,
    metadata_from_kwargs,
    new_request_id,
)
from tenantgw.gateway.errors import (
    AuthenticationError,
    GatewayError,
    InternalError,
    ModelNotFoundError,
    ServiceUnavailableError,
    proxy_exception,
)
from tenantgw.gateway.runtime import GatewayRuntime
from tenantgw.gateway.sessions import session_from_request

log = logging.getLogger("tenantgw.gateway")

ROUTED_CALL_TYPES = frozenset(
    {
        "completion",
        "acompletion",
        "anthropic_messages",
        "text_completion",
        "atext_completion",
        "responses",
        "aresponses",
        "embeddings",
        "aembedding",
    }
)
"""Call types that name a model and carry a prompt: the ones tenantgw meters. Others are
refused in the pre-call hook."""


def _usage_tokens(kwargs: Mapping[str, Any], response_obj: Any) -> int:
    """Total tokens of a finished request, from LiteLLM's logging payload or the response."""
    payload = kwargs.get("standard_logging_object")
    if isinstance(payload, Mapping):
        total = payload.get("total_tokens")
        if isinstance(total, int) and total > 0:
            return total
    usage = getattr(response_obj, "usage", None)
    if usage is None and isinstance(response_obj, Mapping):
        usage = response_obj.get("usage")
    if isinstance(usage, Mapping):
        total = usage.get("total_tokens")
    else:
        total = getattr(usage, "total_tokens", None)
    return total if isinstance(total, int) and total > 0 else 0


def _call_type_name(call_type: Any) -> str:
    value = getattr(call_type, "value", call_type)  # LiteLLM passes strings or CallTypes
    return str(value)


class TenantGatewayHandler(CustomLogger):
    """Routing, PII, residency, limits and budgets before a request; metering after it."""

    def __init__(self, runtime: GatewayRuntime | None = None) -> None:
        super().__init__()
        self._runtime = runtime
        self.contexts = ContextStore()

    # ---- setup

    def attach(self, runtime: GatewayRuntime) -> None:
        """Serve with `runtime` (the composition root, `app.create_app()`, calls this once)."""
        self._runtime = runtime

    @property
    def runtime(self) -> GatewayRuntime:
        if self._runtime is None:
            raise ServiceUnavailableError(
                "the gateway's tenantgw runtime is not started (serve it with "
                "`python -m tenantgw.gateway`): ask your platform team"
            )
        return self._runtime

    # ---- before the request

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any]:
        name = _call_type_name(call_type)
        audit = self._runtime.audit if self._runtime is not None else None
        original = audit.capture(data) if audit is not None else None
        try:
            result = await self.pre_call(user_api_key_dict, data, name)
        except GatewayError as exc:
            self._audit_refused(audit, exc, user_api_key_dict, data, name)
            raise proxy_exception(_in_family(exc, name)) from None
        except Exception as exc:
            if _is_client_error(exc):
                raise
            log.exception("tenantgw pre-call step failed")
            error = InternalError("internal error in the gateway's request checks: try again")
            self._audit_refused(audit, error, user_api_key_dict, data, name)
            raise proxy_exception(error) from None
        if audit is not None:
            tracked = self.contexts.find_in_request(data)
            if tracked is not None:
                audit.admitted(tracked.ctx, data, original)
        return result

    def _audit_refused(
        self,
        audit: AuditTrail | None,
        exc: BaseException,
        user_api_key_dict: Any,
        data: dict[str, Any],
        call_type: str,
    ) -> None:
        """The audit record of a refused request (never fails the refusal itself)."""
        if audit is None:
            return
        try:
            tracked = self.contexts.find_in_request(data)
            key_name = getattr(user_api_key_dict, "user_id", None)
            audit.refused(
                tracked.ctx if tracked is not None else None,
                exc,
                key_name=key_name if isinstance(key_name, str) else None,
                call_type=call_type,
                data=data,
            )
        except Exception:
            log.exception("audit record of a refused request failed")

    async def pre_call(
        self, user_api_key_dict: Any, data: dict[str, Any], call_type: str
    ) -> dict[str, Any]:
        """The pre-call steps; raises GatewayError for what the client must change."""
        drop_client_context(data)
        if call_type not in ROUTED_CALL_TYPES:
            raise ModelNotFoundError(
                f"this gateway does not serve {call_type} requests: use /v1/messages or "
                "/v1/chat/completions"
            )
        runtime = self.runtime
        key_name = getattr(user_api_key_dict, "user_id", None)
        if not isinstance(key_name, str) or not key_name:
            raise AuthenticationError("the request carries no authenticated tenant key")
        access.authenticated(key_name)
        try:
            rules = runtime.rules()
        except files.FileError as exc:
            raise ServiceUnavailableError(
                f"the gateway's routing rules are not loaded ({exc}): ask your platform team"
            ) from None
        route = routing.route_request(data, rules)
        dropped = fallbacks.drop_client_fallbacks(data)
        if dropped:
            log.info("client-sent %s dropped: fallbacks come from the ModelAliases", dropped)
        alias = rules.aliases[route.alias]
        session = session_from_request(data)
        if session.rejected is not None:
            runtime.metrics.session_rejected(runtime.tenant, session.rejected)
        labels = costlabels.request_labels(rules, key_name, data)
        ctx = RequestContext(
            tenant=runtime.tenant,
            key_name=key_name,
            request_id=new_request_id(),
            requested_model=route.requested_model,
            alias=route.alias,
            cost_tier=alias.cost_tier,
            call_type=call_type,
            stream=bool(data.get("stream")),
            session_id=session.session_id,
            labels=labels,
            list_model=costlabels.list_model(rules, route.requested_model, route.alias),
        )
        redaction = rules.compliance.pii_redaction
        if redaction.mode != "off":
            # A large prompt is scanned in a process pool, so other requests keep flowing.
            ctx.pii_counts = await pii.apply_pii_policy_async(
                data, redaction.mode, redaction.entities, tenant=rules.tenant
            )
            if redaction.mode == "redact":
                self._count_pii(ctx, "request")
        residency.check_residency(rules, ctx.alias)
        tracked = self.contexts.attach(data, call_type, ctx)
        access.claim()  # from here on, the meter writes the request's access line

        await self.admit(runtime, tracked, rules, data)
        # Last, once the alias is final (a budget downgrade may have changed it).
        ctx.review = autoreview.prepare(data, rules, ctx.alias)
        if not routing.alias_serves_thinking_natively(rules, ctx.alias):
            dropped = routing.adapt_thinking(data)
            if dropped:
                log.debug(
                    "request %s for %s: %s adapted for a provider without Anthropic thinking",
                    ctx.request_id,
                    ctx.alias,
                    ", ".join(dropped),
                )
        return data

    async def admit(
        self, runtime: GatewayRuntime, tracked: Tracked, rules: files.Rules, data: dict[str, Any]
    ) -> None:
        """Rate limits, then budgets, of a request whose context is attached."""
        try:
            await admission.admit(runtime, tracked, rules, data)
        except BaseException:
            await self._release(tracked, 0)  # taken, then refused (a downgrade's residency)
            raise

    async def finish_refused(self, tracked: Tracked, exc: BaseException) -> None:
        """A call the gateway made itself ended without an answer: free, meter, forget."""
        if tracked.finished_at is not None:
            return
        usage = await self.runtime.meter.on_final_failure(
            tracked.ctx, exc, free_slot=tracked.take_slot()
        )
        if self.runtime.audit is not None:
            self.runtime.audit.finished(tracked.ctx, usage, None)
        self.contexts.finish(tracked)

    # ---- each model group the router picks deployments of (the alias, then each fallback)

    async def async_filter_deployments(
        self,
        model: str,
        healthy_deployments: list[Any],
        messages: Any,
        request_kwargs: dict[str, Any] | None = None,
        parent_otel_span: Any = None,
    ) -> list[dict[str, Any]]:
        """A fallback serves only if its residency and budgets admit it (`fallbacks.admit_hop`)."""
        runtime = self.runtime
        tracked = self.contexts.find_in_request(request_kwargs or {})
        return await fallbacks.admit_hop(
            runtime.budgets,
            model,
            healthy_deployments,
            tracked.ctx if tracked is not None else None,
        )

    async def async_pre_call_deployment_hook(
        self, kwargs: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        """`safeguards` reaches only a Claude-native deployment (`autoreview.for_deployment`);
        `system` turns of `/v1/messages` reach no Anthropic-wire upstream (`system_turns`)."""
        try:
            kwargs = system_turns.for_deployment(kwargs, call_type) or kwargs
            tracked = self.contexts.find_in_request(kwargs)
            review = tracked.ctx.review if tracked is not None else None
            if review is None and safeguards.REQUEST_FIELD not in kwargs:
                return kwargs
            return autoreview.for_deployment(kwargs, review) or kwargs
        except Exception:
            log.exception("tenantgw deployment hook failed")
            return {k: v for k, v in kwargs.items() if k != safeguards.REQUEST_FIELD}

    # ---- the answer: PII policy (see pii_response), then auto mode's verdicts (autoreview)

    async def async_post_call_success_hook(
        self, data: dict[str, Any], user_api_key_dict: Any, response: Any
    ) -> Any:
        tracked = self.contexts.find_in_request(data)
        if tracked is None:
            return response
        ctx = tracked.ctx
        rules = self._answer_rules()
        if rules is not None and pii_response.active(rules):
            try:
                response = pii_response.redact_response(ctx, rules, response)
            except GatewayError as exc:
                raise proxy_exception(_in_family(exc, ctx.call_type)) from None
            except Exception:
                log.exception("PII scan of the answer to %s failed: withheld", ctx.request_id)
                raise proxy_exception(_withheld_on_error(ctx)) from None
            finally:
                self._count_pii(ctx, "response")
        if not autoreview.wants_verdicts(ctx.review):
            return response
        try:
            return await autoreview.stamp_message(self, ctx, response)
        except Exception:
            log.exception("auto-mode verdicts of %s not added", ctx.request_id)
            return response

    async def async_post_call_streaming_iterator_hook(  # type: ignore[override]
        self, user_api_key_dict: Any, response: Any, request_data: dict[str, Any]
    ) -> AsyncIterator[Any]:
        tracked = self.contexts.find_in_request(request_data)
        stream: AsyncIterator[Any] = response
        if tracked is not None:
            ctx = tracked.ctx
            rules = self._answer_rules()
            if rules is not None and pii_response.active(rules):
                stream = pii_response.redact_stream(ctx, rules, stream)
            if autoreview.wants_verdicts(ctx.review):
                stream = autoreview.stamp_stream(self, ctx, stream)
        try:
            async for chunk in stream:
                yield chunk
        except GatewayError as exc:
            raise proxy_exception(
                _in_family(exc, tracked.ctx.call_type if tracked else "")
            ) from None
        finally:
            if tracked is not None:
                self._count_pii(tracked.ctx, "response")

    def _answer_rules(self) -> files.Rules | None:
        try:
            return self.runtime.rules()
        except Exception:  # no rules: the pre-call hook refused the request already
            return None

    def _count_pii(self, ctx: RequestContext, direction: str) -> None:
        counts = ctx.pii_counts if direction == "request" else ctx.response_pii_counts
        if not counts or self._runtime is None:
            return
        action = "blocked" if direction == "response" and ctx.response_withheld else "redacted"
        self._runtime.metrics.pii(ctx.tenant, direction, action, counts)

    # ---- after the request

    async def _release(self, tracked: Tracked, tokens: int) -> None:
        """Free the request's rate-limit slot, once (fallbacks report several events)."""
        if not tracked.take_slot():
            return
        limiter = self.runtime.limiter
        if limiter is None:
            return
        try:
            await limiter.release(tracked.ctx, tokens)
        except Exception:
            log.exception("rate-limit slot of %s not released", tracked.ctx.request_id)

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        try:
            tracked = self.contexts.find(metadata_from_kwargs(kwargs))
            if tracked is None:
                return
            # One Redis call meters the spend and frees the slot (`Meter.settle`).
            holds_slot = tracked.take_slot()
            usage = await self.runtime.meter.on_success(
                tracked.ctx, kwargs, response_obj, start_time, end_time, free_slot=holds_slot
            )
            if self.runtime.audit is not None:
                self.runtime.audit.finished(tracked.ctx, usage, response_obj)
            if usage is None and holds_slot:  # not metered: the slot is freed on its own
                tracked.holds_slot = True
                await self._release(tracked, _usage_tokens(kwargs, response_obj))
            self.contexts.finish(tracked)
        except Exception:
            log.exception("tenantgw success callback failed")

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        # One event per failed model group: a fallback may still answer the request, so the
        # slot is freed by the final success event or by async_post_call_failure_hook.
        try:
            tracked = self.contexts.find(metadata_from_kwargs(kwargs))
            if tracked is not None:
                await self.runtime.meter.on_failure(
                    tracked.ctx, kwargs, response_obj, start_time, end_time
                )
        except Exception:
            log.exception("tenantgw failure callback failed")

    async def async_post_call_failure_hook(
        self,
        request_data: dict[str, Any],
        original_exception: Exception,
        user_api_key_dict: Any,
        traceback_str: str | None = None,
    ) -> None:
        # The request failed for good (after fallbacks), or was refused before going upstream.
        detail = credfail.credential_failure(original_exception)
        if detail is not None:
            exchange = access.CURRENT.get()
            if exchange is not None:
                exchange.credential_failure = detail  # the middleware answers it as a 502
            log.warning("the provider's credential could not be obtained: %s", detail)
        try:
            tracked = self.contexts.find_in_request(request_data)
            if tracked is None or tracked.finished_at is not None:
                return
            if tracked.ctx.response_withheld:
                return  # the provider answered: the success event meters it
            usage = await self.runtime.meter.on_final_failure(
                tracked.ctx, original_exception, free_slot=tracked.take_slot()
            )
            if self.runtime.audit is not None:
                self.runtime.audit.finished(tracked.ctx, usage, None)
            self.contexts.finish(tracked)
        except Exception:
            log.exception("tenantgw post-call failure hook failed")


def _in_family(exc: GatewayError, call_type: str) -> GatewayError:
    """`exc`, with its type kept on /v1/messages.

    LiteLLM renders a /v1/messages error from its status alone and calls a 503 `api_error`;
    it keeps an Anthropic error body given as the message, so a 503 (`overloaded_error`,
    which clients retry after `retry-after`) goes as one.
    """
    if call_type != "anthropic_messages" or exc.status != 503:
        return exc
    body = {"type": "error", "error": {"type": exc.type_, "message": exc.message}}
    return type(exc)(json.dumps(body), param=exc.param, retry_after=exc.retry_after)


def _withheld_on_error(ctx: RequestContext) -> GatewayError:
    """A failed scan of the answer withholds it: what was not scanned is never sent."""
    return _in_family(
        InternalError("the gateway could not check the model's answer for personal data: retry"),
        ctx.call_type,
    )


def _is_client_error(exc: BaseException) -> bool:
    """LiteLLM's and FastAPI's own HTTP errors pass through the hook unchanged."""
    from fastapi import HTTPException
    from litellm.proxy._types import ProxyException

    return isinstance(exc, ProxyException | HTTPException)


handler = TenantGatewayHandler()
"""The instance `litellm_settings.callbacks` names: tenantgw.gateway.callbacks.handler."""
