"""Data residency, in depth: a request may only go to providers in the tenant's regions.

The operator already leaves out ModelAlias targets outside `allowedRegions`; the gateway checks
again from the rules file, so a stale or hand-edited config cannot send a prompt elsewhere.
The chosen alias and every alias of its fallback closure are checked (fallbacks of fallbacks
too, `tenantgw.api.fallbacks`), because LiteLLM may use any of them for the request.
"""

from __future__ import annotations

from tenantgw.api.fallbacks import fallback_paths
from tenantgw.gateway.errors import PermissionDeniedError
from tenantgw.gateway.files import Rules


def violations(rules: Rules, alias: str) -> list[str]:
    """Targets of `alias` and of its fallback closure outside the allowed regions, described.

    A target reached through fallbacks names the path: `a -> b -> c: sim/model (region x)`.
    """
    residency = rules.compliance.data_residency
    if residency is None:
        return []
    allowed = set(residency.allowed_regions)
    found: list[str] = []
    paths = {alias: (alias,), **fallback_paths(alias, lambda name: fallbacks_of(rules, name))}
    for name, path in paths.items():
        entry = rules.aliases.get(name)
        if entry is None:
            continue
        for target in entry.targets:
            if target.region not in allowed:
                where = f"region {target.region}" if target.region else "no declared region"
                found.append(f"{' -> '.join(path)}: {target.provider}/{target.model} ({where})")
    return found


def fallbacks_of(rules: Rules, alias: str) -> tuple[str, ...]:
    """The fallbacks `alias` declares in the rules (none for an unknown alias)."""
    entry = rules.aliases.get(alias)
    return entry.fallbacks if entry is not None else ()


def check_residency(rules: Rules, alias: str) -> None:
    """Raise PermissionDeniedError (403) when `alias` could send the prompt outside the regions."""
    found = violations(rules, alias)
    if not found:
        return
    residency = rules.compliance.data_residency
    allowed = ", ".join(residency.allowed_regions) if residency else ""
    raise PermissionDeniedError(
        f"model {alias!r} of tenant {rules.tenant} is not allowed by its data residency "
        f"(allowed regions: {allowed}): {'; '.join(found)}; ask your platform team to fix "
        f"ModelAlias {alias} or the Tenant's providers",
        param="model",
    )
