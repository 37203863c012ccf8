"""What of LiteLLM's config.yaml a running gateway takes without a restart: its model routing.

A ModelAlias becomes three parts of the gateway's config.yaml (render/litellm_config.py): its
deployments in `model_list`, its fallbacks in `litellm_settings.fallbacks` and the Claude
model names it serves in `router_settings.model_group_alias`. A running gateway applies those
when the mounted file changes (gateway/modelsync.py), so the pod template's config hash, which
rolls the pods, covers the rest of the file only (render.config.config_hash): a new, changed or
deleted alias reaches the serving gateways without restarting them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

MODEL_ROUTING: tuple[tuple[str, ...], ...] = (
    ("model_list",),
    ("litellm_settings", "fallbacks"),
    ("router_settings", "model_group_alias"),
)
"""Paths in config.yaml of what a gateway applies while it serves."""


def split_model_routing(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(routing, rest) of a parsed config.yaml.

    `routing` holds the values at `MODEL_ROUTING`, by dotted path (a path the file lacks is
    left out); `rest` is a copy of the config without them.
    """
    rest: dict[str, Any] = copy.deepcopy(dict(config))
    routing: dict[str, Any] = {}
    for path in MODEL_ROUTING:
        parent: Any = rest
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path[-1] in parent:
            routing[".".join(path)] = parent.pop(path[-1])
    return routing, rest
