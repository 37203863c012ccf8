"""Log lines for collectors (tenantgw.jsonlog) and the gateway's access line (gateway.access)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tenantgw import jsonlog
from tenantgw.gateway import access
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.usage import refused
from tenantgw.reconcile.settings import SettingsError, gateway_log_format

pytestmark = pytest.mark.unit


def record(msg: str, *args: Any, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("tenantgw.gateway", logging.WARNING, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_a_record_is_one_json_line_with_the_schema() -> None:
    line = jsonlog.JsonFormatter().format(record("spent %d of %s", 5, "cap\nnext", policy="p"))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "tenantgw.gateway"
    assert entry["message"] == "spent 5 of cap\nnext"
    assert entry["policy"] == "p"
    assert entry["timestamp"].endswith("Z")
    assert entry["timestamp"][10] == "T"


def test_kopfs_object_reference_becomes_object_and_its_settings_stay_out() -> None:
    ref = {"apiVersion": "v1", "kind": "Namespace", "name": "tenant-a", "namespace": None}
    entry = json.loads(
        jsonlog.JsonFormatter().format(
            record("Handler succeeded.", k8s_ref=ref, k8s_skip=True, settings=object())
        )
    )
    assert entry["object"] == {"apiVersion": "v1", "kind": "Namespace", "name": "tenant-a"}
    assert "settings" not in entry
    assert "k8s_skip" not in entry


def test_an_exception_is_a_field_of_its_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        rec = record("failed")
        rec.exc_info = sys.exc_info()
    entry = json.loads(jsonlog.JsonFormatter().format(rec))
    assert "RuntimeError: boom" in entry["exception"]


def test_the_format_comes_from_the_environment_and_a_typo_is_refused() -> None:
    assert jsonlog.log_format({}) == "text"
    assert jsonlog.log_format({"TENANTGW_LOG_FORMAT": "JSON"}) == "json"
    with pytest.raises(ValueError, match="TENANTGW_LOG_FORMAT='yaml': use json or text"):
        jsonlog.log_format({"TENANTGW_LOG_FORMAT": "yaml"})
    assert gateway_log_format({}) == "json"
    assert gateway_log_format({"TENANTGW_GATEWAY_LOG_FORMAT": "text"}) == "text"
    with pytest.raises(SettingsError, match="TENANTGW_GATEWAY_LOG_FORMAT"):
        gateway_log_format({"TENANTGW_GATEWAY_LOG_FORMAT": "logfmt"})


def test_stray_prints_become_json_lines_and_json_lines_pass() -> None:
    out = io.StringIO()
    stray = jsonlog.StrayLines(out, "stdout")
    stray.write("  banner line\n\n")
    stray.write('{"already": "json"}\n')
    stray.write("{'a python': 'dict'}\npartial")
    stray.flush()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line.get("message", line.get("already")) for line in lines] == [
        "  banner line",
        "json",
        "{'a python': 'dict'}",
        "partial",
    ]
    assert lines[0]["logger"] == "stdout"


def ctx() -> RequestContext:
    return RequestContext(
        tenant="t1",
        key_name="alice",
        request_id="r1",
        requested_model="claude-sonnet-4-5",
        alias="fast",
        call_type="anthropic_messages",
        session_id="s-1",
    )


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def written() -> Iterator[list[str]]:
    """The access lines written during the test (whatever the logger's own handlers)."""
    logger = logging.getLogger(access.LOGGER)
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_a_metered_request_line_has_the_ledger_fields(written: list[str]) -> None:
    access.AccessLog("json").metered(refused(ctx(), RuntimeError("rate limited")), ctx())
    (line,) = written
    entry = json.loads(line)
    assert entry["logger"] == "tenantgw.access"
    assert entry["tenant"] == "t1"
    assert entry["key"] == "alice"
    assert entry["request_id"] == "r1"
    assert entry["alias"] == "fast"
    assert entry["session_id"] == "s-1"
    assert entry["status"] == 500
    assert entry["outcome"] == "error"
    assert entry["input_tokens"] == 0
    assert "provider" not in entry  # none answered: absent, not null


def test_an_unmetered_request_line_without_a_key_name(written: list[str]) -> None:
    exchange = access.Exchange("GET", "/v1/models")
    exchange.status = 401
    access.AccessLog("text").unmetered(exchange, "t1")
    (line,) = written
    assert line.startswith("access tenant=t1 method=GET path=/v1/models status=401 latency_ms=")
    assert "key=" not in line


def test_the_pre_call_hook_claims_the_request_in_progress() -> None:
    exchange = access.Exchange("POST", "/v1/messages")
    token = access.CURRENT.set(exchange)
    try:
        access.authenticated("alice")
        access.claim()
    finally:
        access.CURRENT.reset(token)
    assert exchange.key == "alice"
    assert exchange.metered
    access.claim()  # outside a request: nothing to claim, no error


def test_a_refusal_by_design_is_logged_at_info_and_a_provider_error_stays_an_error() -> None:
    """LiteLLM's own exception logging, fed tenantgw's 402 and a provider's 401."""
    from litellm.exceptions import AuthenticationError
    from litellm.proxy.common_request_processing import log_llm_api_exception

    from tenantgw.gateway.app import install_refusal_filter
    from tenantgw.gateway.errors import BudgetExceededError, RateLimitError, proxy_exception

    logger = logging.getLogger("LiteLLM Proxy")
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    logger.addHandler(keep)
    refusals = install_refusal_filter(logger)
    try:
        log_llm_api_exception(proxy_exception(BudgetExceededError("budget spent")), "c1")
        log_llm_api_exception(proxy_exception(RateLimitError("over rpm")), "c2")
        provider = AuthenticationError(message="bad provider key", llm_provider="openai", model="m")
        log_llm_api_exception(provider, "c3")
    finally:
        logger.removeHandler(keep)
        logger.removeFilter(refusals)
    levels = {r.getMessage().split("litellm_call_id=")[1][:2]: r.levelname for r in seen}
    assert levels == {"c1": "INFO", "c2": "INFO", "c3": "ERROR"}


def test_the_operator_drops_kopfs_line_per_event_handler_and_keeps_the_rest() -> None:
    from tenantgw.operator.handlers import QuietWakeUps

    quiet = QuietWakeUps()

    def kept(level: int, msg: str, **extra: Any) -> bool:
        rec = logging.LogRecord("kopf.objects", level, __file__, 1, msg, (), None)
        rec.__dict__.update(extra)
        return quiet.filter(rec)

    assert not kept(logging.INFO, "Handler 'owned_object_event' succeeded.", k8s_skip=True)
    # A failing event handler, the deletion handler's lines and anything else stay.
    assert kept(
        logging.ERROR, "Handler 'owned_object_event' failed with an exception.", k8s_skip=True
    )
    assert kept(logging.INFO, "Handler 'tenant_deleted' succeeded.", k8s_skip=False)
    assert kept(logging.INFO, "tenant a reconciled", k8s_skip=True)
