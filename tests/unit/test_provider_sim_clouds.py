"""The simulator's Bedrock, STS, Azure OpenAI and Entra ID checks, driven by the clouds' own SDKs.

boto3 signs with SigV4 and decodes the event-stream framing itself; the openai SDK's AzureOpenAI
client builds Azure's paths. Each check the simulator makes is also tried with a credential it
must refuse.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.config
import botocore.credentials
import botocore.exceptions
import botocore.utils
import httpx
import openai
import pytest

from e2e.provider_sim import SimulatorHandle, start_simulator
from e2e.provider_sim.bedrock import decode_events, event_message
from e2e.provider_sim.identity import (
    AWS_AUDIENCE,
    AZURE_AUDIENCE,
    POD_IDENTITY_AUDIENCE,
    service_account_subject,
    service_account_token,
)

pytestmark = pytest.mark.unit

REGION = "eu-central-1"
KEY_ID, SECRET = "AKIASIMULATOR0001", "sim-secret-0001"
API_KEY = "ABSKc2ltLWJlZHJvY2sta2V5"
ROLE = "arn:aws:iam::123456789012:role/tenant-x-bedrock"
SUBJECT = service_account_subject("tenant-x", "gateway")
MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
ENTRA_TENANT, ENTRA_CLIENT = "11111111-2222-3333-4444-555555555555", "client-abc"
AZURE_KEY = "azure-sim-key"
NO_RETRY = botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"})
TOOL = {
    "toolSpec": {
        "name": "Read",
        "description": "Read a file",
        "inputSchema": {
            "json": {
                "type": "object",
                "properties": {"file_path": {"type": "string"}},
                "required": ["file_path"],
            }
        },
    }
}


@pytest.fixture(scope="module")
def running() -> Iterator[SimulatorHandle]:
    _, handle = start_simulator()
    with handle:
        yield handle


@pytest.fixture
def sim(running: SimulatorHandle) -> SimulatorHandle:
    running.reset()
    running.configure(
        aws_region=REGION,
        aws_access_keys={KEY_ID: SECRET},
        bedrock_api_keys=[API_KEY],
        aws_roles={ROLE: SUBJECT},
        eks_pod_identity_associations={SUBJECT: ROLE},
        entra_apps={ENTRA_CLIENT: {"tenant": ENTRA_TENANT, "subject": SUBJECT}},
    )
    return running


def runtime(sim: SimulatorHandle, **credentials: str) -> Any:
    creds = credentials or {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET}
    return boto3.client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=sim.root_url,
        config=NO_RETRY,
        **creds,
    )


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": text}]}]


# --------------------------------------------------------------------------- event stream


def test_event_stream_framing_round_trips_and_detects_corruption() -> None:
    message = event_message({":event-type": "chunk", ":message-type": "event"}, b'{"a":1}')
    ((headers, payload),) = decode_events(message)
    assert headers == {":event-type": "chunk", ":message-type": "event"}
    assert payload == b'{"a":1}'
    corrupted = message[:-6] + b"X" + message[-5:]
    with pytest.raises(ValueError, match="CRC"):
        decode_events(corrupted)


# --------------------------------------------------------------------------- Converse


def test_converse_with_a_signed_request(sim: SimulatorHandle) -> None:
    out = runtime(sim).converse(modelId=MODEL, messages=user("hi"))
    assert out["output"]["message"]["content"] == [{"text": f"Hello from {MODEL}"}]
    assert out["stopReason"] == "end_turn"
    assert out["usage"]["totalTokens"] == out["usage"]["inputTokens"] + out["usage"]["outputTokens"]
    (recorded,) = sim.requests()
    assert recorded["path"] == "/model/anthropic.claude-sonnet-4-5-20250929-v1:0/converse"
    assert recorded["aws_identity"] == {"access_key_id": KEY_ID, "kind": "access-key"}


def test_converse_stream_tool_use_is_decoded_by_boto3(sim: SimulatorHandle) -> None:
    sim.configure(tool_plan={"tool": "Read", "arguments": {"file_path": "/etc/motd"}})
    out = runtime(sim).converse_stream(
        modelId=MODEL, messages=user("read"), toolConfig={"tools": [TOOL]}
    )
    events = list(out["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart"
    assert kinds[-2:] == ["messageStop", "metadata"]
    start = next(e["contentBlockStart"] for e in events if "contentBlockStart" in e)
    tool_use = start["start"]["toolUse"]
    assert tool_use["name"] == "Read"
    arguments = "".join(
        e["contentBlockDelta"]["delta"]["toolUse"]["input"]
        for e in events
        if "contentBlockDelta" in e
    )
    assert json.loads(arguments) == {"file_path": "/etc/motd"}
    assert events[-2]["messageStop"]["stopReason"] == "tool_use"
    # The tool result goes back with the id; Bedrock checks it matches the previous turn.
    history = [
        *user("read"),
        {"role": "assistant", "content": [{"toolUse": {**tool_use, "input": {"file_path": "x"}}}]},
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": tool_use["toolUseId"], "content": [{"text": "42"}]}}
            ],
        },
    ]
    answer = runtime(sim).converse(modelId=MODEL, messages=history, toolConfig={"tools": [TOOL]})
    assert answer["output"]["message"]["content"] == [{"text": "Tool said: 42"}]
    history[2]["content"][0]["toolResult"]["toolUseId"] = "tooluse_forged"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        runtime(sim).converse(modelId=MODEL, messages=history, toolConfig={"tools": [TOOL]})
    assert err.value.response["Error"]["Code"] == "ValidationException"


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([{"role": "assistant", "content": [{"text": "x"}]}], "must start with a user message"),
        ([*user("a"), *user("b")], "must alternate"),
        (user(" "), "is blank"),
    ],
)
def test_converse_validation_as_bedrock_answers_it(
    sim: SimulatorHandle, messages: list[dict[str, Any]], fragment: str
) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as err:
        runtime(sim).converse(modelId=MODEL, messages=messages)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert fragment in err.value.response["Error"]["Message"]


# --------------------------------------------------------------------------- SigV4 refusals


def signed(body: bytes, secret: str = SECRET, region: str = REGION, **headers: str) -> Any:
    creds = botocore.credentials.Credentials(KEY_ID, secret)
    request = botocore.awsrequest.AWSRequest(
        method="POST",
        url="http://placeholder/model/m/converse",
        data=body,
        headers={"Content-Type": "application/json", **headers},
    )
    botocore.auth.SigV4Auth(creds, "bedrock", region).add_auth(request)
    return request


def send(sim: SimulatorHandle, request: Any, body: bytes) -> httpx.Response:
    headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
    headers["Host"] = "placeholder"
    return httpx.post(sim.root_url + "/model/m/converse", content=body, headers=headers)


def test_a_tampered_body_wrong_secret_or_region_is_refused(sim: SimulatorHandle) -> None:
    body = json.dumps({"messages": user("hi")}).encode()
    assert send(sim, signed(body), body).status_code == 200
    tampered = json.dumps({"messages": user("ho")}).encode()
    resp = send(sim, signed(body), tampered)
    assert resp.status_code == 403
    assert resp.headers["x-amzn-ErrorType"].startswith("InvalidSignatureException:")
    assert "signature we calculated does not match" in resp.json()["message"]
    assert send(sim, signed(body, secret="guessed"), body).status_code == 403
    wrong_region = send(sim, signed(body, region="us-east-1"), body)
    assert wrong_region.status_code == 403
    assert "region" in wrong_region.json()["message"]


def test_an_unknown_key_and_a_missing_signature_are_refused(sim: SimulatorHandle) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as err:
        runtime(sim, aws_access_key_id="AKIAUNKNOWN", aws_secret_access_key=SECRET).converse(
            modelId=MODEL, messages=user("hi")
        )
    assert err.value.response["Error"]["Code"] == "UnrecognizedClientException"
    resp = httpx.post(sim.root_url + f"/model/{MODEL}/converse", json={"messages": user("x")})
    assert resp.status_code == 403
    assert resp.headers["x-amzn-ErrorType"].startswith("MissingAuthenticationTokenException")


def test_bedrock_api_keys_are_bearer_tokens(sim: SimulatorHandle) -> None:
    url = sim.root_url + f"/model/{MODEL}/converse"
    body = {"messages": user("hi")}
    ok = httpx.post(url, json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert ok.status_code == 200, ok.text
    bad = httpx.post(url, json=body, headers={"Authorization": "Bearer ABSKguessed"})
    assert bad.status_code == 403
    assert bad.headers["x-amzn-ErrorType"].startswith("AccessDeniedException")


# --------------------------------------------------------------------------- STS (IRSA)


def assume(sim: SimulatorHandle, token: str, role: str = ROLE) -> dict[str, Any]:
    sts = boto3.client(
        "sts",
        region_name=REGION,
        endpoint_url=sim.root_url,
        aws_access_key_id="unused",
        aws_secret_access_key="unused",
        config=NO_RETRY,
    )
    out: dict[str, Any] = sts.assume_role_with_web_identity(
        RoleArn=role, RoleSessionName="gateway", WebIdentityToken=token
    )
    return out


def test_web_identity_credentials_sign_bedrock_requests(sim: SimulatorHandle) -> None:
    out = assume(sim, service_account_token(SUBJECT, AWS_AUDIENCE))
    creds = out["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA")
    assert out["SubjectFromWebIdentityToken"] == SUBJECT
    client = runtime(
        sim,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    client.converse(modelId=MODEL, messages=user("hi"))
    identity = sim.requests()[-1]["aws_identity"]
    assert identity["kind"] == "sts"
    assert identity["role_arn"] == ROLE
    # A session token for another key, or none at all, is refused.
    other = assume(sim, service_account_token(SUBJECT, AWS_AUDIENCE))["Credentials"]
    for token in (other["SessionToken"], None):
        extra = {"aws_session_token": token} if token else {}
        with pytest.raises(botocore.exceptions.ClientError) as err:
            runtime(
                sim,
                aws_access_key_id=creds["AccessKeyId"],
                aws_secret_access_key=creds["SecretAccessKey"],
                **extra,
            ).converse(modelId=MODEL, messages=user("hi"))
        assert err.value.response["Error"]["Code"] == "UnrecognizedClientException"


@pytest.mark.parametrize(
    ("subject", "audience", "role", "code"),
    [
        (SUBJECT, "https://kubernetes.default.svc", ROLE, "InvalidIdentityToken"),
        (service_account_subject("tenant-y", "gateway"), AWS_AUDIENCE, ROLE, "AccessDenied"),
        (SUBJECT, AWS_AUDIENCE, "arn:aws:iam::123456789012:role/admin", "AccessDenied"),
    ],
    ids=["api-server-audience", "another-tenant", "another-role"],
)
def test_sts_refuses_a_token_it_must_not_trust(
    sim: SimulatorHandle, subject: str, audience: str, role: str, code: str
) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as err:
        assume(sim, service_account_token(subject, audience), role)
    assert err.value.response["Error"]["Code"] == code


def test_sts_refuses_a_forged_or_expired_token(sim: SimulatorHandle) -> None:
    token = service_account_token(SUBJECT, AWS_AUDIENCE)
    head, payload, _ = token.split(".")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        assume(sim, f"{head}.{payload}.forged")
    assert err.value.response["Error"]["Code"] == "InvalidIdentityToken"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        assume(sim, service_account_token(SUBJECT, AWS_AUDIENCE, ttl_s=-60))
    assert err.value.response["Error"]["Code"] == "ExpiredToken"


# --------------------------------------------------------------------------- EKS Pod Identity


def pod_identity_credentials(sim: SimulatorHandle, token_file: Path) -> Any:
    """What boto3's container credential provider gets from the simulated agent."""
    provider = botocore.credentials.ContainerProvider(
        environ={
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": sim.root_url + "/v1/credentials",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file),
        },
        fetcher=botocore.utils.ContainerMetadataFetcher(sleep=lambda _: None),
    )
    return provider.load().get_frozen_credentials()


