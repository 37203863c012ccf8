"""The simulator counts prompt tokens and enforces context windows as the real providers do."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from e2e.provider_sim import SimulatorHandle, start_simulator

pytestmark = pytest.mark.unit

KEY = "sk-sim-windows-unit"
# OpenAI cookbook, "How to count tokens with tiktoken": the OpenAI API reports 129 prompt
# tokens for these messages on GPT-4 and 124 on GPT-4o ...
COOKBOOK: list[Any] = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on "
        "opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]
# ... and 105 (GPT-4, GPT-3.5) / 101 (GPT-4o, GPT-4o-mini) for this function call request.
WEATHER_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
WEATHER_MESSAGES: list[Any] = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.fixture(scope="module")
def running() -> Iterator[SimulatorHandle]:
    _, handle = start_simulator(api_key=KEY)
    with handle:
        yield handle


@pytest.fixture
def sim(running: SimulatorHandle) -> SimulatorHandle:
    running.reset()
    running.configure(api_key=KEY)
    return running


@pytest.fixture
def oai(sim: SimulatorHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.url, api_key=KEY, max_retries=0, timeout=10)


@pytest.fixture
def ant(sim: SimulatorHandle) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.root_url, api_key=KEY, max_retries=0, timeout=10)


@pytest.mark.parametrize(("model", "expected"), [("gpt-4", 129), ("gpt-4o", 124)])
def test_openai_prompt_tokens_are_the_apis_count(
    oai: openai.OpenAI, model: str, expected: int
) -> None:
    resp = oai.chat.completions.create(model=model, messages=COOKBOOK)
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == expected


@pytest.mark.parametrize(
    ("model", "expected"),
    [("gpt-3.5-turbo", 105), ("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)],
)
def test_openai_function_definitions_count_as_the_api_counts_them(
    oai: openai.OpenAI, model: str, expected: int
) -> None:
    resp = oai.chat.completions.create(model=model, messages=WEATHER_MESSAGES, tools=WEATHER_TOOLS)
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == expected


def test_streamed_usage_is_the_same_count(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o",
            messages=COOKBOOK,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 124


def test_openai_refuses_a_prompt_beyond_the_window(
    oai: openai.OpenAI, sim: SimulatorHandle
) -> None:
    sim.configure(context_windows={"gpt-4o": 130})
    assert oai.chat.completions.create(model="gpt-4o", messages=COOKBOOK).choices
    longer = [*COOKBOOK, {"role": "user", "content": "one more sentence to push it over"}]
    with pytest.raises(openai.BadRequestError) as refused:
        oai.chat.completions.create(model="gpt-4o", messages=longer, stream=True)
    error: Any = refused.value.body
    assert error["code"] == "context_length_exceeded"
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(
        "This model's maximum context length is 130 tokens. However, your messages resulted in "
    )
    # other models have no window
    assert oai.chat.completions.create(model="gpt-4o-mini", messages=longer).choices


def test_openai_refuses_a_completion_that_cannot_fit(
    oai: openai.OpenAI, sim: SimulatorHandle
) -> None:
    sim.configure(context_windows={"gpt-4o": 200})
    assert oai.chat.completions.create(model="gpt-4o", messages=COOKBOOK, max_tokens=76).choices
    with pytest.raises(openai.BadRequestError) as refused:
        oai.chat.completions.create(model="gpt-4o", messages=COOKBOOK, max_tokens=77)
    error: Any = refused.value.body
    assert error["code"] == "context_length_exceeded"
    assert (
        "you requested 201 tokens (124 in the messages, 77 in the completion)" in (error["message"])
    )


def test_an_openrouter_model_name_matches_its_window(
    oai: openai.OpenAI, sim: SimulatorHandle
) -> None:
    sim.configure(context_windows={"qwen/qwen3-coder": 100})
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="qwen/qwen3-coder", messages=COOKBOOK)


def test_azure_refuses_in_its_own_shape(sim: SimulatorHandle) -> None:
    sim.configure(context_windows={"gpt-4": 100})
    resp = httpx.post(
        sim.root_url + "/openai/deployments/gpt-4/chat/completions?api-version=2024-10-21",
        headers={"api-key": KEY},
        json={"messages": COOKBOOK},
        timeout=10,
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "context_length_exceeded"
    assert "maximum context length is 100 tokens" in resp.json()["error"]["message"]


def test_anthropic_refuses_a_prompt_beyond_the_window(
    ant: anthropic.Anthropic, sim: SimulatorHandle
) -> None:
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "system": "You answer briefly.",
        "messages": [{"role": "user", "content": "word " * 400}],
    }
    counted = ant.messages.count_tokens(**body).input_tokens
    sim.configure(context_windows={"claude-sonnet-4-5": counted - 1})
    with pytest.raises(anthropic.BadRequestError) as refused:
        ant.messages.create(max_tokens=10, **body)
    error: Any = refused.value.body
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"] == (
        f"prompt is too long: {counted} tokens > {counted - 1} maximum"
    )
    sim.configure(context_windows={"claude-sonnet-4-5": counted + 10})
    with pytest.raises(anthropic.BadRequestError) as no_room:
        ant.messages.create(max_tokens=11, **body)
    assert "input length and `max_tokens` exceed context limit" in str(no_room.value)
    msg = ant.messages.create(max_tokens=10, **body)
    assert msg.usage.input_tokens == counted  # the same estimate as count_tokens


@pytest.mark.parametrize("bad", [{"m": 0}, {"m": "big"}, {"m": True}, ["m"]])
def test_bad_windows_are_refused_by_the_control_api(sim: SimulatorHandle, bad: Any) -> None:
    resp = httpx.post(sim.root_url + "/_sim/config", json={"context_windows": bad}, timeout=10)
    assert resp.status_code == 400
    assert "context_windows" in resp.json()["error"]


def test_reset_forgets_the_windows(sim: SimulatorHandle, oai: openai.OpenAI) -> None:
    sim.configure(context_windows={"gpt-4o": 10})
    sim.reset()
    sim.configure(api_key=KEY)
    assert oai.chat.completions.create(model="gpt-4o", messages=COOKBOOK).choices
