"""Routing: which ModelAlias answers a request, from the tenant's rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tenantgw.gateway import residency, routing
from tenantgw.gateway.errors import InvalidRequestError, ModelNotFoundError, PermissionDeniedError
from tenantgw.gateway.files import AliasTarget, Rules, parse_rules

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent.parent / "golden" / "engineering-team" / "tenantgw.json"


@pytest.fixture
def rules() -> Rules:
    """The engineering-team rules file as the operator renders it (golden file)."""
    return parse_rules(GOLDEN.read_text())


def _rules(**changes: Any) -> Rules:
    raw = parse_rules(GOLDEN.read_text()).model_dump()
    raw.update(changes)
    return Rules.model_validate(raw)


def anthropic(model: str, text: Any = "hello", **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def openai(model: str, text: Any = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def test_background_calls_go_to_the_documentation_alias(rules: Rules) -> None:
    route = routing.choose_route(anthropic("claude-haiku-4-5-20251001"), rules)
    assert (route.alias, route.reason) == ("documentation", "rule 1")
    assert route.requested_model == "claude-haiku-4-5-20251001"


@pytest.mark.parametrize(
    "content",
    [
        "Refactor this function",
        "  refactor: split the module",
        [{"type": "text", "text": "REFACTOR the parser"}],
        [
            {"type": "text", "text": "<system-reminder>be nice</system-reminder>"},
            {"type": "text", "text": "refactor it"},
        ],
    ],
)
def test_prompt_prefix_matches_the_last_user_message(rules: Rules, content: Any) -> None:
    assert routing.choose_route(anthropic("claude-sonnet-4-5", content), rules).alias == (
        "refactoring"
    )
    assert routing.choose_route(openai("fast-code", content), rules).alias == "refactoring"


def test_prompt_prefix_skips_tool_result_turns(rules: Rules) -> None:
    data = {
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "user", "content": "refactor the parser"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
        ],
    }
    assert routing.choose_route(data, rules).alias == "refactoring"


def test_prompt_prefix_looks_at_the_last_user_message_only(rules: Rules) -> None:
    data = {
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "user", "content": "refactor the parser"},
            {"role": "assistant", "content": "done"},
            {"role": "user", "content": "now write tests"},
        ],
    }
    assert routing.choose_route(data, rules).alias == "fast-code"


@pytest.mark.parametrize(
    "extra",
    [
        {"thinking": {"type": "enabled", "budget_tokens": 2048}},
        {"reasoning_effort": "high"},
    ],
)
def test_thinking_requests_go_to_reasoning(rules: Rules, extra: dict[str, Any]) -> None:
    assert routing.choose_route(anthropic("claude-sonnet-4-5", **extra), rules).alias == (
        "reasoning"
    )


def test_disabled_thinking_is_not_thinking(rules: Rules) -> None:
    data = anthropic("fast-code", thinking={"type": "disabled"}, reasoning_effort="none")
    assert routing.choose_route(data, rules).alias == "fast-code"


@pytest.mark.parametrize(
    "extra",
    [
        {"thinking": {"type": "adaptive"}},
        {"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}},
        {"reasoning": {"effort": "none"}},
    ],
)
def test_adaptive_thinking_is_not_a_thinking_task(rules: Rules, extra: dict[str, Any]) -> None:
    """Claude Code 2.1 sends adaptive thinking on every call: it stays on the requested alias."""
    assert routing.choose_route(anthropic("claude-sonnet-4-5", **extra), rules).alias == (
        "fast-code"
    )


def test_responses_api_reasoning_effort_is_a_thinking_task(rules: Rules) -> None:
    data = {"model": "fast-code", "input": "think hard", "reasoning": {"effort": "medium"}}
    assert routing.choose_route(data, rules).alias == "reasoning"


def _target(provider_type: str | None, model: str) -> AliasTarget:
    return AliasTarget(id="a-0", provider="p", provider_type=provider_type, model=model)


@pytest.mark.parametrize(
    ("provider_type", "model", "native"),
    [
        ("anthropic", "claude-haiku-4-5", True),
        ("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", True),
        ("bedrock", "arn:aws:bedrock:us-west-2:123:application-inference-profile/x", True),
        ("vertex", "claude-sonnet-4-5@20250929", True),
        ("bedrock", "amazon.nova-pro-v1:0", False),
        ("vertex", "gemini-2.5-pro", False),
        ("openrouter", "anthropic/claude-sonnet-4.5", False),
        ("openai", "gpt-4o-mini", False),
        ("openai-compatible", "claude-proxy", False),
        (None, "claude-sonnet-4-5", False),
    ],
)
def test_only_claude_on_anthropic_bedrock_or_vertex_takes_thinking(
    provider_type: str | None, model: str, native: bool
) -> None:
    assert routing.serves_thinking_natively(_target(provider_type, model)) is native


def test_an_alias_is_native_only_if_every_target_and_fallback_is(rules: Rules) -> None:
    # golden: reasoning = Bedrock Claude + Azure o4-mini; fast-code = OpenRouter + OpenAI
    assert not routing.alias_serves_thinking_natively(rules, "reasoning")
    assert not routing.alias_serves_thinking_natively(rules, "fast-code")
    assert not routing.alias_serves_thinking_natively(rules, "no-such-alias")
    raw = rules.model_dump()
    bedrock = raw["aliases"]["reasoning"]["targets"][0]
    raw["aliases"]["reasoning"]["targets"] = [bedrock]
    native = Rules.model_validate(raw)
    assert routing.alias_serves_thinking_natively(native, "reasoning")
    raw["aliases"]["reasoning"]["fallbacks"] = ["fast-code"]
    assert not routing.alias_serves_thinking_natively(Rules.model_validate(raw), "reasoning")


def test_adaptive_thinking_is_dropped_and_the_effort_left_to_the_provider() -> None:
    data = anthropic(
        "fast-code",
        thinking={"type": "adaptive", "display": "omitted"},
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        output_config={"effort": "high"},
    )
    assert routing.adapt_thinking(data) == ["thinking", "context_management"]
    assert "thinking" not in data
    assert "context_management" not in data
    assert "reasoning_effort" not in data
    assert data["output_config"] == {"effort": "high"}  # LiteLLM keeps it from OpenAI upstreams


@pytest.mark.parametrize(
    ("budget", "effort"), [(1024, "low"), (2048, "medium"), (3000, "medium"), (16000, "high")]
)
def test_an_explicit_budget_becomes_a_reasoning_effort(budget: int, effort: str) -> None:
    data = anthropic("fast-code", thinking={"type": "enabled", "budget_tokens": budget})
    assert routing.adapt_thinking(data) == ["thinking", f"reasoning_effort={effort}"]
    assert data["reasoning_effort"] == effort
    assert "thinking" not in data


def test_the_clients_own_reasoning_effort_wins() -> None:
    data = anthropic(
        "fast-code", thinking={"type": "enabled", "budget_tokens": 9000}, reasoning_effort="low"
    )
    routing.adapt_thinking(data)
    assert data["reasoning_effort"] == "low"


def test_other_context_management_edits_are_kept() -> None:
    keep = {"type": "clear_tool_uses_20250919", "trigger": {"type": "input_tokens", "value": 1}}
    data = anthropic(
        "fast-code",
        context_management={"edits": [{"type": "clear_thinking_20251015"}, keep]},
    )
    assert routing.adapt_thinking(data) == ["context_management"]
    assert data["context_management"] == {"edits": [keep]}
    untouched = anthropic("fast-code", context_management={"edits": [keep]})
    assert routing.adapt_thinking(untouched) == []
    assert untouched["context_management"] == {"edits": [keep]}


def test_first_matching_rule_wins(rules: Rules) -> None:
    # a Haiku call that also asks to refactor: rule 1 (model) comes before rule 2 (prefix)
    assert routing.choose_route(anthropic("claude-haiku-4-5", "refactor"), rules).alias == (
        "documentation"
    )


def _task_rules(task: str) -> Rules:
    return _rules(rules=[{"match": {"task": task}, "alias": "reasoning"}])


def test_long_context_counts_all_prompt_text() -> None:
    rules = _task_rules("long-context")
    short = anthropic("fast-code", "x" * 1000)
    assert routing.choose_route(short, rules).alias == "fast-code"
    long_text = [{"type": "text", "text": "y" * 200_000}, {"type": "text", "text": "z" * 50_000}]
    assert routing.choose_route(anthropic("fast-code", long_text), rules).alias == "reasoning"
    with_system = anthropic("fast-code", "hi", system=[{"type": "text", "text": "s" * 250_000}])
    assert routing.choose_route(with_system, rules).alias == "reasoning"


def test_web_search_tool_is_detected() -> None:
    rules = _task_rules("web-search")
    plain_tool = {"name": "read_file", "input_schema": {"type": "object"}}
    search_tool = {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}
    assert routing.choose_route(anthropic("fast-code", tools=[plain_tool]), rules).alias == (
        "fast-code"
    )
    data = anthropic("fast-code", tools=[plain_tool, search_tool])
    assert routing.choose_route(data, rules).alias == "reasoning"
    assert routing.choose_route(openai("fast-code", web_search_options={}), rules).alias == (
        "reasoning"
    )


def test_background_task_is_any_haiku() -> None:
    rules = _task_rules("background")
    assert routing.choose_route(openai("claude-3-5-Haiku-latest"), rules).alias == "reasoning"
    assert routing.choose_route(openai("claude-sonnet-4-5"), rules).alias == "fast-code"


def test_rule_conditions_must_all_hold() -> None:
    rules = _rules(
        rules=[
            {"match": {"model": "claude-opus-*", "prompt_prefix": "plan"}, "alias": "reasoning"}
        ],
        default_alias=None,
    )
    assert routing.choose_route(openai("claude-opus-4-1", "plan the work"), rules).alias == (
        "reasoning"
    )
    assert routing.choose_route(openai("fast-code", "plan the work"), rules).alias == "fast-code"


def test_rules_to_unknown_aliases_are_skipped(rules: Rules) -> None:
    broken = _rules(rules=[{"match": {"model": "*"}, "alias": "gone"}])
    assert routing.choose_route(openai("reasoning"), broken).alias == "reasoning"


@pytest.mark.parametrize(
    ("model", "alias", "reason"),
    [
        ("fast-code", "fast-code", "alias"),
        ("claude-sonnet-4-5", "fast-code", "client-name"),
        ("claude-sonnet-4-5-20250929", "fast-code", "client-glob"),
        ("claude-opus-4-1", "reasoning", "client-name"),
    ],
)
def test_client_names_resolve_to_their_alias(
    rules: Rules, model: str, alias: str, reason: str
) -> None:
    route = routing.choose_route(openai(model), rules)
    assert (route.alias, route.reason) == (alias, reason)


def test_the_most_specific_glob_wins() -> None:
    raw = parse_rules(GOLDEN.read_text()).model_dump()
    raw["aliases"]["reasoning"]["client_names"] = ["claude-*"]
    rules = Rules.model_validate(raw)
    assert routing.choose_route(openai("claude-sonnet-4-5-1"), rules).alias == "fast-code"
    assert routing.choose_route(openai("claude-opus-9"), rules).alias == "reasoning"


def test_unknown_model_goes_to_the_default_alias(rules: Rules) -> None:
    route = routing.choose_route(openai("gpt-5"), rules)
    assert (route.alias, route.reason) == ("fast-code", "default")


def test_unknown_model_without_default_is_a_404_listing_the_models() -> None:
    rules = _rules(default_alias=None)
    with pytest.raises(ModelNotFoundError) as caught:
        routing.choose_route(openai("gpt-5"), rules)
    assert caught.value.status == 404
    message = caught.value.message
    assert "'gpt-5' is not served by tenant engineering-team" in message
    for name in ("fast-code", "claude-sonnet-4-5-*", "reasoning", "claude-opus-4-1"):
        assert name in message


@pytest.mark.parametrize("data", [{"messages": []}, {"model": ""}, {"model": 3}])
def test_missing_or_bad_model_is_a_400(rules: Rules, data: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError, match="model"):
        routing.choose_route(data, rules)


def test_route_request_points_the_request_at_the_alias(rules: Rules) -> None:
    data = anthropic("claude-sonnet-4-5-20250929")
    route = routing.route_request(data, rules)
    assert data["model"] == "fast-code"
    assert route.requested_model == "claude-sonnet-4-5-20250929"


def test_residency_allows_aliases_in_the_allowed_regions(rules: Rules) -> None:
    for alias in rules.aliases:
        residency.check_residency(rules, alias)


def test_residency_refuses_a_target_outside_the_regions() -> None:
    raw = parse_rules(GOLDEN.read_text()).model_dump()
    raw["compliance"]["data_residency"] = {"allowed_regions": ["us-east-1"]}
    rules = Rules.model_validate(raw)
    with pytest.raises(PermissionDeniedError) as caught:
        residency.check_residency(rules, "reasoning")  # bedrock target in us-west-2
    assert caught.value.status == 403
    assert "us-west-2" in caught.value.message
    # fast-code falls back to reasoning: refused too
    with pytest.raises(PermissionDeniedError):
        residency.check_residency(rules, "fast-code")


def test_no_residency_means_any_region() -> None:
    raw = parse_rules(GOLDEN.read_text()).model_dump()
    raw["compliance"]["data_residency"] = None
    raw["aliases"]["reasoning"]["targets"][0]["region"] = "eu-west-1"
    residency.check_residency(Rules.model_validate(raw), "reasoning")


def test_thinking_blocks_of_earlier_turns_are_dropped_for_other_providers() -> None:
    """LiteLLM #32188: a signed thinking block sent back by Claude Code would reach an
    OpenAI-shaped upstream as `thinking_blocks`, which strict servers refuse."""
    signed = {"type": "thinking", "thinking": "plan", "signature": "sig-abc"}
    tool = {"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "/a"}}
    data: dict[str, Any] = {
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [signed, tool]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
            {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"}]},
            {"role": "user", "content": "and then?"},
        ]
    }
    assert routing.adapt_thinking(data) == ["thinking blocks of earlier turns"]
    assert data["messages"] == [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [tool]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
        {"role": "user", "content": "and then?"},
    ]
    assert "sig-abc" not in repr(data)
    untouched: dict[str, Any] = {"messages": [{"role": "assistant", "content": [tool]}]}
    assert routing.adapt_thinking(untouched) == []
