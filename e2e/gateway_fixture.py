"""The brief's example tenant, reconciled by the real operator, served by a real gateway process.

`example_gateway` applies examples/ to the local control plane, waits until the operator reports
the Tenant Ready, then runs the tenant's gateway with `tenantctl dev gateway` (exactly what its
pod would mount and run) in front of the provider simulator, which stands in for every provider:
each provider's base URL is overlaid with the simulator's route of its protocol
(`simulator_upstreams`), so every alias is served by its own provider type's wire protocol;
examples/ itself keeps the real providers' URLs.
"""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from e2e.fixtures import DEV, ROOT
from e2e.helpers import K8s, eventually
from e2e.operator_fixture import RunningOperator, free_port
from e2e.provider_sim import SimulatorHandle, start_simulator
from e2e.provider_sim.server import DEFAULT_MODELS
from tenantgw.api import Tenant
from tenantgw.cli import devgateway

EXAMPLE_TENANT = "engineering-team"
EXAMPLE_NAMESPACE = "tenant-engineering-team"
GATEWAY_STARTUP_SECONDS = 180
EXAMPLE_JUDGE_MODEL = "gpt-4.1-nano"
"""The model behind the example's classifier alias (safety-review): the simulator's judge."""

SIMULATOR_BASES = {
    "openai": "/v1",  # https://api.openai.com/v1 (Responses-only models: {base}/responses)
    "openrouter": "/api/v1",  # https://openrouter.ai/api/v1
    "azure": "",  # https://<resource>.openai.azure.com (/openai/deployments/<d>/...)
    "bedrock": "",  # https://bedrock-runtime.<region>.amazonaws.com (/model/<id>/...)
    "anthropic": "",  # https://api.anthropic.com (/v1/messages)
    "ollama": "",  # http://<ollama>:11434 (/api/chat)
    "gemini": "/v1beta",  # https://generativelanguage.googleapis.com/v1beta
    "cohere": "/compatibility/v1",  # LiteLLM's api_base as rendered (render.litellm_config)
    "mistral": "/v1",
    "groq": "/v1",
    "deepseek": "/v1",
    "together": "/v1",
    "fireworks": "/v1",
    "openai-compatible": "/v1",
}
"""Where the provider simulator serves each provider type's protocol, below its root URL: the
api_base LiteLLM is given for a provider of that type (`tenantctl dev gateway --upstream`
overlays LiteLLM's api_base as is). Vertex is not here: its base is not a plain URL prefix."""


@dataclass
class ExampleGateway:
    """A running gateway of the example tenant and what a client needs to use it."""

    url: str
    tenant: str
    namespace: str
    keys: dict[str, str]
    master_key: str
    postgres_dsn: str
    simulator: SimulatorHandle
    simulator_url: str
    process: Popen[bytes]
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


def load_examples() -> dict[str, list[dict[str, Any]]]:
    docs: dict[str, list[dict[str, Any]]] = {}
    for name in ("tenant", "provider-secrets", "model-aliases", "budget"):
        text = (ROOT / "examples" / f"{name}.yaml").read_text()
        docs[name] = [d for d in yaml.safe_load_all(text) if d]
    return docs


def apply_examples(k8s: K8s, simulator_root: str | None = None) -> None:
    """Apply examples/ as a platform team would: the Tenant, then what lives in its namespace.

    With `simulator_root` the Tenant is applied with each provider's apiBase set to the
    simulator's route of its protocol (`simulator_upstreams`): the operator then renders the
    simulator's URLs itself, and a gateway runs exactly what it rendered (`make demo`).
    """
    docs = load_examples()
    if simulator_root is not None:
        tenant = docs["tenant"][0]
        upstreams = simulator_upstreams(tenant, simulator_root)
        for provider in tenant["spec"]["providers"]:
            provider["apiBase"] = upstreams[provider["name"]]

    def not_terminating() -> bool:
        # An earlier run's Tenant being deleted takes its namespace with it, maybe only after
        # this check: wait for the Tenant to go first, then for its namespace.
        try:
            if k8s.tenant(EXAMPLE_TENANT)["metadata"].get("deletionTimestamp"):
                return False
        except ApiException as exc:
            if exc.status != 404:
                raise
        if not k8s.namespace_exists(EXAMPLE_NAMESPACE):
            return True
        return k8s.core.read_namespace(EXAMPLE_NAMESPACE).status.phase != "Terminating"

    eventually(not_terminating, 120, "an earlier example tenant and its namespace to go")
    for obj in docs["tenant"]:
        k8s.apply(obj)
    eventually(
        lambda: k8s.namespace_exists(EXAMPLE_NAMESPACE), 30, "the example tenant's namespace"
    )
    for group in ("provider-secrets", "model-aliases", "budget"):
        for obj in docs[group]:
            k8s.apply(obj)


