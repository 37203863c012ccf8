"""A Tenant's Bedrock provider with EKS Pod Identity (`workloadIdentity.aws.podIdentity`).

The gateway process runs from exactly what the operator renders (render_tenant, mounted as the
kubelet would, the token projected for `pods.eks.amazonaws.com` included). boto3's container
credential provider, in the gateway, reads that token from AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE
and sends it to AWS_CONTAINER_CREDENTIALS_FULL_URI, the node's EKS Pod Identity Agent; the
simulator plays the agent (`GET /v1/credentials`: it checks the token's issuer, audience,
expiry and the pod identity association of its subject) and hands out temporary credentials;
its Bedrock verifies the SigV4 signature LiteLLM makes with them and their session token.

The agent is link-local on a node (http://169.254.170.23), which a test process cannot reach:
the harness, and only it, points the rendered URL at the simulator
(`pod_identity_agent_at_simulator`); the first test shows the rendered value is the node's.

User story: a platform team on EKS gives a tenant Bedrock with no key anywhere: the pod
identity association names the role, the gateway's token opens nothing but that, and a wrong,
expired or missing token is a clean error for the developer, never a hang.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e.fixtures import Services
from e2e.helpers import eventually
from e2e.provider_checks import (
    Alias,
    alice_tenant,
    check_anthropic_message,
    check_ledger_row,
    check_openai_chat,
    priced,
)
from e2e.provider_sim import SimulatorHandle
from e2e.provider_sim.identity import (
    AWS_AUDIENCE,
    POD_IDENTITY_AUDIENCE,
    service_account_subject,
    service_account_token,
)
from e2e.rendered_gateway import (
    POD_IDENTITY_TOKEN_ENV,
    POD_IDENTITY_URI_ENV,
    Gateway,
    alice_inputs,
    gateway_fixture,
    run_rendered_gateway,
)
from tenantgw.render import RenderInputs, StorageEndpoints

pytestmark = pytest.mark.e2e

TENANT = "podid-" + secrets.token_hex(3)
NAMESPACE = f"tenant-{TENANT}"
SUBJECT = service_account_subject(NAMESPACE, "gateway")
REGION = "us-east-1"
CLAUDE = "anthropic.claude-sonnet-4-5-20250929-v1:0"
ALIAS = "claude-pod"
ROLE = "arn:aws:iam::123456789012:role/tenantgw-pod-" + TENANT
PRICE = (3.0, 15.0)
TARGET = Alias(ALIAS, "bedrock-pod", CLAUDE, PRICE)


def tenant_inputs(sim: SimulatorHandle, storage: StorageEndpoints, key: str) -> RenderInputs:
    tenant, aliases = alice_tenant(
        TENANT,
        "00000000-0000-4000-8000-0000000d0001",
        providers=[
            {
                "name": "bedrock-pod",
                "type": "bedrock",
                "apiBase": sim.root_url,
                "region": REGION,
                "workloadIdentity": {"aws": {"podIdentity": True}},
            }
        ],
        catalog=[priced("bedrock-pod", CLAUDE, PRICE)],
        aliases=[(ALIAS, "bedrock-pod", CLAUDE)],
        default_alias=ALIAS,
    )
    return alice_inputs(tenant, aliases, storage, key)


SIMULATOR: dict[str, Any] = {
    "aws_region": REGION,
    "eks_pod_identity_associations": {SUBJECT: ROLE},
    # IRSA's STS trusts the same subject: a token of the wrong audience must still be refused.
    "aws_roles": {ROLE: SUBJECT},
}
GOOD_TOKEN = {POD_IDENTITY_AUDIENCE: service_account_token(SUBJECT, POD_IDENTITY_AUDIENCE)}

gateway = gateway_fixture(
    "eks-pod-identity",
    role_prefix="tg_podid",
    inputs=tenant_inputs,
    provider_secrets={},
    simulator_kwargs=SIMULATOR,
    service_account_tokens=GOOD_TOKEN,
    pod_identity_agent_at_simulator=True,
)


@pytest.fixture(autouse=True)
def _fresh_simulator(gateway: Gateway) -> None:
    gateway.sim.reset()


def agent_calls(gateway: Gateway) -> list[dict[str, Any]]:
    return [r for r in gateway.sim.requests() if r["protocol"] == "eks-pod-identity"]


def check_upstream(gateway: Gateway, marker: str, operation: str) -> None:
    """Bedrock got the request signed with credentials of the associated role."""
    upstream = gateway.upstream(marker)
    assert upstream["protocol"] == "bedrock"
    assert upstream["operation"] == operation
    assert upstream["model"] == CLAUDE
    identity = upstream["aws_identity"]
    assert identity["kind"] == "sts", identity
    assert identity["role_arn"] == ROLE
    assert identity["session_name"] == f"eks-sim-{NAMESPACE}-gateway"
    assert gateway.key not in str(upstream["headers"]) + str(upstream["body"])


def test_the_pod_gets_the_agent_url_and_token_the_operator_rendered(gateway: Gateway) -> None:
    """The rendered env names the node's agent and the projected token; only the harness
    points the URL elsewhere; the token file holds the pods.eks.amazonaws.com token."""
    rendered = gateway.rendered_env
    assert rendered[POD_IDENTITY_URI_ENV] == "http://169.254.170.23/v1/credentials"
    assert gateway.env[POD_IDENTITY_URI_ENV] == gateway.sim.root_url + "/v1/credentials"
    assert {k: v for k, v in gateway.env.items() if k != POD_IDENTITY_URI_ENV} == {
        k: v for k, v in rendered.items() if k != POD_IDENTITY_URI_ENV
    }
    token_file = Path(gateway.env[POD_IDENTITY_TOKEN_ENV])
    assert token_file.read_text() == GOOD_TOKEN[POD_IDENTITY_AUDIENCE]
    assert not {"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ACCESS_KEY_ID"} & set(rendered)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_anthropic_sdk_through_bedrock_with_pod_identity(gateway: Gateway, stream: bool) -> None:
    since = time.time()
    marker = f"pod-{stream}-{secrets.token_hex(4)}"
    usage = check_anthropic_message(gateway, ALIAS, marker, model=CLAUDE, stream=stream)
    check_upstream(gateway, marker, "InvokeModelWithResponseStream" if stream else "InvokeModel")
    check_ledger_row(gateway, since, TARGET, stream=stream, usage=usage)


def test_openai_sdk_streamed_through_bedrock_with_pod_identity(gateway: Gateway) -> None:
    since = time.time()
    marker = f"pod-chat-{secrets.token_hex(4)}"
    usage = check_openai_chat(gateway, ALIAS, marker, model=CLAUDE, stream=True)
    check_upstream(gateway, marker, "ConverseStream")
    check_ledger_row(gateway, since, TARGET, stream=True, usage=usage)


def test_claude_code_runs_a_tool_through_bedrock_with_pod_identity(
    gateway: Gateway, tmp_path: Path
) -> None:
    since = gateway.claude_read_turn(ALIAS, tmp_path).started
    calls = [r for r in gateway.sim.requests() if r["protocol"] == "bedrock"]
    assert calls
    assert {r["aws_identity"]["role_arn"] for r in calls} == {ROLE}
    rows = eventually(
        lambda: [r for r in [gateway.rows(since)] if len(r) >= len(calls)], what="a row per call"
    )[0]
    assert all(r["status"] == "success" and r["provider"] == "bedrock-pod" for r in rows)


# --------------------------------------------------------------------------- attacks


@pytest.fixture(scope="module")
def fresh_gateway(
    services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    """A second gateway of the same Tenant that has never held credentials (LiteLLM keeps
    those it got for ten minutes, so the attacks need a process that got none)."""
    with run_rendered_gateway(
        services,
        tmp_path_factory.mktemp("eks-pod-identity-attacks"),
        role_prefix="tg_podid_x",
        inputs=tenant_inputs,
        provider_secrets={},
        simulator_kwargs=SIMULATOR,
        service_account_tokens=GOOD_TOKEN,
        pod_identity_agent_at_simulator=True,
    ) as running:
        yield running


def ask(gateway: Gateway) -> httpx.Response:
    """One /v1/messages request, raw: the status and body the client gets."""
    return gateway.post(
        {"model": ALIAS, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]},
        {"x-api-key": gateway.key, "anthropic-version": "2023-06-01"},
    )


ATTACKS = {
    # What sits in the token file, and what the agent must refuse it with (None: no call).
    "the IRSA audience": (service_account_token(SUBJECT, AWS_AUDIENCE), "InvalidIdentityToken"),
    "the API server's audience": (
        service_account_token(SUBJECT, "https://kubernetes.default.svc"),
        "InvalidIdentityToken",
    ),
    "an expired token": (
        service_account_token(SUBJECT, POD_IDENTITY_AUDIENCE, ttl_s=-60),
        "ExpiredToken",
    ),
    "another tenant's gateway": (
        service_account_token(
            service_account_subject("tenant-other", "gateway"), POD_IDENTITY_AUDIENCE
        ),
        "AccessDeniedException",
    ),
    "a missing token file": (None, None),
}


def test_a_wrong_expired_or_missing_token_is_a_clean_error_then_the_right_one_works(
    fresh_gateway: Gateway,
) -> None:
    """Each bad token: the agent refuses it (or, without a file, is never asked), Bedrock gets
    nothing, the client gets an error in Anthropic's shape. Then the projected token is put
    back and the same process serves: the errors were the token's, nothing else."""
    gateway = fresh_gateway
    token_file = Path(gateway.env[POD_IDENTITY_TOKEN_ENV])
    for case, (token, refusal) in ATTACKS.items():
        gateway.sim.reset()
        if token is None:
            token_file.unlink(missing_ok=True)
        else:
            token_file.write_text(token)
        resp = ask(gateway)
        # LiteLLM 1.106.12 answers a credential failure with a 500; the gateway makes it a
        # 502 that says the platform's credential failed, with boto3's reason (credfail).
        assert resp.status_code == 502, (case, resp.status_code, resp.text)
        body = resp.json()
        assert body["type"] == "error", (case, body)
        assert body["error"]["type"] == "api_error", (case, body)
        assert "platform's credential" in body["error"]["message"], (case, body)
        cause = refusal or "eks-pod-identity-token"  # the agent's code, or the missing file
        assert cause in body["error"]["message"], (case, body)
        assert gateway.key not in resp.text
        assert not [r for r in gateway.sim.requests() if r["protocol"] == "bedrock"], case
        refused = {r.get("refused") for r in agent_calls(gateway)}
        if refusal is None:
            assert not agent_calls(gateway), case
        else:
            assert refused == {refusal}, (case, refused)
    gateway.sim.reset()
    token_file.write_text(GOOD_TOKEN[POD_IDENTITY_AUDIENCE])
    resp = ask(gateway)
    assert resp.status_code == 200, resp.text
    (call,) = agent_calls(gateway)
    assert call["subject"] == SUBJECT
    assert "refused" not in call
