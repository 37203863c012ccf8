"""What a developer pastes, or an administrator distributes, to use Claude Code through a
tenant's gateway.

Formats: `env` (shell exports), `settings` (a developer's `~/.claude/settings.json`) and
`managed-settings`: the `managed-settings.json` an administrator installs on every machine of a
fleet (Claude Code's LLM gateway rollout guide), at `/etc/claude-code/managed-settings.json` on
Linux and WSL, `/Library/Application Support/ClaudeCode/managed-settings.json` on macOS. It
holds the gateway URL, the model names, nonessential traffic off, and an `apiKeyHelper`: a
command Claude Code runs (with /bin/sh, as the developer) that prints the key, by default
`cat "$HOME/.config/tenantgw/<tenant>.key"`, so the machine-wide file carries no secret and each
developer's own key stays in their home. The key goes inline (`ANTHROPIC_AUTH_TOKEN`) only when
asked for (`--inline-key`).
"""

from __future__ import annotations

import base64
import fnmatch
import json
import shlex
import sys
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient

from tenantgw.api import (
    API_VERSION,
    GROUP,
    TIER_ORDER,
    VERSION,
    ModelAlias,
    Tenant,
    alias_cost_tiers,
)
from tenantgw.render.names import API_KEY_FIELD, key_secret_name

WINDOW_ENV = "CLAUDE_CODE_MAX_CONTEXT_TOKENS"
OUTPUT_ENV = "CLAUDE_CODE_MAX_OUTPUT_TOKENS"
MAX_OUTPUT_TOKENS = 20_000
"""What Claude Code keeps free for the answer when it decides to compact (it reserves its
max_tokens up to 20000): asking for no more keeps prompt + max_tokens within the window."""
DEFAULT_CONTEXT_WINDOW = 128_000
"""What the gateway assumes of a model nobody knows the window of (gateway.models)."""


@dataclass(frozen=True)
class ModelInfo:
    """How Claude Code should show one alias, and the context window it can trust."""

    display_name: str | None = None
    description: str | None = None
    context_window: int | None = None


MANAGED_SETTINGS_PATHS = {
    "linux": "/etc/claude-code/managed-settings.json",
    "macos": "/Library/Application Support/ClaudeCode/managed-settings.json",
}
"""Where Claude Code reads an administrator's managed settings (they override the user's)."""
KEY_HELPER_TTL_MS = 3_600_000
"""How often Claude Code re-runs the apiKeyHelper: a rotated key is picked up within an hour
(CLAUDE_CODE_API_KEY_HELPER_TTL_MS; it also re-runs it after a 401)."""


def default_key_file(tenant: str) -> str:
    """Where the default apiKeyHelper reads a developer's key: in their own home."""
    return f"$HOME/.config/tenantgw/{tenant}.key"


def key_helper(path: str) -> str:
    """A /bin/sh command printing the key stored in `path` (a leading $HOME is expanded)."""
    if path.startswith("$HOME/"):
        rest = path.removeprefix("$HOME/")
        if all(c.isalnum() or c in "._-/" for c in rest):
            return f'cat "$HOME/{rest}"'
    return f"cat {shlex.quote(path)}"


