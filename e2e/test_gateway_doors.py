"""One door, local count_tokens and bad input, against a real gateway process and real clients.

A gateway for tenant `eng` (e2e/gateway_process.py) runs in front of the provider simulator
with a 12 MiB body limit. Each test names the user story it proves.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from e2e.gateway_process import GatewayProcess, GatewayStartError, run_gateway
from e2e.test_gateway_process import ALICE_KEY, MASTER_KEY
from tenantgw.gateway import routes
from tenantgw.gateway.errors import route_family

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

pytestmark = pytest.mark.e2e

MAX_BODY_BYTES = 12 * 1024 * 1024


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    try:
        with run_gateway(
            tmp_path_factory.mktemp("doors"), max_body_bytes=MAX_BODY_BYTES
        ) as process:
            yield process
    except GatewayStartError as exc:
        pytest.fail(str(exc))


def anthropic_client(gw: GatewayProcess, key: str = ALICE_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=120)


def upstream_with(gw: GatewayProcess, marker: str) -> list[dict[str, Any]]:
    return [r for r in gw.sim.requests() if marker in json.dumps(r.get("body"))]


def assert_404_in_the_clients_shape(path: str, response: httpx.Response) -> None:
    label = f"{response.request.method} {path}"
    assert response.status_code == 404, f"{label} answered {response.status_code}"
    if response.request.method == "HEAD":
        return  # no body to a HEAD request
    payload = response.json()
    if route_family(path) == "anthropic":
        assert payload["type"] == "error"
        assert payload["error"]["type"] == "not_found_error"
    else:
        assert payload["error"]["code"] == "404"
    assert "is not served by this gateway" in payload["error"]["message"]


# --------------------------------------------------------------------------- one door


def test_every_route_litellm_registers_is_closed_or_a_door_with_our_checks(
    gw: GatewayProcess,
) -> None:
    """An attacker with a tenant key (or the master key) tries every route of LiteLLM's app."""
    from litellm.proxy.proxy_server import app

    registered = routes.registered_routes(app)
    assert len(registered) > 500
    upstream_before = len(gw.sim.requests())
    doors: set[str] = set()
    with httpx.Client(base_url=gw.url, timeout=30) as client:
        for route in registered:
            for path in route.sample_paths():
                if route.kind == "websocket":
                    response = client.get(
                        path,
                        headers={
                            "connection": "upgrade",
                            "upgrade": "websocket",
                            "sec-websocket-version": "13",
                            "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
                            "authorization": f"Bearer {ALICE_KEY}",
                        },
                    )
                    assert response.status_code in (403, 404), f"websocket {path}"
                    continue
                for method in sorted(route.methods or {"GET", "POST"}):
                    door = routes.door_for(method, path)
                    if door is not None:
                        doors.add(f"{method} {door.path}")
                        continue
                    for key in (ALICE_KEY, MASTER_KEY):
                        response = client.request(
                            method, path, headers={"x-api-key": key}, json={"model": "fast-code"}
                        )
                        assert_404_in_the_clients_shape(path, response)
    assert len(gw.sim.requests()) == upstream_before, "a closed route reached the provider"
    assert doors == {
        "POST /v1/messages",
        "POST /v1/messages/count_tokens",
        "POST /v1/chat/completions",
        "POST /chat/completions",
        "GET /v1/models",
        "GET /models",
        "GET /v1/models/{model_id}",
        "GET /health/liveliness",
        "GET /health/readiness",
    }


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions", "/chat/completions"])
def test_model_doors_pass_the_tenants_checks(gw: GatewayProcess, path: str) -> None:
    """Each open model route routes the alias and redacts PII before the provider sees it."""
    marker = f"door{path.replace('/', '-')}"
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": f"{marker} mail me at jo@corp.example"}],
    }
    response = httpx.post(gw.url + path, headers={"x-api-key": ALICE_KEY}, json=body, timeout=60)
    assert response.status_code == 200, response.text
    (upstream,) = upstream_with(gw, marker)
    assert upstream["model"] == "sim-fast"  # routed to the alias's target
    text = json.dumps(upstream["body"])
    assert "jo@corp.example" not in text
    assert "[REDACTED_EMAIL]" in text


