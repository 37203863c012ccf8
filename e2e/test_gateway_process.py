"""A tenant's gateway process (`python -m tenantgw.gateway`) with real Anthropic and OpenAI clients.

One gateway per module, started from hand-written config.yaml, tenantgw.json and keys.json in
the shapes the operator renders, in front of the provider simulator. Each test names the user
story it proves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import yaml

from e2e.gateway_launch import launch_gateway
from e2e.provider_sim import SimulatorHandle, start_simulator

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
TENANT = "eng"
NAMESPACE = "tenant-eng"
MASTER_KEY = "sk-tgw-e2e-master-4f9c1d"
ALICE_KEY = "sk-tgw-e2e-alice-7b2e90"
EXPIRED_KEY = "sk-tgw-e2e-old-11aa22"
PROVIDER_KEY = "sk-sim-provider-e2e"
PROVIDER_ENV = "TENANTGW_PROVIDER_SIM_API_KEY"
MAX_BODY_BYTES = 256 * 1024

# alias -> (upstream model, cost tier, client names, fallbacks)
ALIASES: dict[str, tuple[str, str, list[str], list[str]]] = {
    "fast-code": ("sim-fast", "medium", ["claude-sonnet-4-5", "claude-sonnet-4-5-*"], []),
    "reasoning": ("sim-reasoning", "high", ["claude-opus-4-1"], []),
    "documentation": ("sim-docs", "low", [], ["fast-code"]),
    "refactoring": ("sim-refactor", "high", [], ["reasoning"]),
}


def write_gateway_files(directory: Path, sim_url: str) -> tuple[Path, Path, Path]:
    """config.yaml, tenantgw.json and keys.json as render/ writes them for tenant `eng`."""
    model_list = []
    for name, (upstream, tier, _, _) in ALIASES.items():
        model_list.append(
            {
                "model_name": name,
                "litellm_params": {
                    "model": f"openai/{upstream}",
                    "api_base": sim_url,
                    "api_key": f"os.environ/{PROVIDER_ENV}",
                    "weight": 1,
                },
                "model_info": {
                    "id": f"{name}-0",
                    "input_cost_per_token": 3.0e-07,
                    "output_cost_per_token": 1.2e-06,
                    "tenantgw": {"alias": name, "provider": "sim", "cost_tier": tier},
                },
            }
        )
    config = {
        "model_list": model_list,
        "litellm_settings": {
            "drop_params": True,
            "use_chat_completions_url_for_anthropic_messages": True,
            "num_retries": 0,
            "request_timeout": 60,
            "fallbacks": [{name: spec[3]} for name, spec in ALIASES.items() if spec[3]],
            "callbacks": ["tenantgw.gateway.callbacks.handler"],
        },
        "general_settings": {
            "master_key": "os.environ/LITELLM_MASTER_KEY",
            "custom_auth": "tenantgw.gateway.auth.user_api_key_auth",
        },
        "router_settings": {
            "routing_strategy": "simple-shuffle",
            "model_group_alias": {"claude-sonnet-4-5": "fast-code", "claude-opus-4-1": "reasoning"},
        },
    }
    rules = {
        "tenant": TENANT,
        "namespace": NAMESPACE,
        "default_alias": None,
        "rules": [
            {
                "match": {"model": "claude-haiku-*", "prompt_prefix": None, "task": None},
                "alias": "documentation",
            },
            {
                "match": {"model": None, "prompt_prefix": "refactor", "task": None},
                "alias": "refactoring",
            },
        ],
        "aliases": {
            name: {
                "cost_tier": tier,
                "client_names": names,
                "fallbacks": fallbacks,
                "targets": [
                    {
                        "id": f"{name}-0",
                        "provider": "sim",
                        "provider_type": "openai-compatible",
                        "model": upstream,
                        "region": "us-east-1",
                        "weight": 1,
                        "max_tokens": None,
                    }
                ],
            }
            for name, (upstream, tier, names, fallbacks) in ALIASES.items()
        },
        "keys": [{"name": "alice", "rpm": None, "tpm": None}],
        "limits": {"rpm": None, "tpm": None, "max_parallel_requests": None},
        "compliance": {
            "pii_redaction": {
                "mode": "redact",
                "entities": [
                    "EMAIL",
                    "PHONE",
                    "CREDIT_CARD",
                    "US_SSN",
                    "IBAN",
                    "IP_ADDRESS",
                    "SECRET",
                ],
            },
            "audit": {"enabled": True, "bodies": "redacted", "retention_days": 30},
            "data_residency": {"allowed_regions": ["us-east-1"]},
        },
        "budgets": [],
    }
    keys = [
        {"name": "alice", "sha256": hashlib.sha256(ALICE_KEY.encode()).hexdigest()},
        {
            "name": "old",
            "sha256": hashlib.sha256(EXPIRED_KEY.encode()).hexdigest(),
            "expires_at": "2024-01-01T00:00:00Z",
        },
    ]
    (directory / "config").mkdir(parents=True, exist_ok=True)
    (directory / "secret").mkdir(parents=True, exist_ok=True)
    config_file = directory / "config" / "config.yaml"
    rules_file = directory / "config" / "tenantgw.json"
    keys_file = directory / "secret" / "keys.json"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    rules_file.write_text(json.dumps(rules, indent=2, sort_keys=True))
    keys_file.write_text(json.dumps(keys, indent=2, sort_keys=True))
    return config_file, rules_file, keys_file


@dataclass
class Gateway:
    url: str
    sim: SimulatorHandle
    log: Path

    def anthropic(self, key: str | None = ALICE_KEY) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=key, max_retries=0, timeout=60)

    def openai(self, key: str = ALICE_KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=60)

    def upstream_request(self, marker: str) -> dict[str, Any]:
        """The request the simulator received whose body contains `marker`."""
        found = [r for r in self.sim.requests() if marker in json.dumps(r.get("body"))]
        assert found, f"the simulator received no request containing {marker!r}"
        request: dict[str, Any] = found[-1]
        return request


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway process for tenant `eng` in front of a provider simulator."""
    sim_url, sim = start_simulator(api_key=PROVIDER_KEY)
    workdir = tmp_path_factory.mktemp("gateway")
    config_file, rules_file, keys_file = write_gateway_files(workdir, sim_url)
    env = {
        "LITELLM_MASTER_KEY": MASTER_KEY,
        PROVIDER_ENV: PROVIDER_KEY,
        "TENANTGW_TENANT": TENANT,
        "TENANTGW_RULES_FILE": str(rules_file),
        "TENANTGW_KEYS_FILE": str(keys_file),
        "TENANTGW_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    }
    try:
        with launch_gateway(workdir, config_file, env) as launched:
            yield Gateway(url=launched.url, sim=sim, log=launched.log)
    finally:
        sim.stop()


def _text(message: anthropic.types.Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


# --------------------------------------------------------------------------- it works


def test_developer_gets_answers_with_the_anthropic_sdk(gateway: Gateway) -> None:
    client = gateway.anthropic()
    message = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "hello e2e-plain"}],
    )
    assert _text(message)
    assert message.usage.output_tokens > 0
    upstream = gateway.upstream_request("e2e-plain")
    assert upstream["model"] == "sim-fast"
    # the provider gets the provider's credential, never the tenant key
    assert upstream["headers"]["Authorization"] == f"Bearer {PROVIDER_KEY}"


