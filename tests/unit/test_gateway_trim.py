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
