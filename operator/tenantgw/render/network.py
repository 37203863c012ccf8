"""NetworkPolicy of a tenant's gateway: who may call it, and the little it may call.

Ingress: port 4000 from the tenant's namespace, spec.access.allowedNamespaces and the
monitoring namespace. Egress: DNS, HTTPS anywhere (providers), the explicit ports of provider
apiBases (e.g. Ollama's 11434), the tenant's Postgres and Redis, and `egress_ports`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from tenantgw.render.inputs import RenderInputs
from tenantgw.render.labels import gateway_selector, object_meta
from tenantgw.render.names import GATEWAY_NAME, GATEWAY_PORT, tenant_name

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
DNS_NAMESPACE = "kube-system"
HTTPS_PORT = 443
POSTGRES_PORT = 5432
REDIS_PORT = 6379
_DEFAULT_PORTS = {"http": 80, "https": 443, "redis": REDIS_PORT, "rediss": REDIS_PORT}
_KEYWORD_PORT = re.compile(r"(?:^|\s)port\s*=\s*'?(\d+)")
_KEYWORD_HOST = re.compile(r"(?:^|\s)(?:hostaddr|host)\s*=\s*'?([^\s',]+)")


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


def _peer(host: str | None) -> list[dict[str, Any]] | None:
    """`to` of an egress rule: the address when the host is a literal IP, else anywhere."""
    if host is None:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a DNS name: a NetworkPolicy cannot name it, so the port alone limits
    return [{"ipBlock": {"cidr": f"{address}/{address.max_prefixlen}"}}]


def _tcp(port: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def provider_ports(inputs: RenderInputs) -> list[int]:
    """Ports of provider apiBases other than 443, and `egress_ports`, sorted."""
    ports = set(inputs.egress_ports)
    for provider in inputs.tenant.spec.providers:
        if provider.api_base:
            ports.add(url_endpoint(provider.api_base, HTTPS_PORT)[1])
    ports.discard(HTTPS_PORT)
    return sorted(ports)


def storage_rules(inputs: RenderInputs) -> list[dict[str, Any]]:
    """Egress to the tenant's Postgres and Redis, when provisioned."""
    storage = inputs.storage
    endpoints: list[tuple[str | None, int]] = []
    if storage is not None and storage.postgres_dsn:
        endpoints.append(postgres_endpoint(storage.postgres_dsn))
    if storage is not None and storage.redis_url:
        endpoints.append(url_endpoint(storage.redis_url, REDIS_PORT))
    rules: list[dict[str, Any]] = []
    for host, port in endpoints:
        rule: dict[str, Any] = {}
        peer = _peer(host)
        if peer is not None:
            rule["to"] = peer
        rule["ports"] = [_tcp(port)]
        if rule not in rules:
            rules.append(rule)
    return rules


def render_network_policy(inputs: RenderInputs) -> dict[str, Any]:
    """NetworkPolicy `gateway`: default deny for the gateway pods, plus what they need."""
    tenant = inputs.tenant
    callers = sorted(
        {
            tenant.namespace_name(),
            inputs.monitoring_namespace,
            *tenant.spec.access.allowed_namespaces,
        }
    )
    egress: list[dict[str, Any]] = [
        {
            "to": [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: DNS_NAMESPACE}}}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        },
        {"ports": [_tcp(HTTPS_PORT)]},
    ]
    extra = provider_ports(inputs)
    if extra:
        egress.append({"ports": [_tcp(port) for port in extra]})
    egress.extend(storage_rules(inputs))
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(tenant, GATEWAY_NAME),
        "spec": {
            "podSelector": {"matchLabels": gateway_selector(tenant_name(tenant))},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchExpressions": [
                                    {
                                        "key": NAMESPACE_NAME_LABEL,
                                        "operator": "In",
                                        "values": callers,
                                    }
                                ]
                            }
                        }
                    ],
                    "ports": [_tcp(GATEWAY_PORT)],
                }
            ],
            "egress": egress,
        },
    }
