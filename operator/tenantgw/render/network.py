"""NetworkPolicy of a tenant's gateway: who may call it, and the little it may call.

Ingress: the API port from the tenant's namespace and spec.access.allowedNamespaces; the
metrics port (only) from the monitoring namespace.

Egress is derived from what the gateway is meant to reach, host by host:
- a provider's apiBase, a workload identity's token endpoint (STS, Entra ID) when not the
  cloud's public default, the Postgres DSN and the Redis URL each name a host. An IP literal
  becomes that one address; an in-cluster Service name (`<service>.<namespace>.svc[...]`)
  becomes that namespace; any other name is "the internet": every address except the
  platform's cluster CIDRs (pods, Services, nodes and so the API server) and the link-local
  range (cloud metadata at 169.254.169.254 included). Providers without an apiBase are public
  endpoints on 443.
- DNS goes to the platform's DNS peers only.
- EKS Pod Identity (`workloadIdentity.aws.podIdentity`), and only then: the node's agent at
  exactly 169.254.170.23/32 and fd00:ec2::23/128 on TCP 80 (`identity.POD_IDENTITY_AGENT`),
  the one link-local exception, in a rule of its own.
So a gateway never reaches another tenant's namespace, the API server or the metadata address,
whatever ports its providers use.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from tenantgw.render.identity import (
    POD_IDENTITY_AGENT,
    POD_IDENTITY_AGENT_PORT,
    identity_endpoints,
    pod_identity,
)
from tenantgw.render.inputs import NetworkSettings, Peer, RenderInputs
from tenantgw.render.labels import gateway_selector, object_meta
from tenantgw.render.names import GATEWAY_NAME, GATEWAY_PORT, METRICS_PORT, tenant_name

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
HTTPS_PORT = 443
POSTGRES_PORT = 5432
REDIS_PORT = 6379
ALWAYS_BLOCKED = ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128")
"""Link-local and cloud metadata addresses: never reachable, whatever the settings say."""
_DEFAULT_PORTS = {"http": 80, "https": 443, "redis": REDIS_PORT, "rediss": REDIS_PORT}
_KEYWORD_PORT = re.compile(r"(?:^|\s)port\s*=\s*'?(\d+)")
_KEYWORD_HOST = re.compile(r"(?:^|\s)(?:hostaddr|host)\s*=\s*'?([^\s',]+)")
_SERVICE_HOST = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\.(?P<ns>[a-z0-9]([-a-z0-9]*[a-z0-9])?)\.svc(\.[a-z0-9.-]+)?\.?$"
)
INTERNET = Peer(cidr="internet")
"""Stands for every address outside the cluster CIDRs and the always-blocked ranges."""


def url_endpoint(url: str, default_port: int) -> tuple[str | None, int]:
    """Host and port of a URL; the scheme's port (or `default_port`) when none is given."""
    parts = urlsplit(url)
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme, default_port)
    return parts.hostname, port


def postgres_endpoint(dsn: str) -> tuple[str | None, int]:
    """Host and port of a libpq DSN, in URL (`postgresql://...`) or key=value form."""
    if "://" in dsn:
        return url_endpoint(dsn, POSTGRES_PORT)
    port = _KEYWORD_PORT.search(dsn)
    host = _KEYWORD_HOST.search(dsn)
    return (host.group(1) if host else None), (int(port.group(1)) if port else POSTGRES_PORT)


def host_peer(host: str | None) -> Peer | None:
    """Where a host is: one address, an in-cluster namespace, or the internet.

    None for a host that must never be reached (link-local, cloud metadata).
    """
    if host is None:
        return INTERNET
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        match = _SERVICE_HOST.match(host.lower())
        if match:
            return Peer(namespace=match.group("ns"))
        return INTERNET
    if any(address in ipaddress.ip_network(block) for block in ALWAYS_BLOCKED):
        return None
    return Peer(cidr=f"{address}/{address.max_prefixlen}")


