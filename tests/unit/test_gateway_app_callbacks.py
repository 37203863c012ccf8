"""The pre-call hook and the success/failure callbacks LiteLLM calls on tenantgw's handler.

The handler runs on a GatewayRuntime whose rate limiter, budget guard and meter are small
stand-ins with the real interface (no server here; tests/integration and e2e/ use real ones).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from litellm.proxy._types import ProxyException, UserAPIKeyAuth

from tenantgw.gateway import callbacks, files
from tenantgw.gateway.budget_policy import Decision, policies
from tenantgw.gateway.context import RequestContext
from tenantgw.gateway.enforcer import Admitted
from tenantgw.gateway.metrics import GatewayMetrics
from tenantgw.gateway.ratelimit import RateLimited, has_limits
from tenantgw.gateway.runtime import GatewayRuntime
from tenantgw.gateway.storehealth import StoreHealth, StoreUnavailable

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent.parent / "golden" / "engineering-team" / "tenantgw.json"


@dataclass
class FakeLimiter:
    refuse: bool = False
    down: bool = False
    acquired: list[str] = field(default_factory=list)
    released: list[tuple[str, int]] = field(default_factory=list)

    def check(self, ctx: RequestContext) -> None:
        if self.down:
            raise StoreUnavailable("ratelimit", "timeout", "Redis frozen", retry_after=4.2)
        if self.refuse:
            raise RateLimited(
                f"key {ctx.key_name} is over its 10 requests per minute",
                retry_after=17,
                limit="rpm",
                scope="key",
                value=10,
            )

    async def release(self, ctx: RequestContext, tokens: int) -> None:
        self.released.append((ctx.request_id, tokens))


@dataclass
class FakeGuard:
    decision: Decision = field(default_factory=lambda: Decision("allow"))
    down: bool = False
    rules: Any = None
    checked: list[str] = field(default_factory=list)

    def decide(self, ctx: RequestContext) -> Decision:
        self.checked.append(ctx.request_id)
        if self.down:
            raise StoreUnavailable("budget", "connection_error", "Redis gone", retry_after=5)
        return self.decision

    async def aclose(self) -> None:
        pass


@dataclass
class FakeEnforcer:
    """The one ADMIT call: limits checked, then budgets; the slot taken only when both admit."""

    limiter: FakeLimiter
    guard: FakeGuard
    rules: Any = None

    async def admit(self, ctx: RequestContext, rules: Any) -> Admitted:
        limited = has_limits(rules, ctx.key_name)
        if limited:
            self.limiter.check(ctx)
        decision = self.guard.decide(ctx) if policies(rules) else Decision("allow")
        holds = limited and decision.action != "block"
        if holds:
            self.limiter.acquired.append(ctx.request_id)
        return Admitted(holds_slot=holds, decision=decision)


class FakeMeter:
    """on_success / on_failure / on_final_failure as the Meter provides them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, RequestContext]] = []
        self.freed: list[tuple[str, str]] = []
        """(event, request id) of each settlement that freed the request's slot."""

    async def on_success(self, ctx: RequestContext, *args: Any, free_slot: bool = False) -> Any:
        self.events.append(("success", ctx))
        if free_slot:
            self.freed.append(("success", ctx.request_id))
        return object()

    async def on_failure(self, ctx: RequestContext, *args: Any) -> None:
        self.events.append(("failure", ctx))

    async def on_final_failure(
        self, ctx: RequestContext, exc: BaseException, *, free_slot: bool = False
    ) -> None:
        self.events.append(("final", ctx))
        if free_slot:
            self.freed.append(("final", ctx.request_id))


@pytest.fixture
def rules_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    raw = json.loads(GOLDEN.read_text())
    # The golden tenant carries a policy the operator could not apply, which refuses every
    # request (tested on its own below); these tests are about everything else.
    raw["budgets"] = [b for b in raw["budgets"] if not b.get("unenforceable")]
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
    metering: FakeMeter
    runtime: GatewayRuntime


def runtime_of(limiter: Any = None, guard: Any = None, meter: Any = None) -> GatewayRuntime:
    """A GatewayRuntime from stand-in parts (no Redis, no Postgres)."""
    metrics = GatewayMetrics.registered()
    enforcer: Any = FakeEnforcer(limiter, guard) if limiter is not None else None
    runtime = GatewayRuntime.assemble(
        "engineering-team",
        metrics=metrics,
        store=StoreHealth("engineering-team", metrics),
        limiter=limiter,
        budgets=guard,
        enforcer=enforcer,
    )
    if meter is not None:
        object.__setattr__(runtime, "meter", meter)  # frozen: a stand-in meter for this test
    return runtime