def test_pod_identity_credentials_sign_bedrock_requests(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    token_file = tmp_path / "eks-pod-identity-token"
    token_file.write_text(service_account_token(SUBJECT, POD_IDENTITY_AUDIENCE))
    creds = pod_identity_credentials(sim, token_file)
    assert creds.access_key.startswith("ASIA")
    (call,) = [r for r in sim.requests() if r["protocol"] == "eks-pod-identity"]
    assert call["subject"] == SUBJECT
    assert "authorization" not in {k.lower() for k in call["headers"]}
    runtime(
        sim,
        aws_access_key_id=creds.access_key,
        aws_secret_access_key=creds.secret_key,
        aws_session_token=creds.token,
    ).converse(modelId=MODEL, messages=user("hi"))
    identity = sim.requests()[-1]["aws_identity"]
    assert identity["kind"] == "sts"
    assert identity["role_arn"] == ROLE
    assert identity["session_name"] == "eks-sim-tenant-x-gateway"


@pytest.mark.parametrize(
    ("token", "status"),
    [
        (service_account_token(SUBJECT, AWS_AUDIENCE), "401"),
        (service_account_token(SUBJECT, POD_IDENTITY_AUDIENCE, ttl_s=-60), "401"),
        (service_account_token(SUBJECT, "https://kubernetes.default.svc"), "401"),
        (
            service_account_token(
                service_account_subject("tenant-y", "gateway"), POD_IDENTITY_AUDIENCE
            ),
            "403",
        ),
        (" ", "400"),
    ],
    ids=["irsa-audience", "expired", "api-server-audience", "no-association", "empty"],
)
def test_the_pod_identity_agent_refuses_a_token_it_must_not_trust(
    sim: SimulatorHandle, tmp_path: Path, token: str, status: str
) -> None:
    token_file = tmp_path / "eks-pod-identity-token"
    token_file.write_text(token)
    with pytest.raises(botocore.exceptions.CredentialRetrievalError, match=f"response {status}"):
        pod_identity_credentials(sim, token_file)


# --------------------------------------------------------------------------- InvokeModel (Claude)


def claude_body(text: str, **extra: Any) -> bytes:
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }
    return json.dumps(body).encode()


