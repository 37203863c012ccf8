"""The pre-call hook and the success/failure callbacks LiteLLM calls on tenantgw's handler.

The rate limiter, budget guard and metering are stand-ins here with the agreed interface.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from litellm.proxy._types import ProxyException, UserAPIKeyAuth

from tenantgw.gateway import callbacks, files
from tenantgw.gateway.context import RequestContext

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent.parent / "golden" / "engineering-team" / "tenantgw.json"


class FakeRateLimitedError(Exception):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass
class FakeLimiter:
    refuse: bool = False
    acquired: list[str] = field(default_factory=list)
    released: list[tuple[str, int]] = field(default_factory=list)

    async def acquire(self, ctx: RequestContext, rules: Any) -> None:
        if self.refuse:
            raise FakeRateLimitedError(f"key {ctx.key_name} is over its 10 requests per minute", 17)
        self.acquired.append(ctx.request_id)

    async def release(self, ctx: RequestContext, tokens: int) -> None:
        self.released.append((ctx.request_id, tokens))


@dataclass
class Decision:
    action: str
    message: str = ""
    to_alias: str | None = None


@dataclass
class FakeGuard:
    decision: Decision = field(default_factory=lambda: Decision("allow"))
    dropped: list[str] = field(default_factory=list)

    async def check(self, ctx: RequestContext, rules: Any) -> Decision:
        return self.decision

    async def release(self, ctx: RequestContext) -> None:
        self.dropped.append(ctx.request_id)


class FakeMetering:
    """Module-like: on_success / on_failure as the metering module provides them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, RequestContext]] = []

    async def on_success(self, ctx: RequestContext, *args: Any) -> None:
        self.events.append(("success", ctx))

    async def on_failure(self, ctx: RequestContext, *args: Any) -> None:
        self.events.append(("failure", ctx))


@pytest.fixture
def rules_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    raw = json.loads(GOLDEN.read_text())
    path = tmp_path / "tenantgw.json"
    path.write_text(json.dumps(raw))
    monkeypatch.setenv(files.RULES_FILE_ENV, str(path))
    monkeypatch.setenv(files.TENANT_ENV, "engineering-team")
    files.reset()
    yield path
    files.reset()


def edit_rules(path: Path, change: Callable[[dict[str, Any]], object]) -> None:
    """Change the rules file and make the gateway read it again."""
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))
    files.reset()


@dataclass
class Setup:
    handler: callbacks.TenantGatewayHandler
    limiter: FakeLimiter
    guard: FakeGuard
    metering: FakeMetering


@pytest.fixture
def setup(rules_file: Path) -> Setup:
    handler = callbacks.TenantGatewayHandler()
    limiter, guard, metering = FakeLimiter(), FakeGuard(), FakeMetering()
    handler.set_plugins(
        callbacks.Plugins(
            limiter=limiter,
            guard=guard,
            metering=metering,  # type: ignore[arg-type]
            ratelimited_error=FakeRateLimitedError,
        )
    )
    return Setup(handler, limiter, guard, metering)


ALICE = UserAPIKeyAuth(user_id="alice", team_id="engineering-team")


def messages_request(model: str, text: str, call_id: str = "call-1") -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
        "litellm_metadata": {"user_api_key_user_id": "alice"},
        "litellm_call_id": call_id,
    }


def chat_request(model: str, text: str, call_id: str = "call-2") -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "metadata": {},
        "litellm_call_id": call_id,
        "stream": True,
    }


def stored(data: dict[str, Any], key: str) -> RequestContext:
    ctx = RequestContext.from_metadata(data[key])
    assert ctx is not None
    return ctx


async def test_pre_call_routes_redacts_and_records_the_context(setup: Setup) -> None:
    data = messages_request("claude-sonnet-4-5-20250929", "refactor this, mail me at a@b.io")
    out = await setup.handler.async_pre_call_hook(ALICE, None, data, "anthropic_messages")
    assert out is data
    assert data["model"] == "refactoring"
    assert data["messages"][0]["content"] == "refactor this, mail me at [REDACTED_EMAIL]"
    ctx = stored(data, "litellm_metadata")
    assert (ctx.tenant, ctx.key_name, ctx.request_id) == ("engineering-team", "alice", "call-1")
    assert (ctx.requested_model, ctx.alias, ctx.cost_tier) == (
        "claude-sonnet-4-5-20250929",
        "refactoring",
        "high",
    )
    assert ctx.pii_counts == {"EMAIL": 1}
    assert ctx.call_type == "anthropic_messages"
    assert setup.limiter.acquired == ["call-1"]


