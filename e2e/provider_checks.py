"""The client-side checks the provider end-to-end modules share.

Each function drives one alias of a rendered gateway (`e2e/rendered_gateway.py`) with a real
SDK against the provider simulator, asserts what every provider must give the client (the
simulator's `Hello from <model>` answer, the tool call it planned, the tool result echoed
back), and returns what the calling test checks on its own side: the tokens the client saw,
or the marker by which `Gateway.upstream` finds the call the simulator received (which
protocol, path, operation and identity it saw differ per module). `alice_tenant` builds the
Tenant and its ModelAliases of such a module.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from e2e.helpers import eventually
from e2e.rendered_gateway import READ_FUNCTION, READ_TOOL, Gateway
from tenantgw.api import ModelAlias, Tenant


class Target(Protocol):
    """One alias of a test's tenant: its single target and that target's catalog price."""

    @property
    def alias(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def price(self) -> tuple[float, float]: ...  # USD per million tokens, in / out


@dataclass(frozen=True)
class Alias:
    alias: str
    provider: str
    model: str
    price: tuple[float, float]


READ_PLAN: dict[str, Any] = {"tool": "Read", "arguments": {"file_path": "/tmp/x.txt"}}
"""The simulator's tool plan: the model asks for Read of this file."""


def alice_tenant(
    name: str,
    uid: str,
    *,
    providers: list[dict[str, Any]],
    catalog: list[dict[str, Any]],
    aliases: Iterable[tuple[str, str, str]],
    default_alias: str,
) -> tuple[Tenant, list[ModelAlias]]:
    """A Tenant with one key `alice`, PII redaction off and one replica, and one single-target
    ModelAlias per (alias, provider, model) in its namespace `tenant-<name>`."""
    tenant = Tenant.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": name, "uid": uid},
            "spec": {
                "providers": providers,
                "catalog": catalog,
                "keys": [{"name": "alice"}],
                "routing": {"defaultAlias": default_alias},
                "compliance": {"piiRedaction": {"mode": "off"}},
                "gateway": {"replicas": 1},
            },
        }
    )
    model_aliases = [
        ModelAlias.model_validate(
            {
                "apiVersion": "tenantgw.io/v1alpha1",
                "kind": "ModelAlias",
                "metadata": {"name": alias, "namespace": f"tenant-{name}"},
                "spec": {"targets": [{"provider": provider, "model": model}]},
            }
        )
        for alias, provider, model in aliases
    ]
    return tenant, model_aliases


def priced(provider: str, model: str, price: tuple[float, float], **extra: Any) -> dict[str, Any]:
    """A catalog entry at `price` (USD per million tokens, in / out)."""
    return {
        "provider": provider,
        "model": model,
        "costTier": "high",
        "pricing": {"inputPerMillion": price[0], "outputPerMillion": price[1]},
        **extra,
    }


def check_anthropic_message(
    gateway: Gateway, alias: str, marker: str, *, model: str, stream: bool
) -> tuple[int, int]:
    """A plain or streamed anthropic SDK message with `marker` is answered by `model`; returns
    the (input, output) tokens the client saw."""
    client = gateway.anthropic()
    body: Any = {
        "model": alias,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": marker}],
    }
    if stream:
        with client.messages.stream(**body) as events:
            kinds = [event.type for event in events]
            msg = events.get_final_message()
        assert kinds[0] == "message_start"
        assert "text" in kinds
    else:
        msg = client.messages.create(**body)
    (block,) = [b for b in msg.content if b.type == "text"]
    assert block.text == f"Hello from {model}"
    assert msg.stop_reason == "end_turn"
    return msg.usage.input_tokens, msg.usage.output_tokens


