"""A serving gateway applies a changed model routing from its config.yaml, without a restart.

A ModelAlias is rendered into three parts of LiteLLM's config.yaml: `model_list`,
`litellm_settings.fallbacks` and `router_settings.model_group_alias`
(`tenantgw.api.gateway_config`). The pod template's config hash leaves them out, so a new,
changed or deleted alias does not roll the gateway: the kubelet swaps the mounted ConfigMap's
files (within its sync period), and each worker looks at config.yaml once a second and hands
the new routing to its LiteLLM router with the calls LiteLLM's own model reload makes
(`Router.set_model_list`, `Router.update_settings`). Its tenantgw side, the alias in the rules
file, is reloaded by `files`.

Any other change of config.yaml rolls the pods (the hash covers it). Until the new pod serves,
a worker whose file differs from what it started with outside the routing leaves the file
alone and says so once: it never applies half of a change. A file that does not parse, or a
routing LiteLLM refuses, is logged and the routing in use is kept.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from tenantgw.api.gateway_config import FALLBACKS, GROUP_ALIAS, MODEL_LIST, split_model_routing
from tenantgw.gateway import trim

log = logging.getLogger("tenantgw.gateway")

CHECK_INTERVAL = 1.0
"""Seconds between two looks at config.yaml (a stat; the file is read only when it changed)."""

_Signature = tuple[int, int, int]


def _signature(path: Path) -> _Signature:
    stat = os.stat(path)  # follows the kubelet's symlinks to the file of the current version
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _load(path: Path) -> dict[str, Any]:
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ValueError("not a mapping")
    return config


def _model_names(routing: dict[str, Any]) -> set[str]:
    return {str(m.get("model_name")) for m in routing.get(MODEL_LIST) or [] if isinstance(m, dict)}


class ModelRouting:
    """The model routing of one worker's LiteLLM router, kept in step with config.yaml.

    `path` is the file as mounted (not resolved: the kubelet replaces the file it points to).
    The file is read here, before LiteLLM's start-up reads it (`baseline`): a change that lands
    in between is then one the first `check` sees, never one both miss.
    """

    def __init__(self, path: Path | str, router: Any = None) -> None:
        self.path = Path(path)
        self.router = router
        config = _load(self.path)
        self._signature: _Signature | None = _signature(self.path)
        self._routing, self._rest = split_model_routing(config)
        self._problem: str | None = None

    def check(self) -> bool:
        """Apply the file's routing if the file changed and only its routing did; True if so."""
        if self.router is None:
            return False  # not serving yet
        try:
            signature = _signature(self.path)
        except OSError as exc:
            self._report(f"cannot read {self.path}: {exc.strerror or exc}")
            return False
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            routing, rest = split_model_routing(_load(self.path))
        except (OSError, ValueError, yaml.YAMLError) as exc:
            self._report(f"{self.path} does not parse ({exc}); keeping the model routing in use")
            return False
        if rest != self._rest:
            self._report(
                f"{self.path} changed beyond its model routing: the gateway takes it when its "
                "pod restarts (the operator rolls it), and keeps the model routing in use"
            )
            return False
        self._problem = None
        if routing == self._routing:
            return False
        return self.apply(routing)

    def apply(self, routing: dict[str, Any]) -> bool:
        """Hand `routing` to the router; on a refusal the previous routing is put back."""
        previous = self._routing
        try:
            self._install(routing)
        except Exception as exc:  # LiteLLM's validation: keep serving what worked
            log.error("model routing of %s refused by LiteLLM (%s); keeping the one in use",
                      self.path, exc)  # fmt: skip
            try:
                self._install(previous)
            except Exception:
                log.exception("model routing in use could not be put back")
            return False
        self._routing = routing
        added = sorted(_model_names(routing) - _model_names(previous))
        removed = sorted(_model_names(previous) - _model_names(routing))
        log.info(
            "model routing reloaded from %s without a restart: %d deployments, "
            "aliases added %s, removed %s",
            self.path,
            len(routing.get(MODEL_LIST) or []),
            added,
            removed,
        )
        return True

    def _install(self, routing: dict[str, Any]) -> None:
        import litellm
        from litellm.proxy import proxy_server

        fallbacks = copy.deepcopy(routing.get(FALLBACKS) or [])
        self.router.validate_fallbacks(fallback_param=fallbacks)
        self.router.set_model_list(routing.get(MODEL_LIST) or [])  # it works on a deep copy
        self.router.update_settings(
            fallbacks=fallbacks, model_group_alias=copy.deepcopy(routing.get(GROUP_ALIAS) or {})
        )
        litellm.fallbacks = fallbacks  # what the proxy set from litellm_settings at start
        proxy_server.llm_model_list = self.router.get_model_list()
        trim.skip_usage_of_unlimited_deployments(self.router)

    def _report(self, message: str) -> None:
        if message != self._problem:
            log.warning("%s", message)
        self._problem = message

    async def run(self, interval: float = CHECK_INTERVAL) -> None:
        """Look at the file every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.check()
            except Exception:  # never let the loop die: the next look tries again
                log.exception("model routing check of %s failed", self.path)


_task: asyncio.Task[None] | None = None


def baseline(path: str | None) -> ModelRouting | None:
    """config.yaml `path` as it is now, before LiteLLM's start-up reads it; None without one."""
    if not path:
        return None
    try:
        return ModelRouting(path)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        log.warning("model routing of %s is not reloaded while serving: %s", path, exc)
        return None


def start(routing: ModelRouting | None) -> None:
    """Keep the started proxy's router in step with the file of `routing` (on the serving loop)."""
    global _task
    from litellm.proxy import proxy_server

    router = getattr(proxy_server, "llm_router", None)
    if routing is None or router is None:
        return
    routing.router = router
    _task = asyncio.get_running_loop().create_task(routing.run(), name="tenantgw-model-routing")
