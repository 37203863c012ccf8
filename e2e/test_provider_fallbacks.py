"""Fallback across protocols, and an A/B split's weights, through a gateway the operator renders.

The gateway runs from exactly what `render_tenant` makes for one Tenant (mounted as the kubelet
would), with its own tenant role in PostgreSQL and a throwaway redis-server; every provider is
the provider simulator, speaking each provider's own protocol (e2e/provider_sim).

Aliases:
    primary  -> Bedrock (InvokeModel / Converse, AWS event streams), fallbacks: [spare]
    spare    -> Azure OpenAI (chat completions on a deployment path)
    ab       -> two targets of one OpenAI-compatible provider, weights 80 / 20

For each fault kind of the primary (429 ThrottlingException, 5xx, a Bedrock timeout, the
connection cut before its first byte) a request for `primary` must be answered by `spare`
within that one request: the client (anthropic SDK, plain and streamed; the openai SDK
streamed) sees one clean answer, and the ledger one row, for the alias and provider that
served, listing Bedrock's failed attempt (status and error class). The A/B split is held to
its weights by a chi-square goodness-of-fit test over 1,000 requests.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.fixtures import Services
from e2e.helpers import eventually
from e2e.provider_sim import SimulatorHandle
from e2e.rendered_gateway import (
    LEDGER_COLUMNS,
    Gateway,
    alice_inputs,
    model_aliases,
    run_rendered_gateway,
)
from tenantgw.api import Tenant
from tenantgw.render import RenderInputs, StorageEndpoints

pytestmark = pytest.mark.e2e

TENANT = "provfb-" + secrets.token_hex(3)
NAMESPACE = f"tenant-{TENANT}"
REGION = "us-east-1"
CLAUDE = "anthropic.claude-sonnet-4-5-20250929-v1:0"
DEPLOYMENT = "gpt-4o"
BEDROCK_KEY = "ABSK" + secrets.token_hex(16)
AZURE_KEY = "azure-" + secrets.token_hex(12)
COMPAT_KEY = "sk-compat-" + secrets.token_hex(8)
AB_WEIGHTS = {"sim-a": 80, "sim-b": 20}
AB_REQUESTS = 1000
CHI2_CRITICAL_1DF_P001 = 10.828
"""The chi-square value with one degree of freedom that p = 0.001 leaves above it."""

FAULTS = {
    "429": "429",  # ThrottlingException, with the gateway's one retry, then the fallback
    "5xx": "503",  # ServiceUnavailableException
    "timeout": "timeout",  # Bedrock hangs, then ModelTimeoutException (408)
    "reset": "reset",  # the connection closed before the first response byte
}


def tenant_inputs(sim: SimulatorHandle, storage: StorageEndpoints, key: str) -> RenderInputs:
    providers = [
        {
            "name": "bedrock",
            "type": "bedrock",
            "apiBase": sim.root_url,
            "region": REGION,
            "credentialsSecretRef": {"name": "bedrock", "key": "apiKey"},
        },
        {
            "name": "azure",
            "type": "azure",
            "apiBase": sim.root_url,
            "apiVersion": "2024-10-21",
            "region": "eastus",
            "credentialsSecretRef": {"name": "azure", "key": "apiKey"},
        },
        {
            "name": "compat",
            "type": "openai-compatible",
            "apiBase": sim.url,
            "region": REGION,
            "credentialsSecretRef": {"name": "compat", "key": "apiKey"},
        },
    ]
    catalog = [
        {
            "provider": "bedrock",
            "model": CLAUDE,
            "costTier": "high",
            "pricing": {"inputPerMillion": 3.0, "outputPerMillion": 15.0},
        },
        {
            "provider": "azure",
            "model": DEPLOYMENT,
            "costTier": "high",
            "pricing": {"inputPerMillion": 2.5, "outputPerMillion": 10.0},
        },
    ] + [
        {
            "provider": "compat",
            "model": model,
            "costTier": "low",
            "pricing": {"inputPerMillion": 1.0, "outputPerMillion": 2.0},
        }
        for model in AB_WEIGHTS
    ]
    tenant = Tenant.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": TENANT, "uid": "00000000-0000-4000-8000-0000000f0b01"},
            "spec": {
                "providers": providers,
                "catalog": catalog,
                "keys": [{"name": "alice"}],
                "routing": {"defaultAlias": "primary"},
                "compliance": {"piiRedaction": {"mode": "off"}},
                "gateway": {"replicas": 1},
            },
        }
    )
    specs: dict[str, dict[str, Any]] = {
        "primary": {"targets": [{"provider": "bedrock", "model": CLAUDE}], "fallbacks": ["spare"]},
        "spare": {"targets": [{"provider": "azure", "model": DEPLOYMENT}]},
        "ab": {
            "targets": [
                {"provider": "compat", "model": model, "weight": weight}
                for model, weight in AB_WEIGHTS.items()
            ]
        },
    }
    aliases = model_aliases(NAMESPACE, specs)
    return alice_inputs(tenant, aliases, storage, key)


SIMULATOR: dict[str, Any] = {
    "aws_region": REGION,
    "bedrock_api_keys": [BEDROCK_KEY],
    "azure_deployments": [DEPLOYMENT],
    # Azure and the OpenAI-compatible provider check this key; Bedrock its own list.
    "api_key": AZURE_KEY,
    "timeout_s": 1.0,  # how long the "timeout" fault hangs before Bedrock's 408
    "max_recorded": AB_REQUESTS + 100,
}


def configure(sim: SimulatorHandle) -> None:
    sim.reset()
    sim.configure(**SIMULATOR)


@pytest.fixture(scope="module")
def gateway(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with run_rendered_gateway(
        services,
        tmp_path_factory.mktemp("provider-fallbacks"),
        role_prefix="tg_provfb",
        inputs=tenant_inputs,
        provider_secrets={
            "bedrock": {"apiKey": BEDROCK_KEY},
            "azure": {"apiKey": AZURE_KEY},
            "compat": {"apiKey": AZURE_KEY},
        },
        simulator_kwargs=SIMULATOR,
    ) as gateway:
        yield gateway


@pytest.fixture(autouse=True)
def _fresh_simulator(gateway: Gateway) -> None:
    configure(gateway.sim)


FAILED_ATTEMPT: dict[str, tuple[int, str]] = {
    "429": (429, "RateLimitError"),
    "5xx": (503, "ServiceUnavailableError"),
    "timeout": (408, "Timeout"),
    "reset": (503, "ServiceUnavailableError"),  # LiteLLM maps the dropped connection so
}
"""What the served row's `failed_attempts` says of Bedrock's attempt, per fault: the HTTP
status and the exception class LiteLLM raised for it."""


def check_fallback(
    gateway: Gateway, marker: str, since: float, *, stream: bool, fault: str
) -> None:
    """Bedrock was tried (and failed) first, Azure answered, one ledger row says both."""
    calls = gateway.calls(marker)
    protocols = [c["protocol"] for c in calls]
    assert protocols[0] == "bedrock", protocols
    assert protocols[-1] == "azure", protocols
    assert set(protocols) == {"bedrock", "azure"}, protocols
    assert protocols.count("azure") == 1, "the fallback answered more than once"
    assert calls[-1]["deployment"] == DEPLOYMENT
    (row,) = eventually(
        lambda: gateway.rows(since, (*LEDGER_COLUMNS, "failed_attempts")), what="the ledger row"
    )
    print(f"{fault}: failed_attempts = {row['failed_attempts']}")
    status, error_type = FAILED_ATTEMPT[fault]
    assert row["failed_attempts"] == [
        {
            "alias": "primary",
            "provider": "bedrock",
            "provider_model": CLAUDE,
            "http_status": status,
            "error_type": error_type,
        }
    ]
    assert row["alias"] == "spare"
    assert row["provider"] == "azure"
    assert row["provider_model"] == DEPLOYMENT
    assert row["status"] == "success"
    assert row["stream"] is stream
    assert row["input_tokens"] > 0
    assert row["output_tokens"] > 0
    expected = (row["input_tokens"] * 2.5 + row["output_tokens"] * 10.0) / 1e6
    assert float(row["cost_usd"]) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_failing_bedrock_primary_is_answered_by_azure_for_the_anthropic_sdk(
    gateway: Gateway, fault: str, stream: bool
) -> None:
    gateway.sim.configure(fail_models={CLAUDE: FAULTS[fault]})
    since = time.time()
    marker = f"fb-{fault}-{secrets.token_hex(4)}"
    body: Any = {
        "model": "primary",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": marker}],
    }
    client = gateway.anthropic()
    if stream:
        with client.messages.stream(**body) as events:
            kinds = [event.type for event in events]
            msg = events.get_final_message()
        # One clean stream: one message, no error event, nothing of the failed attempt.
        assert kinds.count("message_start") == 1
        assert kinds[0] == "message_start"
        assert kinds[-1] == "message_stop"
        assert "error" not in kinds
    else:
        msg = client.messages.create(**body)
    (block,) = [b for b in msg.content if b.type == "text"]
    assert block.text == f"Hello from {DEPLOYMENT}"
    assert msg.stop_reason == "end_turn"
    check_fallback(gateway, marker, since, stream=stream, fault=fault)


@pytest.mark.parametrize("fault", ["429", "reset"])
def test_a_failing_bedrock_primary_is_answered_by_azure_for_the_openai_sdk(
    gateway: Gateway, fault: str
) -> None:
    gateway.sim.configure(fail_models={CLAUDE: FAULTS[fault]})
    since = time.time()
    marker = f"fb-oai-{fault}-{secrets.token_hex(4)}"
    chunks = list(
        gateway.openai().chat.completions.create(
            model="primary",
            messages=[{"role": "user", "content": marker}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Hello from {DEPLOYMENT}"
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    check_fallback(gateway, marker, since, stream=True, fault=fault)


def test_a_primary_that_recovers_serves_itself(gateway: Gateway) -> None:
    """The control: without a fault the primary answers, on its own protocol, and no
    fallback call is made (so the tests above see the fallback, not a misrouted alias)."""
    since = time.time()
    marker = "fb-none-" + secrets.token_hex(4)
    msg = gateway.anthropic().messages.create(
        model="primary", max_tokens=64, messages=[{"role": "user", "content": marker}]
    )
    assert msg.content[0].type == "text"
    assert [c["protocol"] for c in gateway.calls(marker)] == ["bedrock"]
    (row,) = eventually(
        lambda: gateway.rows(since, (*LEDGER_COLUMNS, "failed_attempts")), what="the ledger row"
    )
    assert (row["alias"], row["provider"]) == ("primary", "bedrock")
    assert row["failed_attempts"] is None


# --------------------------------------------------------------------------- A/B split


def chi_square(observed: Counter[str], weights: dict[str, int]) -> float:
    total = sum(observed.values())
    whole = sum(weights.values())
    return sum(
        (observed[name] - total * weight / whole) ** 2 / (total * weight / whole)
        for name, weight in weights.items()
    )


def test_chi_square_helper_rejects_a_wrong_split() -> None:
    """The statistic itself: a 50/50 split of 1,000 is far outside 80/20; 800/200 is exact."""
    assert chi_square(Counter({"sim-a": 800, "sim-b": 200}), AB_WEIGHTS) == 0.0
    assert chi_square(Counter({"sim-a": 500, "sim-b": 500}), AB_WEIGHTS) > 500
    assert chi_square(Counter({"sim-a": 850, "sim-b": 150}), AB_WEIGHTS) > CHI2_CRITICAL_1DF_P001


def test_an_ab_split_holds_its_weights_over_a_thousand_requests(gateway: Gateway) -> None:
    client = gateway.openai()
    since = time.time()
    tag = "ab-" + secrets.token_hex(4)
    for i in range(AB_REQUESTS):
        done = client.chat.completions.create(
            model="ab", messages=[{"role": "user", "content": f"{tag}-{i}"}], max_tokens=8
        )
        assert (done.choices[0].message.content or "").startswith("Hello from sim-")
    served = Counter(r["model"] for r in gateway.sim.requests() if tag in json.dumps(r["body"]))
    assert sum(served.values()) == AB_REQUESTS, served
    assert set(served) <= set(AB_WEIGHTS), served
    statistic = chi_square(served, AB_WEIGHTS)
    assert statistic < CHI2_CRITICAL_1DF_P001, (served, statistic)
    # The ledger says the same, target by target.
    rows = eventually(
        lambda: [r for r in [gateway.rows(since)] if len(r) >= AB_REQUESTS],
        timeout=60,
        what="1,000 rows",
    )[0]
    assert Counter(r["provider_model"] for r in rows) == served
    assert {r["alias"] for r in rows} == {"ab"}


def test_a_client_cannot_pick_the_target_of_an_ab_split(gateway: Gateway) -> None:
    """LiteLLM's per-request router weights (`_router_weights`, `weights`) come from the
    client's body if nobody drops them; pinning the 20% target on 40 requests would send all
    40 there (chance of that with 80/20: 0.2**40)."""
    tag = "pin-" + secrets.token_hex(4)
    pin = {"ab": {"ab-1": 1.0}}
    for i in range(40):
        gateway.openai().chat.completions.create(
            model="ab",
            messages=[{"role": "user", "content": f"{tag}-{i}"}],
            max_tokens=8,
            extra_body={"_router_weights": pin, "weights": pin},
        )
    served = Counter(r["model"] for r in gateway.sim.requests() if tag in json.dumps(r["body"]))
    assert sum(served.values()) == 40
    assert served["sim-a"] > 0, served
