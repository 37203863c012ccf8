"""Pure rendering of a tenant: typed inputs in, plain Kubernetes dicts out.

No I/O, no clock, no randomness: everything that varies (generated keys, the image, whether
the monitoring CRDs exist) comes in through `RenderInputs`. Golden-file tested.
"""

from tenantgw.render.config import config_hash, configmap_data, keys_json
from tenantgw.render.inputs import RenderInputs, StorageEndpoints, key_hash
from tenantgw.render.labels import (
    MANAGED_BY,
    TENANT_LABEL,
    gateway_selector,
    labels,
    owner_reference,
    selector,
)
from tenantgw.render.litellm_config import (
    CALLBACKS,
    CUSTOM_AUTH,
    PROVIDER_PREFIX,
    provider_env,
    render_litellm_config,
)
from tenantgw.render.names import (
    CONFIG_NAME,
    GATEWAY_NAME,
    GATEWAY_PORT,
    KEY_SECRET_PREFIX,
    key_secret_name,
    service_url,
)
from tenantgw.render.objects import render_tenant
from tenantgw.render.quantity import canonical_quantity
from tenantgw.render.rules import render_rules

__all__ = [
    "CALLBACKS",
    "CONFIG_NAME",
    "CUSTOM_AUTH",
    "GATEWAY_NAME",
    "GATEWAY_PORT",
    "KEY_SECRET_PREFIX",
    "MANAGED_BY",
    "PROVIDER_PREFIX",
    "TENANT_LABEL",
    "RenderInputs",
    "StorageEndpoints",
    "canonical_quantity",
    "config_hash",
    "configmap_data",
    "gateway_selector",
    "key_hash",
    "key_secret_name",
    "keys_json",
    "labels",
    "owner_reference",
    "provider_env",
    "render_litellm_config",
    "render_rules",
    "render_tenant",
    "selector",
    "service_url",
]
