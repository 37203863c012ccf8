"""What a developer pastes to use Claude Code through their tenant's gateway."""

from __future__ import annotations

import base64
import fnmatch
import json
import shlex
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Onboarding:
    """The gateway URL, the key and the model names Claude Code should ask for."""

    base_url: str
    token: str
    model: str
    sonnet: str
    opus: str
    haiku: str

    def env(self) -> dict[str, str]:
        return {
            "ANTHROPIC_BASE_URL": self.base_url,
            "ANTHROPIC_AUTH_TOKEN": self.token,
            "ANTHROPIC_MODEL": self.model,
            "ANTHROPIC_DEFAULT_SONNET_MODEL": self.sonnet,
            "ANTHROPIC_DEFAULT_OPUS_MODEL": self.opus,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": self.haiku,
            "CLAUDE_CODE_SUBAGENT_MODEL": self.sonnet,
        }

    def shell(self) -> str:
        return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in self.env().items())

    def settings_json(self) -> str:
        """A `~/.claude/settings.json` with the same environment."""
        return json.dumps({"env": self.env()}, indent=2)


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


def onboard(api: ApiClient, tenant_name: str, key: str, base_url: str | None = None) -> Onboarding:
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
    return Onboarding(base_url=url, token=token, **models)


__all__ = ["API_VERSION", "Onboarding", "onboard", "pick_models"]
