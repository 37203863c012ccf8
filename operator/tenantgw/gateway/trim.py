"""LiteLLM work a tenantgw gateway switches off, before LiteLLM's proxy is imported.

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
"""

from __future__ import annotations

import importlib.util
import logging
import sys

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


def switch_off_unused_litellm_work() -> list[str]:
    """Every switch-off of this module; the names of those applied (logged once)."""
    applied = []
    if mark_otel_logger_absent():
        applied.append(f"{OTEL_V2_LOGGER} marked absent ({OTEL_SDK} is not installed)")
    for line in applied:
        log.info("LiteLLM work switched off: %s", line)
    return applied
