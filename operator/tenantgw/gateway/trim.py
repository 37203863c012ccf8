"""LiteLLM work a tenantgw gateway switches off: before LiteLLM's proxy is imported, and once
it has started.

Each switch-off here removes per-request work that LiteLLM 1.106.12 does by default and that a
tenantgw gateway does not need; none changes what a request does or what it records.

* LiteLLM's OpenTelemetry V2 logger (`litellm.integrations.otel.logger`) imports the
  OpenTelemetry SDK at module scope. The gateway image has only `opentelemetry-api`, so the
  import always fails, and a failed import is not cached: LiteLLM's key check
  (`user_api_key_auth._seed_request_destinations`) imports the module on every request,
  which finds, reads and runs the module's file again until its SDK import fails, under
  the import lock (a yappi profile of a gateway put it at about 6 % of its CPU per request).
  Every caller catches the failure and goes on without OpenTelemetry.
  With the SDK absent, the module is entered in `sys.modules` as absent (`None`), so the
  import fails at once, as it would anyway. With the SDK installed nothing is changed.
* LiteLLM's proxy registers hooks that run on every request whether or not anything is
  configured for them (`litellm.proxy.hooks.PROXY_HOOKS`, and the model max-budget limiter).
  Those in `DUPLICATED_PROXY_HOOKS` enforce limits and budgets stored on LiteLLM virtual keys,
  or serve LiteLLM features the rendered config never turns on. A tenantgw key carries none of
  those fields (`auth.user_auth`), and tenantgw enforces its own limits and budgets
  (`ratelimit`, `budgets`), so these hooks only cost CPU: after LiteLLM's start-up they are
  taken out of LiteLLM's callback lists (`drop_duplicated_proxy_hooks`). The hooks that can
  change a request (skills injection, Responses API id security) stay.
* LiteLLM's router counts each deployment's tokens and requests per minute twice per request
  (`Router._increment_deployment_usage`, from its success callback and after the call), and
  each time first builds the deployment's model info (a deep copy of its cost-map entry) only
  to find that the deployment has no tpm/rpm limit and return without counting. The rendered
  config sets no such limit (tenantgw's limits are its own), so for each deployment whose
  limits are all unset at start-up, and which has no limits discovered from its provider, the
  router's method returns at once (`skip_usage_of_unlimited_deployments`, called again when
  the model list is reloaded: `modelsync`). Successes and failures per minute, which
  cooldowns use, are counted elsewhere and still are.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import Any

log = logging.getLogger("tenantgw.gateway")

OTEL_V2_LOGGER = "litellm.integrations.otel.logger"
OTEL_SDK = "opentelemetry.sdk"


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def mark_otel_logger_absent() -> bool:
    """Make LiteLLM's always-failing OpenTelemetry V2 import fail at once; True if done."""
    if OTEL_V2_LOGGER in sys.modules or _importable(OTEL_SDK):
        return False  # imported already, or importable: nothing to switch off
    sys.modules[OTEL_V2_LOGGER] = None  # type: ignore[assignment]  # "absent", per importlib
    return True


DUPLICATED_PROXY_HOOKS: dict[str, str] = {
    "parallel_request_limiter": "rpm/tpm/parallel limits of LiteLLM keys (tenantgw: ratelimit)",
    "max_budget_per_session_limiter": "session budgets of LiteLLM keys (tenantgw: budgets)",
    "max_iterations_limiter": "iteration caps of LiteLLM keys",
    "cache_control_check": "cache controls of LiteLLM keys (no LiteLLM response cache)",
    "sensitive_data_routing": "per-session routing set through LiteLLM's management API",
    "prompt_cache_prediction": "prompt-cache observations for LiteLLM's management API",
    "autorouter_baseline_cache": "LiteLLM's auto-router (not configured)",
}
"""`PROXY_HOOKS` names of the hooks a tenantgw gateway takes out, and what each enforces."""
MODEL_MAX_BUDGET_LIMITER = "model_max_budget_limiter"
"""The proxy's per-model budgets of LiteLLM keys (tenantgw: budgets), registered apart."""
CALLBACK_LISTS = (
    "callbacks",
    "success_callback",
    "failure_callback",
    "_async_success_callback",
    "_async_failure_callback",
)


