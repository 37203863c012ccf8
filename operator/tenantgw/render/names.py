"""Names of the objects, files and settings of a tenant's gateway, shared by render and its readers.

The gateway plugins and `tenantctl dev gateway` find their files through these names, so they
are the contract between the operator and the data plane.
"""

from __future__ import annotations

from tenantgw.api import Tenant
from tenantgw.api.tenant import KEY_SECRET_PREFIX

GATEWAY_NAME = "gateway"
"""Name of the gateway's ServiceAccount, Secret, Deployment, Service, NetworkPolicy, PDB."""
CONFIG_NAME = "gateway-config"
"""Name of the ConfigMap holding config.yaml and tenantgw.json."""
GATEWAY_PORT = 4000
PORT_NAME = "http"
TLS_PORT_NAME = "https"
"""Name of the gateway's port (container and Service) when it serves HTTPS."""
METRICS_PORT = 9464
"""Port of the gateway's Prometheus exporter: the monitoring namespace reaches only this one."""
METRICS_PORT_NAME = "metrics"

# Files in the ConfigMap and the Secret, and where the pod mounts them.
CONFIG_FILE = "config.yaml"
RULES_FILE = "tenantgw.json"
KEYS_FILE = "keys.json"
CONFIG_MOUNT = "/etc/tenantgw/config"
SECRET_MOUNT = "/etc/tenantgw/secret"  # noqa: S105 (a path)
TLS_MOUNT = "/etc/tenantgw/tls"
TLS_CERT_FILE = "tls.crt"
TLS_KEY_FILE = "tls.key"
"""Keys of a kubernetes.io/tls Secret, mounted as files of the same names under TLS_MOUNT."""

# Fields of Secret `gateway` and of each Secret `gateway-key-<name>`.
MASTER_KEY_FIELD = "masterKey"
POSTGRES_DSN_FIELD = "postgresDsn"
REDIS_URL_FIELD = "redisUrl"
API_KEY_FIELD = "apiKey"
BASE_URL_FIELD = "baseUrl"

CONFIG_HASH_ANNOTATION = "tenantgw.io/config-hash"
DISPLAY_NAME_ANNOTATION = "tenantgw.io/display-name"

__all__ = [
    "API_KEY_FIELD",
    "BASE_URL_FIELD",
    "CONFIG_FILE",
    "CONFIG_HASH_ANNOTATION",
    "CONFIG_MOUNT",
    "CONFIG_NAME",
    "DISPLAY_NAME_ANNOTATION",
    "GATEWAY_NAME",
    "GATEWAY_PORT",
    "KEYS_FILE",
    "KEY_SECRET_PREFIX",
    "MASTER_KEY_FIELD",
    "METRICS_PORT",
    "METRICS_PORT_NAME",
    "PORT_NAME",
    "POSTGRES_DSN_FIELD",
    "REDIS_URL_FIELD",
    "RULES_FILE",
    "SECRET_MOUNT",
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
    "TLS_MOUNT",
    "TLS_PORT_NAME",
    "key_secret_name",
    "service_host",
    "service_url",
    "tenant_name",
]


def tenant_name(tenant: Tenant) -> str:
    """metadata.name of the Tenant; a Tenant without one cannot be rendered."""
    if not tenant.metadata.name:
        raise ValueError("Tenant has no metadata.name")
    return tenant.metadata.name


def service_host(tenant: Tenant) -> str:
    """In-cluster host name of the tenant's gateway Service, e.g. gateway.tenant-eng.svc."""
    return f"{GATEWAY_NAME}.{tenant.namespace_name()}.svc"


def service_url(tenant: Tenant) -> str:
    """In-cluster URL of the tenant's gateway, e.g. http://gateway.tenant-eng.svc:4000
    (https:// with spec.gateway.tls)."""
    scheme = "https" if tenant.spec.gateway.tls is not None else "http"
    return f"{scheme}://{service_host(tenant)}:{GATEWAY_PORT}"


def key_secret_name(key_name: str) -> str:
    """Secret holding one tenant key: gateway-key-<name>."""
    return f"{KEY_SECRET_PREFIX}{key_name}"
