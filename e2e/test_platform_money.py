"""The platform owns money: a tenant admin's ModelAlias edits cannot lower a price, move a model
to a cheaper tier, route outside the catalog, or make a BudgetPolicy stop applying.

Against the real control plane, operator and a real gateway process (run from exactly what its
pod would mount, in front of the provider simulator). The tenant admin is impersonated with
`kubectl --as`, holding only what the `tenantgw-tenant-admin` role grants in its namespace.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any

import openai
import psycopg
import pytest
import yaml
from kubernetes.client import ApiClient

from e2e.fixtures import DEV, ROOT, Cluster
from e2e.gateway_fixture import wait_ready
from e2e.helpers import K8s, alias_body, eventually, secret_body, tenant_body
from e2e.operator_fixture import RunningOperator, free_port
from e2e.provider_sim import SimulatorHandle, start_simulator
from tenantgw.cli import devgateway

pytestmark = pytest.mark.e2e

# The platform's catalog: what each simulator model costs (USD per million tokens) and its tier.
PRICES = {"sim-big": (15.0, 75.0), "sim-mid": (3.0, 15.0), "sim-mini": (0.25, 1.25)}
TIERS = {"sim-big": "high", "sim-mid": "medium", "sim-mini": "low"}
ALIASES = {"fast-code": "sim-mid", "reasoning": "sim-big", "docs": "sim-mini"}


@dataclass
class MoneyTenant:
    """A tenant with a catalog, three aliases, a downgrading budget and a running gateway."""

    name: str
    namespace: str
    admin: str
    """The impersonated tenant admin (bound to tenantgw-tenant-admin in the namespace)."""
    url: str
    key: str
    postgres_dsn: str
    simulator: SimulatorHandle
    process: Popen[bytes]
    log_file: Path


def tenant_spec() -> dict[str, Any]:
    return {
        "providers": [
            {
                "name": "sim",
                "type": "openai-compatible",
                "apiBase": "http://127.0.0.1:9/v1",  # the simulator's URL is set at start-up
                "region": "us-east-1",
                "credentialsSecretRef": {"name": "sim", "key": "apiKey"},
            }
        ],
        "catalog": [
            {
                "provider": "sim",
                "model": model,
                "costTier": TIERS[model],
                "pricing": {"inputPerMillion": price[0], "outputPerMillion": price[1]},
            }
            for model, price in PRICES.items()
        ],
        "keys": [{"name": "alice"}],
        "routing": {"defaultAlias": "fast-code"},
        "gateway": {"replicas": 1},
    }


def alias_of(ns: str, name: str, model: str, **spec: Any) -> dict[str, Any]:
    return alias_body(ns, name, targets=[{"provider": "sim", "model": model}], **spec)


def budget(ns: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tenantgw.io/v1alpha1",
        "kind": "BudgetPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"period": "daily", "limitUSD": 1000, **spec},
    }


@pytest.fixture(scope="module")
def money(kube: ApiClient, cluster: Cluster, operator: RunningOperator) -> Iterator[MoneyTenant]:
    k8s = K8s(kube)
    name = f"money-{uuid.uuid4().hex[:6]}"
    ns = f"tenant-{name}"
    admin = f"{name}-admin"
    k8s.apply(tenant_body(name, **tenant_spec()))
    simulator: SimulatorHandle | None = None
    process: Popen[bytes] | None = None
    try:
        eventually(lambda: k8s.namespace_exists(ns), 30, f"namespace {ns}")
        k8s.apply(secret_body(ns, "sim", {"apiKey": "sim-key-" + name}))
        cluster.run_kubectl(
            "create",
            "rolebinding",
            "team-admins",
            "-n",
            ns,
            "--clusterrole=tenantgw-tenant-admin",
            f"--user={admin}",
        )
        for alias, model in ALIASES.items():
            k8s.apply(alias_of(ns, alias, model))
        k8s.apply(
            budget(
                ns,
                "team-daily",
                scope={"kind": "Tenant"},
                onExceeded={"action": "downgrade", "toCostTier": "low"},
            )
        )
        k8s.wait_condition(lambda: k8s.tenant(name), "Ready", "True", timeout=60)
        eventually(lambda: set(rules(k8s, ns)["aliases"]) == set(ALIASES), 30, "every alias")
        simulator_url, simulator = start_simulator()
        port = free_port()
        spec = devgateway.build_spec(
            kube, name, workdir=DEV / "gateways" / name, port=port, upstreams={"*": simulator_url}
        )
        # This checkout's gateway plugins, not those of the editable install the venv points at.
        spec.env["PYTHONPATH"] = str(ROOT / "operator")
        log_file = DEV / "logs" / f"gateway-{name}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        process = devgateway.run(spec, log_file=log_file)
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process, log_file)
        yield MoneyTenant(
            name=name,
            namespace=ns,
            admin=admin,
            url=url,
            key=k8s.secret_value(ns, "gateway-key-alice", "apiKey"),
            postgres_dsn=k8s.secret_value(ns, "gateway", "postgresDsn"),
            simulator=simulator,
            process=process,
            log_file=log_file,
        )
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except Exception:
                process.kill()
        if simulator is not None:
            simulator.stop()
        k8s.delete("tenantgw.io/v1alpha1", "Tenant", name)


# --------------------------------------------------------------------------- helpers


def as_tenant_admin(cluster: Cluster, t: MoneyTenant, *args: str, stdin: str | None = None) -> Any:
    return cluster.run_kubectl("--as", t.admin, *args, stdin=stdin, check=False)


def admin_applies(cluster: Cluster, t: MoneyTenant, obj: dict[str, Any]) -> Any:
    """`kubectl apply` of `obj` by the tenant admin; the completed process."""
    return as_tenant_admin(cluster, t, "apply", "-f", "-", stdin=yaml.safe_dump(obj))


def rules(k8s: K8s, ns: str) -> dict[str, Any]:
    data = k8s.core.read_namespaced_config_map("gateway-config", ns).data
    parsed: dict[str, Any] = json.loads(data["tenantgw.json"])
    return parsed


def litellm_config(k8s: K8s, ns: str) -> dict[str, Any]:
    data = k8s.core.read_namespaced_config_map("gateway-config", ns).data
    parsed: dict[str, Any] = yaml.safe_load(data["config.yaml"])
    return parsed


def tiers(k8s: K8s, ns: str) -> dict[str, str]:
    return {name: a["cost_tier"] for name, a in rules(k8s, ns)["aliases"].items()}


def ask(t: MoneyTenant, model: str, text: str) -> str:
    client = openai.OpenAI(base_url=f"{t.url}/v1", api_key=t.key, max_retries=0)
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}]
    )
    return reply.id


def ledger_row(t: MoneyTenant, since: float, alias: str) -> tuple[int, int, float]:
    """(input tokens, output tokens, cost) of the one request to `alias` after `since`."""

    def rows() -> list[tuple[Any, ...]]:
        with psycopg.connect(t.postgres_dsn, connect_timeout=5) as conn:
            return conn.execute(
                "select input_tokens, output_tokens, cost_usd from usage"
                " where ts >= to_timestamp(%s) and alias = %s and status = 'success'",
                (since, alias),
            ).fetchall()

    found = eventually(rows, 30, f"the usage row of a request to {alias}")
    assert len(found) == 1, found
    return int(found[0][0]), int(found[0][1]), float(found[0][2])


def catalog_cost(model: str, input_tokens: int, output_tokens: int) -> float:
    price_in, price_out = PRICES[model]
    return (input_tokens * price_in + output_tokens * price_out) / 1_000_000


def refusal(t: MoneyTenant, model: str) -> openai.APIStatusError | None:
    """The gateway's budget refusal of a request, None when it is served."""
    try:
        ask(t, model, "are you still serving?")
    except openai.APIStatusError as exc:
        # A budget refusal: 429 here, 402 billing_error where budget refusals are final.
        if exc.status_code in (402, 429):
            return exc
        raise
    return None