def test_invoke_model_speaks_anthropic_and_streams_base64_chunks(sim: SimulatorHandle) -> None:
    client = runtime(sim)
    out = json.loads(client.invoke_model(modelId=MODEL, body=claude_body("hi"))["body"].read())
    assert out["type"] == "message"
    assert out["content"] == [{"type": "text", "text": f"Hello from {MODEL}"}]
    stream = client.invoke_model_with_response_stream(modelId=MODEL, body=claude_body("hi"))
    events = [json.loads(e["chunk"]["bytes"]) for e in stream["body"]]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert "ping" not in kinds
    metrics = events[-1]["amazon-bedrock-invocationMetrics"]
    assert metrics["outputTokenCount"] == events[-2]["usage"]["output_tokens"]
    for bad, fragment in (
        (claude_body("x", model=MODEL), "extraneous key [model]"),
        (json.dumps({"max_tokens": 5, "messages": []}).encode(), "anthropic_version"),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as err:
            client.invoke_model(modelId=MODEL, body=bad)
        assert fragment in err.value.response["Error"]["Message"]


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("429", "ThrottlingException"),
        ("408", "ModelTimeoutException"),
        ("503", "ServiceUnavailableException"),
        ("400", "ValidationException"),
    ],
)
def test_faults_come_back_in_bedrocks_shape(sim: SimulatorHandle, fault: str, code: str) -> None:
    sim.fail_next(fault)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        runtime(sim).converse(modelId=MODEL, messages=user("hi"))
    assert err.value.response["Error"]["Code"] == code


