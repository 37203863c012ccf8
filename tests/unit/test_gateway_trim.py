"""The LiteLLM work a gateway switches off (`tenantgw.gateway.trim`), in a fresh interpreter:
the switch-off changes `sys.modules` of the process it runs in."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def run(code: str) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}",
        # No fetch of LiteLLM's cost map and beta headers (as the gateway, tenantgw.gateway).
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_otel_v2_logger_fails_at_once_and_litellm_goes_on_without_it() -> None:
    out = run(
        """
        import importlib.util, sys
        assert importlib.util.find_spec("opentelemetry.sdk") is None, "SDK installed here"
        from tenantgw.gateway import trim
        applied = trim.switch_off_unused_litellm_work()
        assert len(applied) == 1 and trim.OTEL_V2_LOGGER in applied[0], applied
        # The import fails at once, without running the module's file.
        try:
            from litellm.integrations.otel.logger import fan_out_provider  # noqa: F401
        except ImportError as exc:
            assert "halted" in str(exc), exc
        else:
            raise AssertionError("the OTel V2 logger imported")
        # LiteLLM's per-request caller and its service logger go on without it.
        from litellm.proxy._types import UserAPIKeyAuth
        from litellm.proxy.auth.user_api_key_auth import _seed_request_destinations
        from litellm._service_logger import _get_otel_v2_class
        _seed_request_destinations(UserAPIKeyAuth(api_key="sk-x", user_id="k"), None)
        assert _get_otel_v2_class() is None
        # Applied once: a second call changes nothing.
        assert trim.switch_off_unused_litellm_work() == []
        print("ok")
        """
    )
    assert out.strip().endswith("ok")


def test_nothing_is_switched_off_when_the_sdk_is_importable() -> None:
    out = run(
        """
        import importlib.util, sys
        from tenantgw.gateway import trim
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: (
            object() if name == trim.OTEL_SDK else real(name, *a)
        )
        assert trim.switch_off_unused_litellm_work() == []
        assert trim.OTEL_V2_LOGGER not in sys.modules
        print("ok")
        """
    )
    assert out.strip().endswith("ok")


def test_the_duplicated_proxy_hooks_leave_every_callback_list_and_the_others_stay() -> None:
    out = run(
        """
        import litellm
        from litellm.proxy import proxy_server
        from tenantgw.gateway import trim
        logging_obj = proxy_server.proxy_logging_obj
        logging_obj._init_litellm_callbacks()  # what LiteLLM's start-up registers
        for cb in list(litellm.callbacks):  # and what its first request fans out
            for name in trim.CALLBACK_LISTS[1:]:
                getattr(litellm, name).append(cb)
        mapping = logging_obj.proxy_hook_mapping
        # (the auto-router's hook is registered only with a database)
        hooks = {name: mapping[name] for name in trim.DUPLICATED_PROXY_HOOKS if name in mapping}
        assert "parallel_request_limiter" in hooks, sorted(mapping)
        hooks[trim.MODEL_MAX_BUDGET_LIMITER] = proxy_server.model_max_budget_limiter
        kept = [name for name in mapping if name not in trim.DUPLICATED_PROXY_HOOKS]
        assert "responses_id_security" in kept and "litellm_skills" in kept, kept
        lists = {name: getattr(litellm, name) for name in trim.CALLBACK_LISTS}
        assert all(h in lists["callbacks"] for h in hooks.values())

        dropped = trim.drop_duplicated_proxy_hooks()

        assert sorted(dropped) == sorted(hooks), dropped
        for name, callbacks in lists.items():
            assert getattr(litellm, name) is callbacks  # the same list objects, changed in place
            assert not [h for h in hooks.values() if h in callbacks], name
        assert sorted(mapping) == sorted(kept)
        for name in kept:  # the others still run on every request
            assert logging_obj.get_proxy_hook(name) in litellm.callbacks, name
        assert trim.drop_duplicated_proxy_hooks() == []
        print("ok")
        """
    )
    assert out.strip().endswith("ok")


def test_the_router_skips_usage_counting_only_for_deployments_without_limits() -> None:
    out = run(
        """
        import asyncio
        from litellm import Router
        from tenantgw.gateway import trim

        def deployment(name, **limits):
            params = {"model": f"openai/{name}", "api_key": "sk-x",
                      "api_base": "http://127.0.0.1:9/v1", **limits}
            return {"model_name": name, "litellm_params": params,
                    "model_info": {"id": f"{name}-0"}}

        router = Router(model_list=[deployment("free"), deployment("capped", rpm=100)])
        original = type(router)._increment_deployment_usage
        built = []
        model_info = router.get_router_model_info
        router.get_router_model_info = lambda **kw: built.append(kw) or model_info(**kw)

        def usage(name):
            return dict(deployment_id=f"{name}-0", deployment_name=None, model_group=name,
                        total_tokens=10, rpm_increment=1, parent_otel_span=None)

        async def main():
            # LiteLLM's own answer for the deployment without limits: nothing counted.
            assert await original(router, **usage("free")) is None
            assert trim.skip_usage_of_unlimited_deployments(router) == ["free-0"]
            wrapped = router._increment_deployment_usage
            # Again (after a model list reload): the same wrapper, the list's deployments.
            assert trim.skip_usage_of_unlimited_deployments(router) == ["free-0"]
            assert router._increment_deployment_usage is wrapped
            built.clear()
            assert await router._increment_deployment_usage(**usage("free")) is None
            assert built == [], built  # returned at once
            key = await router._increment_deployment_usage(**usage("capped"))
            assert key is not None and router.cache.get_cache(key) == 10, key
            assert built, "the capped deployment is counted as before"
            # Limits a provider reports later: LiteLLM decides again.
            built.clear()
            router._discovered_model_info_cache.set_cache("free-0", object())
            await router._increment_deployment_usage(**usage("free"))
            assert built, "discovered limits go through LiteLLM's own check"
            # A reloaded model list where "free" has a limit now and "open" has none.
            router.set_model_list([deployment("free", rpm=5), deployment("open")])
            assert trim.skip_usage_of_unlimited_deployments(router) == ["open-0"]
            built.clear()
            assert await router._increment_deployment_usage(**usage("open")) is None
            assert built == [], built
            key = await router._increment_deployment_usage(**usage("free"))
            assert key is not None and built, "the newly limited deployment is counted"

        asyncio.run(main())
        print("ok")
        """
    )
    assert out.strip().endswith("ok")