def check_anthropic_tool_round_trip(gateway: Gateway, alias: str) -> str:
    """The model asks for Read (streamed input_json_delta) and the tool result goes back in a
    plain request; returns the result's marker."""
    gateway.sim.configure(tool_plan=READ_PLAN)
    client = gateway.anthropic()
    prompt = "read it " + secrets.token_hex(3)
    with client.messages.stream(
        model=alias,
        max_tokens=1024,
        tools=[READ_TOOL],  # type: ignore[list-item]
        messages=[{"role": "user", "content": prompt}],
    ) as events:
        kinds = [event.type for event in events]
        first = events.get_final_message()
    assert "input_json" in kinds
    (use,) = [block for block in first.content if block.type == "tool_use"]
    assert (use.name, use.input) == ("Read", READ_PLAN["arguments"])
    assert first.stop_reason == "tool_use"
    marker = "contents-" + secrets.token_hex(4)
    answer = client.messages.create(
        model=alias,
        max_tokens=1024,
        tools=[READ_TOOL],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": marker}],
            },
        ],
    )
    (block,) = [b for b in answer.content if b.type == "text"]
    assert block.text == f"Tool said: {marker}"
    return marker


def check_openai_chat(
    gateway: Gateway, alias: str, marker: str, *, model: str, stream: bool
) -> tuple[int, int]:
    """A plain or streamed (usage included) chat completion with `marker` is answered by
    `model`; returns the (prompt, completion) tokens the client saw."""
    client = gateway.openai()
    messages: Any = [{"role": "user", "content": marker}]
    usage: Any
    if stream:
        chunks = list(
            client.chat.completions.create(
                model=alias,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = next(c.usage for c in reversed(chunks) if c.usage)
    else:
        done = client.chat.completions.create(model=alias, messages=messages)
        text = done.choices[0].message.content or ""
        usage = done.usage
    assert text == f"Hello from {model}"
    assert usage is not None
    return usage.prompt_tokens, usage.completion_tokens


def check_openai_tool_round_trip(gateway: Gateway, alias: str, *, stream: bool) -> str:
    """The model calls Read (plain, or streamed deltas joined by the client) and the tool's
    result goes back in a plain request; returns the result's marker."""
    gateway.sim.configure(tool_plan=READ_PLAN)
    client = gateway.openai()
    messages: Any = [{"role": "user", "content": "tools " + secrets.token_hex(4)}]
    if stream:
        name, args, call_id, finish = "", "", "", None
        for chunk in client.chat.completions.create(
            model=alias, messages=messages, tools=[READ_FUNCTION], stream=True
        ):
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for delta in choice.delta.tool_calls or []:
                    call_id = call_id or (delta.id or "")
                    if delta.function is not None:
                        name += delta.function.name or ""
                        args += delta.function.arguments or ""
    else:
        done = client.chat.completions.create(model=alias, messages=messages, tools=[READ_FUNCTION])
        (made,) = done.choices[0].message.tool_calls or []
        assert made.type == "function"
        name, args, call_id = made.function.name, made.function.arguments, made.id
        finish = done.choices[0].finish_reason
    assert (name, json.loads(args or "null")) == ("Read", READ_PLAN["arguments"])
    assert call_id
    assert finish == "tool_calls"
    result = "result-" + secrets.token_hex(4)
    call: Any = {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
    answer = client.chat.completions.create(
        model=alias,
        messages=[
            *messages,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call_id, "content": result},
        ],
        tools=[READ_FUNCTION],
    )
    assert answer.choices[0].message.content == f"Tool said: {result}"
    return result


def check_ledger_row(
    gateway: Gateway, since: float, target: Target, *, stream: bool, usage: tuple[int, int]
) -> dict[str, Any]:
    """The one ledger row since `since`: alice's, of the target's alias, provider and model,
    the tokens the client saw (`usage`), priced at the target's catalog price."""
    (row,) = eventually(lambda: gateway.rows(since), what="the ledger row")
    assert row["key_name"] == "alice"
    assert (row["alias"], row["provider"], row["provider_model"]) == (
        target.alias,
        target.provider,
        target.model,
    )
    assert row["status"] == "success"
    assert row["stream"] is stream
    assert (row["input_tokens"], row["output_tokens"]) == usage
    assert usage[0] > 0
    assert usage[1] > 0
    expected = (usage[0] * target.price[0] + usage[1] * target.price[1]) / 1e6
    assert float(row["cost_usd"]) == pytest.approx(expected, rel=1e-6, abs=1e-12)
    return dict(row)
