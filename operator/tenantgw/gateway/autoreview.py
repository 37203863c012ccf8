"""Auto mode's safety check for models that cannot answer it: the gateway asks the classifier.

The protocol is in `safeguards`; this module decides, per request, who answers it:

* before the request (`prepare`): a request with `safeguards` gets a `Review` on its context
  (the agent's environment and the conversation, already PII-redacted by then, and the Tenant's
  `spec.autoMode`). When no deployment that may serve the alias (targets and fallbacks) is
  Claude-native, `safeguards` is taken out at once; otherwise it stays, and
* just before each deployment is called (`for_deployment`): a Claude-native deployment (Claude
  on Anthropic, Bedrock, Vertex) gets `safeguards` and the beta untouched and answers it itself;
  any other deployment gets the request without it. The last deployment called is the one that
  served (the router calls a fallback after the one before failed), so the review records it.
* after the response (`judge`), when a non-native deployment served and the Tenant names a
  classifier alias: one chat call to that alias judges every tool call of the response. The
  call is a request of the same key like any other: PII redaction, residency, rate limits,
  budgets, its own ledger row (`parent_request_id` = the request, `safeguard_verdicts`).
  A refused, failed, timed-out or unparseable call answers "could not check", never "safe".
  Without a classifier alias the gateway answers nothing, and Claude Code checks tool calls
  with its own classifier requests (which come through the gateway as ordinary requests).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tenantgw.gateway import fallbacks, pii, residency, routing, safeguards
from tenantgw.gateway.context import RequestContext, Review, new_request_id
from tenantgw.gateway.errors import GatewayError, RateLimitError
from tenantgw.gateway.files import Rules

if TYPE_CHECKING:
    from tenantgw.gateway.callbacks import TenantGatewayHandler

log = logging.getLogger("tenantgw.gateway.autoreview")

CALL_TYPE = "acompletion"
TIMEOUT_MARGIN = 2.0
"""Seconds past the Tenant's timeout before the gateway stops waiting for LiteLLM itself."""


# --------------------------------------------------------------------------- before


def alias_may_be_native(rules: Rules, alias: str) -> bool:
    """Whether any deployment that may serve `alias` (its fallbacks too) is Claude-native."""
    for name in (alias, *fallbacks.closure(rules, alias)):
        entry = rules.aliases.get(name)
        if entry is None:
            continue
        if any(routing.serves_thinking_natively(target) for target in entry.targets):
            return True
    return False


def prepare(data: dict[str, Any], rules: Rules, alias: str) -> Review | None:
    """The review of a request that carries `safeguards` (None: nothing to answer)."""
    if safeguards.REQUEST_FIELD not in data:
        return None
    entry = safeguards.requested(data)
    if entry is None:  # not the check we know: nobody upstream is asked it either
        data.pop(safeguards.REQUEST_FIELD, None)
        return None
    if not alias_may_be_native(rules, alias):
        data.pop(safeguards.REQUEST_FIELD, None)
    auto_mode = rules.auto_mode
    return Review(
        classifier=auto_mode.classifier_alias,
        timeout=float(auto_mode.timeout_seconds),
        environment=safeguards.environment(entry),
        transcript=safeguards.transcript(data.get("messages")),
    )


def deployment_is_native(kwargs: Mapping[str, Any]) -> bool:
    """Whether the deployment LiteLLM is about to call serves Claude natively."""
    info = kwargs.get("model_info")
    tg = info.get("tenantgw") if isinstance(info, Mapping) else None
    if not isinstance(tg, Mapping):
        return False
    kind, model = tg.get("provider_type"), tg.get("provider_model")
    return routing.serves_claude_natively(
        kind if isinstance(kind, str) else None, model if isinstance(model, str) else ""
    )


def for_deployment(kwargs: dict[str, Any], review: Review | None) -> dict[str, Any] | None:
    """The call's kwargs for this deployment: without `safeguards` unless it is Claude-native
    (None: unchanged)."""
    native = deployment_is_native(kwargs)
    if review is not None:
        review.native = native
    if native or safeguards.REQUEST_FIELD not in kwargs:
        return None
    return {k: v for k, v in kwargs.items() if k != safeguards.REQUEST_FIELD}


def wants_verdicts(review: Review | None) -> bool:
    """The gateway answers `safeguard_results` itself: a non-native deployment served and the
    tenant has a classifier."""
    return review is not None and not review.native and review.classifier is not None


# --------------------------------------------------------------------------- after


def _unavailable_reason(exc: BaseException) -> str:
    from litellm.exceptions import ContentPolicyViolationError, ContextWindowExceededError, Timeout

    if isinstance(exc, asyncio.TimeoutError | Timeout):
        return "timeout"
    if isinstance(exc, ContextWindowExceededError):
        return "input_too_long"
    if isinstance(exc, ContentPolicyViolationError):
        return "refused"
    return "error"