@pytest.mark.parametrize(
    "path",
    [
        "/azure/openai/deployments/fast-code/chat/completions",
        "/openai/v1/chat/completions",
        "/anthropic/v1/messages",
        "/bedrock/model/fast-code/converse",
        "/vertex_ai/v1/projects/p/locations/l/publishers/google/models/m:generateContent",
        "/cohere/v2/chat",
        "/mistral/v1/chat/completions",
        "/v1/files",
        "/v1/batches",
        "/v1/assistants",
        "/key/generate",
        "/team/new",
        "/user/new",
        "/model/new",
        "/spend/calculate",
        "/claude_code_gateway/v1/messages",
    ],
)
def test_the_issues_open_doors_are_closed_even_to_the_master_key(
    gw: GatewayProcess, path: str
) -> None:
    body = {"model": "fast-code", "messages": [{"role": "user", "content": "door-closed"}]}
    for key in (ALICE_KEY, MASTER_KEY):
        response = httpx.post(gw.url + path, headers={"x-api-key": key}, json=body, timeout=30)
        assert_404_in_the_clients_shape(path, response)
    assert upstream_with(gw, "door-closed") == []


# --------------------------------------------------------------------------- count_tokens


def test_claude_codes_count_tokens_is_answered_without_the_provider(gw: GatewayProcess) -> None:
    before = len(gw.sim.requests())
    count = anthropic_client(gw).messages.count_tokens(
        model="claude-sonnet-4-5",
        system="You are a coding assistant. count-local",
        messages=[
            {"role": "user", "content": "my card is 4111 1111 1111 1111, how many tokens?"},
        ],
        tools=[
            {
                "name": "read_file",
                "description": "Read a file",
                "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
            }
        ],
    )
    assert count.input_tokens > 20
    assert len(gw.sim.requests()) == before, "count_tokens reached the provider"
    # the beta route the SDK also offers is the same door
    beta = anthropic_client(gw).beta.messages.count_tokens(
        model="fast-code", messages=[{"role": "user", "content": "hi"}]
    )
    assert beta.input_tokens > 0
    assert len(gw.sim.requests()) == before


def test_count_tokens_needs_the_tenants_key(gw: GatewayProcess) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        anthropic_client(gw, "sk-not-a-key").messages.count_tokens(
            model="fast-code", messages=[{"role": "user", "content": "hi"}]
        )
    body = caught.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert "sk-not-a-key" not in caught.value.response.text


def test_count_tokens_needs_a_model_the_tenant_serves(gw: GatewayProcess) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        anthropic_client(gw).messages.count_tokens(
            model="gpt-nonexistent", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.response.json()["error"]["type"] == "not_found_error"


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions"])
def test_json_nested_1000_deep_is_a_400_not_a_500(gw: GatewayProcess, path: str) -> None:
    content = "[" * 1000 + '"deep-json"' + "]" * 1000
    raw = '{"model": "fast-code", "max_tokens": 8, "messages": [{"role": "user", "content": '
    response = httpx.post(
        gw.url + path,
        content=(raw + content + "}]}").encode(),
        headers={"x-api-key": ALICE_KEY, "content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400
    payload = response.json()
    assert "nested more than 64 levels deep" in payload["error"]["message"]
    if path == "/v1/messages":
        assert payload["type"] == "error"
        assert payload["error"]["type"] == "invalid_request_error"
    else:
        assert payload["error"]["code"] == "400"
    assert upstream_with(gw, "deep-json") == []


def ten_megabytes(marker: str) -> str:
    line = "2024-05-01 12:00:00 worker-7 processed batch 1234 in 87 ms, queue depth 3\n"
    filler = line * (10_000_000 // len(line))
    return f"{filler}{marker}: reach the on-call at oncall@corp.example"


def test_a_10_mb_prompt_is_scanned_and_served_not_a_500(gw: GatewayProcess) -> None:
    """A developer pastes a 10 MB log: redacted in the scan pool, served, never a 500."""
    message = anthropic_client(gw).messages.create(
        model="fast-code",
        max_tokens=16,
        messages=[{"role": "user", "content": ten_megabytes("big-anthropic")}],
    )
    assert message.content
    (upstream,) = upstream_with(gw, "big-anthropic")
    text = json.dumps(upstream["body"])
    assert "oncall@corp.example" not in text
    assert "big-anthropic: reach the on-call at [REDACTED_EMAIL]" in text


def test_a_10_mb_chat_completion_is_served_not_a_500(gw: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=ALICE_KEY, max_retries=0, timeout=120)
    completion = client.chat.completions.create(
        model="fast-code",
        messages=[{"role": "user", "content": ten_megabytes("big-openai")}],
    )
    assert completion.choices[0].message.content
    (upstream,) = upstream_with(gw, "big-openai")
    assert "[REDACTED_EMAIL]" in json.dumps(upstream["body"])


def test_gateway_log_has_no_recursion_errors(gw: GatewayProcess) -> None:
    log = Path(gw.log).read_text(errors="replace")
    assert "RecursionError" not in log
    assert "Traceback" not in log