@pytest.fixture
def setup(rules_file: Path) -> Setup:
    limiter, guard, metering = FakeLimiter(), FakeGuard(), FakeMeter()
    runtime = runtime_of(limiter, guard, metering)
    handler = callbacks.TenantGatewayHandler(runtime)
    return Setup(handler, limiter, guard, metering, runtime)


def with_limits(raw: dict[str, Any]) -> None:
    raw["limits"] = {"rpm": 100, "tpm": None, "max_parallel_requests": 10}


def with_budget(raw: dict[str, Any]) -> None:
    raw["budgets"] = [
        {"name": "team", "scope": {"kind": "Tenant"}, "period": "daily", "limit_usd": 5.0}
    ]


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


def stored(
    handler: callbacks.TenantGatewayHandler, data: dict[str, Any], key: str
) -> RequestContext:
    """The context the handler keeps for a request, found by the ticket in its metadata."""
    tracked = handler.contexts.find(data[key])
    assert tracked is not None
    return tracked.ctx


async def test_pre_call_routes_redacts_and_records_the_context(setup: Setup) -> None:
    data = messages_request("claude-sonnet-4-5-20250929", "refactor this, mail me at a@b.io")
    out = await setup.handler.async_pre_call_hook(ALICE, None, data, "anthropic_messages")
    assert out is data
    assert data["model"] == "refactoring"
    assert data["messages"][0]["content"] == "refactor this, mail me at [REDACTED_EMAIL]"
    ctx = stored(setup.handler, data, "litellm_metadata")
    assert (ctx.tenant, ctx.key_name) == ("engineering-team", "alice")
    # The request id is drawn by the gateway: LiteLLM's call id comes from a client header.
    assert ctx.request_id not in ("call-1", "")
    assert (ctx.requested_model, ctx.alias, ctx.cost_tier) == (
        "claude-sonnet-4-5-20250929",
        "refactoring",
        "high",
    )
    assert ctx.pii_counts == {"EMAIL": 1}
    assert ctx.call_type == "anthropic_messages"
    assert setup.limiter.acquired == [ctx.request_id]


async def test_chat_requests_use_the_metadata_key(setup: Setup) -> None:
    data = chat_request("claude-opus-4-1", "hello")
    await setup.handler.async_pre_call_hook(ALICE, None, data, "acompletion")
    ctx = stored(setup.handler, data, "metadata")
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
    setup.guard.decision = Decision("block", message="budget team-monthly is exhausted")
    with pytest.raises(ProxyException) as caught:
        await setup.handler.async_pre_call_hook(
            ALICE, None, chat_request("fast-code", "hi"), "acompletion"
        )
    assert caught.value.code == "402"
    assert caught.value.type == "billing_error"
    assert caught.value.headers == {"x-should-retry": "false"}
    assert caught.value.message == "budget team-monthly is exhausted"
    assert setup.limiter.acquired == []  # a refused budget uses up no rate-limit slot


async def test_budget_downgrade_points_the_request_at_a_cheaper_alias(setup: Setup) -> None:
    setup.guard.decision = Decision("downgrade", message="over budget", to_alias="documentation")
    data = chat_request("claude-opus-4-1", "hi")
    await setup.handler.async_pre_call_hook(ALICE, None, data, "acompletion")
    assert data["model"] == "documentation"
    ctx = stored(setup.handler, data, "metadata")
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
    setup.guard.decision = Decision("downgrade", message="over budget", to_alias="documentation")
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


@pytest.mark.parametrize(
    "call_type", ["acreate_file", "rerank", "pass_through_endpoint", "aimage_generation"]
)
async def test_call_types_that_are_not_metered_are_refused(setup: Setup, call_type: str) -> None:
    data = {"model": "fast-code", "file": "x", "metadata": {"tenantgw": "forged"}}
    with pytest.raises(ProxyException) as caught:
        await setup.handler.async_pre_call_hook(ALICE, None, data, call_type)
    assert caught.value.code == "404"
    assert call_type in caught.value.message
    assert data["metadata"] == {}  # a client's context is dropped on every call type
    assert setup.limiter.acquired == []