def _except(version: int, network: NetworkSettings) -> list[str]:
    """The blocks the internet rule of one IP version leaves out, without nested ones."""
    blocks = {
        ipaddress.ip_network(cidr, strict=False)
        for cidr in (*ALWAYS_BLOCKED, *network.cluster_cidrs)
    }
    mine = [b for b in blocks if b.version == version and b.prefixlen > 0]
    kept = [b for b in mine if not any(b != o and b.subnet_of(o) for o in mine)]  # type: ignore[arg-type]
    return [str(b) for b in sorted(kept, key=lambda b: (int(b.network_address), b.prefixlen))]


def peer_objects(peer: Peer, network: NetworkSettings) -> list[dict[str, Any]]:
    """The `to` entries of a peer."""
    if peer == INTERNET:
        return [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": _except(4, network)}},
            {"ipBlock": {"cidr": "::/0", "except": _except(6, network)}},
        ]
    if peer.cidr is not None:
        return [{"ipBlock": {"cidr": peer.cidr}}]
    entry: dict[str, Any] = {
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: peer.namespace}}
    }
    if peer.pod_labels:
        entry["podSelector"] = {"matchLabels": dict(peer.pod_labels)}
    return [entry]


def _tcp(port: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def egress_endpoints(inputs: RenderInputs) -> dict[Peer, set[int]]:
    """TCP ports the gateway may reach, by peer: providers, storage and `egress_ports`."""
    wanted: dict[Peer, set[int]] = {INTERNET: {HTTPS_PORT, *inputs.egress_ports}}
    endpoints: list[tuple[str | None, int]] = []
    for provider in inputs.tenant.spec.providers:
        if provider.api_base:
            endpoints.append(url_endpoint(provider.api_base, HTTPS_PORT))
    endpoints += [url_endpoint(url, HTTPS_PORT) for url in identity_endpoints(inputs)]
    storage = inputs.storage
    if storage is not None and storage.postgres_dsn:
        endpoints.append(postgres_endpoint(storage.postgres_dsn))
    if storage is not None and storage.redis_url:
        endpoints.append(url_endpoint(storage.redis_url, REDIS_PORT))
    for host, port in endpoints:
        peer = host_peer(host)
        if peer is not None:
            wanted.setdefault(peer, set()).add(port)
    if pod_identity(inputs):
        # Not through host_peer, which refuses every link-local address: these two only.
        for cidr in POD_IDENTITY_AGENT:
            wanted.setdefault(Peer(cidr=cidr), set()).add(POD_IDENTITY_AGENT_PORT)
    return wanted


def _peer_order(peer: Peer) -> tuple[int, str]:
    return (0 if peer == INTERNET else 1, peer.cidr or peer.namespace or "")


def egress_rules(inputs: RenderInputs) -> list[dict[str, Any]]:
    """Egress of the gateway pods: DNS to the DNS peers, then each peer with its ports."""
    network = inputs.network
    dns_to = [entry for peer in network.dns for entry in peer_objects(peer, network)]
    rules: list[dict[str, Any]] = [
        {
            "to": dns_to,
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        }
    ]
    wanted = egress_endpoints(inputs)
    for peer in sorted(wanted, key=_peer_order):
        rules.append(
            {
                "to": peer_objects(peer, network),
                "ports": [_tcp(port) for port in sorted(wanted[peer])],
            }
        )
    return rules


def _from_namespaces(names: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": names}
                ]
            }
        }
    ]


def render_network_policy(inputs: RenderInputs) -> dict[str, Any]:
    """NetworkPolicy `gateway`: default deny for the gateway pods, plus what they need."""
    tenant = inputs.tenant
    callers = sorted({tenant.namespace_name(), *tenant.spec.access.allowed_namespaces})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(tenant, GATEWAY_NAME),
        "spec": {
            "podSelector": {"matchLabels": gateway_selector(tenant_name(tenant))},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": _from_namespaces(callers), "ports": [_tcp(GATEWAY_PORT)]},
                {
                    "from": _from_namespaces([inputs.monitoring_namespace]),
                    "ports": [_tcp(METRICS_PORT)],
                },
            ],
            "egress": egress_rules(inputs),
        },
    }
