"""A Tenant with spec.gateway.tls: its gateway serves HTTPS, and only HTTPS, to real clients.

The gateway process runs from exactly what the operator renders for the Tenant (render_tenant,
mounted as the kubelet would, the kubernetes.io/tls Secret included), with a CA and a server
certificate made in the test. A developer who trusts the CA as `tenantctl onboard` says
(SSL_CERT_FILE for the SDKs, NODE_EXTRA_CA_CERTS for Claude Code) is served and metered; a
client that speaks plain HTTP, or trusts another CA, gets nothing and reaches no provider.
"""

from __future__ import annotations

import secrets
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from e2e.claude import ClaudeCodeError, run_claude, seed_home
from e2e.fixtures import Services
from e2e.helpers import eventually
from e2e.provider_sim import SimulatorHandle
from e2e.rendered_gateway import Gateway, alice_inputs, run_rendered_gateway
from e2e.tls_certs import CertificateAuthority
from tenantgw.api import ModelAlias, Tenant
from tenantgw.render import RenderInputs, StorageEndpoints

pytestmark = pytest.mark.e2e

TENANT = "tls-" + secrets.token_hex(3)
NAMESPACE = f"tenant-{TENANT}"
ALIAS = "fast"
SECRET = "gateway-tls"
PROVIDER_KEY = "sk-sim-provider-" + secrets.token_hex(6)


def tenant_inputs(sim: SimulatorHandle, storage: StorageEndpoints, key: str) -> RenderInputs:
    tenant = Tenant.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": TENANT, "uid": "00000000-0000-4000-8000-00000000a7e5"},
            "spec": {
                "providers": [
                    {
                        "name": "compat",
                        "type": "openai-compatible",
                        "apiBase": sim.url,
                        "credentialsSecretRef": {"name": "compat", "key": "apiKey"},
                    }
                ],
                "catalog": [
                    {
                        "provider": "compat",
                        "model": "sim-fast",
                        "costTier": "low",
                        "pricing": {"inputPerMillion": 0.3, "outputPerMillion": 1.2},
                    }
                ],
                "keys": [{"name": "alice"}],
                "routing": {"defaultAlias": ALIAS},
                "gateway": {"replicas": 1, "tls": {"secretName": SECRET}},
            },
        }
    )
    alias = ModelAlias.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "ModelAlias",
            "metadata": {"name": ALIAS, "namespace": NAMESPACE},
            "spec": {"targets": [{"provider": "compat", "model": "sim-fast"}]},
        }
    )
    return alice_inputs(tenant, [alias], storage, key)


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("gateway-ca"))


@pytest.fixture(scope="module")
def gateway(
    services: Services,
    authority: CertificateAuthority,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    # The names the Certificate the operator renders asks for, and loopback, where it runs here.
    pem = authority.issue(
        "gateway", [f"gateway.{NAMESPACE}.svc", "gateway", "localhost", "127.0.0.1"]
    )
    with run_rendered_gateway(
        services,
        tmp_path_factory.mktemp("gateway-tls"),
        role_prefix="tg_tls",
        inputs=tenant_inputs,
        provider_secrets={"compat": {"apiKey": PROVIDER_KEY}, SECRET: pem.secret_data()},
        simulator_kwargs={"api_key": PROVIDER_KEY},
        ca=authority.cert_path,
    ) as gateway:
        yield gateway


@pytest.fixture
def other_ca(tmp_path: Path) -> Path:
    """A CA the gateway's certificate was not signed by."""
    return CertificateAuthority(tmp_path / "other", "someone else's CA").cert_path


def message(text: str) -> dict[str, object]:
    return {"model": ALIAS, "max_tokens": 256, "messages": [{"role": "user", "content": text}]}


def test_the_rendered_gateway_listens_on_https_only(gateway: Gateway) -> None:
    """The URL the harness got is https://, and its certificate chains to the test's CA."""
    assert gateway.url.startswith("https://127.0.0.1:")
    port = int(gateway.url.rsplit(":", 1)[1])
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=10)
    assert "BEGIN CERTIFICATE" in pem
    assert httpx.get(gateway.url + "/health/liveliness", verify=gateway.verify).status_code == 200


