"""Secrets and ConfigMap of a tenant's gateway, and the hash that rolls its pods.

Secret values go into `data` (base64), never `stringData`: the API server returns only `data`,
and the live object must contain what we render for an idle resync to write nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from typing import Any

import yaml

from tenantgw.api.gateway_config import split_model_routing
from tenantgw.render.identity import identity_files
from tenantgw.render.inputs import RenderInputs, key_hash
from tenantgw.render.labels import labels, object_meta
from tenantgw.render.litellm_config import render_litellm_config
from tenantgw.render.names import (
    API_KEY_FIELD,
    BASE_URL_FIELD,
    CONFIG_FILE,
    CONFIG_NAME,
    GATEWAY_NAME,
    KEYS_FILE,
    MASTER_KEY_FIELD,
    POSTGRES_DSN_FIELD,
    REDIS_URL_FIELD,
    RULES_FILE,
    key_secret_name,
    service_url,
    tenant_name,
)
from tenantgw.render.rules import render_rules
from tenantgw.render.storage_tls import pod_storage, storage_tls_data

KEY_LABEL = "tenantgw.io/key"
ISSUED_AT_ANNOTATION = "tenantgw.io/issued-at"
PREVIOUS_SHA256_ANNOTATION = "tenantgw.io/previous-sha256"
PREVIOUS_VALID_UNTIL_ANNOTATION = "tenantgw.io/previous-valid-until"


def timestamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def b64(text: str) -> str:
    """A Secret `data` value."""
    return base64.b64encode(text.encode()).decode()


def _plain_key(inputs: RenderInputs, name: str) -> str:
    plain = inputs.keys.get(name)
    if plain is None:
        raise ValueError(f"no value for spec.keys {name!r} of Tenant {inputs.tenant.metadata.name}")
    return plain


def keys_json(inputs: RenderInputs) -> str:
    """keys.json: the hashes of the tenant keys, by name (what the gateway's auth reads).

    `expires_at` is here rather than in the rules file so that changing it reloads the file
    instead of restarting the gateway.
    """
    entries: list[dict[str, Any]] = []
    for key in sorted(inputs.tenant.spec.keys, key=lambda key: key.name):
        entry: dict[str, Any] = {"name": key.name, "sha256": key_hash(_plain_key(inputs, key.name))}
        if key.expires_at is not None:
            entry["expires_at"] = timestamp(key.expires_at)
        entries.append(entry)
        state = inputs.key_state.get(key.name)
        if state and state.previous_sha256 and state.previous_valid_until:
            # The value replaced by the last rotation, accepted until its grace period ends.
            entries.append(
                {
                    "name": key.name,
                    "sha256": state.previous_sha256,
                    "expires_at": timestamp(
                        min(state.previous_valid_until, key.expires_at)
                        if key.expires_at
                        else state.previous_valid_until
                    ),
                }
            )
    return json.dumps(entries, sort_keys=True, indent=2) + "\n"


def render_gateway_secret(inputs: RenderInputs) -> dict[str, Any]:
    """Secret `gateway`: master key, key hashes, and the tenant's storage credentials."""
    data = {MASTER_KEY_FIELD: b64(inputs.master_key), KEYS_FILE: b64(keys_json(inputs))}
    storage = pod_storage(inputs.storage)
    data.update({key: b64(text) for key, text in storage_tls_data(storage).items()})
    if storage is not None and storage.postgres_dsn:
        data[POSTGRES_DSN_FIELD] = b64(storage.postgres_dsn)
    if storage is not None and storage.redis_url:
        data[REDIS_URL_FIELD] = b64(storage.redis_url)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_meta(inputs.tenant, GATEWAY_NAME),
        "type": "Opaque",
        "data": data,
    }


def render_key_secrets(inputs: RenderInputs) -> list[dict[str, Any]]:
    """One Secret `gateway-key-<name>` per tenant key: what a developer is handed."""
    tenant = inputs.tenant
    secrets: list[dict[str, Any]] = []
    for key in sorted(tenant.spec.keys, key=lambda key: key.name):
        plain = _plain_key(inputs, key.name)
        meta = object_meta(
            tenant, key_secret_name(key.name), {**labels(tenant_name(tenant)), KEY_LABEL: key.name}
        )
        state = inputs.key_state.get(key.name)
        if state is not None:
            notes = {ISSUED_AT_ANNOTATION: timestamp(state.issued_at)}
            if state.previous_sha256 and state.previous_valid_until:
                notes[PREVIOUS_SHA256_ANNOTATION] = state.previous_sha256
                notes[PREVIOUS_VALID_UNTIL_ANNOTATION] = timestamp(state.previous_valid_until)
            meta["annotations"] = notes
        secrets.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": meta,
                "type": "Opaque",
                "data": {API_KEY_FIELD: b64(plain), BASE_URL_FIELD: b64(service_url(tenant))},
            }
        )
    return secrets


# libyaml's emitter when PyYAML has it (its wheels do): the same text as safe_dump, about five
# times faster, for a render that runs on every reconcile.
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def configmap_data(inputs: RenderInputs, litellm: dict[str, Any]) -> dict[str, str]:
    """The files of ConfigMap `gateway-config`: LiteLLM's config.yaml (`litellm`, from
    `render_litellm_config`), the rules file and, with GCP workload identity, the credential
    configuration (no secret in any)."""
    return {
        CONFIG_FILE: yaml.dump(litellm, Dumper=_DUMPER, sort_keys=False),
        RULES_FILE: json.dumps(render_rules(inputs), sort_keys=True, indent=2) + "\n",
        **identity_files(inputs),
    }


def render_configmap(inputs: RenderInputs, data: dict[str, str] | None = None) -> dict[str, Any]:
    """ConfigMap `gateway-config`; pass `data` when it was computed already."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(inputs.tenant, CONFIG_NAME),
        "data": data if data is not None else configmap_data(inputs, render_litellm_config(inputs)),
    }


def restart_material(inputs: RenderInputs, litellm: dict[str, Any]) -> dict[str, Any]:
    """What a gateway reads from its ConfigMap only when it starts.

    LiteLLM's config.yaml (`litellm`) without its model routing (`api.gateway_config`: the
    gateway applies a changed routing while it serves) and the workload identity files. Not
    the rules file: the gateway reloads it (gateway/files.py).
    """
    _, rest = split_model_routing(litellm)
    return {CONFIG_FILE: rest, **identity_files(inputs)}


def config_hash(
    material: dict[str, Any], provider_env: list[dict[str, Any]], storage: dict[str, str | None]
) -> str:
    """The pod template annotation that rolls the gateway when what it reads at start changes.

    Covers `restart_material` (the ConfigMap but for what a serving gateway reloads: the model
    routing of config.yaml and the rules file), the provider credential references and the
    storage endpoints (read once from the environment). Not the key hashes: keys.json is
    reloaded, so rotating a key must not restart pods; nor a new, changed or deleted
    ModelAlias or BudgetPolicy.
    """
    text = json.dumps(
        {"config": material, "provider_env": provider_env, "storage": storage},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()
