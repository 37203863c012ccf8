"""Tenant providers of type `bedrock` and `azure`, with keys and with workload identity.

The gateway process runs from exactly what the operator renders for a Tenant (render_tenant,
mounted as the kubelet would, the projected ServiceAccount tokens included) with its own tenant
role in the shared PostgreSQL and a throwaway redis-server. Its providers all point at the
provider simulator, which checks the credential each request carries as the cloud would:

- `bedrock-key`: a Bedrock API key (bearer), the example tenant's way;
- `bedrock-wi`: IRSA; boto3 trades the projected token at the simulator's STS for temporary
  credentials and LiteLLM signs with them (SigV4 + session token, verified by the simulator);
- `azure-key`: Azure OpenAI with an `api-key`;
- `azure-wi`: Entra Workload ID; LiteLLM trades the projected token at the simulator's Entra
  token endpoint and sends the access token as a bearer.

LiteLLM 1.106.12 serves `bedrock/<claude>` on /v1/messages with InvokeModel (Anthropic's body)
and on /v1/chat/completions with Converse; `azure/<deployment>` with chat completions.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from e2e.fixtures import Services
from e2e.helpers import eventually
from e2e.provider_checks import (
    Alias,
    alice_tenant,
    check_anthropic_message,
    check_anthropic_tool_round_trip,
    check_ledger_row,
    check_openai_chat,
    check_openai_tool_round_trip,
    priced,
)
from e2e.provider_sim import SimulatorHandle
from e2e.provider_sim.identity import (
    AWS_AUDIENCE,
    AZURE_AUDIENCE,
    service_account_subject,
    service_account_token,
)
from e2e.rendered_gateway import Gateway, alice_inputs, run_rendered_gateway
from tenantgw.render import RenderInputs, StorageEndpoints

pytestmark = pytest.mark.e2e

TENANT = "clouds-" + secrets.token_hex(3)
NAMESPACE = f"tenant-{TENANT}"
SUBJECT = service_account_subject(NAMESPACE, "gateway")
REGION = "us-east-1"
CLAUDE = "anthropic.claude-sonnet-4-5-20250929-v1:0"
DEPLOYMENT = "gpt-4o"
BEDROCK_KEY = "ABSK" + secrets.token_hex(16)
AZURE_KEY = "azure-" + secrets.token_hex(12)
ROLE = "arn:aws:iam::123456789012:role/tenantgw-" + TENANT
ENTRA_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ENTRA_CLIENT = "6f1c2a4e-3b5d-4c7e-9f01-" + secrets.token_hex(6)
PRICES = {"bedrock": (3.0, 15.0), "azure": (2.5, 10.0)}
ALIASES = {  # alias -> (provider, model)
    "claude-key": ("bedrock-key", CLAUDE),
    "claude-wi": ("bedrock-wi", CLAUDE),
    "gpt-key": ("azure-key", DEPLOYMENT),
    "gpt-wi": ("azure-wi", DEPLOYMENT),
}


def tenant_inputs(sim: SimulatorHandle, storage: StorageEndpoints, key: str) -> RenderInputs:
    providers = [
        {
            "name": "bedrock-key",
            "type": "bedrock",
            "apiBase": sim.root_url,
            "region": REGION,
            "credentialsSecretRef": {"name": "bedrock", "key": "apiKey"},
        },
        {
            "name": "bedrock-wi",
            "type": "bedrock",
            "apiBase": sim.root_url,
            "region": REGION,
            "workloadIdentity": {"aws": {"roleArn": ROLE, "stsEndpoint": sim.root_url}},
        },
        {
            "name": "azure-key",
            "type": "azure",
            "apiBase": sim.root_url,
            "apiVersion": "2024-10-21",
            "region": "eastus",
            "credentialsSecretRef": {"name": "azure", "key": "apiKey"},
        },
        {
            "name": "azure-wi",
            "type": "azure",
            "apiBase": sim.root_url,
            "apiVersion": "2024-10-21",
            "region": "eastus",
            "workloadIdentity": {
                "azure": {
                    "clientId": ENTRA_CLIENT,
                    "tenantId": ENTRA_TENANT,
                    "authorityHost": sim.root_url,
                }
            },
        },
    ]
    tenant, aliases = alice_tenant(
        TENANT,
        "00000000-0000-4000-8000-0000000c0001",
        providers=providers,
        catalog=[priced(p, m, price(p)) for p, m in ALIASES.values()],
        aliases=[(alias, p, m) for alias, (p, m) in ALIASES.items()],
        default_alias="claude-key",
    )
    return alice_inputs(tenant, aliases, storage, key)


SIMULATOR: dict[str, Any] = {
    "api_key": AZURE_KEY,
    "aws_region": REGION,
    "bedrock_api_keys": [BEDROCK_KEY],
    "aws_roles": {ROLE: SUBJECT},
    "azure_deployments": [DEPLOYMENT],
    "entra_apps": {ENTRA_CLIENT: {"tenant": ENTRA_TENANT, "subject": SUBJECT}},
}


def configure(sim: SimulatorHandle) -> None:
    sim.reset()
    sim.configure(**SIMULATOR)


@pytest.fixture(scope="module")
def gateway(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with run_rendered_gateway(
        services,
        tmp_path_factory.mktemp("cloud-providers"),
        role_prefix="tg_clouds",
        inputs=tenant_inputs,
        provider_secrets={"bedrock": {"apiKey": BEDROCK_KEY}, "azure": {"apiKey": AZURE_KEY}},
        simulator_kwargs=SIMULATOR,
        # What the kubelet projects for the gateway ServiceAccount, per audience.
        service_account_tokens={
            AWS_AUDIENCE: service_account_token(SUBJECT, AWS_AUDIENCE),
            AZURE_AUDIENCE: service_account_token(SUBJECT, AZURE_AUDIENCE),
        },
    ) as gateway:
        yield gateway


@pytest.fixture(autouse=True)
def _fresh_simulator(gateway: Gateway) -> None:
    configure(gateway.sim)


def expected_identity(alias: str) -> dict[str, Any]:
    """What the simulator must have verified for a request of `alias`."""
    provider = ALIASES[alias][0]
    if provider == "bedrock-key":
        return {"kind": "api-key"}
    if provider == "azure-key":
        return {"kind": "api-key"}
    if provider == "azure-wi":
        return {"kind": "entra", "client_id": ENTRA_CLIENT, "tenant_id": ENTRA_TENANT}
    return {"kind": "sts", "role_arn": ROLE}


def check_upstream(gateway: Gateway, marker: str, alias: str, operation: str) -> None:
    upstream = gateway.upstream(marker)
    provider = ALIASES[alias][0]
    expected = expected_identity(alias)
    if provider.startswith("bedrock"):
        assert upstream["protocol"] == "bedrock"
        assert upstream["operation"] == operation
        assert upstream["model"] == CLAUDE
        identity = upstream["aws_identity"]
    else:
        assert upstream["protocol"] == "azure"
        assert upstream["deployment"] == DEPLOYMENT
        assert upstream["api_version"] == "2024-10-21"
        identity = upstream["azure_identity"]
    assert {k: identity.get(k) for k in expected} == expected, identity
    seen = json.dumps(upstream["headers"]) + json.dumps(upstream["body"])
    assert gateway.key not in seen, "the tenant key reached the provider"


def price(provider: str) -> tuple[float, float]:
    return PRICES[provider.split("-")[0]]


def target(alias: str) -> Alias:
    provider, model = ALIASES[alias]
    return Alias(alias, provider, model, price(provider))


# --------------------------------------------------------------------------- anthropic SDK

INVOKE = {False: "InvokeModel", True: "InvokeModelWithResponseStream"}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_anthropic_sdk_through_each_cloud_provider(
    gateway: Gateway, alias: str, stream: bool
) -> None:
    since = time.time()
    marker = f"msg-{alias}-{stream}-{secrets.token_hex(4)}"
    usage = check_anthropic_message(gateway, alias, marker, model=ALIASES[alias][1], stream=stream)
    operation = INVOKE[stream] if alias.startswith("claude") else ""
    check_upstream(gateway, marker, alias, operation)
    check_ledger_row(gateway, since, target(alias), stream=stream, usage=usage)


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_anthropic_tool_round_trip_through_each_cloud_provider(
    gateway: Gateway, alias: str
) -> None:
    marker = check_anthropic_tool_round_trip(gateway, alias)
    check_upstream(gateway, marker, alias, "InvokeModel")


# --------------------------------------------------------------------------- openai SDK

CONVERSE = {False: "Converse", True: "ConverseStream"}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_openai_sdk_through_each_cloud_provider(gateway: Gateway, alias: str, stream: bool) -> None:
    since = time.time()
    marker = f"chat-{alias}-{stream}-{secrets.token_hex(4)}"
    usage = check_openai_chat(gateway, alias, marker, model=ALIASES[alias][1], stream=stream)
    check_upstream(gateway, marker, alias, CONVERSE[stream])
    check_ledger_row(gateway, since, target(alias), stream=stream, usage=usage)


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_openai_tools_through_each_cloud_provider(gateway: Gateway, alias: str) -> None:
    marker = check_openai_tool_round_trip(gateway, alias, stream=False)
    check_upstream(gateway, marker, alias, "Converse")


# --------------------------------------------------------------------------- faults


def test_a_bedrock_throttle_is_retried_and_a_persistent_one_is_a_clean_429(
    gateway: Gateway,
) -> None:
    """ThrottlingException once: the gateway's retry serves the request. Always: the client
    gets a 429 in its own shape, never a 500."""
    gateway.sim.fail_next("429")
    client = gateway.anthropic()
    body: Any = {
        "model": "claude-key",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "x"}],
    }
    assert client.messages.create(**body).content[0].type == "text"
    gateway.sim.configure(fail_models={CLAUDE: "429"})
    with pytest.raises(anthropic.RateLimitError) as err:
        client.messages.create(**body)
    assert err.value.body["type"] == "error"  # type: ignore[index]


def test_an_azure_content_filter_refusal_reaches_the_client_as_a_400(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        gateway.openai().chat.completions.create(
            model="gpt-key", messages=[{"role": "user", "content": "[[sim:content-filter]]"}]
        )
    assert "content management policy" in str(err.value)


# --------------------------------------------------------------------------- Claude Code


@pytest.mark.parametrize("alias", ["claude-wi", "gpt-wi"])
def test_claude_code_runs_a_tool_through_each_cloud_provider(
    gateway: Gateway, alias: str, tmp_path: Path
) -> None:
    """US-001 on Bedrock and Azure with workload identity: `claude -p` runs Read and answers."""
    since = gateway.claude_read_turn(alias, tmp_path).started
    calls = [r for r in gateway.sim.requests() if r["protocol"] in ("bedrock", "azure")]
    assert calls
    rows = eventually(
        lambda: [r for r in [gateway.rows(since)] if len(r) >= len(calls)], what="a row per call"
    )[0]
    assert {r["provider"] for r in rows} == {ALIASES[alias][0]}
    assert all(r["status"] == "success" and r["cost_usd"] > 0 for r in rows)
