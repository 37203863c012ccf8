"""The provider simulator speaks the OpenAI wire protocol well enough for the official SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.chat import (
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)

from e2e.provider_sim import SimulatorHandle, start_simulator

pytestmark = pytest.mark.unit

WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "days"],
        },
    },
}


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[str, SimulatorHandle]]:
    url, handle = start_simulator()
    with handle:
        yield url, handle


@pytest.fixture
def sim(running: tuple[str, SimulatorHandle]) -> SimulatorHandle:
    running[1].reset()
    return running[1]


@pytest.fixture
def client(running: tuple[str, SimulatorHandle], sim: SimulatorHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=running[0], api_key="sk-test", max_retries=0, timeout=10)


def test_non_streaming_reply_and_usage(client: openai.OpenAI, sim: SimulatorHandle) -> None:
    resp = client.chat.completions.create(
        model="sim-fast", messages=[{"role": "user", "content": "Say hello"}], max_tokens=100
    )
    assert resp.choices[0].message.content == "Hello from sim-fast"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == "sim-fast"
    assert resp.usage is not None
    # tiktoken, as OpenAI counts it: 3 per message + role (1) + "Say hello" (2) + 3 for the reply
    assert resp.usage.prompt_tokens == 9
    assert resp.usage.completion_tokens == len("Hello from sim-fast") // 4 + 1
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens

    (recorded,) = sim.requests()
    assert recorded["path"] == "/v1/chat/completions"
    assert recorded["model"] == "sim-fast"
    assert recorded["body"]["max_tokens"] == 100
    assert recorded["headers"]["Authorization"] == "Bearer sk-test"
    assert sim.last_authorization == "Bearer sk-test"


def test_streaming_with_usage(client: openai.OpenAI, sim: SimulatorHandle) -> None:
    sim.configure(reply="one two three")
    stream = client.chat.completions.create(
        model="sim-fast",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len("one two three") // 4 + 1
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_without_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from m"


def test_tool_call_round_trip(client: openai.OpenAI, sim: SimulatorHandle) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(
        model="sim-fast",
        messages=messages,
        tools=[WEATHER_TOOL],
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "echo", "days": 1}

    messages.append(choice.message.model_dump(exclude_none=True))  # type: ignore[arg-type]
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21C"})
    second = client.chat.completions.create(
        model="sim-fast",
        messages=messages,
        tools=[WEATHER_TOOL],
    )
    assert second.choices[0].message.content == "Tool said: Sunny, 21C"
    assert second.choices[0].finish_reason == "stop"
    assert len(sim.requests()) == 2


def test_streamed_tool_call(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="sim-fast",
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    name, args, finish = "", "", None
    for chunk in stream:
        delta = chunk.choices[0].delta
        for tc in delta.tool_calls or []:
            if tc.function is not None:
                name += tc.function.name or ""
                args += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert name == "get_weather"
    assert json.loads(args) == {"city": "echo", "days": 1}
    assert finish == "tool_calls"


READ_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "Read",
        "description": "Read a file",
        "parameters": {
            "type": "object",
            "properties": {"file_path": {"type": "string"}},
            "required": ["file_path"],
        },
    },
}


def test_tool_plan_calls_the_named_tool_with_its_arguments(
    client: openai.OpenAI, sim: SimulatorHandle
) -> None:
    """An agent offers many tools; the plan picks the one a scripted turn runs."""
    sim.configure(tool_plan={"tool": "Read", "arguments": {"file_path": "/tmp/notes.txt"}})
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "read my notes"}]
    first = client.chat.completions.create(
        model="sim-fast", messages=messages, tools=[WEATHER_TOOL, READ_TOOL]
    )
    (call,) = first.choices[0].message.tool_calls or []
    assert call.function.name == "Read"
    assert json.loads(call.function.arguments) == {"file_path": "/tmp/notes.txt"}

    messages.append(first.choices[0].message.model_dump(exclude_none=True))  # type: ignore[arg-type]
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "1\ttoken-42"})
    second = client.chat.completions.create(
        model="sim-fast", messages=messages, tools=[WEATHER_TOOL, READ_TOOL]
    )
    assert second.choices[0].message.content == "Tool said: 1\ttoken-42"


def test_the_results_of_parallel_tool_calls_are_all_answered(client: openai.OpenAI) -> None:
    """Two calls in one answer, two tool messages: the answer holds both results, in order
    (an agent that ran both tools gets an answer from both)."""
    calls: list[ChatCompletionMessageFunctionToolCallParam] = [
        {"id": f"call_{n}", "type": "function", "function": {"name": "Read", "arguments": "{}"}}
        for n in (1, 2)
    ]
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "read both"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_1", "content": "alpha-1"},
        {"role": "tool", "tool_call_id": "call_2", "content": "beta-2"},
    ]
    answer = client.chat.completions.create(model="sim-fast", messages=messages, tools=[READ_TOOL])
    assert answer.choices[0].message.content == "Tool said: alpha-1\nbeta-2"


def test_tool_plan_answers_text_when_its_tool_is_not_offered(
    client: openai.OpenAI, sim: SimulatorHandle
) -> None:
    sim.configure(tool_plan={"tool": "Read", "arguments": {}}, reply="no tool here")
    resp = client.chat.completions.create(
        model="sim-fast", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL]
    )
    assert resp.choices[0].message.tool_calls is None
    assert resp.choices[0].message.content == "no tool here"


def test_tool_plan_is_checked_and_reset(sim: SimulatorHandle) -> None:
    root = sim.root_url
    for bad in ({"tool": ""}, {"tool": "Read", "arguments": []}, {"tool": "Read", "x": 1}, "Read"):
        resp = httpx.post(f"{root}/_sim/config", json={"tool_plan": bad})
        assert resp.status_code == 400, bad
    plan = {"tool": "Read", "arguments": {"file_path": "/x"}}
    assert httpx.post(f"{root}/_sim/config", json={"tool_plan": plan}).json()["tool_plan"] == plan
    sim.reset()
    assert httpx.get(f"{root}/_sim/config").json()["tool_plan"] is None


def test_injected_500_and_429_are_sdk_errors(client: openai.OpenAI, sim: SimulatorHandle) -> None:
    sim.fail_next("500", "429")
    msgs: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.InternalServerError) as err500:
        client.chat.completions.create(model="m", messages=msgs)
    assert err500.value.status_code == 500
    with pytest.raises(openai.RateLimitError) as err429:
        client.chat.completions.create(model="m", messages=msgs)
    assert err429.value.status_code == 429
    assert isinstance(err429.value.body, dict)
    assert err429.value.body["code"] == "rate_limit_exceeded"
    # The queue is consumed: the next request succeeds.
    ok = client.chat.completions.create(model="m", messages=msgs)
    assert ok.choices[0].message.content == "Hello from m"


def test_injected_500_on_a_stream(client: openai.OpenAI, sim: SimulatorHandle) -> None:
    sim.fail_next(500)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )


def test_timeout_fault_times_out_the_client(
    running: tuple[str, SimulatorHandle], sim: SimulatorHandle
) -> None:
    sim.configure(fail_next=["timeout"], timeout_s=5)
    impatient = openai.OpenAI(base_url=running[0], api_key="k", max_retries=0, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


def test_missing_or_wrong_key_is_401_in_openai_shape(
    running: tuple[str, SimulatorHandle], sim: SimulatorHandle
) -> None:
    url = running[0]
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    resp = httpx.post(f"{url}/chat/completions", json=body)
    assert resp.status_code == 401
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    resp = httpx.post(f"{url}/chat/completions", json=body, headers={"Authorization": "Basic a"})
    assert resp.status_code == 401
    sim.configure(api_key="right-key")
    wrong = openai.OpenAI(base_url=url, api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert isinstance(err.value.body, dict)
    assert err.value.body["code"] == "invalid_api_key"
    assert sim.last_authorization == "Bearer wrong-key"


def test_other_paths_models_and_control_endpoints(
    running: tuple[str, SimulatorHandle], sim: SimulatorHandle
) -> None:
    root = sim.root_url
    auth = {"Authorization": "Bearer k"}
    body = {"model": "qwen/qwen3-coder", "messages": [{"role": "user", "content": "x"}]}
    # OpenRouter-style base .../api/v1
    resp = httpx.post(f"{root}/api/v1/chat/completions", json=body, headers=auth)
    assert resp.json()["choices"][0]["message"]["content"] == "Hello from qwen/qwen3-coder"
    # Azure-style deployment path, key in the api-key header
    azure = openai.AzureOpenAI(
        azure_endpoint=root, api_key="azure-key", api_version="2024-10-21", max_retries=0
    )
    out = azure.chat.completions.create(
        model="my-deploy", messages=[{"role": "user", "content": "x"}]
    )
    assert out.choices[0].message.content == "Hello from my-deploy"
    assert sim.requests()[-1]["deployment"] == "my-deploy"
    assert sim.last_authorization == "azure-key"

    models = openai.OpenAI(base_url=running[0], api_key="k").models.list()
    assert "sim-fast" in [m.id for m in models.data]

    cfg = httpx.post(f"{root}/_sim/config", json={"reply": "fixed", "latency_ms": 1}).json()
    assert cfg["reply"] == "fixed"
    resp = httpx.post(f"{root}/v1/chat/completions", json=body, headers=auth)
    assert resp.json()["choices"][0]["message"]["content"] == "fixed"
    assert httpx.post(f"{root}/_sim/config", json={"nope": 1}).status_code == 400
    recorded = httpx.get(f"{root}/_sim/requests").json()
    assert [r["path"] for r in recorded["requests"]] == [
        "/api/v1/chat/completions",
        "/openai/deployments/my-deploy/chat/completions",
        "/v1/chat/completions",
    ]
    assert recorded["last_authorization"] == "Bearer k"
    httpx.post(f"{root}/_sim/reset")
    assert httpx.get(f"{root}/_sim/requests").json()["requests"] == []
    assert httpx.get(f"{root}/_sim/config").json()["reply"] is None