async def test_chat_requests_use_the_metadata_key(setup: Setup) -> None:
    data = chat_request("claude-opus-4-1", "hello")
    await setup.handler.async_pre_call_hook(ALICE, None, data, "acompletion")
    ctx = stored(data, "metadata")
    assert ctx.alias == "reasoning"
    assert ctx.stream is True


async def test_unknown_model_is_a_client_error(setup: Setup, rules_file: Path) -> None:
    edit_rules(rules_file, lambda raw: raw.update(default_alias=None))
    with pytest.raises(ProxyException) as caught:
        await setup.handler.async_pre_call_hook(
            ALICE, None, chat_request("gpt-9", "hi"), "acompletion"
        )
    assert caught.value.code == "404"
    assert "fast-code" in caught.value.message
    assert setup.limiter.acquired == []


async def test_rate_limited_request_is_a_429_with_retry_after(setup: Setup) -> None:
    setup.limiter.refuse = True
    with pytest.raises(ProxyException) as caught:
        await setup.handler.async_pre_call_hook(
            ALICE, None, chat_request("fast-code", "hi"), "acompletion"
        )
    assert caught.value.code == "429"
    assert caught.value.type == "rate_limit_error"
    assert caught.value.headers == {"retry-after": "17"}
    assert "over its 10 requests per minute" in caught.value.message


async def test_a_spent_budget_is_a_final_402_and_frees_the_slot(setup: Setup) -> None:
    setup.guard.decision = Decision("block", "budget team-monthly is exhausted")
    with pytest.raises(ProxyException) as caught:
        await setup.handler.async_pre_call_hook(
            ALICE, None, chat_request("fast-code", "hi"), "acompletion"
        )
    assert caught.value.code == "402"
    assert caught.value.type == "billing_error"
    assert caught.value.headers == {"x-should-retry": "false"}
    assert caught.value.message == "budget team-monthly is exhausted"
    assert setup.limiter.released == [("call-2", 0)]


async def test_budget_downgrade_points_the_request_at_a_cheaper_alias(setup: Setup) -> None:
    setup.guard.decision = Decision("downgrade", "over budget", to_alias="documentation")
    data = chat_request("claude-opus-4-1", "hi")
    await setup.handler.async_pre_call_hook(ALICE, None, data, "acompletion")
    assert data["model"] == "documentation"
    ctx = stored(data, "metadata")
    assert (ctx.alias, ctx.downgraded_from, ctx.cost_tier) == ("documentation", "reasoning", "low")


async def test_claude_codes_adaptive_thinking_stays_on_the_alias_without_thinking(
    setup: Setup,
) -> None:
    """Claude Code 2.1: adaptive thinking on every call; fast-code's providers lack `thinking`."""
    data = messages_request("claude-sonnet-4-5", "hi")
    data["thinking"] = {"type": "adaptive", "display": "omitted"}
    data["context_management"] = {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}
    await setup.handler.async_pre_call_hook(ALICE, None, data, "anthropic_messages")
    assert data["model"] == "fast-code"
    assert "thinking" not in data
    assert "context_management" not in data
    assert "reasoning_effort" not in data