async def judge(
    handler: TenantGatewayHandler, parent: RequestContext, calls: Sequence[safeguards.Pending]
) -> safeguards.Results:
    """`safeguard_results` for the tool calls of a response the gateway must judge."""
    review = parent.review
    if review is None or review.classifier is None:
        return safeguards.status_unavailable("error")
    to_judge = [call for call in calls if isinstance(call, safeguards.ToolCall)]
    if not to_judge:
        return safeguards.available(safeguards.all_verdicts(calls, {}))
    runtime = handler.runtime
    rules = runtime.rules()
    alias = review.classifier
    entry = rules.aliases.get(alias)
    ctx = RequestContext(
        tenant=parent.tenant,
        key_name=parent.key_name,
        request_id=new_request_id(),
        requested_model=alias,
        alias=alias,
        cost_tier=entry.cost_tier if entry is not None else None,
        call_type=CALL_TYPE,
        parent_request_id=parent.request_id,
        judged=tuple(call.id for call in to_judge),
        # The check is part of the session it protects: its cost counts against the
        # session's budgets and its row carries the session, like the request's own.
        session_id=parent.session_id,
        # Its project's cost too; no list model: Claude would have judged at no extra cost,
        # so the check's spend counts against the savings.
        labels=dict(parent.labels),
    )
    data: dict[str, Any] = {
        "model": alias,
        "messages": safeguards.classifier_messages(review.environment, review.transcript, to_judge),
        "max_tokens": safeguards.CLASSIFIER_MAX_TOKENS,
    }
    tracked = handler.contexts.attach(data, CALL_TYPE, ctx)
    audit = runtime.audit
    original = audit.capture(data) if audit is not None else None
    try:
        if entry is None:
            raise GatewayError(f"classifier alias {alias!r} is not served")
        redaction = rules.compliance.pii_redaction
        if redaction.mode != "off":
            ctx.pii_counts = await pii.apply_pii_policy_async(
                data, redaction.mode, redaction.entities, tenant=rules.tenant
            )
        residency.check_residency(rules, alias)
        await handler.admit(runtime, tracked, rules, data)
    except GatewayError as exc:
        reason = "rate_limited" if isinstance(exc, RateLimitError) else "error"
        log.warning(
            "auto-mode check of request %s not run (%s): %s", parent.request_id, reason, exc
        )
        ctx.verdicts = {call.id: f"unavailable:{reason}" for call in to_judge}
        if audit is not None:
            audit.refused(ctx, exc, key_name=ctx.key_name, call_type=CALL_TYPE, data=data)
        await handler.finish_refused(tracked, exc)
        return safeguards.status_unavailable(reason)
    if audit is not None:
        # The check is a request of the tenant's like any other: its own audit record.
        audit.admitted(ctx, data, original)

    from litellm.proxy.proxy_server import llm_router

    try:
        if llm_router is None:
            raise RuntimeError("LiteLLM's router is not started")
        response = await asyncio.wait_for(
            llm_router.acompletion(**data, timeout=review.timeout, num_retries=0),
            review.timeout + TIMEOUT_MARGIN,
        )
    except Exception as exc:
        reason = _unavailable_reason(exc)
        log.warning(
            "auto-mode classifier %s failed for request %s (%s): %s",
            alias,
            parent.request_id,
            reason,
            exc,
        )
        judged = {call.id: safeguards.unavailable(reason) for call in to_judge}
        ctx.verdicts = safeguards.ledger_summary(judged)
        await handler.finish_refused(tracked, exc)
        return safeguards.available(safeguards.all_verdicts(calls, judged))
    judged = safeguards.parse_verdicts(safeguards.response_text(response), ctx.judged or ())
    if any(v.get("type") == "unavailable" for v in judged.values()):
        log.warning("auto-mode classifier %s gave no usable verdict for some calls", alias)
    return safeguards.available(safeguards.all_verdicts(calls, judged))


async def stamp_message(handler: TenantGatewayHandler, ctx: RequestContext, response: Any) -> Any:
    """A non-streamed /v1/messages answer with `safeguard_results` added."""
    if not isinstance(response, dict) or response.get(safeguards.RESULTS_FIELD) is not None:
        return response
    calls = safeguards.message_tool_calls(response)
    response[safeguards.RESULTS_FIELD] = await judge(handler, ctx, calls)
    return response


async def stamp_stream(
    handler: TenantGatewayHandler, ctx: RequestContext, stream: AsyncIterator[Any]
) -> AsyncIterator[Any]:
    """An Anthropic SSE stream whose final `message_delta` carries `safeguard_results`: that
    event is held until the verdicts are known; every other event passes as it comes."""
    calls = safeguards.StreamCalls()
    frames = safeguards.SseFrames()
    done = False

    async def final(event: Mapping[str, Any]) -> dict[str, Any]:
        delta = event.get("delta")
        if isinstance(delta, Mapping) and delta.get(safeguards.RESULTS_FIELD) is not None:
            return dict(event)
        stop = delta.get("stop_reason") if isinstance(delta, Mapping) else None
        results = await judge(handler, ctx, calls.pending(stop))
        return safeguards.with_results(event, results)

    async for chunk in stream:
        if done:
            yield chunk
            continue
        if isinstance(chunk, dict):
            calls.observe(chunk)
            if safeguards.is_final_delta(chunk):
                done = True
                yield await final(chunk)
            else:
                yield chunk
            continue
        if isinstance(chunk, str):
            raw = chunk.encode()
        elif isinstance(chunk, bytes | bytearray):
            raw = bytes(chunk)
        else:
            yield chunk
            continue
        out: list[bytes] = []
        for frame in frames.feed(raw):
            event = safeguards.frame_event(frame)
            if event is None or done:
                out.append(frame)
                continue
            calls.observe(event)
            if safeguards.is_final_delta(event):
                done = True
                out.append(safeguards.event_frame(await final(event)))
            else:
                out.append(frame)
        if done:
            out.append(frames.rest())
        if out:
            yield b"".join(out)
    rest = frames.rest()
    if rest:
        yield rest