def drop_duplicated_proxy_hooks() -> list[str]:
    """Take the hooks of `DUPLICATED_PROXY_HOOKS` out of LiteLLM's callback lists.

    Run after LiteLLM's start-up (which registers them); returns the names taken out.
    """
    import litellm
    from litellm.proxy import proxy_server
    from litellm.proxy.hooks import PROXY_HOOKS

    logging_obj = getattr(proxy_server, "proxy_logging_obj", None)
    mapping: dict[str, Any] = getattr(logging_obj, "proxy_hook_mapping", None) or {}
    drop: dict[int, str] = {}
    for name in DUPLICATED_PROXY_HOOKS:
        hook = mapping.get(name)
        if hook is not None and isinstance(hook, PROXY_HOOKS.get(name, ())):
            drop[id(hook)] = name
    limiter = getattr(proxy_server, MODEL_MAX_BUDGET_LIMITER, None)
    if limiter is not None:
        drop[id(limiter)] = MODEL_MAX_BUDGET_LIMITER
    dropped: set[str] = set()
    for list_name in CALLBACK_LISTS:
        callbacks = getattr(litellm, list_name, None)
        if not isinstance(callbacks, list):
            continue
        kept = [cb for cb in callbacks if id(cb) not in drop]
        dropped.update(drop[id(cb)] for cb in callbacks if id(cb) in drop)
        callbacks[:] = kept  # in place: LiteLLM's modules hold the same list objects
    for name in dropped & set(mapping):
        del mapping[name]
    names = sorted(dropped)
    if names:
        log.info("LiteLLM proxy hooks switched off (tenantgw enforces its own): %s", names)
    return names


USAGE_METHOD = "_increment_deployment_usage"
_TRIMMED = "__tenantgw_trimmed__"


def _has_usage_limits(router: Any, deployment_id: str, model_group: str) -> bool:
    """LiteLLM's own test (`Router._increment_deployment_usage`); True when unsure."""
    try:
        from litellm.router_utils.pre_call_checks.io_token_rate_limit_check import (
            deployment_has_io_token_limits,
        )

        deployment = router.get_deployment(model_id=deployment_id)
        info = router.get_router_model_info(deployment=deployment, received_model_name=model_group)
        limits = (
            deployment.get("tpm", None),
            deployment.get("rpm", None),
            deployment.litellm_params.tpm,
            deployment.litellm_params.rpm,
            info.get("tpm", None),
            info.get("rpm", None),
        )
        return any(limit is not None for limit in limits) or bool(
            deployment_has_io_token_limits(deployment.model_dump())
        )
    except Exception:
        return True


def skip_usage_of_unlimited_deployments(router: Any = None) -> list[str]:
    """Deployments without tpm/rpm limits skip the router's usage counting; their ids.

    Called again after the router's model list changed, it takes the new list's deployments
    (the method is wrapped once).
    """
    if router is None:
        from litellm.proxy import proxy_server

        router = getattr(proxy_server, "llm_router", None)
    count = getattr(router, USAGE_METHOD, None)
    if count is None:
        return []
    unlimited = frozenset(
        str(d["model_info"]["id"])
        for d in router.model_list
        if (d.get("model_info") or {}).get("id") is not None
        and not _has_usage_limits(router, str(d["model_info"]["id"]), d["model_name"])
    )
    skipped: list[frozenset[str]] | None = getattr(count, _TRIMMED, None)
    if skipped is not None:
        skipped[0] = unlimited  # wrapped already: the deployments of the new model list
    else:
        skipped = [unlimited]
        discovered = router._discovered_model_info_cache  # limits a provider reported later

        async def increment(*, deployment_id: str, **kwargs: Any) -> str | None:
            if deployment_id in skipped[0] and discovered.get_cache(deployment_id) is None:
                return None  # what LiteLLM returns for it, without building its model info
            result: str | None = await count(deployment_id=deployment_id, **kwargs)
            return result

        setattr(increment, _TRIMMED, skipped)
        setattr(router, USAGE_METHOD, increment)
    if unlimited:
        log.info(
            "LiteLLM router usage counting skipped for deployments without tpm/rpm limits: %s",
            sorted(unlimited),
        )
    return sorted(unlimited)


def after_litellm_startup() -> None:
    """The switch-offs of LiteLLM's started proxy (its hooks and router exist only now)."""
    drop_duplicated_proxy_hooks()
    skip_usage_of_unlimited_deployments()


def switch_off_unused_litellm_work() -> list[str]:
    """The switch-offs made before LiteLLM's proxy is imported; those applied (logged)."""
    applied = []
    if mark_otel_logger_absent():
        applied.append(f"{OTEL_V2_LOGGER} marked absent ({OTEL_SDK} is not installed)")
    for line in applied:
        log.info("LiteLLM work switched off: %s", line)
    return applied