def test_a_stream_broken_mid_way_by_an_exception_event(sim: SimulatorHandle) -> None:
    sim.configure(reply="one two three four")
    sim.fail_next("stream-exception")
    out = runtime(sim).converse_stream(modelId=MODEL, messages=user("hi"))
    seen: list[str] = []

    def read_all() -> None:
        seen.extend(next(iter(item)) for item in out["stream"])

    with pytest.raises(botocore.exceptions.EventStreamError) as err:
        read_all()
    assert err.value.response["Error"]["Code"] == "throttlingException"
    assert seen == ["messageStart", "contentBlockDelta"]


@pytest.mark.parametrize("path", ["converse", "converse-stream", "invoke-with-response-stream"])
def test_a_reset_closes_the_connection_before_the_first_byte(
    sim: SimulatorHandle, path: str
) -> None:
    sim.fail_next("reset")
    body = (
        claude_body("hi")
        if path.startswith("invoke")
        else json.dumps({"messages": user("hi")}).encode()
    )
    request = httpx.Request(
        "POST",
        f"{sim.root_url}/model/{MODEL}/{path}",
        content=body,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    with httpx.Client(timeout=10) as client, pytest.raises(httpx.RemoteProtocolError):
        client.send(request)


# --------------------------------------------------------------------------- Azure OpenAI


def azure_client(sim: SimulatorHandle, version: str = "2024-10-21", **auth: Any) -> Any:
    return openai.AzureOpenAI(
        azure_endpoint=sim.root_url, api_version=version, max_retries=0, **auth
    )


def test_azure_answers_with_content_filter_results(sim: SimulatorHandle) -> None:
    sim.configure(api_key=AZURE_KEY)
    client = azure_client(sim, api_key=AZURE_KEY)
    out = client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    raw = out.model_dump()
    assert raw["prompt_filter_results"][0]["content_filter_results"]["jailbreak"] == {
        "filtered": False,
        "detected": False,
    }
    assert raw["choices"][0]["content_filter_results"]["hate"]["severity"] == "safe"
    chunks = list(
        client.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    assert chunks[0].choices == []
    assert chunks[0].model_dump()["prompt_filter_results"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from gpt-4"
    recorded = sim.requests()[-1]
    assert recorded["deployment"] == "gpt-4"
    assert recorded["api_version"] == "2024-10-21"
    assert recorded["azure_identity"] == {"kind": "api-key"}


def test_azure_refuses_a_bad_key_version_deployment_or_filtered_prompt(
    sim: SimulatorHandle,
) -> None:
    sim.configure(api_key=AZURE_KEY, azure_deployments=["gpt-4"])
    messages = [{"role": "user", "content": "x"}]
    with pytest.raises(openai.AuthenticationError):
        azure_client(sim, api_key="guessed").chat.completions.create(
            model="gpt-4", messages=messages
        )
    with pytest.raises(openai.BadRequestError, match="API version not supported"):
        azure_client(sim, version="2099-01-01", api_key=AZURE_KEY).chat.completions.create(
            model="gpt-4", messages=messages
        )
    with pytest.raises(openai.NotFoundError, match="DeploymentNotFound"):
        azure_client(sim, api_key=AZURE_KEY).chat.completions.create(
            model="gpt-5", messages=messages
        )
    missing = httpx.post(
        sim.root_url + "/openai/deployments/gpt-4/chat/completions",
        json={"messages": messages},
        headers={"api-key": AZURE_KEY},
    )
    assert missing.status_code == 404
    with pytest.raises(openai.BadRequestError) as err:
        azure_client(sim, api_key=AZURE_KEY).chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "[[sim:content-filter]]"}]
        )
    body: Any = err.value.body
    assert body["code"] == "content_filter"
    assert body["innererror"]["code"] == "ResponsibleAIPolicyViolation"