# --------------------------------------------------------------------------- the stories


def test_a_tenant_admin_cannot_lower_a_price_or_tier(
    money: MoneyTenant, kube: ApiClient, cluster: Cluster
) -> None:
    """Money: the price of a request is the catalog's, whatever the tenant admin writes."""
    t, k8s = money, K8s(kube)
    since = time.time()
    ask(t, "reasoning", "what does o3 cost?")
    tokens_in, tokens_out, cost = ledger_row(t, since, "reasoning")
    assert tokens_in > 0
    assert tokens_out > 0
    assert cost == pytest.approx(catalog_cost("sim-big", tokens_in, tokens_out), rel=1e-6)

    # The tenant admin may edit aliases, but not the Tenant (its catalog) or its budgets.
    for verb, resource, allowed in [
        ("patch", "modelaliases", "yes"),
        ("patch", "tenants", "no"),
        ("patch", "budgetpolicies", "no"),
        ("delete", "budgetpolicies", "no"),
    ]:
        answer = as_tenant_admin(cluster, t, "auth", "can-i", verb, resource, "-n", t.namespace)
        assert answer.stdout.strip() == allowed, (verb, resource, answer.stdout, answer.stderr)

    # A zero price and a cheaper tier on the alias itself: the API server has no such fields.
    free = alias_of(t.namespace, "reasoning", "sim-big")
    free["spec"]["targets"][0]["pricing"] = {"inputPerMillion": 0, "outputPerMillion": 0}
    cheap = alias_of(t.namespace, "reasoning", "sim-big", costTier="low")
    for attempt, field in [(free, "pricing"), (cheap, "costTier")]:
        proc = admin_applies(cluster, t, attempt)
        assert proc.returncode != 0, f"the API server accepted {field}"
        assert field in proc.stderr
        assert "unknown field" in proc.stderr or "not declared in schema" in proc.stderr
    # The catalog is the platform's: the tenant admin cannot add a free entry either.
    free_entry = {"provider": "sim", "model": "sim-big", "costTier": "low"}
    patch = json.dumps({"spec": {"catalog": [free_entry]}})
    proc = as_tenant_admin(cluster, t, "patch", "tenant", t.name, "--type=merge", "-p", patch)
    assert proc.returncode != 0
    assert "forbidden" in proc.stderr.lower()

    # An edit within the catalog is routing only: the dear model keeps its price and tier
    # behind a new, innocent-looking alias.
    proc = admin_applies(cluster, t, alias_of(t.namespace, "cheap-chat", "sim-big"))
    assert proc.returncode == 0, proc.stderr

    def cheap_chat_rendered() -> list[dict[str, Any]]:
        config = litellm_config(k8s, t.namespace)
        return [m for m in config["model_list"] if m["model_name"] == "cheap-chat"]

    (deployment,) = eventually(cheap_chat_rendered, 30, "alias cheap-chat in config.yaml")
    info = deployment["model_info"]
    assert info["input_cost_per_token"] == pytest.approx(PRICES["sim-big"][0] / 1e6)
    assert info["output_cost_per_token"] == pytest.approx(PRICES["sim-big"][1] / 1e6)
    assert tiers(k8s, t.namespace)["cheap-chat"] == "high"

    # A model the platform did not catalogue is refused, naming the field.
    proc = admin_applies(cluster, t, alias_of(t.namespace, "cheap-chat", "sim-unlisted"))
    assert proc.returncode == 0, proc.stderr
    cond = k8s.wait_condition(lambda: k8s.alias(t.namespace, "cheap-chat"), "Accepted", "False")
    assert cond["reason"] == "NotInCatalog"
    assert cond["message"].startswith(
        f'spec.targets[0].model: model "sim-unlisted" of provider "sim" is not in spec.catalog '
        f"of Tenant {t.name}"
    )
    eventually(lambda: not cheap_chat_rendered(), 30, "the refused alias to leave config.yaml")
    assert "sim-unlisted" not in json.dumps(litellm_config(k8s, t.namespace))
    as_tenant_admin(cluster, t, "delete", "modelalias", "cheap-chat", "-n", t.namespace)

    # After all that, a request to reasoning still costs the catalog's price.
    since = time.time()
    ask(t, "reasoning", "and now?")
    tokens_in, tokens_out, cost = ledger_row(t, since, "reasoning")
    assert cost == pytest.approx(catalog_cost("sim-big", tokens_in, tokens_out), rel=1e-6)
    expected = {a: TIERS[m] for a, m in ALIASES.items()}
    eventually(lambda: tiers(k8s, t.namespace) == expected, 30, "the catalog's tiers")


