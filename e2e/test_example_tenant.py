"""The brief's example tenant, end to end: operator → gateway → real SDK clients → ledger.

Every request here goes through a gateway rendered by the operator from examples/ and run from
exactly its ConfigMap and Secrets; the provider simulator stands in for OpenRouter and OpenAI.
"""

from __future__ import annotations

import time
from typing import Any

import anthropic
import openai
import psycopg
import pytest

from e2e.gateway_fixture import ExampleGateway

pytestmark = pytest.mark.e2e


COLUMNS = (
    "request_id, key_name, requested_model, alias, provider, status, input_tokens,"
    " output_tokens, cost_usd, list_cost_usd, stream"
)


def usage_rows(gw: ExampleGateway, since: float) -> list[tuple[Any, ...]]:
    with psycopg.connect(gw.postgres_dsn, connect_timeout=5) as conn:
        return conn.execute(
            f"select {COLUMNS} from usage where ts >= to_timestamp(%s) order by ts",  # noqa: S608
            (since,),
        ).fetchall()


def wait_rows(
    gw: ExampleGateway, count: int, since: float, model: str | None = None
) -> list[tuple[Any, ...]]:
    """Usage rows written after `since` (epoch), once there are at least `count` of them."""
    deadline = time.monotonic() + 30
    rows: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline:
        rows = [r for r in usage_rows(gw, since) if model is None or r[2] == model]
        if len(rows) >= count:
            return rows
        time.sleep(0.3)
    pytest.fail(f"expected {count} usage rows since {since}, found {len(rows)}")


def test_anthropic_sdk_messages_through_the_example_tenant(example_gateway: ExampleGateway) -> None:
    """US-001: a developer's Anthropic client asks for a Claude name and is served by fast-code."""
    gw = example_gateway
    since = time.time()  # rows end after this; earlier tests' requests ended before it
    client = anthropic.Anthropic(base_url=gw.url, api_key=gw.keys["alice"], max_retries=0)
    reply = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "write a haiku about queues"}],
    )
    assert reply.content[0].type == "text"
    assert reply.content[0].text
    with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "stream please"}],
    ) as stream:
        streamed = "".join(stream.text_stream)
    assert streamed
    # Only this test's rows: Claude Code (another test) may still be sending background calls.
    rows = wait_rows(gw, 2, since, model="claude-sonnet-4-5")
    assert len(rows) == 2
    assert {r[1] for r in rows} == {"alice"}
    assert {r[3] for r in rows} == {"fast-code"}
    assert {r[5] for r in rows} == {"success"}
    assert {r[10] for r in rows} == {False, True}
    assert all(r[6] > 0 and r[7] > 0 for r in rows)
    assert all(r[9] is not None and r[9] > 0 for r in rows), "no Anthropic list cost recorded"


def test_anthropic_sdk_tool_call_round_trip(example_gateway: ExampleGateway) -> None:
    """US-001: tools work through the gateway, as Claude Code uses them."""
    gw = example_gateway
    client = anthropic.Anthropic(base_url=gw.url, api_key=gw.keys["alice"], max_retries=0)
    tools: list[Any] = [
        {
            "name": "read_file",
            "description": "Read a file",
            "input_schema": {
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            },
        }
    ]
    first = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=128,
        tools=tools,
        messages=[{"role": "user", "content": "read README.md"}],
    )
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "read_file"
    second = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=128,
        tools=tools,
        messages=[
            {"role": "user", "content": "read README.md"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "tenantgw rocks"}
                ],
            },
        ],
    )
    text = "".join(b.text for b in second.content if b.type == "text")
    assert "tenantgw rocks" in text