def wait_example_configured(k8s: K8s, timeout: float = 120) -> dict[str, Any]:
    """The example Tenant once it is Ready with every ModelAlias of examples/ in its gateway's
    configuration (`status.models`): an alias applied after the namespace changes the ConfigMap
    of a gateway that is Ready already (serving gateways reload it, nothing rolls), so Ready
    alone does not say the files hold it yet."""
    wanted = {str(a["metadata"]["name"]) for a in load_examples()["model-aliases"]}

    def configured() -> dict[str, Any] | None:
        tenant = k8s.tenant(EXAMPLE_TENANT)
        ready = k8s.condition(tenant, "Ready")
        models = set(tenant.get("status", {}).get("models") or [])
        return tenant if ready and ready["status"] == "True" and wanted <= models else None

    result: dict[str, Any] = eventually(
        configured, timeout, f"Tenant {EXAMPLE_TENANT} Ready with aliases {sorted(wanted)}"
    )
    return result


def simulator_upstreams(tenant: dict[str, Any], simulator_root: str) -> dict[str, str]:
    """`--upstream` of each provider of `tenant`: the simulator's route of its protocol."""
    providers = Tenant.model_validate(tenant).spec.providers
    unserved = sorted({p.type.value for p in providers} - set(SIMULATOR_BASES))
    if unserved:
        raise ValueError(f"the provider simulator has no base URL for {', '.join(unserved)}")
    return {p.name: simulator_root + SIMULATOR_BASES[p.type.value] for p in providers}


def example_upstreams(simulator_root: str) -> dict[str, str]:
    """`simulator_upstreams` of the example Tenant (examples/tenant.yaml)."""
    return simulator_upstreams(load_examples()["tenant"][0], simulator_root)


def example_simulator_config() -> dict[str, Any]:
    """What the simulator must know to play the example's providers: the classifier's model
    answers as a safety judge, and the team's Ollama has pulled the example's models (an Ollama
    answers 404 "model not found" for any other)."""
    tenant = load_examples()["tenant"][0]
    ollama = {p["name"] for p in tenant["spec"]["providers"] if p["type"] == "ollama"}
    pulled = [m["model"] for m in tenant["spec"].get("catalog", []) if m["provider"] in ollama]
    return {
        "judge_models": ["sim-judge", EXAMPLE_JUDGE_MODEL],
        "models": [*DEFAULT_MODELS, *pulled],
    }


def wait_ready(url: str, process: Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + GATEWAY_STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"the gateway exited with {process.returncode}:\n{log_file.read_text()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/health/readiness", timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    process.terminate()
    pytest.fail(
        f"the gateway was not ready in {GATEWAY_STARTUP_SECONDS}s:\n{log_file.read_text()[-4000:]}"
    )


def start_example_gateway(
    api: ApiClient, k8s: K8s, simulator_root: str
) -> tuple[str, Popen[bytes], Path]:
    """Run the example tenant's gateway locally, every provider pointed at the simulator's
    route of its protocol; returns (url, process, log file)."""
    port = free_port()
    workdir = DEV / "gateways" / EXAMPLE_TENANT
    upstreams = example_upstreams(simulator_root)
    spec = devgateway.build_spec(
        api, EXAMPLE_TENANT, workdir=workdir, port=port, upstreams=upstreams
    )
    log_file = DEV / "logs" / f"gateway-{EXAMPLE_TENANT}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_bytes(b"")
    process = devgateway.run(spec, log_file=log_file)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process, log_file)
    return url, process, log_file


@pytest.fixture(scope="session")
def example_gateway(kube: ApiClient, operator: RunningOperator) -> Iterator[ExampleGateway]:
    """The engineering-team tenant from examples/, Ready, with its gateway process running."""
    k8s = K8s(kube)
    apply_examples(k8s)
    wait_example_configured(k8s, timeout=60)
    simulator_url, simulator = start_simulator(**example_simulator_config())
    url, process, log_file = start_example_gateway(kube, k8s, simulator.root_url)
    keys = {
        name: k8s.secret_value(EXAMPLE_NAMESPACE, f"gateway-key-{name}", "apiKey")
        for name in ("alice", "ci")
    }
    gateway = ExampleGateway(
        url=url,
        tenant=EXAMPLE_TENANT,
        namespace=EXAMPLE_NAMESPACE,
        keys=keys,
        master_key=k8s.secret_value(EXAMPLE_NAMESPACE, "gateway", "masterKey"),
        postgres_dsn=k8s.secret_value(EXAMPLE_NAMESPACE, "gateway", "postgresDsn"),
        simulator=simulator,
        simulator_url=simulator_url,
        process=process,
        log_file=log_file,
    )
    yield gateway
    process.terminate()
    try:
        process.wait(timeout=30)
    except Exception:
        process.kill()
    simulator.stop()
    if not os.environ.get("TENANTGW_KEEP_EXAMPLE"):
        # The example retains its data on deletion; a test run leaves none behind.
        k8s.custom.patch_cluster_custom_object(
            "tenantgw.io",
            "v1alpha1",
            "tenants",
            EXAMPLE_TENANT,
            {"spec": {"deletionPolicy": "Delete"}},
        )
        k8s.delete("tenantgw.io/v1alpha1", "Tenant", EXAMPLE_TENANT)
