"""A model nobody prices is not charged $0 under a budget, and a budget downgrade goes to the
cheapest alias of its tier: through a gateway run from exactly what the operator renders.

User stories:
- The platform opened `openrouter/deepseek/deepseek-chat` without a `pricing`; LiteLLM's cost
  map has no price for it either. Alice's key has a budget: her request to that alias is refused
  (403 in the client's own shape, naming the alias, the model and `spec.catalog[].pricing`),
  and nothing reaches the provider. Bob's key has no budget: his is served, charged $0, and the
  gateway logs it. The gateway named the unpriced model in its log when it loaded its rules.
- Alice's budget is spent (limit $0) and downgrades to `low`: a request for the high-tier alias
  goes to `b-mini` (gpt-4o-mini at LiteLLM's $0.15 / $0.60), the cheapest low alias, not to
  `a-qwen` (the first by name, $0.30 / $1.20) nor the unpriced one.

Every provider is the provider simulator (e2e/provider_sim), on each type's own protocol.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from e2e.fixtures import Services
from e2e.helpers import alias_body, eventually
from e2e.provider_sim import SimulatorHandle
from e2e.rendered_gateway import LEDGER_COLUMNS, Gateway, run_rendered_gateway
from tenantgw.api import BudgetPolicy, ModelAlias, Tenant
from tenantgw.render import RenderInputs, StorageEndpoints

pytestmark = pytest.mark.e2e

TENANT = "unpriced-" + secrets.token_hex(3)
NAMESPACE = f"tenant-{TENANT}"
PROVIDER_KEY = "sk-sim-" + secrets.token_hex(8)
BOB_KEY = "sk-tgw-" + secrets.token_hex(20)
UNPRICED = "deepseek/deepseek-chat"

ALIASES: dict[str, tuple[str, str]] = {
    "reasoning": ("openrouter", "qwen/qwen3-max"),  # high, the platform's price
    "a-qwen": ("openrouter", "qwen/qwen3-coder"),  # low, $0.30 / $1.20: first by name
    "b-mini": ("openai", "gpt-4o-mini"),  # low, LiteLLM's $0.15 / $0.60: the cheapest
    "cheap-deepseek": ("openrouter", UNPRICED),  # low, no price anywhere
}


def tenant_inputs(sim: SimulatorHandle, storage: StorageEndpoints, key: str) -> RenderInputs:
    keyed = {"credentialsSecretRef": {"name": "provider", "key": "apiKey"}, "region": "us-east-1"}
    tenant = Tenant.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": TENANT, "uid": "00000000-0000-4000-8000-00000000c0de"},
            "spec": {
                "providers": [
                    {
                        "name": "openrouter",
                        "type": "openrouter",
                        "apiBase": sim.root_url + "/api/v1",
                        **keyed,
                    },
                    {"name": "openai", "type": "openai", "apiBase": sim.url, **keyed},
                ],
                "catalog": [
                    {
                        "provider": "openrouter",
                        "model": "qwen/qwen3-max",
                        "costTier": "high",
                        "pricing": {"inputPerMillion": 5.0, "outputPerMillion": 20.0},
                    },
                    {
                        "provider": "openrouter",
                        "model": "qwen/qwen3-coder",
                        "costTier": "low",
                        "pricing": {"inputPerMillion": 0.30, "outputPerMillion": 1.20},
                    },
                    {"provider": "openai", "model": "gpt-4o-mini", "costTier": "low"},
                    {"provider": "openrouter", "model": UNPRICED, "costTier": "low"},
                ],
                "keys": [{"name": "alice"}, {"name": "bob"}],
                "routing": {"defaultAlias": "a-qwen"},
                "compliance": {"piiRedaction": {"mode": "off"}},
                "gateway": {"replicas": 1},
            },
        }
    )
    aliases = [
        ModelAlias.model_validate(
            alias_body(NAMESPACE, name, targets=[{"provider": provider, "model": model}])
        )
        for name, (provider, model) in ALIASES.items()
    ]
    # Spent from the first request: every request of alice's is past the limit.
    budget = BudgetPolicy.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "BudgetPolicy",
            "metadata": {"name": "alice-daily", "namespace": NAMESPACE, "generation": 1},
            "spec": {
                "scope": {"kind": "Key", "name": "alice"},
                "period": "daily",
                "limitUSD": 0,
                "onExceeded": {"action": "downgrade", "toCostTier": "low"},
            },
        }
    )
    return RenderInputs(
        tenant=tenant,
        aliases=aliases,
        budgets=[budget],
        master_key="sk-tgw-master-" + secrets.token_hex(8),
        keys={"alice": key, "bob": BOB_KEY},
        image="tenantgw/gateway:e2e",
        monitoring=False,
        storage=storage,
    )


@pytest.fixture(scope="module")
def gateway(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with run_rendered_gateway(
        services,
        tmp_path_factory.mktemp("unpriced"),
        role_prefix="tg_unpriced",
        inputs=tenant_inputs,
        provider_secrets={"provider": {"apiKey": PROVIDER_KEY}},
        simulator_kwargs={"api_key": PROVIDER_KEY},
    ) as gateway:
        yield gateway


def log_text(gateway: Gateway) -> str:
    return gateway.log.read_text(errors="replace")


def ask(client: anthropic.Anthropic, alias: str, marker: str) -> anthropic.types.Message:
    return client.messages.create(
        model=alias, max_tokens=64, messages=[{"role": "user", "content": marker}]
    )


def test_the_gateway_names_the_unpriced_model_when_it_loads_its_rules(gateway: Gateway) -> None:
    line = eventually(
        lambda: next(
            (ln for ln in log_text(gateway).splitlines() if "has no price for" in ln), None
        ),
        30,
        "the start-up line naming the unpriced model",
    )
    assert "model alias cheap-deepseek" in line
    assert f"openrouter/{UNPRICED}" in line
    assert "spec.catalog[].pricing" in line
    # Only that one: priced by the catalog or by LiteLLM's map, the others are not named.
    assert "a-qwen" not in line
    assert "b-mini" not in line


def test_a_budgeted_request_to_an_unpriced_model_is_refused_in_the_clients_shape(
    gateway: Gateway,
) -> None:
    marker = f"unpriced-{secrets.token_hex(4)}"
    since = time.time()
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        ask(gateway.anthropic(), "cheap-deepseek", marker)
    message = str(refused.value)
    assert refused.value.status_code == 403
    assert "'cheap-deepseek'" in message
    assert f"openrouter/{UNPRICED}" in message
    assert "spec.catalog[].pricing" in message
    body = refused.value.body
    assert isinstance(body, dict)
    assert body.get("type") == "permission_error" or "permission_error" in str(body)

    openai_client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as also:
        openai_client.chat.completions.create(
            model="cheap-deepseek", messages=[{"role": "user", "content": marker}]
        )
    assert "spec.catalog[].pricing" in str(also.value)

    assert gateway.calls(marker) == [], "an unpriced model was called under a budget"
    rows = eventually(lambda: gateway.rows(since) or None, 30, "the refusals' ledger rows")
    assert {r["status"] for r in rows} == {"error"}
    assert {r["alias"] for r in rows} == {"cheap-deepseek"}


def test_an_unbudgeted_request_is_served_and_logged(gateway: Gateway) -> None:
    marker = f"bob-{secrets.token_hex(4)}"
    since = time.time()
    bob = anthropic.Anthropic(base_url=gateway.url, api_key=BOB_KEY, max_retries=0, timeout=60)
    answer = ask(bob, "cheap-deepseek", marker)
    assert answer.content
    assert gateway.upstream(marker)["body"]["model"] == UNPRICED
    rows = eventually(lambda: gateway.rows(since) or None, 30, "bob's ledger row")
    (row,) = rows
    assert (row["key_name"], row["alias"], row["status"]) == ("bob", "cheap-deepseek", "success")
    assert row["cost_usd"] == 0  # what the platform let through, visibly
    assert "served without a price" in log_text(gateway)


def test_a_downgrade_goes_to_the_cheapest_alias_of_its_tier(gateway: Gateway) -> None:
    marker = f"downgrade-{secrets.token_hex(4)}"
    since = time.time()
    answer = ask(gateway.anthropic(), "reasoning", marker)
    assert answer.content
    assert gateway.upstream(marker)["body"]["model"] == "gpt-4o-mini"
    columns = (*LEDGER_COLUMNS, "downgraded_from")
    rows: list[dict[str, Any]] = eventually(
        lambda: gateway.rows(since, columns) or None, 30, "the downgraded request's row"
    )
    (row,) = rows
    assert (row["alias"], row["downgraded_from"]) == ("b-mini", "reasoning")
    assert row["cost_usd"] > 0  # LiteLLM's list price of gpt-4o-mini