async def test_explicit_thinking_goes_to_reasoning_as_a_reasoning_effort(setup: Setup) -> None:
    data = messages_request("claude-sonnet-4-5", "hi")
    data["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    await setup.handler.async_pre_call_hook(ALICE, None, data, "anthropic_messages")
    assert data["model"] == "reasoning"
    assert "thinking" not in data
    assert data["reasoning_effort"] == "low"


async def test_thinking_reaches_an_alias_served_by_claude_natively(
    setup: Setup, rules_file: Path
) -> None:
    def bedrock_only(raw: dict[str, Any]) -> None:
        reasoning = raw["aliases"]["reasoning"]
        reasoning["targets"] = [t for t in reasoning["targets"] if t["provider_type"] == "bedrock"]

    edit_rules(rules_file, bedrock_only)
    data = messages_request("claude-sonnet-4-5", "hi")
    data["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    await setup.handler.async_pre_call_hook(ALICE, None, data, "anthropic_messages")
    assert data["model"] == "reasoning"
    assert data["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert "reasoning_effort" not in data


async def test_thinking_is_judged_on_the_alias_after_a_budget_downgrade(
    setup: Setup, rules_file: Path
) -> None:
    def bedrock_only(raw: dict[str, Any]) -> None:
        reasoning = raw["aliases"]["reasoning"]
        reasoning["targets"] = [t for t in reasoning["targets"] if t["provider_type"] == "bedrock"]

    edit_rules(rules_file, bedrock_only)
    setup.guard.decision = Decision("downgrade", "over budget", to_alias="documentation")
    data = messages_request("claude-sonnet-4-5", "hi")
    data["thinking"] = {"type": "enabled", "budget_tokens": 5000}
    await setup.handler.async_pre_call_hook(ALICE, None, data, "anthropic_messages")
    assert data["model"] == "documentation"
    assert "thinking" not in data
    assert data["reasoning_effort"] == "high"


async def test_pii_block_mode_refuses_naming_the_types(setup: Setup, rules_file: Path) -> None:
    edit_rules(rules_file, lambda raw: raw["compliance"]["pii_redaction"].update(mode="block"))
    with pytest.raises(ProxyException) as caught:
        await setup.handler.async_pre_call_hook(
            ALICE, None, chat_request("fast-code", "ssn 123-45-6789"), "acompletion"
        )
    assert caught.value.code == "400"
    assert "US_SSN" in caught.value.message
    assert "123-45-6789" not in caught.value.message


async def test_residency_violation_is_a_403(setup: Setup, rules_file: Path) -> None:
    allowed = {"allowed_regions": ["eu-central-1"]}
    edit_rules(rules_file, lambda raw: raw["compliance"].update(data_residency=allowed))
    with pytest.raises(ProxyException) as caught:
        await setup.handler.async_pre_call_hook(
            ALICE, None, chat_request("fast-code", "hi"), "acompletion"
        )
    assert caught.value.code == "403"
    assert caught.value.type == "permission_error"


async def test_other_call_types_pass_through(setup: Setup) -> None:
    data = {"model": "whatever", "file": "x"}
    assert await setup.handler.async_pre_call_hook(ALICE, None, data, "acreate_file") == data
    assert data == {"model": "whatever", "file": "x"}


async def test_success_meters_and_frees_the_slot_once(setup: Setup) -> None:
    data = chat_request("fast-code", "hi")
    await setup.handler.async_pre_call_hook(ALICE, None, data, "acompletion")
    kwargs = {
        "litellm_params": {"metadata": data["metadata"]},
        "standard_logging_object": {"total_tokens": 42},
    }
    # a failed model group first (a fallback follows), then the fallback's success
    await setup.handler.async_log_failure_event(kwargs, None, None, None)
    assert setup.limiter.released == []
    await setup.handler.async_log_success_event(kwargs, None, None, None)
    await setup.handler.async_log_success_event(kwargs, None, None, None)
    assert setup.limiter.released == [("call-2", 42)]
    assert [kind for kind, _ in setup.metering.events] == ["failure", "success", "success"]
    assert setup.metering.events[0][1].alias == "fast-code"


async def test_final_failure_frees_the_slot(setup: Setup) -> None:
    data = chat_request("fast-code", "hi")
    await setup.handler.async_pre_call_hook(ALICE, None, data, "acompletion")
    await setup.handler.async_post_call_failure_hook(data, RuntimeError("upstream"), ALICE)
    await setup.handler.async_post_call_failure_hook(data, RuntimeError("upstream"), ALICE)
    assert setup.limiter.released == [("call-2", 0)]
    assert "call-2" in setup.guard.dropped  # its budget reservation is given back


async def test_callbacks_without_a_context_do_nothing(setup: Setup) -> None:
    await setup.handler.async_log_success_event({"litellm_params": {}}, None, None, None)
    assert setup.metering.events == []


async def test_missing_plugins_are_skipped(
    rules_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(callbacks.REDIS_URL_ENV, raising=False)
    monkeypatch.delenv(callbacks.POSTGRES_DSN_ENV, raising=False)
    handler = callbacks.TenantGatewayHandler()
    data = chat_request("fast-code", "hi")
    await handler.async_pre_call_hook(ALICE, None, data, "acompletion")
    assert data["model"] == "fast-code"
    assert handler.plugins().limiter is None
    assert handler.plugins().guard is None
    await handler.async_log_success_event(
        {"litellm_params": {"metadata": data["metadata"]}}, None, None, None
    )


async def test_unexpected_errors_are_a_json_500(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(callbacks.routing, "route_request", boom)
    with pytest.raises(ProxyException) as caught:
        await setup.handler.async_pre_call_hook(
            ALICE, None, chat_request("fast-code", "hi"), "acompletion"
        )
    assert caught.value.code == "500"


def test_litellm_finds_the_handler_where_render_points() -> None:
    import importlib

    module_name, _, attribute = "tenantgw.gateway.callbacks.handler".rpartition(".")
    handler = getattr(importlib.import_module(module_name), attribute)
    assert isinstance(handler, callbacks.TenantGatewayHandler)
    # LiteLLM only calls a pre-call hook defined on the class itself
    assert "async_pre_call_hook" in vars(type(handler))