def test_a_budget_the_tenant_breaks_refuses_requests_naming_it(
    money: MoneyTenant, kube: ApiClient, cluster: Cluster
) -> None:
    """Fail closed: relabelling the aliases a BudgetPolicy depends on blocks, never frees."""
    t, k8s = money, K8s(kube)

    def policy(name: str) -> dict[str, Any]:
        found: dict[str, Any] = k8s.custom.get_namespaced_custom_object(
            "tenantgw.io", "v1alpha1", t.namespace, "budgetpolicies", name
        )
        return found

    k8s.wait_condition(lambda: policy("team-daily"), "Accepted", "True")
    ask(t, "fast-code", "served while the budget applies")

    # The only low alias now targets the dear model: docs is no longer low, so the downgrade
    # of team-daily has nowhere to go. The policy is not dropped: the gateway refuses.
    docs_dear = alias_of(t.namespace, "docs", "sim-big")
    assert admin_applies(cluster, t, docs_dear).returncode == 0
    eventually(lambda: tiers(k8s, t.namespace)["docs"] == "high", 30, "docs to render as high")
    cond = k8s.wait_condition(lambda: policy("team-daily"), "Accepted", "False")
    assert cond["reason"] == "NoAliasInTier"
    assert "refuses the requests in its scope (the whole tenant)" in cond["message"]
    (entry,) = [b for b in rules(k8s, t.namespace)["budgets"] if b["name"] == "team-daily"]
    assert entry["unenforceable"]["reason"] == "NoAliasInTier"
    exc = eventually(lambda: refusal(t, "fast-code"), 30, "the gateway to refuse for team-daily")
    body = exc.body
    assert isinstance(body, dict)
    assert "budget team-daily (tenant) cannot be enforced (NoAliasInTier" in body["message"]

    # Putting a low model back lifts it.
    assert admin_applies(cluster, t, alias_of(t.namespace, "docs", "sim-mini")).returncode == 0
    k8s.wait_condition(lambda: policy("team-daily"), "Accepted", "True")
    eventually(lambda: refusal(t, "fast-code") is None, 30, "fast-code to be served again")

    # A cap on one alias survives the alias being deleted: it then covers the whole tenant.
    k8s.apply(
        budget(t.namespace, "reasoning-cap", scope={"kind": "ModelAlias", "name": "reasoning"})
    )
    try:
        k8s.wait_condition(lambda: policy("reasoning-cap"), "Accepted", "True")
        proc = as_tenant_admin(cluster, t, "delete", "modelalias", "reasoning", "-n", t.namespace)
        assert proc.returncode == 0, proc.stderr
        cond = k8s.wait_condition(lambda: policy("reasoning-cap"), "Accepted", "False")
        assert cond["reason"] == "UnknownModelAlias"
        exc = eventually(lambda: refusal(t, "docs"), 30, "the gateway to refuse for reasoning-cap")
        body = exc.body
        assert isinstance(body, dict)
        assert (
            "budget reasoning-cap (tenant) cannot be enforced (UnknownModelAlias" in body["message"]
        )
    finally:
        k8s.apply(alias_of(t.namespace, "reasoning", "sim-big"))
        k8s.delete("tenantgw.io/v1alpha1", "BudgetPolicy", "reasoning-cap", t.namespace)
    eventually(lambda: refusal(t, "docs") is None, 30, "docs to be served again")
