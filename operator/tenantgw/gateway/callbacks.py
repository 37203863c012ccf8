"""The tenantgw plugin LiteLLM calls around every request (`litellm_settings.callbacks`).

Before a request goes upstream (`async_pre_call_hook`), in this order: routing picks the
ModelAlias, PII is redacted (or the request refused), the residency of the alias is checked,
then the rate limits and the budget are enforced; last, Anthropic's `thinking` is taken out
of requests for aliases whose providers do not serve Claude natively
(`routing.adapt_thinking`). The `RequestContext` of the request travels in LiteLLM's request
metadata to the success and failure callbacks, which meter the request and free its
rate-limit slot.

Rate limits (`ratelimit`), budgets (`budgets`) and metering (`metering`) are optional: when a
module is missing or its storage is not configured ($TENANTGW_REDIS_URL,
$TENANTGW_POSTGRES_DSN), its step is skipped and that is logged once.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from tenantgw.gateway import files, pii, residency, routing
from tenantgw.gateway.context import (
    RequestContext,
    context_from_kwargs,
    request_metadata,
)
from tenantgw.gateway.errors import (
    GatewayError,
    InternalError,
    RateLimitError,
    ServiceUnavailableError,
    proxy_exception,
)

log = logging.getLogger("tenantgw.gateway")

REDIS_URL_ENV = "TENANTGW_REDIS_URL"
POSTGRES_DSN_ENV = "TENANTGW_POSTGRES_DSN"
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
"""Call types that name a model and carry a prompt; others pass through untouched."""
MAX_HELD = 100_000
"""Request ids with a rate-limit slot this process still has to free (bounded; Redis leases
free slots that are never released)."""


# --------------------------------------------------------------------------- optional plugins


@dataclass
class Plugins:
    """The optional limit, budget and metering steps, as far as they are available."""

    limiter: Any | None = None
    guard: Any | None = None
    metering: ModuleType | None = None
    outcomes: ModuleType | None = None
    ledger: Any | None = None
    ratelimited_error: type[BaseException] | None = None


def _optional_module(name: str) -> ModuleType | None:
    full = f"tenantgw.gateway.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as exc:
        if exc.name == full:
            log.warning("tenantgw.gateway.%s is not installed: its step is skipped", name)
        else:
            log.exception("tenantgw.gateway.%s cannot be imported: its step is skipped", name)
    except Exception:
        log.exception("tenantgw.gateway.%s cannot be imported: its step is skipped", name)
    return None


def _build(
    module: ModuleType | None, class_name: str, what: str, args: Callable[[], tuple[Any, ...]]
) -> Any | None:
    """The instance `module.from_env()` gives (shared with metering), else `Class(*args())`."""
    if module is None:
        return None
    try:
        factory = getattr(module, "from_env", None)
        if callable(factory):
            instance = factory()
            if instance is None:
                log.warning("%s is not configured by the environment: skipped", what)
            return instance
        return getattr(module, class_name)(*args())
    except Exception:
        log.exception("%s could not be set up: its step is skipped", what)
        return None


def _configure_metering(metering: ModuleType, **parts: Any) -> None:
    """Hand metering the ledger and guard, if it has a `configure` that takes them."""
    configure = getattr(metering, "configure", None)
    if not callable(configure):
        return
    try:
        accepted = inspect.signature(configure).parameters
        if any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
            configure(**parts)
        else:
            configure(**{k: v for k, v in parts.items() if k in accepted})
    except Exception:
        log.exception("metering could not be configured")


def load_plugins(tenant: str) -> Plugins:
    """Import and set up the optional steps for `tenant` from the environment."""
    plugins = Plugins()
    redis_url = os.environ.get(REDIS_URL_ENV)
    dsn = os.environ.get(POSTGRES_DSN_ENV)
    clients: dict[str, Any] = {}

    def redis_args() -> tuple[Any, ...]:
        if "redis" not in clients:
            import redis.asyncio as aioredis

            clients["redis"] = aioredis.from_url(redis_url or "")
        return (clients["redis"], tenant)

    if redis_url:
        ratelimit = _optional_module("ratelimit")
        plugins.limiter = _build(ratelimit, "RateLimiter", "rate limiting", redis_args)
        error = getattr(ratelimit, "RateLimited", None)
        if isinstance(error, type) and issubclass(error, BaseException):
            plugins.ratelimited_error = error
        budgets = _optional_module("budgets")
        plugins.guard = _build(budgets, "BudgetGuard", "budget enforcement", redis_args)
    else:
        log.warning("%s is not set: rate limits and budgets are not enforced", REDIS_URL_ENV)
    if dsn:
        plugins.ledger = _build(_optional_module("ledger"), "Ledger", "the ledger", lambda: (dsn,))
    else:
        log.warning("%s is not set: usage is not written to the ledger", POSTGRES_DSN_ENV)
    plugins.metering = _optional_module("metering")
    plugins.outcomes = _optional_module("outcomes") if plugins.metering is not None else None
    if plugins.metering is not None:
        _configure_metering(
            plugins.metering,
            ledger=plugins.ledger,
            guard=plugins.guard,
            limiter=plugins.limiter,
            tenant=tenant,
        )
    return plugins


# --------------------------------------------------------------------------- the handler


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


class TenantGatewayHandler(CustomLogger):
    """Routing, PII, residency, limits and budgets before a request; metering after it."""

    def __init__(self) -> None:
        super().__init__()
        self._plugins: Plugins | None = None
        self._plugins_lock = threading.Lock()
        self._held: OrderedDict[str, RequestContext] = OrderedDict()

    # ---- setup

    def plugins(self) -> Plugins:
        """The optional steps, set up on first use (in the worker, after LiteLLM started)."""
        if self._plugins is None:
            with self._plugins_lock:
                if self._plugins is None:
                    self._plugins = load_plugins(files.tenant_name())
        return self._plugins

    def set_plugins(self, plugins: Plugins) -> None:
        """Use these steps instead of the ones from the environment (tests)."""
        self._plugins = plugins

    # ---- before the request

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any]:
        try:
            return await self.pre_call(user_api_key_dict, data, str(call_type))
        except GatewayError as exc:
            raise proxy_exception(exc) from None
        except Exception as exc:
            if _is_client_error(exc):
                raise
            log.exception("tenantgw pre-call step failed")
            raise proxy_exception(
                InternalError("internal error in the gateway's request checks: try again")
            ) from None

    async def pre_call(
        self, user_api_key_dict: Any, data: dict[str, Any], call_type: str
    ) -> dict[str, Any]:
        """The pre-call steps; raises GatewayError for what the client must change."""
        if call_type not in ROUTED_CALL_TYPES:
            return data
        try:
            rules = files.current_rules()
        except files.FileError as exc:
            raise ServiceUnavailableError(
                f"the gateway's routing rules are not loaded ({exc}): ask your platform team"
            ) from None
        route = routing.route_request(data, rules)
        metadata = request_metadata(data, call_type)
        alias = rules.aliases[route.alias]
        ctx = RequestContext(
            tenant=getattr(user_api_key_dict, "team_id", None) or rules.tenant,
            key_name=getattr(user_api_key_dict, "user_id", None) or "unknown",
            request_id=str(data.get("litellm_call_id") or uuid.uuid4().hex),
            requested_model=route.requested_model,
            alias=route.alias,
            cost_tier=alias.cost_tier,
            call_type=call_type,
            stream=bool(data.get("stream")),
        )
        redaction = rules.compliance.pii_redaction
        if redaction.mode != "off":
            # Large prompts are scanned in a process pool, within a deadline (pii.policy).
            ctx.pii_counts = await pii.apply_pii_policy_async(
                data, redaction.mode, redaction.entities, tenant=rules.tenant
            )
        residency.check_residency(rules, ctx.alias)
        ctx.store(metadata)

        plugins = self.plugins()
        await self._acquire(plugins, ctx, rules)
        try:
            await self._check_budget(plugins, ctx, rules, data)
        except BaseException:
            await self._release(ctx, 0)
            raise
        # Last, once the alias is final (a budget downgrade may have changed it).
        if not routing.alias_serves_thinking_natively(rules, ctx.alias):
            dropped = routing.adapt_thinking(data)
            if dropped:
                log.debug(
                    "request %s for %s: %s adapted for a provider without Anthropic thinking",
                    ctx.request_id,
                    ctx.alias,
                    ", ".join(dropped),
                )
        ctx.store(metadata)
        return data

    async def _acquire(self, plugins: Plugins, ctx: RequestContext, rules: files.Rules) -> None:
        if plugins.limiter is None:
            return
        try:
            await plugins.limiter.acquire(ctx, rules)
        except Exception as exc:
            if plugins.ratelimited_error is not None and isinstance(exc, plugins.ratelimited_error):
                raise RateLimitError(
                    str(getattr(exc, "message", exc)),
                    retry_after=float(getattr(exc, "retry_after", 1) or 1),
                ) from None
            log.exception("rate limits not checked for %s; admitting it", ctx.request_id)
            return
        self._held[ctx.request_id] = ctx
        while len(self._held) > MAX_HELD:
            self._held.popitem(last=False)

    async def _check_budget(
        self, plugins: Plugins, ctx: RequestContext, rules: files.Rules, data: dict[str, Any]
    ) -> None:
        if plugins.guard is None:
            return
        try:
            decision = await plugins.guard.check(ctx, rules)
        except Exception:
            log.exception("budget not checked for %s; admitting it", ctx.request_id)
            return
        action = getattr(decision, "action", "allow")
        message = str(getattr(decision, "message", "") or "")
        if action == "block":
            raise RateLimitError(message or f"tenant {ctx.tenant}'s budget is exhausted")
        if action != "downgrade":
            return
        target = getattr(decision, "to_alias", None)
        if not target or target == ctx.alias:
            return
        if target not in rules.aliases:
            log.error("budget downgrade of %s to unknown alias %r ignored", ctx.alias, target)
            return
        residency.check_residency(rules, target)
        ctx.downgraded_from, ctx.alias = ctx.alias, target
        ctx.cost_tier = rules.aliases[target].cost_tier
        data["model"] = target
        if message:
            log.info("request %s downgraded: %s", ctx.request_id, message)

    # ---- after the request

    async def _release(self, ctx: RequestContext, tokens: int) -> None:
        """Free the request's rate-limit slot, once (fallbacks report several events)."""
        if self._held.pop(ctx.request_id, None) is None:
            return
        limiter = self.plugins().limiter
        if limiter is None:
            return
        try:
            await limiter.release(ctx, tokens)
        except Exception:
            log.exception("rate-limit slot of %s not released", ctx.request_id)

    async def _drop_reservation(self, ctx: RequestContext) -> None:
        """Tell the budget guard a request will report no cost (it may hold a reservation)."""
        guard = self.plugins().guard
        release = getattr(guard, "release", None) if guard is not None else None
        if release is None:
            return
        try:
            await release(ctx)
        except Exception:
            log.exception("budget reservation of %s not dropped", ctx.request_id)

    async def _meter(
        self, outcome: str, kwargs: dict[str, Any], response_obj: Any, start: Any, end: Any
    ) -> tuple[RequestContext | None, Any]:
        """Hand the event to metering; (the request's context, metering's usage record)."""
        ctx = context_from_kwargs(kwargs)
        if ctx is None:
            return None, None
        plugins = self.plugins()
        metering = plugins.outcomes or plugins.metering
        record = getattr(metering, f"on_{outcome}", None) if metering is not None else None
        if record is None:
            return ctx, None
        try:
            return ctx, await record(ctx, kwargs, response_obj, start, end)
        except Exception:
            log.exception("usage of %s not metered", ctx.request_id)
            return ctx, None

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        try:
            ctx, usage = await self._meter("success", kwargs, response_obj, start_time, end_time)
            if ctx is not None:
                tokens = getattr(usage, "total_tokens", None)
                if not isinstance(tokens, int):
                    tokens = _usage_tokens(kwargs, response_obj)
                await self._release(ctx, tokens)
        except Exception:
            log.exception("tenantgw success callback failed")

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        # One event per failed model group: a fallback may still answer the request, so the
        # slot is freed by the final success event or by async_post_call_failure_hook.
        try:
            await self._meter("failure", kwargs, response_obj, start_time, end_time)
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
        try:
            for key in ("litellm_metadata", "metadata"):
                metadata = request_data.get(key)
                ctx = RequestContext.from_metadata(metadata if isinstance(metadata, dict) else None)
                if ctx is not None:
                    await self._release(ctx, 0)
                    await self._drop_reservation(ctx)
                    outcomes = self.plugins().outcomes
                    if outcomes is not None:
                        await outcomes.on_final_failure(ctx, original_exception)
                    return
        except Exception:
            log.exception("tenantgw post-call failure hook failed")


def _is_client_error(exc: BaseException) -> bool:
    """LiteLLM's and FastAPI's own HTTP errors pass through the hook unchanged."""
    from fastapi import HTTPException
    from litellm.proxy._types import ProxyException

    return isinstance(exc, ProxyException | HTTPException)


handler = TenantGatewayHandler()
"""The instance `litellm_settings.callbacks` names: tenantgw.gateway.callbacks.handler."""
