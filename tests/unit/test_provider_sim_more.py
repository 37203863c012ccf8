"""The simulator's Gemini/Vertex, Ollama, Cohere and Responses modules check and answer as the
real providers do: auth, body checks, exact response and stream shapes, faults in each shape."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from e2e.provider_sim import SimulatorHandle, start_simulator
from e2e.provider_sim.gemini import SCOPE, TOKEN_AUDIENCE, issue_token, service_account_info

pytestmark = pytest.mark.unit

KEY = "sim-unit-key"
MODELS = ["gemini-2.5-flash", "qwen2.5-coder:14b", "command-a-03-2025", "claude-sonnet-4-5"]
TOOL_SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}


@pytest.fixture(scope="module")
def running() -> Iterator[SimulatorHandle]:
    _, handle = start_simulator(api_key=KEY, models=MODELS)
    with handle:
        yield handle


@pytest.fixture
def sim(running: SimulatorHandle) -> SimulatorHandle:
    running.reset()
    return running


def post(sim: SimulatorHandle, path: str, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(sim.root_url + path, json=body, headers=headers, timeout=10)


def sse_data(resp: httpx.Response) -> list[dict[str, Any]]:
    return [
        json.loads(line[len("data: ") :])
        for line in resp.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


# --------------------------------------------------------------------------- Gemini / Vertex

GEMINI = "/v1beta/models/gemini-2.5-flash:generateContent"
HELLO = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_gemini_key_is_checked_like_google(sim: SimulatorHandle) -> None:
    missing = post(sim, GEMINI, HELLO)
    assert missing.status_code == 403
    assert missing.json()["error"]["status"] == "PERMISSION_DENIED"
    wrong = post(sim, GEMINI, HELLO, **{"x-goog-api-key": "nope"})
    assert wrong.status_code == 400
    assert wrong.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    by_query = httpx.post(sim.root_url + GEMINI + f"?key={KEY}", json=HELLO, timeout=10)
    assert by_query.status_code == 200


def test_gemini_answer_and_stream_shapes(sim: SimulatorHandle) -> None:
    head = {"x-goog-api-key": KEY}
    done = post(sim, GEMINI, HELLO, **head).json()
    assert done["candidates"][0]["content"] == {
        "parts": [{"text": "Hello from gemini-2.5-flash"}],
        "role": "model",
    }
    assert done["candidates"][0]["finishReason"] == "STOP"
    usage = done["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    chunks = sse_data(post(sim, path, HELLO, **head))
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == (
        "Hello from gemini-2.5-flash"
    )
    assert [c["candidates"][0].get("finishReason") for c in chunks][-1] == "STOP"
    assert "candidatesTokenCount" in chunks[-1]["usageMetadata"]


def test_gemini_function_call_and_response(sim: SimulatorHandle) -> None:
    head = {"x-goog-api-key": KEY}
    tools = [{"functionDeclarations": [{"name": "find", "parameters": TOOL_SCHEMA}]}]
    call = post(sim, GEMINI, {**HELLO, "tools": tools}, **head).json()
    part = call["candidates"][0]["content"]["parts"][0]
    assert part == {"functionCall": {"name": "find", "args": {"q": "echo"}}}
    history = [
        *HELLO["contents"],
        {"role": "model", "parts": [part]},
        {
            "role": "user",
            "parts": [{"function_response": {"name": "find", "response": {"content": "42"}}}],
        },
    ]
    answer = post(sim, GEMINI, {"contents": history, "tools": tools}, **head).json()
    assert answer["candidates"][0]["content"]["parts"][0]["text"] == "Tool said: 42"


def test_gemini_faults_in_googles_shape(sim: SimulatorHandle) -> None:
    sim.fail_next("429", "503")
    head = {"x-goog-api-key": KEY}
    limited = post(sim, GEMINI, HELLO, **head)
    assert limited.status_code == 429
    error = limited.json()["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert error["details"][0]["retryDelay"] == "1s"
    assert post(sim, GEMINI, HELLO, **head).json()["error"]["status"] == "UNAVAILABLE"
    unknown = post(sim, "/v1beta/models/gemini-9:generateContent", HELLO, **head)
    assert unknown.status_code == 404
    assert post(sim, GEMINI, {"contents": []}, **head).status_code == 400


def test_vertex_takes_only_tokens_of_its_oauth_endpoint(sim: SimulatorHandle) -> None:
    path = (
        "/v1/projects/proj-a/locations/us-central1/publishers/google/models/"
        "gemini-2.5-flash:generateContent"
    )
    assert post(sim, path, HELLO).status_code == 401
    assert post(sim, path, HELLO, Authorization="Bearer ya29.forged").status_code == 401
    other = issue_token("gw@proj-b.iam.gserviceaccount.com")
    assert post(sim, path, HELLO, Authorization=f"Bearer {other}").status_code == 403
    info = service_account_info("proj-a", sim.root_url + "/token")
    now = int(time.time())
    claims = {
        "iss": info["client_email"],
        "aud": TOKEN_AUDIENCE,
        "scope": SCOPE,
        "iat": now,
        "exp": now + 3600,
    }
    assertion = jwt.encode(claims, info["private_key"], algorithm="RS256")
    grant = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
    token = httpx.post(info["token_uri"], data=grant, timeout=10).json()["access_token"]
    assert post(sim, path, HELLO, Authorization=f"Bearer {token}").status_code == 200
    forged = jwt.encode(claims, "an HMAC secret instead of the RSA key", algorithm="HS256")
    refused = httpx.post(info["token_uri"], data={**grant, "assertion": forged}, timeout=10)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"


def test_claude_on_vertex_raw_predict(sim: SimulatorHandle) -> None:
    base = "/v1/projects/proj-a/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5"
    auth = {"Authorization": "Bearer " + issue_token("gw@proj-a.iam.gserviceaccount.com")}
    body = {
        "anthropic_version": "vertex-2023-10-16",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
    }
    done = post(sim, base + ":rawPredict", body, **auth).json()
    assert done["content"][0]["text"] == "Hello from claude-sonnet-4-5"
    assert post(sim, base + ":rawPredict", {**body, "model": "x"}, **auth).status_code == 400
    without = {k: v for k, v in body.items() if k != "anthropic_version"}
    assert post(sim, base + ":rawPredict", without, **auth).status_code == 400
    stream = post(sim, base + ":streamRawPredict", {**body, "stream": True}, **auth)
    kinds = [d["type"] for d in sse_data(stream)]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"


# --------------------------------------------------------------------------- Ollama


def test_ollama_streams_ndjson_by_default(sim: SimulatorHandle) -> None:
    body = {"model": "qwen2.5-coder:14b", "messages": [{"role": "user", "content": "hi"}]}
    resp = post(sim, "/api/chat", body)
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in resp.text.splitlines()]
    assert all(not line["done"] for line in lines[:-1])
    assert lines[-1]["done"] is True
    assert lines[-1]["done_reason"] == "stop"
    assert lines[-1]["eval_count"] > 0
    assert lines[-1]["prompt_eval_count"] > 0
    assert "".join(line["message"]["content"] for line in lines) == "Hello from qwen2.5-coder:14b"


def test_ollama_tool_calls_take_object_arguments(sim: SimulatorHandle) -> None:
    tools = [{"type": "function", "function": {"name": "find", "parameters": TOOL_SCHEMA}}]
    body = {
        "model": "qwen2.5-coder:14b",
        "stream": False,
        "tools": tools,
        "messages": [{"role": "user", "content": "hi"}],
    }
    call = post(sim, "/api/chat", body).json()["message"]["tool_calls"][0]
    assert call["function"] == {"name": "find", "arguments": {"q": "echo"}}
    stringly = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "find", "arguments": '{"q": "echo"}'}}],
    }
    body["messages"] = [
        {"role": "user", "content": "hi"},
        stringly,
        {"role": "tool", "content": "42"},
    ]
    assert post(sim, "/api/chat", body).status_code == 400


def test_ollama_unpulled_model_and_tags(sim: SimulatorHandle) -> None:
    resp = post(sim, "/api/chat", {"model": "llama9", "messages": []})
    assert resp.status_code == 404
    assert resp.json() == {"error": 'model "llama9" not found, try pulling it first'}
    names = {m["name"] for m in httpx.get(sim.root_url + "/api/tags").json()["models"]}
    assert "qwen2.5-coder:14b" in names


# --------------------------------------------------------------------------- Cohere


def test_cohere_auth_and_answer(sim: SimulatorHandle) -> None:
    body = {"model": "command-a-03-2025", "messages": [{"role": "user", "content": "hi"}]}
    refused = post(sim, "/v2/chat", body, Authorization="Bearer nope")
    assert refused.status_code == 401
    assert refused.json()["message"] == "invalid api token"
    done = post(sim, "/v2/chat", body, Authorization=f"Bearer {KEY}").json()
    assert done["finish_reason"] == "COMPLETE"
    assert done["message"]["content"] == [{"type": "text", "text": "Hello from command-a-03-2025"}]
    assert done["usage"]["billed_units"] == done["usage"]["tokens"]


def test_cohere_stream_event_sequence_with_a_tool_call(sim: SimulatorHandle) -> None:
    tools = [{"type": "function", "function": {"name": "find", "parameters": TOOL_SCHEMA}}]
    body = {
        "model": "command-a-03-2025",
        "stream": True,
        "tools": tools,
        "messages": [{"role": "user", "content": "hi"}],
    }
    resp = post(sim, "/v2/chat", body, Authorization=f"Bearer {KEY}")
    events = [
        line.removeprefix("event: ")
        for line in resp.text.splitlines()
        if line.startswith("event: ")
    ]
    data = sse_data(resp)
    assert [d["type"] for d in data] == events
    assert events[0] == "message-start"
    assert "tool-call-start" in events
    assert events[-2:] == ["tool-call-end", "message-end"]
    args = "".join(
        d["delta"]["message"]["tool_calls"]["function"]["arguments"]
        for d in data
        if d["type"] == "tool-call-delta"
    )
    assert json.loads(args) == {"q": "echo"}
    assert data[-1]["delta"]["finish_reason"] == "TOOL_CALL"


def test_cohere_compatibility_api_answers_openai_chat(sim: SimulatorHandle) -> None:
    path = "/compatibility/v1/chat/completions"
    body = {"model": "command-a-03-2025", "messages": [{"role": "user", "content": "hi"}]}
    assert post(sim, path, body, Authorization="Bearer nope").status_code == 401
    done = post(sim, path, body, Authorization=f"Bearer {KEY}").json()
    assert done["object"] == "chat.completion"
    assert done["choices"][0]["message"]["content"] == "Hello from command-a-03-2025"
    streamed = post(sim, path, {**body, "stream": True}, Authorization=f"Bearer {KEY}")
    assert streamed.text.rstrip().endswith("data: [DONE]")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in sse_data(streamed))
    assert text == "Hello from command-a-03-2025"
    assert {r["protocol"] for r in sim.requests()} == {"cohere-compat"}


def test_openai_chat_429_says_when_to_retry(sim: SimulatorHandle) -> None:
    """OpenAI (and the compatible family and Azure's v1 path, which share the route) send
    `retry-after` with a 429; the simulator's default is 1 s, `retry_after_s` changes it."""
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    for wait in (None, 7):
        if wait is not None:
            sim.configure(retry_after_s=wait)
        sim.fail_next("429")
        resp = post(sim, "/v1/chat/completions", body, Authorization=f"Bearer {KEY}")
        assert resp.status_code == 429
        assert resp.headers["retry-after"] == str(wait or 1)
        assert resp.headers["x-ratelimit-remaining-requests"] == "0"
        assert resp.json()["error"]["code"] == "rate_limit_exceeded"


def test_cohere_429_says_when_to_retry(sim: SimulatorHandle) -> None:
    sim.fail_next("429")
    body = {"model": "command-a-03-2025", "messages": [{"role": "user", "content": "hi"}]}
    resp = post(sim, "/v2/chat", body, Authorization=f"Bearer {KEY}")
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "1"
    assert set(resp.json()) == {"id", "message"}


# --------------------------------------------------------------------------- Responses API


def test_responses_only_models_are_refused_on_chat_completions(sim: SimulatorHandle) -> None:
    body = {"model": "o3-pro", "messages": [{"role": "user", "content": "hi"}]}
    resp = post(sim, "/v1/chat/completions", body, Authorization=f"Bearer {KEY}")
    assert resp.status_code == 404
    assert "only supported in v1/responses" in resp.json()["error"]["message"]


def test_responses_answer_and_stream(sim: SimulatorHandle) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    done = post(sim, "/v1/responses", {"model": "o3-pro", "input": "hi"}, **auth).json()
    assert [item["type"] for item in done["output"]] == ["reasoning", "message"]
    assert done["output"][1]["content"][0]["text"] == "Hello from o3-pro"
    usage = done["usage"]
    assert usage["output_tokens_details"]["reasoning_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    tools = [{"type": "function", "name": "find", "parameters": TOOL_SCHEMA}]
    stream = post(
        sim,
        "/v1/responses",
        {"model": "gpt-5-codex", "input": "hi", "tools": tools, "stream": True},
        **auth,
    )
    data = sse_data(stream)
    kinds = [d["type"] for d in data]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-1] == "response.completed"
    assert [d["sequence_number"] for d in data] == list(range(len(data)))
    call = data[-1]["response"]["output"][-1]
    assert call["type"] == "function_call"
    history = [
        {"role": "user", "content": "hi"},
        call,
        {"type": "function_call_output", "call_id": call["call_id"], "output": "42"},
    ]
    again = post(
        sim, "/v1/responses", {"model": "gpt-5-codex", "input": history, "tools": tools}, **auth
    ).json()
    assert again["output"][-1]["content"][0]["text"] == "Tool said: 42"
    orphan = [{"type": "function_call_output", "call_id": "call_x", "output": "42"}]
    refused = post(sim, "/v1/responses", {"model": "gpt-5-codex", "input": orphan}, **auth)
    assert refused.status_code == 400


# --------------------------------------------------------------------------- stream faults


@pytest.mark.parametrize(
    ("path", "body", "auth"),
    [
        (
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            HELLO,
            {"x-goog-api-key": KEY},
        ),
        (
            "/api/chat",
            {"model": "qwen2.5-coder:14b", "messages": [{"role": "user", "content": "a b c"}]},
            {},
        ),
        (
            "/v2/chat",
            {
                "model": "command-a-03-2025",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
            {"Authorization": f"Bearer {KEY}"},
        ),
        (
            "/v1/responses",
            {"model": "o3-pro", "input": "hi", "stream": True},
            {"Authorization": f"Bearer {KEY}"},
        ),
    ],
    ids=["gemini", "ollama", "cohere", "responses"],
)
def test_malformed_and_cut_streams(
    sim: SimulatorHandle, path: str, body: dict[str, Any], auth: dict[str, str]
) -> None:
    sim.fail_next("malformed")
    text = post(sim, path, body, **auth).text
    assert '{"this is not": json' in text
    sim.fail_next("disconnect")
    with pytest.raises(httpx.HTTPError):
        post(sim, path, body, **auth).raise_for_status().read()
