"""Operator settings, from the environment of the operator's pod."""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from tenantgw.api.tenant import OPERATOR_NAMESPACE, IssuerRef
from tenantgw.jsonlog import FORMATS, LogFormat
from tenantgw.render.inputs import DEFAULT_CLUSTER_CIDRS, NetworkSettings, Peer

DEFAULT_IMAGE = "ghcr.io/tenantgw/gateway:0.1.0"


@dataclass(frozen=True)
class Settings:
    """What the operator needs to know that no custom resource says."""

    gateway_image: str = DEFAULT_IMAGE
    resync_seconds: float = 300.0
    monitoring_namespace: str = "monitoring"
    events_namespace: str = "default"
    key_grace: timedelta = timedelta(hours=24)
    budget_sync_seconds: float = 30.0
    network: NetworkSettings = field(default_factory=NetworkSettings)
    budget_refresh_seconds: float = 60.0
    operator_namespace: str = OPERATOR_NAMESPACE
    """The operator's own namespace (from the downward API): never given to a Tenant."""
    notify_retry_seconds: float = 30.0
    """First backoff of a failed webhook delivery; doubled per attempt up to an hour."""
    tls_issuer: IssuerRef | None = None
    """cert-manager issuer of the gateways whose spec.gateway.tls names none."""
    cluster_domain: str = "cluster.local"
    concurrent_reconciles: int = 16
    """Most tenants reconciled at once; the others wait their turn in arrival order."""
    gateway_log_format: LogFormat = "json"
    """The gateways' log lines: `json` (for collectors) or `text`."""

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            gateway_image=env.get("TENANTGW_GATEWAY_IMAGE", DEFAULT_IMAGE),
            resync_seconds=float(env.get("TENANTGW_RESYNC_SECONDS", "300")),
            monitoring_namespace=env.get("TENANTGW_MONITORING_NAMESPACE", "monitoring"),
            events_namespace=env.get("TENANTGW_EVENTS_NAMESPACE", "default"),
            budget_sync_seconds=float(env.get("TENANTGW_BUDGET_SYNC_SECONDS", "30")),
            budget_refresh_seconds=float(env.get("TENANTGW_BUDGET_REFRESH_SECONDS", "60")),
            key_grace=timedelta(hours=float(env.get("TENANTGW_KEY_GRACE_HOURS", "24"))),
            network=network_from_env(env),
            operator_namespace=env.get("TENANTGW_OPERATOR_NAMESPACE") or OPERATOR_NAMESPACE,
            notify_retry_seconds=float(env.get("TENANTGW_NOTIFY_RETRY_SECONDS", "30")),
            tls_issuer=issuer_from_env(env),
            cluster_domain=env.get(CLUSTER_DOMAIN_ENV) or "cluster.local",
            concurrent_reconciles=max(1, int(env.get("TENANTGW_CONCURRENT_RECONCILES", "16"))),
            gateway_log_format=gateway_log_format(env),
        )


class SettingsError(ValueError):
    """An operator setting that cannot be used; the message names the variable."""


GATEWAY_LOG_FORMAT_ENV = "TENANTGW_GATEWAY_LOG_FORMAT"


def gateway_log_format(env: Any) -> LogFormat:
    """$TENANTGW_GATEWAY_LOG_FORMAT (`json` or `text`), else `json`."""
    raw = env.get(GATEWAY_LOG_FORMAT_ENV, "").strip().lower() or "json"
    for known in FORMATS:
        if raw == known:
            return known
    raise SettingsError(f"{GATEWAY_LOG_FORMAT_ENV}={raw!r}: use json or text")


CLUSTER_CIDRS_ENV = "TENANTGW_CLUSTER_CIDRS"
TLS_ISSUER_ENV = "TENANTGW_TLS_ISSUER"
TLS_ISSUER_GROUP_ENV = "TENANTGW_TLS_ISSUER_GROUP"
CLUSTER_DOMAIN_ENV = "TENANTGW_CLUSTER_DOMAIN"


def issuer_from_env(env: Any) -> IssuerRef | None:
    """$TENANTGW_TLS_ISSUER as ClusterIssuer/<name> or Issuer/<name> (group from
    $TENANTGW_TLS_ISSUER_GROUP, cert-manager.io by default); None when unset."""
    raw = env.get(TLS_ISSUER_ENV, "").strip()
    if not raw:
        return None
    kind, sep, name = raw.partition("/")
    hint = "e.g. ClusterIssuer/platform-ca or Issuer/gateway-ca"
    if not sep or kind not in ("ClusterIssuer", "Issuer"):
        raise SettingsError(f"{TLS_ISSUER_ENV}: {raw!r} is not <Kind>/<name>, {hint}")
    group = env.get(TLS_ISSUER_GROUP_ENV, "").strip() or "cert-manager.io"
    try:
        return IssuerRef.model_validate({"name": name, "kind": kind, "group": group})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SettingsError(f"{TLS_ISSUER_ENV}: {where}: {first['msg']} ({hint})") from None


DNS_PEERS_ENV = "TENANTGW_DNS_PEERS"


def network_from_env(env: Any) -> NetworkSettings:
    """$TENANTGW_CLUSTER_CIDRS (comma-separated) and $TENANTGW_DNS_PEERS (a JSON list of
    `{"cidr": ...}` or `{"namespace": ..., "podLabels": {...}}`), else the defaults."""
    cidrs: tuple[str, ...] = DEFAULT_CLUSTER_CIDRS
    raw = env.get(CLUSTER_CIDRS_ENV, "").strip()
    if raw:
        cidrs = tuple(part.strip() for part in raw.split(",") if part.strip())
        for cidr in cidrs:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise SettingsError(
                    f"{CLUSTER_CIDRS_ENV}: {cidr!r} is not a CIDR such as 10.0.0.0/8"
                ) from None
    dns = NetworkSettings().dns
    raw = env.get(DNS_PEERS_ENV, "").strip()
    if raw:
        dns = _dns_peers(raw)
    return NetworkSettings(cluster_cidrs=cidrs, dns=dns)


def _dns_peers(raw: str) -> tuple[Peer, ...]:
    hint = 'e.g. [{"namespace": "kube-system", "podLabels": {"k8s-app": "kube-dns"}}]'
    try:
        items = json.loads(raw)
    except ValueError:
        raise SettingsError(f"{DNS_PEERS_ENV} is not JSON: {hint}") from None
    if not isinstance(items, list) or not items:
        raise SettingsError(f"{DNS_PEERS_ENV} must be a non-empty list: {hint}")
    peers: list[Peer] = []
    for index, item in enumerate(items):
        where = f"{DNS_PEERS_ENV}[{index}]"
        if not isinstance(item, dict):
            raise SettingsError(f"{where} must be an object: {hint}")
        if isinstance(item.get("cidr"), str):
            try:
                ipaddress.ip_network(item["cidr"], strict=False)
            except ValueError:
                raise SettingsError(f"{where}.cidr: {item['cidr']!r} is not a CIDR") from None
            peers.append(Peer(cidr=item["cidr"]))
            continue
        namespace = item.get("namespace")
        labels = item.get("podLabels") or {}
        if not isinstance(namespace, str) or not namespace or not isinstance(labels, dict):
            raise SettingsError(f"{where} needs a cidr, or a namespace and podLabels: {hint}")
        peers.append(Peer(namespace=namespace, pod_labels=tuple(sorted(labels.items()))))
    return tuple(peers)
