"""The gateways' NetworkPolicies, judged by a real NetworkPolicy analyzer (cyclonus).

Two tenants are rendered from examples/ exactly as the operator renders them; the analyzer
reads their NetworkPolicies and says, connection by connection, whether Kubernetes would let
it through. A tenant's gateway must reach its providers, its storage and DNS, and nothing of
the cluster: not another tenant's namespace, not the API server, not the metadata address.
A third tenant's Bedrock uses EKS Pod Identity: its gateway, and only it, reaches the node's
agent at 169.254.170.23 / fd00:ec2::23 on port 80, and nothing else link-local.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.fixtures import ROOT
from tenantgw.api import ModelAlias, Tenant
from tenantgw.render import RenderInputs, StorageEndpoints, render_tenant
from tenantgw.render.labels import gateway_selector

pytestmark = pytest.mark.integration

VERSIONS = ROOT / "e2e" / "netpol" / "versions.env"


def analyzer() -> Path:
    """The cyclonus binary `make setup` builds (e2e/netpol/build.sh); fails if it is missing."""
    found = re.search(r"^CYCLONUS_VERSION=(\S+)", VERSIONS.read_text(), re.MULTILINE)
    assert found, f"{VERSIONS} names no CYCLONUS_VERSION"
    version = found.group(1)
    cache = Path(os.environ.get("TENANTGW_CACHE", Path.home() / ".cache" / "tenantgw"))
    binary = cache / f"cyclonus-{version}" / "bin" / "cyclonus"
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run `make setup` (or bash e2e/netpol/build.sh)")
    return binary


def tenant_inputs(name: str, pod_identity: bool = False) -> RenderInputs:
    """The example tenant of examples/, renamed to `name`, with in-cluster storage; with
    `pod_identity`, its Bedrock provider takes EKS Pod Identity instead of its key."""
    body = yaml.safe_load((ROOT / "examples" / "tenant.yaml").read_text())
    body["metadata"] = {"name": name, "uid": f"uid-{name}"}
    body["spec"].pop("namespace", None)
    if pod_identity:
        (bedrock,) = [p for p in body["spec"]["providers"] if p["type"] == "bedrock"]
        del bedrock["credentialsSecretRef"]
        bedrock["workloadIdentity"] = {"aws": {"podIdentity": True}}
    tenant = Tenant.model_validate(body)
    namespace = tenant.namespace_name()
    aliases = []
    for doc in yaml.safe_load_all((ROOT / "examples" / "model-aliases.yaml").read_text()):
        if doc:
            doc["metadata"]["namespace"] = namespace
            aliases.append(ModelAlias.model_validate(doc))
    return RenderInputs(
        tenant=tenant,
        aliases=aliases,
        budgets=[],
        master_key="sk-tgw-MASTER",
        keys={key.name: f"sk-tgw-{key.name}" for key in tenant.spec.keys},
        image="gateway:test",
        monitoring=True,
        storage=StorageEndpoints(
            postgres_dsn="postgresql://t:x@postgres.tenantgw-system.svc:5432/tenantgw",
            redis_url="redis://t:x@redis.tenantgw-system.svc:6379/0",
        ),
    )


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str]
    ip: str

    def peer(self) -> dict[str, Any]:
        return {
            "Internal": {
                "PodLabels": self.labels,
                "NamespaceLabels": {"kubernetes.io/metadata.name": self.namespace},
                "Namespace": self.namespace,
            },
            "IP": self.ip,
        }


def external(ip: str) -> dict[str, Any]:
    return {"IP": ip}


def traffic(source: dict[str, Any], dest: dict[str, Any], port: int, proto: str = "TCP") -> Any:
    return {
        "Source": source,
        "Destination": dest,
        "Protocol": proto,
        "ResolvedPort": port,
        "ResolvedPortName": "",
    }


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bool]:
    """Each named connection and whether the analyzer allows it."""
    a, b = tenant_inputs("team-a"), tenant_inputs("team-b")
    c = tenant_inputs("team-c", pod_identity=True)
    work = tmp_path_factory.mktemp("netpol")
    policies = work / "policies"
    policies.mkdir()
    for inputs in (a, b, c):
        for obj in render_tenant(inputs):
            if obj["kind"] == "NetworkPolicy":
                name = f"{obj['metadata']['namespace']}-{obj['metadata']['name']}.yaml"
                (policies / name).write_text(yaml.safe_dump(obj))

    gw_a = Pod("tenant-team-a", gateway_selector("team-a"), "10.244.1.10")
    gw_b = Pod("tenant-team-b", gateway_selector("team-b"), "10.244.2.10")
    other_b = Pod("tenant-team-b", {"app": "anything"}, "10.244.2.11")
    postgres = Pod("tenantgw-system", {"app": "postgres"}, "10.244.3.5")
    dns = Pod("kube-system", {"k8s-app": "kube-dns"}, "10.244.0.2")
    not_dns = Pod("kube-system", {"component": "etcd"}, "10.244.0.3")
    ci = Pod("eng-ci", {"app": "runner"}, "10.244.4.4")
    monitoring = Pod("monitoring", {"app": "prometheus"}, "10.244.5.5")
    ollama = Pod("ollama", {"app": "ollama"}, "10.244.6.6")
    gw_c = Pod("tenant-team-c", gateway_selector("team-c"), "10.244.7.10")
    agent, agent6 = external("169.254.170.23"), external("fd00:ec2::23")

    cases: dict[str, Any] = {
        # What the gateway needs: these must be allowed, or the check proves nothing.
        "provider on 443": traffic(gw_a.peer(), external("104.18.6.192"), 443),
        "provider over IPv6": traffic(gw_a.peer(), external("2606:4700::6812:6c0"), 443),
        "in-cluster ollama by its Service": traffic(gw_a.peer(), ollama.peer(), 11434),
        "its postgres": traffic(gw_a.peer(), postgres.peer(), 5432),
        "DNS over UDP": traffic(gw_a.peer(), dns.peer(), 53, "UDP"),
        "a caller in its namespace": traffic(
            Pod("tenant-team-a", {"app": "dev"}, "10.244.1.20").peer(), gw_a.peer(), 4000
        ),
        "a caller in an allowed namespace": traffic(ci.peer(), gw_a.peer(), 4000),
        "prometheus on the metrics port": traffic(monitoring.peer(), gw_a.peer(), 9464),
        "pod identity: the agent": traffic(gw_c.peer(), agent, 80),
        "pod identity: the agent over IPv6": traffic(gw_c.peer(), agent6, 80),
        "pod identity: a provider on 443": traffic(gw_c.peer(), external("104.18.6.192"), 443),
        # What it must never reach or be reached by.
        "another tenant's gateway": traffic(gw_a.peer(), gw_b.peer(), 4000),
        "another tenant's pod on 443": traffic(gw_a.peer(), other_b.peer(), 443),
        "another tenant's pod on the storage port": traffic(gw_a.peer(), other_b.peer(), 5432),
        "the cloud metadata address on 80": traffic(gw_a.peer(), external("169.254.169.254"), 80),
        "the cloud metadata address on 443": traffic(gw_a.peer(), external("169.254.169.254"), 443),
        "the API server's Service": traffic(gw_a.peer(), external("10.96.0.1"), 443),
        "the API server on a node": traffic(gw_a.peer(), external("10.0.0.10"), 6443),
        "the API server on a 172.16 node": traffic(gw_a.peer(), external("172.20.0.3"), 443),
        "a kube-system pod that is not DNS": traffic(gw_a.peer(), not_dns.peer(), 53, "UDP"),
        "a kube-system pod on 443": traffic(gw_a.peer(), not_dns.peer(), 443),
        "another tenant calling it": traffic(other_b.peer(), gw_a.peer(), 4000),
        "prometheus on the API port": traffic(monitoring.peer(), gw_a.peer(), 4000),
        "no pod identity: the agent": traffic(gw_a.peer(), agent, 80),
        "no pod identity: the agent over IPv6": traffic(gw_a.peer(), agent6, 80),
        "pod identity: the agent on another port": traffic(gw_c.peer(), agent, 443),
        "pod identity: the agent over IPv6 on another port": traffic(gw_c.peer(), agent6, 8080),
        "pod identity: the cloud metadata address": traffic(
            gw_c.peer(), external("169.254.169.254"), 80
        ),
        "pod identity: the IPv6 metadata address": traffic(
            gw_c.peer(), external("fd00:ec2::254"), 80
        ),
        "pod identity: the ECS credentials address": traffic(
            gw_c.peer(), external("169.254.170.2"), 80
        ),
        "pod identity: another link-local address": traffic(
            gw_c.peer(), external("169.254.170.24"), 80
        ),
        "pod identity: another tenant's gateway": traffic(gw_c.peer(), gw_b.peer(), 4000),
    }
    names = list(cases)
    traffic_file = work / "traffic.json"
    traffic_file.write_text(json.dumps([cases[n] for n in names]))
    proc = subprocess.run(
        [
            str(analyzer()),
            "analyze",
            "--mode",
            "query-traffic",
            "--policy-path",
            str(policies),
            "--traffic-path",
            str(traffic_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"cyclonus failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    answers = re.findall(r"IS ALLOWED\?\s*\|\s*(TRUE|FALSE)", proc.stdout, re.IGNORECASE)
    assert len(answers) == len(names), f"unexpected cyclonus output:\n{proc.stdout[-3000:]}"
    return {name: answer.lower() == "true" for name, answer in zip(names, answers, strict=True)}


ALLOWED = [
    "provider on 443",
    "provider over IPv6",
    "in-cluster ollama by its Service",
    "its postgres",
    "DNS over UDP",
    "a caller in its namespace",
    "a caller in an allowed namespace",
    "prometheus on the metrics port",
    "pod identity: the agent",
    "pod identity: the agent over IPv6",
    "pod identity: a provider on 443",
]
DENIED = [
    "another tenant's gateway",
    "another tenant's pod on 443",
    "another tenant's pod on the storage port",
    "the cloud metadata address on 80",
    "the cloud metadata address on 443",
    "the API server's Service",
    "the API server on a node",
    "the API server on a 172.16 node",
    "a kube-system pod that is not DNS",
    "a kube-system pod on 443",
    "another tenant calling it",
    "prometheus on the API port",
    "no pod identity: the agent",
    "no pod identity: the agent over IPv6",
    "pod identity: the agent on another port",
    "pod identity: the agent over IPv6 on another port",
    "pod identity: the cloud metadata address",
    "pod identity: the IPv6 metadata address",
    "pod identity: the ECS credentials address",
    "pod identity: another link-local address",
    "pod identity: another tenant's gateway",
]


@pytest.mark.parametrize("connection", ALLOWED)
def test_the_gateway_reaches_what_it_needs(verdicts: dict[str, bool], connection: str) -> None:
    assert verdicts[connection], f"{connection}: denied by the rendered NetworkPolicies"


@pytest.mark.parametrize("connection", DENIED)
def test_the_gateway_reaches_nothing_else(verdicts: dict[str, bool], connection: str) -> None:
    assert not verdicts[connection], f"{connection}: allowed by the rendered NetworkPolicies"
