"""Everything a tenant's rendering depends on, in one value: render is a function of it alone."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from tenantgw.api import BudgetPolicy, IssuerRef, ModelAlias, Tenant


@dataclass(frozen=True)
class StorageEndpoints:
    """The tenant's own Postgres DSN and Redis URL, with its per-tenant credentials.

    They go into Secret `gateway` (never the ConfigMap), and the NetworkPolicy lets the gateway
    reach their ports.
    """

    postgres_dsn: str | None = None
    redis_url: str | None = None
    tls_files: dict[str, str] = field(default_factory=dict)
    """The CA (and CRL) files the DSN and URL name, by their parameter (`sslrootcert`,
    `sslcrl`, `ssl_ca_certs`) -> PEM text: the operator's own copies, which the gateway pod
    mounts from Secret `gateway` (render.storage_tls)."""


DEFAULT_CLUSTER_CIDRS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
)
"""Private ranges where pods, Services and nodes (the API server included) usually live."""


@dataclass(frozen=True)
class Peer:
    """A NetworkPolicy peer: an address block, or pods of a namespace (all, or by labels)."""

    cidr: str | None = None
    namespace: str | None = None
    pod_labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class NetworkSettings:
    """What the platform says about its network, for the gateways' NetworkPolicies.

    `cluster_cidrs` are never reached through the providers' "internet" rule (pods, Services,
    nodes, the API server); the gateway reaches in-cluster services only when a provider's
    apiBase or a storage host names them (`<service>.<namespace>.svc`). `dns` are the DNS
    servers the gateway may ask.
    """

    cluster_cidrs: tuple[str, ...] = DEFAULT_CLUSTER_CIDRS
    dns: tuple[Peer, ...] = (Peer(namespace="kube-system", pod_labels=(("k8s-app", "kube-dns"),)),)


@dataclass(frozen=True)
class KeyState:
    """When a key's current value was issued, and the value it replaced while that stays valid."""

    issued_at: datetime
    previous_sha256: str | None = None
    previous_valid_until: datetime | None = None


@dataclass(frozen=True)
class UnenforceableBudget:
    """A BudgetPolicy that cannot be applied: the gateway refuses every request in its scope.

    `scope_kind`/`scope_name` is the scope refused, the policy's own when it exists, else
    the whole tenant; `reason` and `message` say why, for the refusal's error message.
    """

    name: str
    scope_kind: str
    scope_name: str | None
    period: str
    reason: str
    message: str


@dataclass(frozen=True)
class RenderInputs:
    """The desired state of one tenant, before it becomes Kubernetes objects.

    `aliases` are the accepted ModelAliases only (validation happened before), `keys` maps
    every name in spec.keys to its plain key value, `monitoring` says whether the
    monitoring.coreos.com CRDs exist. Secret values (`master_key`, `keys`, storage
    credentials) only ever land in Secrets.
    """

    tenant: Tenant
    aliases: list[ModelAlias]
    budgets: list[BudgetPolicy]
    master_key: str
    keys: dict[str, str]
    image: str
    monitoring: bool
    monitoring_namespace: str = "monitoring"
    storage: StorageEndpoints | None = None
    egress_ports: tuple[int, ...] = ()
    """Extra TCP ports the gateway may reach outside the cluster (e.g. an egress proxy)."""
    network: NetworkSettings = field(default_factory=NetworkSettings)
    key_state: dict[str, KeyState] = field(default_factory=dict)
    """Rotation state by key name; a key without one renders no rotation annotations."""
    unenforceable_budgets: tuple[UnenforceableBudget, ...] = ()
    """BudgetPolicies validation rejected: rendered so that the gateway fails closed."""
    cert_manager: bool = False
    """Whether cert-manager's CRDs exist (discovered): a Certificate can be rendered."""
    default_issuer: IssuerRef | None = None
    """The operator's issuer for gateways whose spec.gateway.tls names none."""
    cluster_domain: str = "cluster.local"
    """The cluster's DNS domain, for the Certificate's <service>.<ns>.svc.<domain> name."""
    tls_digest: str | None = None
    """SHA-256 of the TLS Secret's certificate, when it exists: a renewed certificate changes
    the pod template, so the gateways restart with it (uvicorn reads it at start only)."""
    log_format: str = "json"
    """The gateway's $TENANTGW_LOG_FORMAT: JSON lines for collectors, or `text`."""

    def sorted_aliases(self) -> list[ModelAlias]:
        """The aliases by name, whatever order they came in."""
        return sorted(self.aliases, key=lambda alias: alias.metadata.name or "")

    def sorted_budgets(self) -> list[BudgetPolicy]:
        """The budgets by name, whatever order they came in."""
        return sorted(self.budgets, key=lambda budget: budget.metadata.name or "")


def key_hash(plain: str) -> str:
    """SHA-256 of a tenant key, hex: what the gateway compares a presented key with."""
    return hashlib.sha256(plain.encode()).hexdigest()


def alias_name(alias: ModelAlias) -> str:
    """metadata.name of a ModelAlias; one without a name cannot be served."""
    if not alias.metadata.name:
        raise ValueError("ModelAlias has no metadata.name")
    return alias.metadata.name


def exact_client_names(alias: ModelAlias) -> list[str]:
    """spec.aliases without the globs: names LiteLLM itself can resolve."""
    return [name for name in alias.spec.aliases if "*" not in name]