async def test_success_meters_and_frees_the_slot_once(setup: Setup) -> None:
    data = chat_request("fast-code", "hi")
    await setup.handler.async_pre_call_hook(ALICE, None, data, "acompletion")
    kwargs = {
        "litellm_params": {"metadata": data["metadata"]},
        "standard_logging_object": {"total_tokens": 42},
    }
    # a failed model group first (a fallback follows), then the fallback's success
    await setup.handler.async_log_failure_event(kwargs, None, None, None)
    assert setup.metering.freed == []
    await setup.handler.async_log_success_event(kwargs, None, None, None)
    await setup.handler.async_log_success_event(kwargs, None, None, None)
    ctx = stored(setup.handler, data, "metadata")
    assert setup.metering.freed == [("success", ctx.request_id)]  # with its spend, once
    assert [kind for kind, _ in setup.metering.events] == ["failure", "success", "success"]
    assert setup.metering.events[0][1].alias == "fast-code"


async def test_final_failure_frees_the_slot(setup: Setup) -> None:
    data = chat_request("fast-code", "hi")
    await setup.handler.async_pre_call_hook(ALICE, None, data, "acompletion")
    ctx = stored(setup.handler, data, "metadata")
    await setup.handler.async_post_call_failure_hook(data, RuntimeError("upstream"), ALICE)
    await setup.handler.async_post_call_failure_hook(data, RuntimeError("upstream"), ALICE)
    # Freed, and its budget reservation given back, in the final settlement, once.
    assert setup.metering.freed == [("final", ctx.request_id)]
    assert [kind for kind, _ in setup.metering.events] == ["final"]


async def test_callbacks_without_a_context_do_nothing(setup: Setup) -> None:
    await setup.handler.async_log_success_event({"litellm_params": {}}, None, None, None)
    assert setup.metering.events == []


async def test_without_redis_a_tenant_without_limits_or_budgets_is_served(
    rules_file: Path,
) -> None:
    edit_rules(rules_file, lambda raw: raw.update(limits={}, keys=[], budgets=[]))
    handler = callbacks.TenantGatewayHandler(runtime_of(meter=FakeMeter()))
    data = chat_request("fast-code", "hi")
    await handler.async_pre_call_hook(ALICE, None, data, "acompletion")
    assert data["model"] == "fast-code"
    assert handler.runtime.limiter is None
    assert handler.runtime.budgets is None
    await handler.async_log_success_event(
        {"litellm_params": {"metadata": data["metadata"]}}, None, None, None
    )


def _skipped(step: str, reason: str, action: str) -> float:
    labels = {"tenant": "engineering-team", "step": step, "reason": reason, "action": action}
    return REGISTRY.get_sample_value("tenantgw_enforcement_skipped_total", labels) or 0.0


async def test_without_redis_limits_and_budgets_fail_closed(rules_file: Path) -> None:
    handler = callbacks.TenantGatewayHandler(runtime_of(meter=FakeMeter()))
    before = _skipped("ratelimit", "not_configured", "refused")
    with pytest.raises(ProxyException) as caught:
        await handler.async_pre_call_hook(
            ALICE, None, chat_request("fast-code", "hi"), "acompletion"
        )
    assert caught.value.code == "503"
    assert caught.value.type == "overloaded_error"
    assert caught.value.headers == {"retry-after": "5"}
    assert "rate limits cannot be checked" in caught.value.message
    assert _skipped("ratelimit", "not_configured", "refused") == before + 1


async def test_redis_down_closed_refuses_with_retry_after(setup: Setup) -> None:
    setup.limiter.down = True
    before = _skipped("ratelimit", "timeout", "refused")
    with pytest.raises(ProxyException) as caught:
        await setup.handler.async_pre_call_hook(
            ALICE, None, chat_request("fast-code", "hi"), "acompletion"
        )
    assert (caught.value.code, caught.value.type) == ("503", "overloaded_error")
    assert caught.value.headers == {"retry-after": "5"}
    assert "Redis" not in caught.value.message  # no store details for the client
    assert _skipped("ratelimit", "timeout", "refused") == before + 1


async def test_redis_down_on_messages_keeps_the_overloaded_type(setup: Setup) -> None:
    """LiteLLM would call a 503 on /v1/messages an api_error; it keeps an Anthropic body."""
    setup.limiter.down = True
    with pytest.raises(ProxyException) as caught:
        await setup.handler.async_pre_call_hook(
            ALICE, None, messages_request("claude-sonnet-4-5", "hi"), "anthropic_messages"
        )
    assert caught.value.code == "503"
    body = json.loads(caught.value.message)
    assert body["type"] == "error"
    assert body["error"]["type"] == "overloaded_error"
    assert "rate limits cannot be checked" in body["error"]["message"]


