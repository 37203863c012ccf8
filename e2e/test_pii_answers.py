"""PII in the model's answer, and data residency proven per request: a real gateway process
with the tenant's own Redis ACL user, Postgres role and audit schema, the provider simulator
(OpenAI-compatible and Anthropic protocols), the real anthropic and openai SDKs and the real
Claude Code CLI.

User stories:
* a tenant with `piiRedaction: redact` never shows its developers an e-mail address or card
  number the model wrote, in text or in a tool call, streamed or not, through either API; the
  audit record counts what was redacted from the answer;
* a request for a model whose every target lies outside `dataResidency.allowedRegions` is
  refused in the client's own error shape naming the rule; an allowed one's audit record names
  the region that served it; a fallback into a disallowed region (a stale config.yaml that
  the rules do not know) is skipped, never served.

Aliases (simulator targets):
    plain   openai-compatible, us-east-1
    claude  anthropic protocol, us-east-1
    far     openai-compatible, eu-west-1 (outside the tenant's regions)
    leaky   openai-compatible, us-east-1; config.yaml (not the rules) falls back to far
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from e2e.claude import ClaudeCodeError, run_claude, seed_home
from e2e.fixtures import Services
from e2e.gateway_launch import launch_gateway
from e2e.hand_written_gateway import gateway_env, write_tenant_files
from e2e.helpers import eventually
from e2e.provider_sim import SimulatorHandle, start_simulator
from tenantgw.cli import audit as cli
from tenantgw.tenancy import Provisioner

pytestmark = pytest.mark.e2e

MASTER_KEY = "sk-tgw-pa-master-" + secrets.token_hex(6)
KEY = "sk-tgw-pa-alice-" + secrets.token_hex(6)
PROVIDER_KEY = "sk-sim-pa-" + secrets.token_hex(6)
PROVIDER_ENV = "TENANTGW_PROVIDER_SIM_API_KEY"
EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"

# alias -> (litellm model, protocol, region)
ALIASES: dict[str, tuple[str, str, str]] = {
    "plain": ("sim-plain", "openai", "us-east-1"),
    "claude": ("claude-sonnet-4-5", "anthropic", "us-east-1"),
    "far": ("sim-far", "openai", "eu-west-1"),
    "leaky": ("sim-leaky", "openai", "us-east-1"),
}


def write_files(directory: Path, tenant: str, sim: SimulatorHandle, sim_url: str) -> Path:
    def params(upstream: str, protocol: str) -> dict[str, Any]:
        if protocol == "anthropic":
            return {"model": f"anthropic/{upstream}", "api_base": sim.root_url}
        return {"model": f"openai/{upstream}", "api_base": sim_url}

    config = {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {
                    **params(upstream, protocol),
                    "api_key": f"os.environ/{PROVIDER_ENV}",
                    "weight": 1,
                },
                "model_info": {
                    "id": f"{name}-0",
                    "input_cost_per_token": 3.0e-07,
                    "output_cost_per_token": 1.2e-06,
                    "tenantgw": {
                        "alias": name,
                        "provider": "sim",
                        "provider_type": "anthropic" if protocol == "anthropic" else "openai",
                        "provider_model": upstream,
                        "region": region,
                        "cost_tier": "medium",
                    },
                },
            }
            for name, (upstream, protocol, region) in ALIASES.items()
        ],
        "litellm_settings": {
            "drop_params": True,
            "use_chat_completions_url_for_anthropic_messages": True,
            "num_retries": 0,
            "request_timeout": 60,
            # A stale config.yaml: the rules (which the gateway checks) declare no fallback.
            "fallbacks": [{"leaky": ["far"]}],
            "callbacks": ["tenantgw.gateway.callbacks.handler"],
        },
        "general_settings": {
            "master_key": "os.environ/LITELLM_MASTER_KEY",
            "custom_auth": "tenantgw.gateway.auth.user_api_key_auth",
        },
        "router_settings": {"routing_strategy": "simple-shuffle"},
    }
    rules = {
        "tenant": tenant,
        "namespace": f"tenant-{tenant}",
        "default_alias": None,
        "rules": [],
        "aliases": {
            name: {
                "cost_tier": "medium",
                "client_names": [],
                "fallbacks": [],
                "targets": [
                    {
                        "id": f"{name}-0",
                        "provider": "sim",
                        "provider_type": "anthropic" if protocol == "anthropic" else "openai",
                        "model": upstream,
                        "region": region,
                        "weight": 1,
                    }
                ],
            }
            for name, (upstream, protocol, region) in ALIASES.items()
        },
        "keys": [{"name": "alice"}],
        "compliance": {
            "pii_redaction": {"mode": "redact", "entities": []},
            "audit": {"enabled": True, "bodies": "redacted"},
            "data_residency": {"allowed_regions": ["us-east-1"]},
        },
    }
    return write_tenant_files(directory, config, rules, {"alice": KEY})


@dataclass
class Gateway:
    url: str
    sim: SimulatorHandle
    tenant: str
    admin_dsn: str
    log: Path
    rules_file: Path

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=KEY, max_retries=0, timeout=60)

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=KEY, max_retries=0, timeout=60)

    def records(self, since: datetime) -> list[dict[str, Any]]:
        out = io.StringIO()
        asyncio.run(
            cli.export(cli.admin_for(self.admin_dsn), self.tenant, out, since=since, bodies=True)
        )
        return [json.loads(line) for line in out.getvalue().splitlines()]

    def record_of(self, since: datetime, marker: str) -> dict[str, Any]:
        """The audit record of the one request whose stored body holds `marker`."""

        def find() -> dict[str, Any] | None:
            for record in self.records(since):
                if record.get("kind") == "request" and marker in json.dumps(record.get("body")):
                    return record
            return None

        found: dict[str, Any] = eventually(find, 30, f"the audit record of {marker}")
        return found

    def refused_record(self, since: datetime, model: str) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for record in self.records(since):
                if record.get("decision") == "refused" and record.get("requested_model") == model:
                    return record
            return None

        found: dict[str, Any] = eventually(find, 30, f"the refused request for {model}")
        return found


@pytest.fixture(scope="module")
def gateway(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    sim_url, sim = start_simulator(api_key=PROVIDER_KEY)
    workdir = tmp_path_factory.mktemp("pii-answers-gateway")
    tenant = f"pa-{uuid.uuid4().hex[:8]}"
    provisioner = Provisioner(services.postgres_dsn, services.redis_url)
    storage = asyncio.run(provisioner.ensure(tenant))
    try:
        config_file = write_files(workdir, tenant, sim, sim_url)
        env = {
            "LITELLM_MASTER_KEY": MASTER_KEY,
            PROVIDER_ENV: PROVIDER_KEY,
            **gateway_env(workdir, tenant, storage.redis_url, storage.postgres_dsn),
        }
        with launch_gateway(workdir, config_file, env) as launched:
            yield Gateway(
                launched.url,
                sim,
                tenant,
                services.postgres_dsn,
                launched.log,
                workdir / "config" / "tenantgw.json",
            )
    finally:
        sim.stop()
        asyncio.run(provisioner.remove(tenant))
        asyncio.run(provisioner.close())


@pytest.fixture(autouse=True)
def _fresh(gateway: Gateway) -> Iterator[None]:
    gateway.sim.reset()
    yield
    gateway.sim.reset()


def _marker() -> str:
    return f"pa-{uuid.uuid4().hex[:10]}"


def _since() -> datetime:
    return datetime.now(UTC) - timedelta(seconds=1)


ANSWER = f"Sure. Write to {EMAIL} and charge card {CARD} today."
REDACTED = "Sure. Write to [REDACTED_EMAIL] and charge card [REDACTED_CREDIT_CARD] today."


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize("alias", ["plain", "claude"])
def test_the_anthropic_sdk_never_sees_pii_the_model_wrote(gateway: Gateway, alias: str) -> None:
    gateway.sim.configure(reply=ANSWER)
    since, marker = _since(), _marker()
    client = gateway.anthropic()
    message = client.messages.create(
        model=alias, max_tokens=256, messages=[{"role": "user", "content": f"hi {marker}"}]
    )
    text = "".join(b.text for b in message.content if b.type == "text")
    assert text == REDACTED
    with client.messages.stream(
        model=alias, max_tokens=256, messages=[{"role": "user", "content": f"again {marker}"}]
    ) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == REDACTED
    assert final.stop_reason == "end_turn"
    record = gateway.record_of(since, f"hi {marker}")
    assert record["pii_response"] == {"EMAIL": 1, "CREDIT_CARD": 1}
    assert record["region"] == "us-east-1"
    stored = json.dumps(gateway.records(since))
    assert EMAIL not in stored
    assert CARD not in stored


@pytest.mark.parametrize("alias", ["plain", "claude"])
def test_a_tool_call_input_with_pii_arrives_redacted_and_valid(
    gateway: Gateway, alias: str
) -> None:
    arguments = {"to": EMAIL, "note": f"card {CARD}", "count": 2}
    directive = f"[[sim:tool send_mail {json.dumps(arguments)}]]"
    tools = [
        {
            "name": "send_mail",
            "description": "Send a mail.",
            "input_schema": {"type": "object", "properties": {"to": {"type": "string"}}},
        }
    ]
    expected = {"to": "[REDACTED_EMAIL]", "note": "card [REDACTED_CREDIT_CARD]", "count": 2}
    client = gateway.anthropic()
    # The directive is in the prompt, redacted on the way up: the simulator is told the plan.
    gateway.sim.configure(tool_plan={"tool": "send_mail", "arguments": arguments})
    message = client.messages.create(
        model=alias,
        max_tokens=256,
        tools=tools,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": f"mail her {directive}"}],
    )
    (call,) = [b for b in message.content if b.type == "tool_use"]
    assert call.input == expected
    with client.messages.stream(
        model=alias,
        max_tokens=256,
        tools=tools,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "mail her"}],
    ) as stream:
        final = stream.get_final_message()
    (call,) = [b for b in final.content if b.type == "tool_use"]
    assert call.input == expected
    assert final.stop_reason == "tool_use"


def test_the_openai_sdk_never_sees_pii_in_content_or_tool_arguments(gateway: Gateway) -> None:
    client = gateway.openai()
    gateway.sim.configure(reply=ANSWER)
    reply = client.chat.completions.create(
        model="plain", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == REDACTED
    stream = client.chat.completions.create(
        model="plain", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    content = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert content == REDACTED

    arguments = {"to": EMAIL, "card": CARD}
    gateway.sim.configure(tool_plan={"tool": "send_mail", "arguments": arguments})
    tools = [
        {
            "type": "function",
            "function": {
                "name": "send_mail",
                "parameters": {"type": "object", "properties": {"to": {"type": "string"}}},
            },
        }
    ]
    expected = {"to": "[REDACTED_EMAIL]", "card": "[REDACTED_CREDIT_CARD]"}
    reply = client.chat.completions.create(
        model="plain",
        messages=[{"role": "user", "content": "mail"}],
        tools=tools,  # type: ignore[arg-type]
    )
    (call,) = reply.choices[0].message.tool_calls or []
    assert json.loads(call.function.arguments) == expected  # type: ignore[union-attr]
    calls = client.chat.completions.create(
        model="plain",
        messages=[{"role": "user", "content": "mail"}],
        tools=tools,  # type: ignore[arg-type]
        stream=True,
    )
    parts: dict[int, str] = {}
    names: dict[int, str] = {}
    for piece in calls:
        assert isinstance(piece, ChatCompletionChunk)
        for choice in piece.choices:
            for delta in choice.delta.tool_calls or ():
                parts[delta.index] = parts.get(delta.index, "") + (
                    delta.function.arguments or "" if delta.function else ""
                )
                if delta.function and delta.function.name:
                    names[delta.index] = delta.function.name
    assert names == {0: "send_mail"}
    assert json.loads(parts[0]) == expected


def test_claude_code_shows_the_developer_a_redacted_tool_call_and_completes_the_turn(
    gateway: Gateway, tmp_path: Path
) -> None:
    """The model asks to read a file in a folder named by an e-mail address: Claude Code gets
    the call with `[REDACTED_EMAIL]` in the path, reads that file and finishes the turn."""
    project, home = tmp_path / "project", tmp_path / "home"
    (project / "contacts" / "[REDACTED_EMAIL]").mkdir(parents=True)
    home.mkdir()
    token = f"tgw-{secrets.token_hex(6)}"
    redacted_file = project / "contacts" / "[REDACTED_EMAIL]" / "notes.txt"
    redacted_file.write_text(f"The codename is {token}.\n")
    raw_path = str(project / "contacts" / EMAIL / "notes.txt")
    seed_home(home, [project])
    gateway.sim.configure(tool_plan={"tool": "Read", "arguments": {"file_path": raw_path}})
    env = {"ANTHROPIC_BASE_URL": gateway.url, "ANTHROPIC_AUTH_TOKEN": KEY}
    try:
        run = run_claude(
            "Read the contact file and tell me the codename.",
            project=project,
            home=home,
            gateway_env=env,
            model="plain",
        )
    except ClaudeCodeError as exc:
        pytest.fail(str(exc), pytrace=False)
    assert run.returncode == 0, run.describe()
    assert run.result["num_turns"] >= 2, run.describe()
    assert token in run.result["result"], run.describe()
    transcripts = "".join(p.read_text() for p in (home / ".claude").rglob("*.jsonl"))
    assert "[REDACTED_EMAIL]/notes.txt" in transcripts
    assert EMAIL not in transcripts


# --------------------------------------------------------------------------- residency


def test_a_model_served_only_outside_the_regions_is_refused_in_each_clients_shape(
    gateway: Gateway,
) -> None:
    since, marker = _since(), _marker()
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        gateway.anthropic().messages.create(
            model="far", max_tokens=32, messages=[{"role": "user", "content": marker}]
        )
    body = caught.value.body if isinstance(caught.value.body, dict) else {}
    assert body.get("type") == "error"
    assert body["error"]["type"] == "permission_error"
    assert "data residency" in caught.value.message
    assert "allowed regions: us-east-1" in caught.value.message
    assert "eu-west-1" in caught.value.message
    with pytest.raises(openai.PermissionDeniedError) as refused:
        gateway.openai().chat.completions.create(
            model="far", messages=[{"role": "user", "content": marker}]
        )
    assert "data residency" in refused.value.message
    assert not [r for r in gateway.sim.requests() if marker in json.dumps(r.get("body"))]
    record = gateway.refused_record(since, "far")
    assert record["reason"] == "residency"
    assert record["status"] == 403
    assert record["region"] is None


def test_a_served_request_names_its_region_and_a_fallback_outside_is_skipped(
    gateway: Gateway,
) -> None:
    since, marker = _since(), _marker()
    reply = gateway.openai().chat.completions.create(
        model="plain", messages=[{"role": "user", "content": f"ok {marker}"}]
    )
    assert reply.choices[0].message.content == "Hello from sim-plain"
    record = gateway.record_of(since, f"ok {marker}")
    assert record["decision"] == "admitted"
    assert (record["alias"], record["served_alias"]) == ("plain", "plain")
    assert record["region"] == "us-east-1"

    gateway.sim.configure(fail_models={"sim-leaky": "500"})
    with pytest.raises(openai.APIStatusError):
        gateway.openai().chat.completions.create(
            model="leaky", messages=[{"role": "user", "content": f"leak {marker}"}]
        )
    asked = [
        r.get("body", {}).get("model")
        for r in gateway.sim.requests()
        if f"leak {marker}" in json.dumps(r.get("body"))
    ]
    assert "sim-leaky" in asked
    assert "sim-far" not in asked, "a fallback outside the tenant's regions served"
    record = gateway.record_of(since, f"leak {marker}")
    assert record["outcome"] == "error"
    assert record["region"] != "eu-west-1"
    assert "fallback from leaky to far not used: outside the tenant's data residency" in (
        gateway.log.read_text(errors="replace")
    )


# --------------------------------------------------------------------------- block mode


def _set_pii_mode(gateway: Gateway, mode: str) -> None:
    """Rewrite the rules file as a ConfigMap update does (a new file swapped in)."""
    rules = json.loads(gateway.rules_file.read_text())
    rules["compliance"]["pii_redaction"]["mode"] = mode
    staged = gateway.rules_file.with_suffix(".new")
    staged.write_text(json.dumps(rules, indent=2))
    staged.replace(gateway.rules_file)


@pytest.fixture
def blocking(gateway: Gateway) -> Iterator[Gateway]:
    """The same gateway with `piiRedaction.mode: block` (reloaded from disk), then back."""
    _set_pii_mode(gateway, "block")

    def refuses() -> bool:
        try:
            gateway.openai().chat.completions.create(
                model="plain", messages=[{"role": "user", "content": f"probe {EMAIL}"}]
            )
        except openai.BadRequestError:
            return True
        return False

    eventually(refuses, 30, "the gateway to reload the rules in block mode")
    yield gateway
    _set_pii_mode(gateway, "redact")

    def redacts() -> bool:
        try:
            gateway.openai().chat.completions.create(
                model="plain", messages=[{"role": "user", "content": f"probe {EMAIL}"}]
            )
        except openai.BadRequestError:
            return False
        return True

    eventually(redacts, 30, "the gateway to reload the rules in redact mode")


def test_block_mode_refuses_a_prompt_with_pii_in_each_clients_shape_and_audits_it(
    blocking: Gateway,
) -> None:
    since, marker = _since(), _marker()
    prompt: Any = [{"role": "user", "content": f"{marker} mail {EMAIL}"}]
    with pytest.raises(anthropic.BadRequestError) as caught:
        blocking.anthropic().messages.create(model="plain", max_tokens=32, messages=prompt)
    body = caught.value.body if isinstance(caught.value.body, dict) else {}
    assert body["error"]["type"] == "invalid_request_error"
    assert "PII policy: it contains EMAIL" in caught.value.message
    assert EMAIL not in caught.value.message
    # Streamed: refused before any event.
    stream = blocking.anthropic().messages.stream(model="claude", max_tokens=32, messages=prompt)
    with pytest.raises(anthropic.BadRequestError), stream as s:
        list(s.text_stream)
    with pytest.raises(openai.BadRequestError) as refused:
        blocking.openai().chat.completions.create(model="plain", messages=prompt)
    assert "PII policy: it contains EMAIL" in refused.value.message
    assert not [r for r in blocking.sim.requests() if marker in json.dumps(r.get("body"))]
    record = blocking.refused_record(since, "plain")
    assert (record["decision"], record["reason"], record["status"]) == ("refused", "pii_block", 400)
    assert EMAIL not in json.dumps(blocking.records(since))


def test_block_mode_withholds_an_answer_with_pii_streamed_or_not_with_a_clean_sdk_error(
    blocking: Gateway,
) -> None:
    """What the client gets: non-streamed, a 400 in its shape; streamed, an `error` event
    (Anthropic: `event: error` with the error object; OpenAI: a `data: {"error": ...}` chunk)
    that the SDK raises as an API error, never a parse failure and never the entity."""
    blocking.sim.configure(reply=ANSWER)
    since, marker = _since(), _marker()
    client = blocking.anthropic()
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="plain", max_tokens=256, messages=[{"role": "user", "content": f"a {marker}"}]
        )
    assert "answer was withheld" in caught.value.message
    assert "CREDIT_CARD, EMAIL" in caught.value.message
    for alias in ("plain", "claude"):
        seen: list[str] = []
        with (
            pytest.raises(anthropic.APIError) as streamed,
            client.messages.stream(
                model=alias, max_tokens=256, messages=[{"role": "user", "content": f"b {marker}"}]
            ) as stream,
        ):
            seen.extend(stream.text_stream)
        assert "answer was withheld" in streamed.value.message, alias
        assert EMAIL not in "".join(seen)
    seen_chunks: list[str] = []
    with pytest.raises(openai.APIError) as oa:  # noqa: PT012
        for chunk in blocking.openai().chat.completions.create(
            model="plain", stream=True, messages=[{"role": "user", "content": f"c {marker}"}]
        ):
            seen_chunks.extend(c.delta.content or "" for c in chunk.choices)
    assert "answer was withheld" in oa.value.message
    assert EMAIL not in "".join(seen_chunks)
    record = blocking.record_of(since, f"a {marker}")
    assert record["response_withheld"] is True
    assert record["pii_response"] == {"EMAIL": 1, "CREDIT_CARD": 1}
    assert EMAIL not in json.dumps(blocking.records(since))


def test_the_audit_record_of_a_withheld_openai_stream_says_it_was_withheld(
    blocking: Gateway,
) -> None:
    blocking.sim.configure(reply=ANSWER)
    since, marker = _since(), _marker()
    with pytest.raises(openai.APIError):
        for _ in blocking.openai().chat.completions.create(
            model="plain", stream=True, messages=[{"role": "user", "content": f"s {marker}"}]
        ):
            pass
    assert blocking.record_of(since, f"s {marker}")["response_withheld"] is True


def test_the_audit_record_of_a_withheld_messages_stream_says_it_was_withheld(
    blocking: Gateway,
) -> None:
    blocking.sim.configure(reply=ANSWER)
    since, marker = _since(), _marker()
    answer = blocking.anthropic().messages.stream(
        model="plain", max_tokens=256, messages=[{"role": "user", "content": f"m {marker}"}]
    )
    with pytest.raises(anthropic.APIError), answer as stream:
        list(stream.text_stream)
    assert blocking.record_of(since, f"m {marker}")["response_withheld"] is True