def test_openai_sdk_chat_completions_through_the_example_tenant(
    example_gateway: ExampleGateway,
) -> None:
    """US-001: OpenAI clients use the same tenant, key and aliases."""
    gw = example_gateway
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.keys["ci"], max_retries=0)
    reply = client.chat.completions.create(
        model="fast-code", messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.choices[0].message.content


def test_routing_rules_of_the_example_send_haiku_calls_to_documentation(
    example_gateway: ExampleGateway,
) -> None:
    """US-002: Claude Code's background (haiku) calls go to the cheap documentation alias."""
    gw = example_gateway
    since = time.time()
    client = anthropic.Anthropic(base_url=gw.url, api_key=gw.keys["alice"], max_retries=0)
    client.messages.create(
        model="claude-haiku-4-5-20251001",
        max_tokens=16,
        messages=[{"role": "user", "content": "title for this chat"}],
    )

    def haiku_rows() -> list[tuple[Any, ...]]:
        return [r for r in usage_rows(gw, since) if r[2] == "claude-haiku-4-5-20251001"]

    deadline = time.monotonic() + 30
    while not haiku_rows() and time.monotonic() < deadline:
        time.sleep(0.3)
    rows = haiku_rows()
    assert len(rows) == 1
    assert rows[0][3] == "documentation"


def test_another_tenants_key_and_a_wrong_key_are_refused_in_the_clients_shape(
    example_gateway: ExampleGateway,
) -> None:
    """Isolation: a key from elsewhere gets 401 in the client's own error shape, never a 500."""
    gw = example_gateway
    for key in ("sk-tgw-not-a-key-of-this-tenant", ""):
        client = anthropic.Anthropic(base_url=gw.url, api_key=key or "x", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as raised:
            client.messages.create(
                model="fast-code", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
            )
        body = raised.value.body
        assert isinstance(body, dict)
        assert body.get("type") == "error"
        assert body["error"]["type"] == "authentication_error"
    oa = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="sk-tgw-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        oa.chat.completions.create(model="fast-code", messages=[{"role": "user", "content": "hi"}])


def test_count_tokens_answers(example_gateway: ExampleGateway) -> None:
    """Claude Code calls /v1/messages/count_tokens; the gateway answers it."""
    gw = example_gateway
    client = anthropic.Anthropic(base_url=gw.url, api_key=gw.keys["alice"], max_retries=0)
    count = client.messages.count_tokens(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "count these words"}]
    )
    assert count.input_tokens > 0


def test_every_request_leaves_exactly_one_usage_row(example_gateway: ExampleGateway) -> None:
    """US-003: one request, one ledger row, whether a retry rescued it or every provider failed."""
    gw = example_gateway
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=gw.keys["ci"], max_retries=0)
    since = time.time()
    try:
        gw.simulator.configure(fail_next=["500"])  # the first attempt fails, the retry answers
        client.chat.completions.create(
            model="fast-code", messages=[{"role": "user", "content": "rescued"}]
        )
        down = {m: "500" for m in ("qwen/qwen3-coder", "gpt-4o-mini", "gpt-5-codex")}
        gw.simulator.configure(fail_models=down)  # fast-code and its fallback both fail
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(
                model="fast-code", messages=[{"role": "user", "content": "doomed"}]
            )
    finally:
        gw.simulator.reset()

    def ci_rows() -> list[tuple[Any, ...]]:
        return [r for r in usage_rows(gw, since) if r[1] == "ci"]

    deadline = time.monotonic() + 30
    while len(ci_rows()) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    time.sleep(1)  # a duplicate would land within the ledger's flush interval
    rows = ci_rows()
    assert sorted(r[5] for r in rows) == ["error", "success"], rows
    assert len({r[0] for r in rows}) == 2


def test_a_key_over_its_budget_is_refused_naming_the_policy(
    example_gateway: ExampleGateway, kube: Any
) -> None:
    """US-003: a BudgetPolicy applied with kubectl reaches the running gateway and blocks the key
    once it is spent, with a final 402 that names the policy, its limit and when it resets."""
    from e2e.helpers import K8s, eventually

    gw = example_gateway
    k8s = K8s(kube)
    k8s.apply(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "BudgetPolicy",
            "metadata": {"name": "ci-cap", "namespace": gw.namespace},
            "spec": {
                "scope": {"kind": "Key", "name": "ci"},
                "period": "daily",
                "limitUSD": 0.000001,
                "onExceeded": {"action": "block"},
            },
        }
    )
    client = anthropic.Anthropic(base_url=gw.url, api_key=gw.keys["ci"], max_retries=0)
    try:

        def blocked() -> anthropic.APIStatusError | None:
            try:
                client.messages.create(
                    model="fast-code", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
                )
            except anthropic.APIStatusError as exc:
                if exc.status_code == 402:
                    return exc
                raise
            return None

        # The operator renders the policy into the ConfigMap; the files reach the process the
        # way the kubelet updates a pod's volume, and the gateway reloads them.
        exc = eventually(blocked, 60, "the ci key to be blocked by BudgetPolicy ci-cap")
        body = exc.body
        assert isinstance(body, dict)
        assert body["error"]["type"] == "billing_error"
        assert exc.response.headers["x-should-retry"] == "false"
        assert "ci-cap" in body["error"]["message"]
        assert "UTC" in body["error"]["message"]
        alice = anthropic.Anthropic(base_url=gw.url, api_key=gw.keys["alice"], max_retries=0)
        alice.messages.create(
            model="fast-code", max_tokens=16, messages=[{"role": "user", "content": "still fine"}]
        )
    finally:
        k8s.delete("tenantgw.io/v1alpha1", "BudgetPolicy", "ci-cap", gw.namespace)
