"""The simulator's GCP Workload Identity Federation refuses what Google refuses: STS trades only
a token of the trusted issuer for the pool provider's audience, the IAM Credentials API lets
only the principal a service account trusts impersonate it, and Vertex takes only the service
account's token, never the federated one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from e2e.provider_sim import SimulatorHandle, start_simulator
from e2e.provider_sim.gemini import SCOPE
from e2e.provider_sim.identity import (
    AWS_AUDIENCE,
    gcp_audience,
    gcp_principal,
    service_account_subject,
    service_account_token,
)

pytestmark = pytest.mark.unit

POOL = "projects/123456789012/locations/global/workloadIdentityPools/clusters/providers/prod"
SUBJECT = service_account_subject("tenant-team-a", "gateway")
OTHER_SUBJECT = service_account_subject("tenant-team-b", "gateway")
SERVICE_ACCOUNT = "vertex-team-a@proj-a1.iam.gserviceaccount.com"
VERTEX = (
    "/v1/projects/proj-a1/locations/us-central1/publishers/google/models/"
    "gemini-2.5-flash:generateContent"
)
HELLO = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


@pytest.fixture(scope="module")
def running() -> Iterator[SimulatorHandle]:
    _, handle = start_simulator(
        models=["gemini-2.5-flash"],
        gcp_workload_pools=[POOL],
        gcp_service_accounts={SERVICE_ACCOUNT: [gcp_principal(POOL, SUBJECT)]},
    )
    with handle:
        yield handle


@pytest.fixture
def sim(running: SimulatorHandle) -> SimulatorHandle:
    running.reset()
    return running


def exchange(sim: SimulatorHandle, subject_token: str, **override: str) -> httpx.Response:
    form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "audience": "//iam.googleapis.com/" + POOL,
        "scope": SCOPE,
        "requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "subject_token": subject_token,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        **override,
    }
    return httpx.post(sim.root_url + "/v1/token", data=form, timeout=10)


def impersonate(sim: SimulatorHandle, bearer: str, email: str = SERVICE_ACCOUNT) -> httpx.Response:
    body: dict[str, Any] = {"scope": [SCOPE], "lifetime": "3600s"}
    return httpx.post(
        f"{sim.root_url}/v1/projects/-/serviceAccounts/{email}:generateAccessToken",
        json=body,
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=10,
    )


def vertex(sim: SimulatorHandle, bearer: str) -> httpx.Response:
    return httpx.post(
        sim.root_url + VERTEX, json=HELLO, headers={"Authorization": f"Bearer {bearer}"}, timeout=10
    )


def test_the_whole_federation_reaches_vertex_as_the_service_account(sim: SimulatorHandle) -> None:
    federated = exchange(sim, service_account_token(SUBJECT, gcp_audience(POOL)))
    assert federated.status_code == 200, federated.text
    assert federated.json()["issued_token_type"].endswith(":access_token")
    # The federated token itself opens no Vertex door: only the impersonated account's does.
    assert vertex(sim, federated.json()["access_token"]).status_code == 401
    access = impersonate(sim, federated.json()["access_token"])
    assert access.status_code == 200, access.text
    answer = vertex(sim, access.json()["accessToken"])
    assert answer.status_code == 200, answer.text
    refused_call, call = [r for r in sim.requests() if r.get("vertex")]
    assert "google_identity" not in refused_call
    assert call["google_identity"] == SERVICE_ACCOUNT
    (sts,) = [r for r in sim.requests() if r["protocol"] == "gcp-sts"]
    assert sts["body"]["subject_token"] == "<subject_token>"


@pytest.mark.parametrize(
    ("token", "override", "error"),
    [
        # A token the cluster minted for AWS, not for this pool provider.
        (service_account_token(SUBJECT, AWS_AUDIENCE), {}, "invalid_grant"),
        # Another cluster's issuer.
        (
            service_account_token(SUBJECT, gcp_audience(POOL), issuer="https://evil.example"),
            {},
            "invalid_grant",
        ),
        (service_account_token(SUBJECT, gcp_audience(POOL), ttl_s=-60), {}, "invalid_grant"),
        ("not-a-jwt", {}, "invalid_grant"),
        (
            service_account_token(SUBJECT, gcp_audience(POOL)),
            {"audience": "//iam.googleapis.com/" + POOL.replace("prod", "dev")},
            "invalid_target",
        ),
        (service_account_token(SUBJECT, gcp_audience(POOL)), {"scope": ""}, "invalid_scope"),
        (
            service_account_token(SUBJECT, gcp_audience(POOL)),
            {"grant_type": "client_credentials"},
            "unsupported_grant_type",
        ),
    ],
    ids=["aws-audience", "other-issuer", "expired", "garbage", "unknown-pool", "no-scope", "grant"],
)
def test_sts_refuses_what_google_refuses(
    sim: SimulatorHandle, token: str, override: dict[str, str], error: str
) -> None:
    refused = exchange(sim, token, **override)
    assert refused.status_code == 400
    assert refused.json()["error"] == error


def test_another_tenants_gateway_cannot_impersonate_the_service_account(
    sim: SimulatorHandle,
) -> None:
    """The pool trusts the whole cluster; the service account trusts one subject."""
    federated = exchange(sim, service_account_token(OTHER_SUBJECT, gcp_audience(POOL)))
    assert federated.status_code == 200
    refused = impersonate(sim, federated.json()["access_token"])
    assert refused.status_code == 403
    assert refused.json()["error"]["status"] == "PERMISSION_DENIED"


def test_impersonation_takes_only_a_federated_token_of_sts(sim: SimulatorHandle) -> None:
    assert impersonate(sim, "ya29.forged").status_code == 401
    good = exchange(sim, service_account_token(SUBJECT, gcp_audience(POOL))).json()
    other = "someone-else@proj-a1.iam.gserviceaccount.com"
    assert impersonate(sim, good["access_token"], email=other).status_code == 403