def entra(sim: SimulatorHandle, assertion: str, client_id: str = ENTRA_CLIENT) -> httpx.Response:
    return httpx.post(
        f"{sim.root_url}/{ENTRA_TENANT}/oauth2/v2.0/token",
        data={
            "client_id": client_id,
            "grant_type": "client_credentials",
            "scope": "https://cognitiveservices.azure.com/.default",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        },
    )


def test_entra_workload_identity_token_reaches_azure_as_a_bearer(sim: SimulatorHandle) -> None:
    sim.configure(api_key=AZURE_KEY)  # an api-key exists too; the bearer is checked on its own
    resp = entra(sim, service_account_token(SUBJECT, AZURE_AUDIENCE))
    assert resp.status_code == 200, resp.text
    token = resp.json()["access_token"]
    client = azure_client(sim, azure_ad_token=token)
    out = client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    assert out.choices[0].message.content == "Hello from gpt-4"
    identity = sim.requests()[-1]["azure_identity"]
    assert identity == {"kind": "entra", "client_id": ENTRA_CLIENT, "tenant_id": ENTRA_TENANT}
    with pytest.raises(openai.AuthenticationError):
        azure_client(sim, azure_ad_token=token[:-4] + "AAAA").chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "x"}]
        )


def test_entra_refuses_assertions_it_must_not_trust(sim: SimulatorHandle) -> None:
    other = service_account_token(service_account_subject("tenant-y", "gateway"), AZURE_AUDIENCE)
    refused = entra(sim, other)
    assert refused.status_code == 400
    assert refused.json()["error_codes"] == [70021]
    wrong_audience = entra(sim, service_account_token(SUBJECT, AWS_AUDIENCE))
    assert wrong_audience.status_code == 401
    unknown_app = entra(sim, service_account_token(SUBJECT, AZURE_AUDIENCE), client_id="x")
    assert unknown_app.json()["error"] == "unauthorized_client"