@dataclass(frozen=True)
class Onboarding:
    """The gateway URL, the key and the model names Claude Code should ask for."""

    base_url: str
    token: str
    model: str
    sonnet: str
    opus: str
    haiku: str
    models: Mapping[str, ModelInfo] = field(default_factory=dict)
    """What the gateway's GET /v1/models says of the aliases above."""
    ca_file: str | None = None
    """The CA certificate (PEM) an HTTPS gateway's certificate chains to, on the developer's
    machine: exported as NODE_EXTRA_CA_CERTS, which Node (Claude Code) reads at start-up."""

    def tls_hint(self) -> str | None:
        """What a developer must do to trust an HTTPS gateway; None for plain HTTP."""
        if not self.base_url.startswith("https://"):
            return None
        ca = self.ca_file or "<ca.crt>"
        return (
            f"# {self.base_url} serves HTTPS. If its certificate comes from a private CA, trust "
            f"it: Claude Code with NODE_EXTRA_CA_CERTS={ca} (in its environment, set before it "
            f"starts), the anthropic and openai SDKs (httpx) with SSL_CERT_FILE={ca} (a bundle "
            "holding that CA: it replaces their default trust store)"
        )

    def context_window(self) -> int:
        """The smallest window among the aliases Claude Code will use.

        Claude Code 2.1.332 takes one window for every model it does not know
        (CLAUDE_CODE_MAX_CONTEXT_TOKENS): the smallest keeps every one of them within its own.
        """
        names = {self.model, self.sonnet, self.opus, self.haiku}
        windows = [
            info.context_window
            for name, info in self.models.items()
            if name in names and info.context_window is not None
        ]
        return min(windows, default=DEFAULT_CONTEXT_WINDOW)

    def max_output_tokens(self) -> int:
        """The `max_tokens` Claude Code should ask for: at most what it reserves (20000)
        and a quarter of the window.

        Unset, Claude Code 2.1.332 asks any model it does not know for 32000 tokens while it
        reserves only 20000 when it compacts: an upstream that refuses prompt + max_tokens
        above its window (OpenAI, vLLM) then refuses a session long before compaction.
        """
        return min(MAX_OUTPUT_TOKENS, self.context_window() // 4)

    def window_env(self) -> dict[str, str]:
        """The window and the answer's size, which Claude Code reads from its settings."""
        return {
            WINDOW_ENV: str(self.context_window()),
            OUTPUT_ENV: str(self.max_output_tokens()),
        }

    def env(self) -> dict[str, str]:
        env = {
            "ANTHROPIC_BASE_URL": self.base_url,
            "ANTHROPIC_AUTH_TOKEN": self.token,
            "ANTHROPIC_MODEL": self.model,
            "ANTHROPIC_DEFAULT_SONNET_MODEL": self.sonnet,
            "ANTHROPIC_DEFAULT_OPUS_MODEL": self.opus,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": self.haiku,
            "CLAUDE_CODE_SUBAGENT_MODEL": self.sonnet,
        }
        # The /model picker shows these names for the three families' rows.
        for family, alias in (("SONNET", self.sonnet), ("OPUS", self.opus), ("HAIKU", self.haiku)):
            info = self.models.get(alias)
            if info is not None and info.display_name:
                env[f"ANTHROPIC_DEFAULT_{family}_MODEL_NAME"] = info.display_name
            if info is not None and info.description:
                env[f"ANTHROPIC_DEFAULT_{family}_MODEL_DESCRIPTION"] = info.description
        # The aliases' real window: no "isn't recognized" warning, compaction before the
        # upstream's limit (Claude Code otherwise assumes 1M tokens).
        env.update(self.window_env())
        # The picker's "From gateway" rows: GET /v1/models at start-up.
        env["CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY"] = "1"
        return env

    def shell(self) -> str:
        """Exports, and `claude` with the window in its settings.

        Claude Code 2.1.332 reads CLAUDE_CODE_MAX_CONTEXT_TOKENS from the `env` of its settings
        only (settings.json, `--settings`), never from the process environment.
        """
        exports = [f"export {k}={shlex.quote(v)}" for k, v in self.env().items()]
        if self.ca_file and self.base_url.startswith("https://"):
            exports.append(f"export NODE_EXTRA_CA_CERTS={shlex.quote(self.ca_file)}")
        command = shlex.join(["claude", *self.claude_args()])
        return "\n".join([*exports, f"alias claude={shlex.quote(command)}"])

    def claude_args(self) -> list[str]:
        """Arguments of `claude` that hand it the window (`--settings` with its `env`)."""
        return ["--settings", json.dumps({"env": self.window_env()})]

    def settings_json(self) -> str:
        """A `~/.claude/settings.json` with the same environment."""
        return json.dumps({"env": self.env()}, indent=2)

    def managed_settings(
        self, tenant: str, *, key_file: str | None = None, inline_key: bool = False
    ) -> dict[str, object]:
        """The `managed-settings.json` of a fleet: the key through an apiKeyHelper reading
        `key_file` (default `default_key_file(tenant)`), or inline with `inline_key`."""
        env = {k: v for k, v in self.env().items() if k != "ANTHROPIC_AUTH_TOKEN"}
        env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
        settings: dict[str, object] = {}
        if inline_key:
            env["ANTHROPIC_AUTH_TOKEN"] = self.token
        else:
            settings["apiKeyHelper"] = key_helper(key_file or default_key_file(tenant))
            env["CLAUDE_CODE_API_KEY_HELPER_TTL_MS"] = str(KEY_HELPER_TTL_MS)
        settings["env"] = env
        return settings

    def managed_settings_json(
        self, tenant: str, *, key_file: str | None = None, inline_key: bool = False
    ) -> str:
        body = self.managed_settings(tenant, key_file=key_file, inline_key=inline_key)
        return json.dumps(body, indent=2)


def pick_models(tenant: Tenant, aliases: list[ModelAlias]) -> dict[str, str]:
    """The alias Claude Code should use for each of its model families."""
    names = sorted(a.metadata.name or "" for a in aliases)
    if not names:
        raise SystemExit(f"Tenant {tenant.metadata.name} serves no accepted ModelAlias yet")
    default = tenant.spec.routing.default_alias
    default = default if default in names else names[0]

    def family(fam: str) -> str | None:
        probe = f"claude-{fam}-4-5"
        for rule in tenant.spec.routing.rules:
            if (
                rule.match.model
                and fnmatch.fnmatchcase(probe, rule.match.model)
                and rule.alias in names
            ):
                return rule.alias
        for alias in aliases:
            if any(
                fnmatch.fnmatchcase(probe, n) or n.startswith(f"claude-{fam}")
                for n in alias.spec.aliases
            ):
                return alias.metadata.name
        return None

    tiers = alias_cost_tiers(tenant.spec.catalog, aliases)
    by_tier = sorted(
        aliases, key=lambda a: (TIER_ORDER[tiers[a.metadata.name or ""]], a.metadata.name or "")
    )
    return {
        "model": default,
        "sonnet": family("sonnet") or default,
        "opus": family("opus") or (by_tier[-1].metadata.name or default),
        "haiku": family("haiku") or (by_tier[0].metadata.name or default),
    }


def gateway_models(base_url: str, token: str, timeout: float = 10.0) -> dict[str, Any]:
    """The gateway's GET /v1/models, by model id; raises OSError or ValueError."""
    request = urllib.request.Request(  # noqa: S310 - the tenant's own gateway URL
        f"{base_url.rstrip('/')}/v1/models?limit=1000",
        headers={"x-api-key": token, "anthropic-version": "2023-06-01"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        payload = json.loads(response.read())
    return {entry["id"]: entry for entry in payload["data"]}


def model_infos(
    aliases: list[ModelAlias], served: Mapping[str, Any] | None
) -> dict[str, ModelInfo]:
    """Each alias's display name and description (its spec) and window (the gateway's)."""
    infos = {}
    for alias in aliases:
        name = alias.metadata.name or ""
        entry = (served or {}).get(name) or {}
        window = entry.get("context_window")
        infos[name] = ModelInfo(
            display_name=alias.spec.display_name,
            description=alias.spec.description,
            context_window=window if isinstance(window, int) else None,
        )
    return infos


Fetch = Callable[[str, str], Mapping[str, Any]]


def onboard(
    api: ApiClient,
    tenant_name: str,
    key: str,
    base_url: str | None = None,
    fetch: Fetch = gateway_models,
) -> Onboarding:
    """What a developer needs; the context windows come from the gateway itself (`fetch`).

    A gateway that does not answer leaves the windows unknown: the conservative default is
    printed and stderr says so.
    """
    custom = client.CustomObjectsApi(api)
    tenant = Tenant.model_validate(
        custom.get_cluster_custom_object(GROUP, VERSION, "tenants", tenant_name)
    )
    if key not in {k.name for k in tenant.spec.keys}:
        known = ", ".join(k.name for k in tenant.spec.keys) or "none"
        raise SystemExit(f"Tenant {tenant_name} has no key {key!r} in spec.keys (keys: {known})")
    ns = tenant.namespace_name()
    secret = client.CoreV1Api(api).read_namespaced_secret(key_secret_name(key), ns)
    token = base64.b64decode((secret.data or {})[API_KEY_FIELD]).decode()
    items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, "modelaliases")["items"]
    aliases = [
        ModelAlias.model_validate(item)
        for item in items
        if any(
            c.get("type") == "Accepted" and c.get("status") == "True"
            for c in (item.get("status") or {}).get("conditions", [])
        )
    ]
    models = pick_models(tenant, aliases)
    url = base_url or (tenant.status.url if tenant.status and tenant.status.url else None)
    if not url:
        raise SystemExit(f"Tenant {tenant_name} has no status.url yet: is the operator running?")
    served: Mapping[str, Any] | None
    try:
        served = fetch(url, token)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(
            f"warning: could not list the models of {url} ({exc}): context windows unknown, "
            f"CLAUDE_CODE_MAX_CONTEXT_TOKENS set to {DEFAULT_CONTEXT_WINDOW}",
            file=sys.stderr,
        )
        served = None
    return Onboarding(base_url=url, token=token, models=model_infos(aliases, served), **models)


__all__ = [
    "API_VERSION",
    "MANAGED_SETTINGS_PATHS",
    "Onboarding",
    "default_key_file",
    "key_helper",
    "onboard",
    "pick_models",
]