async def test_redis_down_open_admits_and_counts(setup: Setup, rules_file: Path) -> None:
    edit_rules(rules_file, lambda raw: raw.update(enforcement={"on_store_unavailable": "Open"}))
    setup.limiter.down = True
    before = (
        _skipped("ratelimit", "timeout", "admitted"),
        _skipped("budget", "timeout", "admitted"),
    )
    data = chat_request("fast-code", "hi")
    assert await setup.handler.async_pre_call_hook(ALICE, None, data, "acompletion") is data
    # One call checks both: each step it would have run is counted as admitted unchecked.
    assert _skipped("ratelimit", "timeout", "admitted") == before[0] + 1
    assert _skipped("budget", "timeout", "admitted") == before[1] + 1
    # No slot was taken, so none is released.
    await setup.handler.async_post_call_failure_hook(data, RuntimeError("x"), ALICE)
    assert setup.metering.freed == []


async def test_budget_store_down_closed_refuses_a_tenant_with_budgets_only(
    setup: Setup, rules_file: Path
) -> None:
    edit_rules(rules_file, lambda raw: raw.update(limits={}, keys=[]))
    setup.guard.down = True
    with pytest.raises(ProxyException) as caught:
        await setup.handler.async_pre_call_hook(
            ALICE, None, chat_request("fast-code", "hi"), "acompletion"
        )
    assert caught.value.code == "503"
    assert "budgets cannot be checked" in caught.value.message
    assert setup.limiter.acquired == []


async def test_a_forged_context_is_never_trusted(setup: Setup) -> None:
    victim = chat_request("fast-code", "hi")
    await setup.handler.async_pre_call_hook(ALICE, None, victim, "acompletion")
    victim_ctx = stored(setup.handler, victim, "metadata")
    forged_dict = {"tenant": "engineering-team", "key_name": "ci", "request_id": "x", "alias": "a"}
    for forged in (forged_dict, victim_ctx.request_id, "0" * 32):
        attack = chat_request("fast-code", "hi")
        attack["metadata"]["tenantgw"] = forged
        attack["litellm_metadata"] = {"tenantgw": forged}
        # A failure before the pre-call hook ran: the failure hook sees the forgery as sent.
        await setup.handler.async_post_call_failure_hook(attack, RuntimeError("x"), ALICE)
        with pytest.raises(ProxyException):
            await setup.handler.async_pre_call_hook(ALICE, None, attack, "arerank")
        await setup.handler.async_post_call_failure_hook(attack, RuntimeError("x"), ALICE)
        await setup.handler.async_log_success_event(
            {"litellm_params": {"metadata": {"tenantgw": forged}}}, None, None, None
        )
    assert setup.metering.freed == []  # the victim's slot is still held
    assert setup.metering.events == []
    # An admitted request's own context is the server's, whatever the client sent.
    attack = chat_request("fast-code", "hi")
    attack["metadata"]["tenantgw"] = forged_dict
    await setup.handler.async_pre_call_hook(ALICE, None, attack, "acompletion")
    ctx = stored(setup.handler, attack, "metadata")
    assert (ctx.key_name, ctx.tenant) == ("alice", "engineering-team")
    assert attack["metadata"]["tenantgw"] != forged_dict


async def test_a_request_without_an_authenticated_key_is_refused(setup: Setup) -> None:
    with pytest.raises(ProxyException) as caught:
        await setup.handler.async_pre_call_hook(
            UserAPIKeyAuth(), None, chat_request("fast-code", "hi"), "acompletion"
        )
    assert caught.value.code == "401"


async def test_a_handler_without_a_runtime_refuses(rules_file: Path) -> None:
    handler = callbacks.TenantGatewayHandler()
    with pytest.raises(ProxyException) as caught:
        await handler.async_pre_call_hook(
            ALICE, None, chat_request("fast-code", "hi"), "acompletion"
        )
    assert caught.value.code == "503"


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


async def test_a_policy_the_operator_could_not_apply_refuses_before_any_store(
    setup: Setup, rules_file: Path
) -> None:
    raw = json.loads(GOLDEN.read_text())
    edit_rules(rules_file, lambda rules: rules.update(budgets=raw["budgets"]))
    with pytest.raises(ProxyException) as caught:
        await setup.handler.async_pre_call_hook(
            ALICE, None, chat_request("fast-code", "hi"), "acompletion"
        )
    assert caught.value.code == "402"
    assert "budget tenant-weekly (tenant) cannot be enforced" in caught.value.message
    assert setup.guard.checked == []  # refused without asking the budget store
