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
METRICS_PORT = 9464
"""Port of the gateway's Prometheus exporter: the monitoring namespace reaches only this one."""
METRICS_PORT_NAME = "metrics"

# Files in the ConfigMap and the Secret, and where the pod mounts them.
CONFIG_FILE = "config.yaml"
RULES_FILE = "tenantgw.json"
KEYS_FILE = "keys.json"
CONFIG_MOUNT = "/etc/tenantgw/config"
SECRET_MOUNT = "/etc/tenantgw/secret"  # noqa: S105 (a path)

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
    "key_secret_name",
    "service_url",
    "tenant_name",
]


def tenant_name(tenant: Tenant) -> str:
    """metadata.name of the Tenant; a Tenant without one cannot be rendered."""
    if not tenant.metadata.name:
        raise ValueError("Tenant has no metadata.name")
    return tenant.metadata.name


def service_url(tenant: Tenant) -> str:
    """In-cluster URL of the tenant's gateway, e.g. http://gateway.tenant-eng.svc:4000."""
    return f"http://{GATEWAY_NAME}.{tenant.namespace_name()}.svc:{GATEWAY_PORT}"


def key_secret_name(key_name: str) -> str:
    """Secret holding one tenant key: gateway-key-<name>."""
    return f"{KEY_SECRET_PREFIX}{key_name}"
