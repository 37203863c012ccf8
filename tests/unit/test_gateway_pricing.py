"""Anthropic list prices of Claude models, ModelAlias pricing, and the usage shapes they read."""

from __future__ import annotations

import pytest

from tenantgw.api import Pricing
from tenantgw.gateway.pricing import (
    ANTHROPIC_LIST_PRICES,
    TokenUsage,
    anthropic_list_cost,
    anthropic_price,
    claude_family,
    cost_from_pricing,
    token_usage,
)

pytestmark = pytest.mark.unit

MTOK = TokenUsage(input_tokens=1_000_000)


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("claude-sonnet-3-7", "claude-3-7-sonnet"),
        ("claude-haiku-3-5", "claude-3-5-haiku"),
        ("anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"),  # OpenRouter
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "claude-3-5-haiku"),  # Bedrock
        ("anthropic.claude-opus-4-1-20250805-v1:0", "claude-opus-4-1"),
        ("claude-opus-4-1@20250805", "claude-opus-4-1"),  # Vertex
        ("Claude-Sonnet-4-5", "claude-sonnet-4-5"),
        # Not Claude, or not a model we know a price for: no guess.
        ("fast-code", None),
        ("gpt-4o-mini", None),
        ("claude-sonnet-4-5-*", None),
        ("claude-opus-4-9", None),
        ("claude-sonnet-4-5-turbo", None),
        ("", None),
        (None, None),
    ],
)
def test_claude_names_match_their_family(name: str | None, family: str | None) -> None:
    assert claude_family(name) == family


@pytest.mark.parametrize(
    ("model", "per_mtok"),
    [
        ("claude-opus-4-1", (15.0, 75.0, 18.75, 1.50)),
        ("claude-opus-4", (15.0, 75.0, 18.75, 1.50)),
        ("claude-sonnet-4-5", (3.0, 15.0, 3.75, 0.30)),
        ("claude-sonnet-4", (3.0, 15.0, 3.75, 0.30)),
        ("claude-3-7-sonnet", (3.0, 15.0, 3.75, 0.30)),
        ("claude-haiku-4-5", (1.0, 5.0, 1.25, 0.10)),
        ("claude-3-5-haiku", (0.80, 4.0, 1.0, 0.08)),
    ],
)
def test_list_prices_per_million_tokens(
    model: str, per_mtok: tuple[float, float, float, float]
) -> None:
    # 100k tokens of each kind (under Sonnet's 200k long-context threshold) cost a tenth.
    input_, output, write, read = (price / 10 for price in per_mtok)
    n = 100_000
    assert anthropic_list_cost(model, TokenUsage(input_tokens=n)) == pytest.approx(input_)
    assert anthropic_list_cost(model, TokenUsage(output_tokens=n)) == pytest.approx(output)
    assert anthropic_list_cost(model, TokenUsage(cache_write_tokens=n)) == pytest.approx(write)
    assert anthropic_list_cost(model, TokenUsage(cache_read_tokens=n)) == pytest.approx(read)


def test_a_claude_code_request_with_prompt_caching() -> None:
    usage = TokenUsage(
        input_tokens=1_200, output_tokens=850, cache_read_tokens=42_000, cache_write_tokens=3_000
    )
    expected = (1_200 * 3.0 + 850 * 15.0 + 42_000 * 0.30 + 3_000 * 3.75) / 1e6
    assert anthropic_list_cost("claude-sonnet-4-5-20250929", usage) == pytest.approx(expected)


def test_one_hour_cache_writes_cost_twice_the_input_price() -> None:
    usage = TokenUsage(cache_write_tokens=100_000, cache_write_1h_tokens=40_000)
    expected = (60_000 * 1.25 + 40_000 * 2.0) / 1e6
    assert anthropic_list_cost("claude-haiku-4-5", usage) == pytest.approx(expected)


def test_sonnet_prompts_over_200k_tokens_cost_the_long_context_rate() -> None:
    short = TokenUsage(input_tokens=150_000, output_tokens=1_000, cache_read_tokens=50_000)
    long = TokenUsage(input_tokens=150_000, output_tokens=1_000, cache_read_tokens=50_001)
    assert anthropic_list_cost("claude-sonnet-4-5", short) == pytest.approx(
        (150_000 * 3 + 1_000 * 15 + 50_000 * 0.3) / 1e6
    )
    assert anthropic_list_cost("claude-sonnet-4-5", long) == pytest.approx(
        (150_000 * 6 + 1_000 * 22.5 + 50_001 * 0.6) / 1e6
    )
    # Opus has no long-context surcharge.
    assert anthropic_list_cost("claude-opus-4-1", long) == pytest.approx(
        (150_000 * 15 + 1_000 * 75 + 50_001 * 1.5) / 1e6
    )


