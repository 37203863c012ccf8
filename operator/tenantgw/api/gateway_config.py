"""What of LiteLLM's config.yaml a running gateway takes without a restart: its model routing.

A ModelAlias becomes three parts of the gateway's config.yaml (render/litellm_config.py): its
deployments in `model_list`, its fallbacks in `litellm_settings.fallbacks` and the Claude
model names it serves in `router_settings.model_group_alias`. A running gateway applies those
when the mounted file changes (gateway/modelsync.py), so the pod template's config hash, which
rolls the pods, covers the rest of the file only (render.config.config_hash): a new, changed or
deleted alias reaches the serving gateways without restarting them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MODEL_LIST = "model_list"
FALLBACKS = "litellm_settings.fallbacks"
GROUP_ALIAS = "router_settings.model_group_alias"
MODEL_ROUTING: tuple[str, ...] = (MODEL_LIST, FALLBACKS, GROUP_ALIAS)
"""Dotted paths in config.yaml of what a gateway applies while it serves."""


def split_model_routing(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(routing, rest) of a parsed config.yaml.

    `routing` holds the values at `MODEL_ROUTING`, by dotted path (a path the file lacks is
    left out); `rest` is the config without them. `config` is left as it was: only the
    mappings on those paths are copied, the rest is shared with it.
    """
    rest: dict[str, Any] = dict(config)
    routing: dict[str, Any] = {}
    for dotted in MODEL_ROUTING:
        *parents, leaf = dotted.split(".")
        parent = rest
        for key in parents:
            child = parent.get(key)
            if not isinstance(child, Mapping):
                break
            copied = dict(child)
            parent[key] = copied
            parent = copied
        else:
            if leaf in parent:
                routing[dotted] = parent.pop(leaf)
    return routing, rest