def test_developer_streams_with_the_anthropic_sdk(gateway: Gateway) -> None:
    client = gateway.anthropic()
    with client.messages.stream(
        model="fast-code",
        max_tokens=64,
        messages=[{"role": "user", "content": "hello e2e-stream"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text
    assert final.stop_reason is not None
    assert gateway.upstream_request("e2e-stream")["body"]["stream"] is True


def test_developer_gets_answers_with_the_openai_sdk(gateway: Gateway) -> None:
    client = gateway.openai()
    completion = client.chat.completions.create(
        model="fast-code", messages=[{"role": "user", "content": "hello e2e-chat"}]
    )
    assert completion.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="fast-code",
            messages=[{"role": "user", "content": "hello e2e-chat-stream"}],
            stream=True,
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_master_key_works_as_the_tenant_admin(gateway: Gateway) -> None:
    message = gateway.anthropic(MASTER_KEY).messages.create(
        model="fast-code", max_tokens=16, messages=[{"role": "user", "content": "hi admin"}]
    )
    assert _text(message)


# --------------------------------------------------------------------------- keys


def test_wrong_key_gets_anthropic_shaped_401_on_messages(gateway: Gateway) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        gateway.anthropic("sk-not-my-key").messages.create(
            model="fast-code", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    body = caught.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert f"invalid API key for tenant {TENANT}" in body["error"]["message"]
    assert "gateway-key-" in body["error"]["message"]
    assert "sk-not-my-key" not in caught.value.response.text


def test_wrong_key_gets_openai_shaped_401_on_chat(gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        gateway.openai("sk-not-my-key").chat.completions.create(
            model="fast-code", messages=[{"role": "user", "content": "hi"}]
        )
    body = caught.value.response.json()
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["code"] == "401"


def test_expired_key_is_refused_with_what_to_do(gateway: Gateway) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        gateway.anthropic(EXPIRED_KEY).messages.create(
            model="fast-code", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    assert "expired" in caught.value.response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/messages",
            {
                "model": "fast-code",
                "max_tokens": 8,
                "messages": [{"role": "user", "content": "hi"}],
            },
        ),
        (
            "/v1/chat/completions",
            {"model": "fast-code", "messages": [{"role": "user", "content": "hi"}]},
        ),
    ],
)
def test_missing_key_is_a_401_not_a_500(gateway: Gateway, path: str, body: dict[str, Any]) -> None:
    response = httpx.post(gateway.url + path, json=body, timeout=30)
    assert response.status_code == 401
    payload = response.json()
    error = payload["error"]
    assert "missing API key" in error["message"]
    if path == "/v1/messages":
        assert payload["type"] == "error"
        assert error["type"] == "authentication_error"


# --------------------------------------------------------------------------- routing


def test_background_calls_are_routed_by_rule(gateway: Gateway) -> None:
    gateway.anthropic().messages.create(
        model="claude-haiku-4-5-20251001",
        max_tokens=16,
        messages=[{"role": "user", "content": "summarise e2e-haiku"}],
    )
    assert gateway.upstream_request("e2e-haiku")["model"] == "sim-docs"


def test_prompt_prefix_rule_picks_the_refactoring_alias(gateway: Gateway) -> None:
    gateway.openai().chat.completions.create(
        model="fast-code",
        messages=[{"role": "user", "content": "Refactor this module e2e-refactor"}],
    )
    assert gateway.upstream_request("e2e-refactor")["model"] == "sim-refactor"


def test_wildcard_client_name_reaches_its_alias(gateway: Gateway) -> None:
    message = gateway.anthropic().messages.create(
        model="claude-sonnet-4-5-20250929",
        max_tokens=16,
        messages=[{"role": "user", "content": "hi e2e-wildcard"}],
    )
    assert _text(message)
    assert gateway.upstream_request("e2e-wildcard")["model"] == "sim-fast"


def test_unknown_model_is_a_404_listing_the_tenants_models(gateway: Gateway) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        gateway.anthropic().messages.create(
            model="gpt-nonexistent", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    body = caught.value.response.json()
    assert body["error"]["type"] == "not_found_error"
    assert "fast-code" in body["error"]["message"]
    assert "claude-sonnet-4-5-*" in body["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        gateway.openai().chat.completions.create(
            model="gpt-nonexistent", messages=[{"role": "user", "content": "hi"}]
        )


# --------------------------------------------------------------------------- compliance


def test_pii_never_reaches_the_provider(gateway: Gateway) -> None:
    secret_text = (
        "e2e-pii: mail jane.doe@example.com, card 4111 1111 1111 1111, "
        "ssn 123-45-6789, key sk-proj-AbCdEf0123456789xyz"
    )
    gateway.anthropic().messages.create(
        model="fast-code", max_tokens=16, messages=[{"role": "user", "content": secret_text}]
    )
    upstream = json.dumps(gateway.upstream_request("e2e-pii")["body"])
    for value in ("jane.doe@example.com", "4111 1111 1111 1111", "123-45-6789", "sk-proj-AbCd"):
        assert value not in upstream
    for entity in ("EMAIL", "CREDIT_CARD", "US_SSN", "SECRET"):
        assert f"[REDACTED_{entity}]" in upstream


# --------------------------------------------------------------------------- bad requests


def test_oversized_body_is_a_413_in_the_clients_shape(gateway: Gateway) -> None:
    big = "x" * (MAX_BODY_BYTES + 1024)
    with pytest.raises(anthropic.APIStatusError) as caught:
        gateway.anthropic().messages.create(
            model="fast-code", max_tokens=16, messages=[{"role": "user", "content": big}]
        )
    assert caught.value.status_code == 413
    assert caught.value.response.json()["error"]["type"] == "request_too_large"
    with pytest.raises(openai.APIStatusError) as caught_openai:
        gateway.openai().chat.completions.create(
            model="fast-code", messages=[{"role": "user", "content": big}]
        )
    assert caught_openai.value.status_code == 413
    assert caught_openai.value.response.json()["error"]["code"] == "413"


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/v1/messages", b'{"model": "fast-code", "messages": [', "not valid JSON"),
        ("/v1/chat/completions", b'{"model": "fast-code",', "not valid JSON"),
        ("/v1/messages", b'{"model": "fast-code", "max_tokens": 8}', "messages"),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        ("/v1/messages", b'{"model": "fast-code", "max_tokens": 8, "messages": "hi"}', "messages"),
    ],
)
def test_malformed_requests_are_a_400_naming_the_problem(
    gateway: Gateway, path: str, body: bytes, expected: str
) -> None:
    response = httpx.post(
        gateway.url + path,
        content=body,
        headers={"x-api-key": ALICE_KEY, "content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400
    payload = response.json()
    assert expected in payload["error"]["message"]
    if path == "/v1/messages":
        assert payload == {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": payload["error"]["message"]},
        }
    else:
        assert payload["error"]["code"] == "400"


def test_probes_need_no_key(gateway: Gateway) -> None:
    assert httpx.get(gateway.url + "/health/liveliness", timeout=10).status_code == 200
    assert httpx.get(gateway.url + "/health/readiness", timeout=10).status_code == 200