def test_anthropic_sdk_with_ssl_cert_file_is_served_and_metered(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A developer trusts the CA with SSL_CERT_FILE (onboard's hint) and uses the SDK as is."""
    monkeypatch.setenv("SSL_CERT_FILE", str(gateway.ca))
    since = time.time()
    marker = "tls-anthropic-" + secrets.token_hex(4)
    client = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0)
    msg = client.messages.create(**message(marker))  # type: ignore[call-overload]
    assert msg.content[0].type == "text"
    assert gateway.upstream(marker)["model"] == "sim-fast"
    (row,) = eventually(lambda: gateway.rows(since), what="the ledger row")
    assert row["key_name"] == "alice"
    assert row["status"] == "success"


def test_openai_sdk_with_ssl_cert_file_is_served_and_streams(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The openai SDK, streamed, over the same HTTPS port with the CA from SSL_CERT_FILE."""
    monkeypatch.setenv("SSL_CERT_FILE", str(gateway.ca))
    since = time.time()
    marker = "tls-openai-" + secrets.token_hex(4)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model=ALIAS, messages=[{"role": "user", "content": marker}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert gateway.upstream(marker)["model"] == "sim-fast"
    (row,) = eventually(lambda: gateway.rows(since), what="the ledger row")
    assert row["stream"] is True


def test_plain_http_to_the_https_port_gets_no_answer(gateway: Gateway) -> None:
    """An attacker (or a misconfigured client) speaking plain HTTP reaches nothing."""
    marker = "tls-plain-" + secrets.token_hex(4)
    plain = gateway.url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.post(
            plain + "/v1/messages",
            json=message(marker),
            headers={"x-api-key": gateway.key, "anthropic-version": "2023-06-01"},
            timeout=10,
        )
    client = anthropic.Anthropic(base_url=plain, api_key=gateway.key, max_retries=0)
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.create(**message(marker))  # type: ignore[call-overload]
    assert gateway.calls(marker) == [], "a plain-HTTP request reached the provider"


def test_a_client_trusting_another_ca_refuses_the_gateway(
    gateway: Gateway, other_ca: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The certificate is checked: a client whose trust store lacks the CA does not connect."""
    monkeypatch.setenv("SSL_CERT_FILE", str(other_ca))
    marker = "tls-untrusted-" + secrets.token_hex(4)
    client = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0)
    with pytest.raises(anthropic.APIConnectionError) as caught:
        client.messages.create(**message(marker))  # type: ignore[call-overload]
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value.__cause__)
    oa = openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        oa.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": marker}])
    assert gateway.calls(marker) == []


def test_claude_code_with_node_extra_ca_certs_runs_a_tool_over_https(
    gateway: Gateway, tmp_path: Path
) -> None:
    """Claude Code, given the CA as onboard says (NODE_EXTRA_CA_CERTS), works end to end."""
    extra_env = {"NODE_EXTRA_CA_CERTS": str(gateway.ca)}
    since = gateway.claude_read_turn(ALIAS, tmp_path, extra_env).started
    rows = eventually(lambda: gateway.rows(since), what="the ledger rows of the turns")
    assert all(r["key_name"] == "alice" for r in rows)


def test_claude_code_without_the_ca_refuses_the_gateway(gateway: Gateway, tmp_path: Path) -> None:
    """Without the CA, Claude Code does not talk to the gateway: no provider call, an error."""
    project = tmp_path / "project"
    project.mkdir()
    home = tmp_path / "home"
    seed_home(home, [project])
    marker = "tls-claude-untrusted-" + secrets.token_hex(4)
    env = {
        "ANTHROPIC_BASE_URL": gateway.url,
        "ANTHROPIC_AUTH_TOKEN": gateway.key,
        "ANTHROPIC_MODEL": ALIAS,
        "ANTHROPIC_SMALL_FAST_MODEL": ALIAS,
    }
    try:
        run = run_claude(
            f"Say {marker}", project=project, home=home, gateway_env=env, model=ALIAS,
            max_retries=0, timeout=180,
        )  # fmt: skip
    except ClaudeCodeError as exc:
        pytest.fail(str(exc), pytrace=False)
    failed = run.returncode != 0 or run.result.get("is_error") is True
    assert failed, run.describe()
    assert run.result.get("api_error") == "tls_untrusted_ca", run.describe()
    assert gateway.calls(marker) == [], "Claude Code reached the provider without the CA"
