"""Tenant providers of type `vertex`: Gemini and Claude on Vertex AI, with a service-account
key and with GCP Workload Identity Federation.

The gateway process runs from exactly what the operator renders for a Tenant (render_tenant,
mounted as the kubelet would, the projected ServiceAccount token and the ConfigMap's credential
configuration included) with its own tenant role in the shared PostgreSQL and a throwaway
redis-server. Every provider points at the provider simulator (e2e/provider_sim/gemini.py),
which serves Vertex's paths and takes only OAuth access tokens it issued, for a service account
of the path's project:

- `vertex-key`: a service-account key (JSON in a Secret); google-auth signs a JWT with its
  private key and trades it at the key's `token_uri` (the simulator's `/token`, RS256 checked);
- `vertex-wi`: Workload Identity Federation; google-auth reads the projected ServiceAccount
  token, exchanges it at the simulated STS (`/v1/token`: issuer, audience, the pool provider's
  trusted subject) and trades the federated token for the service account's access token
  (`:generateAccessToken`, allowed only to the principal the service account trusts).

LiteLLM 1.106.12 calls `vertex_ai/gemini-*` with `:generateContent` / `:streamGenerateContent`
and `vertex_ai/claude-*` with `:rawPredict` / `:streamRawPredict` (Anthropic's body), for both
client protocols.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e.fixtures import Services
from e2e.helpers import eventually
from e2e.provider_checks import (
    alice_tenant,
    check_anthropic_message,
    check_anthropic_tool_round_trip,
    check_ledger_row,
    check_openai_chat,
    check_openai_tool_round_trip,
    priced,
)
from e2e.provider_sim import SimulatorHandle
from e2e.provider_sim.gemini import service_account_info
from e2e.provider_sim.identity import (
    gcp_audience,
    gcp_principal,
    service_account_subject,
    service_account_token,
)
from e2e.rendered_gateway import Gateway, alice_inputs, run_rendered_gateway
from tenantgw.render import RenderInputs, StorageEndpoints

pytestmark = pytest.mark.e2e

TENANT = "vertex-" + secrets.token_hex(3)
NAMESPACE = f"tenant-{TENANT}"
SUBJECT = service_account_subject(NAMESPACE, "gateway")
KEY_PROJECT = "proj-key-" + secrets.token_hex(3)
WI_PROJECT = "proj-wi-" + secrets.token_hex(3)
WI_SERVICE_ACCOUNT = f"vertex-caller@{WI_PROJECT}.iam.gserviceaccount.com"
POOL_PROVIDER = (
    "projects/123456789012/locations/global/workloadIdentityPools/"
    f"tenantgw-{TENANT}/providers/cluster"
)
GEMINI = "gemini-2.5-flash"
CLAUDE = "claude-sonnet-4-5@20250929"


@dataclass(frozen=True)
class Case:
    alias: str
    provider: str
    model: str
    price: tuple[float, float]  # USD per million tokens, in / out

    @property
    def claude(self) -> bool:
        return self.model.startswith("claude")

    @property
    def project(self) -> str:
        return KEY_PROJECT if self.provider == "vertex-key" else WI_PROJECT

    @property
    def caller(self) -> str:
        """The service account the simulated Vertex must have seen."""
        if self.provider == "vertex-key":
            return f"gateway@{KEY_PROJECT}.iam.gserviceaccount.com"
        return WI_SERVICE_ACCOUNT


# Gemini with a service-account key is the conformance suite's `vertex` row
# (e2e/test_provider_conformance.py); these add Claude on Vertex and workload identity.
CASES = [
    Case("claude-key", "vertex-key", CLAUDE, (3.0, 15.0)),
    Case("gem-wi", "vertex-wi", GEMINI, (0.3, 2.5)),
    Case("claude-wi", "vertex-wi", CLAUDE, (3.0, 15.0)),
]
BY_ALIAS = {case.alias: case for case in CASES}


def cases() -> list[Any]:
    return [pytest.param(case, id=case.alias) for case in CASES]


def tenant_inputs(sim: SimulatorHandle, storage: StorageEndpoints, key: str) -> RenderInputs:
    providers = [
        {
            "name": "vertex-key",
            "type": "vertex",
            "apiBase": sim.root_url,
            "region": "us-east5",
            "credentialsSecretRef": {"name": "vertex", "key": "serviceAccount.json"},
        },
        {
            "name": "vertex-wi",
            "type": "vertex",
            "apiBase": sim.root_url,
            "region": "us-central1",
            "workloadIdentity": {
                "gcp": {
                    "project": WI_PROJECT,
                    "workloadIdentityProvider": POOL_PROVIDER,
                    "serviceAccount": WI_SERVICE_ACCOUNT,
                    "stsEndpoint": sim.root_url,
                    "iamCredentialsEndpoint": sim.root_url,
                }
            },
        },
    ]
    tenant, aliases = alice_tenant(
        TENANT,
        "00000000-0000-4000-8000-0000000c0002",
        providers=providers,
        catalog=[priced(case.provider, case.model, case.price) for case in CASES],
        aliases=[(case.alias, case.provider, case.model) for case in CASES],
        default_alias="claude-key",
    )
    return alice_inputs(tenant, aliases, storage, key)


FIRST_EXCHANGE: dict[str, list[dict[str, Any]]] = {}
SIMULATOR: dict[str, Any] = {
    "models": [GEMINI],
    # The pool provider trusts the simulated cluster's issuer; the service account lets the
    # federated principal of the gateway's subject impersonate it (workloadIdentityUser).
    "gcp_workload_pools": [POOL_PROVIDER],
    "gcp_service_accounts": {WI_SERVICE_ACCOUNT: [gcp_principal(POOL_PROVIDER, SUBJECT)]},
}


@pytest.fixture(scope="module")
def gateway(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("vertex")

    def inputs(sim: SimulatorHandle, storage: StorageEndpoints, key: str) -> RenderInputs:
        # The key's token_uri is the simulator's, whose port is known only now.
        key_json = service_account_info(KEY_PROJECT, sim.root_url + "/token")
        provider_secrets["vertex"] = {"serviceAccount.json": json.dumps(key_json)}
        return tenant_inputs(sim, storage, key)

    provider_secrets: dict[str, dict[str, str]] = {}
    with run_rendered_gateway(
        services,
        workdir,
        role_prefix="tg_vertex",
        inputs=inputs,
        provider_secrets=provider_secrets,
        simulator_kwargs=SIMULATOR,
        # What the kubelet projects for the gateway ServiceAccount, per audience.
        service_account_tokens={
            gcp_audience(POOL_PROVIDER): service_account_token(SUBJECT, gcp_audience(POOL_PROVIDER))
        },
    ) as gateway:
        # The gateway's first WI request makes the exchange; google-auth then caches the
        # token for its lifetime, so the exchange is recorded here, before any reset.
        gateway.openai().chat.completions.create(
            model="gem-wi", messages=[{"role": "user", "content": "first"}]
        )
        FIRST_EXCHANGE["calls"] = [
            r for r in gateway.sim.requests() if r["protocol"] in ("gcp-sts", "gcp-iam")
        ] + [r for r in gateway.sim.requests() if r.get("vertex")]
        yield gateway


@pytest.fixture(autouse=True)
def _fresh_simulator(gateway: Gateway) -> None:
    gateway.sim.reset()


def check_upstream(gateway: Gateway, marker: str, case: Case, stream: bool) -> None:
    upstream = gateway.upstream(marker)
    assert upstream["protocol"] == "gemini"
    assert upstream["vertex"] is True
    assert upstream["model"] == case.model
    publisher = "anthropic" if case.claude else "google"
    if case.claude:
        method = "streamRawPredict" if stream else "rawPredict"
    else:
        method = "streamGenerateContent" if stream else "generateContent"
    assert upstream["path"].startswith(
        f"/v1/projects/{case.project}/locations/"
        f"{'us-east5' if case.provider == 'vertex-key' else 'us-central1'}"
        f"/publishers/{publisher}/models/{case.model}:{method}"
    ), upstream["path"]
    assert upstream["google_identity"] == case.caller
    seen = json.dumps(upstream["headers"]) + json.dumps(upstream["body"])
    assert gateway.key not in seen, "the tenant key reached the provider"


# --------------------------------------------------------------------------- anthropic SDK


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("case", cases())
def test_anthropic_sdk_through_vertex(gateway: Gateway, case: Case, stream: bool) -> None:
    since = time.time()
    marker = f"msg-{case.alias}-{stream}-{secrets.token_hex(4)}"
    usage = check_anthropic_message(gateway, case.alias, marker, model=case.model, stream=stream)
    check_upstream(gateway, marker, case, stream)
    check_ledger_row(gateway, since, case, stream=stream, usage=usage)


@pytest.mark.parametrize("case", cases())
def test_anthropic_tool_round_trip_through_vertex(gateway: Gateway, case: Case) -> None:
    marker = check_anthropic_tool_round_trip(gateway, case.alias)
    check_upstream(gateway, marker, case, stream=False)


# --------------------------------------------------------------------------- openai SDK


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("case", cases())
def test_openai_sdk_through_vertex(gateway: Gateway, case: Case, stream: bool) -> None:
    since = time.time()
    marker = f"chat-{case.alias}-{stream}-{secrets.token_hex(4)}"
    usage = check_openai_chat(gateway, case.alias, marker, model=case.model, stream=stream)
    check_upstream(gateway, marker, case, stream)
    check_ledger_row(gateway, since, case, stream=stream, usage=usage)


@pytest.mark.parametrize("case", cases())
def test_openai_tools_through_vertex(gateway: Gateway, case: Case) -> None:
    marker = check_openai_tool_round_trip(gateway, case.alias, stream=False)
    check_upstream(gateway, marker, case, stream=False)


# --------------------------------------------------------------------------- credentials


def test_the_federation_exchange_is_what_vertex_trusts(gateway: Gateway) -> None:
    """The WI aliases' access token came from the projected token: STS exchanged it for the
    federated principal of the gateway's ServiceAccount, which impersonated the service
    account, whose token Vertex took (recorded at the gateway's first WI request)."""
    sts, iam, vertex = FIRST_EXCHANGE["calls"]
    assert sts["protocol"] == "gcp-sts"
    assert sts["body"]["audience"] == "//iam.googleapis.com/" + POOL_PROVIDER
    assert sts["body"]["subject_token"] == "<subject_token>"  # recorded redacted
    principal = gcp_principal(POOL_PROVIDER, SUBJECT)
    assert sts["gcp_identity"] == {"subject": SUBJECT, "principal": principal}
    assert iam["protocol"] == "gcp-iam"
    assert iam["gcp_identity"] == {"principal": principal, "service_account": WI_SERVICE_ACCOUNT}
    assert vertex["google_identity"] == WI_SERVICE_ACCOUNT


# --------------------------------------------------------------------------- Claude Code


@pytest.mark.parametrize("alias", ["claude-wi", "gem-wi"])
def test_claude_code_runs_a_tool_through_vertex(
    gateway: Gateway, alias: str, tmp_path: Path
) -> None:
    """US-001 on Vertex with workload identity: `claude -p` runs Read and answers."""
    since = gateway.claude_read_turn(alias, tmp_path).started
    calls = [r for r in gateway.sim.requests() if r.get("vertex")]
    assert calls
    assert {r["google_identity"] for r in calls} == {WI_SERVICE_ACCOUNT}
    rows = eventually(
        lambda: [r for r in [gateway.rows(since)] if len(r) >= len(calls)], what="a row per call"
    )[0]
    assert {r["provider"] for r in rows} == {BY_ALIAS[alias].provider}
    assert all(r["status"] == "success" and r["cost_usd"] > 0 for r in rows)