def test_no_list_cost_for_a_name_that_is_not_claude() -> None:
    assert anthropic_list_cost("fast-code", MTOK) is None
    assert anthropic_list_cost("claude-sonnet-4-5", None) is None
    assert anthropic_price("gpt-4o") is None
    assert set(ANTHROPIC_LIST_PRICES) >= {
        "claude-opus-4-1",
        "claude-opus-4",
        "claude-sonnet-4-5",
        "claude-sonnet-4",
        "claude-3-7-sonnet",
        "claude-haiku-4-5",
        "claude-3-5-haiku",
    }


def test_alias_pricing_from_the_api_model_a_dict_or_model_info() -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 5}  # the proxy smoke test's numbers
    expected = 6.3e-06  # 1 x 0.30/M + 5 x 1.20/M, what LiteLLM's response_cost said
    api = Pricing.model_validate({"inputPerMillion": 0.30, "outputPerMillion": 1.20})
    assert cost_from_pricing(api, usage) == pytest.approx(expected)
    assert cost_from_pricing({"input_per_million": 0.30, "output_per_million": 1.20}, usage) == (
        pytest.approx(expected)
    )
    assert cost_from_pricing({"inputPerMillion": 0.30, "outputPerMillion": 1.20}, usage) == (
        pytest.approx(expected)
    )
    model_info = {"input_cost_per_token": 3e-07, "output_cost_per_token": 1.2e-06, "id": "x"}
    assert cost_from_pricing(model_info, usage) == pytest.approx(expected)


def test_alias_pricing_charges_cache_tokens_at_the_input_rate_unless_priced() -> None:
    usage = TokenUsage(input_tokens=100, output_tokens=10, cache_read_tokens=1_000)
    flat = {"input_per_million": 1.0, "output_per_million": 2.0}
    assert cost_from_pricing(flat, usage) == pytest.approx((1_100 * 1.0 + 10 * 2.0) / 1e6)
    cached = {**flat, "cache_read_per_million": 0.1}
    assert cost_from_pricing(cached, usage) == pytest.approx((100 + 10 * 2.0 + 100) / 1e6)


def test_no_alias_cost_without_pricing() -> None:
    assert cost_from_pricing({"id": "free-0", "tenantgw": {}}, MTOK) is None
    assert cost_from_pricing(None, MTOK) is None


def test_litellm_usage_counts_cached_tokens_inside_prompt_tokens() -> None:
    # model_dump() of LiteLLM's Usage for an Anthropic reply with prompt caching.
    dumped = {
        "completion_tokens": 10,
        "prompt_tokens": 150,
        "total_tokens": 160,
        "prompt_tokens_details": {
            "cached_tokens": 30,
            "cache_creation_tokens": 20,
            "cache_creation_token_details": {
                "ephemeral_5m_input_tokens": 15,
                "ephemeral_1h_input_tokens": 5,
            },
        },
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 30,
    }
    assert token_usage(dumped) == TokenUsage(
        input_tokens=100,
        output_tokens=10,
        cache_read_tokens=30,
        cache_write_tokens=20,
        cache_write_1h_tokens=5,
    )


def test_openai_usage_with_cached_prompt_tokens() -> None:
    usage = {
        "prompt_tokens": 2_000,
        "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 1_536, "audio_tokens": 0},
    }
    assert token_usage(usage) == TokenUsage(
        input_tokens=464, output_tokens=300, cache_read_tokens=1_536
    )


def test_anthropic_usage_already_excludes_cached_tokens() -> None:
    usage = {
        "input_tokens": 12,
        "output_tokens": 40,
        "cache_creation_input_tokens": 2_000,
        "cache_read_input_tokens": 9_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 2_000, "ephemeral_1h_input_tokens": 0},
    }
    assert token_usage(usage) == TokenUsage(
        input_tokens=12, output_tokens=40, cache_read_tokens=9_000, cache_write_tokens=2_000
    )


def test_openai_responses_usage() -> None:
    usage = {
        "input_tokens": 500,
        "output_tokens": 20,
        "input_tokens_details": {"cached_tokens": 200},
    }
    assert token_usage(usage) == TokenUsage(
        input_tokens=300, output_tokens=20, cache_read_tokens=200
    )


def test_unknown_usage_is_none() -> None:
    assert token_usage(None) is None
    assert token_usage({}) is None
    assert token_usage({"something": 1}) is None
