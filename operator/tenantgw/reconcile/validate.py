"""Cross-object validation: what one object's CRD schema cannot check alone.

A ModelAlias that names an unknown provider or a model outside the Tenant's catalog, falls back
to a missing or rejected alias, sits on a fallback cycle, or uses a provider outside the
tenant's data residency is rejected with a message naming the field; the rest of the tenant
keeps serving. Residency covers the whole fallback closure (`tenantgw.api.fallbacks`, the walk
the gateway checks too): an alias that can fall back, directly or through other aliases, to one
outside the regions is a ResidencyViolation itself.

A BudgetPolicy that cannot be applied fails closed: it is rejected too, but still rendered into
the gateway's rules as unenforceable, and the gateway refuses the requests in its scope. When
the scope itself names a key or alias that does not exist (deleted, renamed, rejected), the
gateway cannot tell which requests the platform meant, so the policy covers the whole tenant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tenantgw.api import BudgetPolicy, ModelAlias, Tenant, alias_cost_tiers, catalog_entry
from tenantgw.api.fallbacks import fallback_paths
from tenantgw.render.inputs import UnenforceableBudget

UNENFORCEABLE_SUFFIX = (
    "; the gateway refuses the requests in its scope ({scope}) until this is fixed"
)


@dataclass
class Verdict:
    """Whether one object is accepted; if not, a CamelCase reason and a message naming the field."""

    name: str
    accepted: bool
    reason: str
    message: str
    generation: int | None = None
    unenforceable: UnenforceableBudget | None = None
    """For a rejected BudgetPolicy: what the gateway refuses instead of enforcing it."""


def describe_validation_error(exc: ValidationError) -> str:
    """`spec.targets[1].weight: Input should be greater than 0` for the first error(s)."""
    parts = []
    for err in exc.errors()[:3]:
        path = ""
        for loc in err["loc"]:
            if isinstance(loc, int):
                path += f"[{loc}]"
            elif str(loc).startswith("function-") or loc in ("", "model"):
                continue
            else:
                path += f".{loc}" if path else str(loc)
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{path}: {msg}" if path else msg)
    return "; ".join(parts)


def parse_aliases(bodies: list[dict[str, Any]]) -> tuple[list[ModelAlias], list[Verdict]]:
    """Parse raw ModelAlias bodies; the unparsable ones come back as rejected verdicts."""
    parsed, rejected = [], []
    for body in bodies:
        meta = body.get("metadata", {})
        try:
            parsed.append(ModelAlias.model_validate(body))
        except ValidationError as exc:
            rejected.append(
                Verdict(
                    meta.get("name", "?"),
                    False,
                    "InvalidSpec",
                    describe_validation_error(exc),
                    meta.get("generation"),
                )
            )
    return parsed, rejected


def validate_aliases(tenant: Tenant, aliases: list[ModelAlias]) -> list[Verdict]:
    """One verdict per alias, in name order."""
    providers = {p.name: p for p in tenant.spec.providers}
    catalog = tenant.spec.catalog
    residency = tenant.spec.compliance.data_residency
    allowed = set(residency.allowed_regions) if residency and residency.allowed_regions else None
    tname = tenant.metadata.name
    verdicts: dict[str, Verdict] = {}
    by_name = {a.metadata.name or "": a for a in aliases}
    outside: dict[str, str] = {}
    """Aliases with a target outside the regions: what is outside, for their fallers-back."""

    for name, alias in sorted(by_name.items()):
        gen = alias.metadata.generation
        problem: tuple[str, str] | None = None
        for i, target in enumerate(alias.spec.targets):
            provider = providers.get(target.provider)
            if provider is None:
                problem = (
                    "UnknownProvider",
                    f'spec.targets[{i}].provider: no provider "{target.provider}" in Tenant '
                    f"{tname} (spec.providers has {', '.join(sorted(providers)) or 'none'})",
                )
                break
            if allowed is not None and provider.region not in allowed:
                where = f'region "{provider.region}"' if provider.region else "no region"
                outside[name] = f'provider "{provider.name}" has {where}'
                problem = (
                    "ResidencyViolation",
                    f'spec.targets[{i}].provider: provider "{provider.name}" has {where}, outside '
                    f"spec.compliance.dataResidency.allowedRegions of Tenant {tname} "
                    f"({', '.join(sorted(allowed))})",
                )
                break
            if catalog_entry(catalog, provider.name, target.model) is None:
                offered = sorted(e.model for e in catalog if e.provider == provider.name)
                problem = (
                    "NotInCatalog",
                    f'spec.targets[{i}].model: model "{target.model}" of provider '
                    f'"{provider.name}" is not in spec.catalog of Tenant {tname} '
                    f"(it offers {', '.join(offered) or 'no model'} of {provider.name})",
                )
                break
        if problem is None:
            problem = _name_clash(name, alias, by_name)
        verdicts[name] = Verdict(name, problem is None, *(problem or ("Accepted", "")), gen)

    # Residency over the fallback closure: LiteLLM follows fallbacks of fallbacks.
    for name, alias in sorted(by_name.items()):
        v = verdicts[name]
        if not v.accepted or allowed is None:
            continue
        paths = fallback_paths(name, _fallbacks_of(by_name))
        reached = next((path for fb, path in paths.items() if fb in outside), None)
        if reached is not None:
            index = alias.spec.fallbacks.index(reached[1])
            v.accepted, v.reason = False, "ResidencyViolation"
            v.message = (
                f"spec.fallbacks[{index}]: falls back through {' -> '.join(reached)}, whose "
                f"{outside[reached[-1]]}, outside spec.compliance.dataResidency.allowedRegions "
                f"of Tenant {tname} ({', '.join(sorted(allowed))})"
            )

    # Fallbacks: to a missing or rejected alias, or around a cycle. Rejections propagate, so
    # iterate until nothing changes.
    changed = True
    while changed:
        changed = False
        for name, alias in sorted(by_name.items()):
            v = verdicts[name]
            if not v.accepted:
                continue
            for i, fb in enumerate(alias.spec.fallbacks):
                fb_verdict = verdicts.get(fb)
                if fb_verdict is None:
                    v.accepted, v.reason = False, "UnknownFallback"
                    v.message = (
                        f'spec.fallbacks[{i}]: no ModelAlias "{fb}" '
                        f"in namespace {alias.metadata.namespace}"
                    )
                elif not fb_verdict.accepted and fb_verdict.reason != "FallbackCycle":
                    v.accepted, v.reason = False, "UnknownFallback"
                    v.message = (
                        f'spec.fallbacks[{i}]: ModelAlias "{fb}" is not accepted '
                        f"({fb_verdict.reason})"
                    )
                if not v.accepted:
                    changed = True
                    break
    for name in sorted(by_name):
        cycle = _cycle_through(name, by_name)
        if cycle and verdicts[name].accepted:
            v = verdicts[name]
            v.accepted, v.reason = False, "FallbackCycle"
            v.message = f"spec.fallbacks: fallback cycle {' -> '.join(cycle)}"
    for v in verdicts.values():
        if v.accepted:
            v.message = (
                "the alias is in the gateway's configuration: serving gateways take it without "
                "a restart when the kubelet refreshes their ConfigMap (within a minute by default)"
            )
    return [verdicts[n] for n in sorted(verdicts)]


def _name_clash(
    name: str, alias: ModelAlias, by_name: dict[str, ModelAlias]
) -> tuple[str, str] | None:
    """A client-facing name must point at one alias; the alias first by name keeps it."""
    for i, client_name in enumerate(alias.spec.aliases):
        if client_name in by_name and client_name != name:
            return (
                "DuplicateName",
                f'spec.aliases[{i}]: "{client_name}" is the name of ModelAlias "{client_name}"',
            )
        for other_name, other in sorted(by_name.items()):
            if other_name < name and client_name in other.spec.aliases:
                return (
                    "DuplicateName",
                    f'spec.aliases[{i}]: "{client_name}" is already served by '
                    f'ModelAlias "{other_name}"',
                )
    return None


def _fallbacks_of(by_name: dict[str, ModelAlias]) -> Callable[[str], list[str]]:
    def fallbacks_of(name: str) -> list[str]:
        alias = by_name.get(name)
        return list(alias.spec.fallbacks) if alias is not None else []

    return fallbacks_of


def _cycle_through(start: str, by_name: dict[str, ModelAlias]) -> list[str] | None:
    """The first fallback path from `start` that comes back to it, if any."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        alias = by_name.get(node)
        if alias is None:
            continue
        for fb in alias.spec.fallbacks:
            if fb == start:
                return [*path, fb]
            if fb not in seen:
                seen.add(fb)
                stack.append((fb, [*path, fb]))
    return None


def validate_budgets(
    tenant: Tenant, bodies: list[dict[str, Any]], accepted_aliases: list[ModelAlias]
) -> tuple[list[BudgetPolicy], list[Verdict]]:
    """Parse BudgetPolicies and check that their scope and downgrade tier exist.

    A rejected policy's verdict carries `unenforceable`: the gateway refuses its scope.
    """
    keys = {k.name for k in tenant.spec.keys}
    alias_names = {a.metadata.name for a in accepted_aliases}
    tiers = set(alias_cost_tiers(tenant.spec.catalog, accepted_aliases).values())
    policies, verdicts = [], []
    for body in bodies:
        meta = body.get("metadata", {})
        name, gen = meta.get("name", "?"), meta.get("generation")
        try:
            policy = BudgetPolicy.model_validate(body)
        except ValidationError as exc:
            message = describe_validation_error(exc)
            verdicts.append(_unenforceable(name, gen, None, "InvalidSpec", message))
            continue
        scope, problem = policy.spec.scope, None
        if scope.kind == "Key" and scope.name not in keys:
            problem = (
                "UnknownKey",
                f'spec.scope.name: no key "{scope.name}" in spec.keys of '
                f"Tenant {tenant.metadata.name}",
            )
        elif scope.kind == "ModelAlias" and scope.name not in alias_names:
            problem = (
                "UnknownModelAlias",
                f'spec.scope.name: no accepted ModelAlias "{scope.name}"',
            )
        elif (
            policy.spec.on_exceeded.action == "downgrade"
            and policy.spec.on_exceeded.to_cost_tier not in tiers
        ):
            problem = (
                "NoAliasInTier",
                "spec.onExceeded.toCostTier: no accepted ModelAlias has cost tier "
                f'"{policy.spec.on_exceeded.to_cost_tier}" (tiers come from the models in '
                "spec.catalog of the Tenant that the alias and its fallbacks use)",
            )
        if problem:
            verdicts.append(_unenforceable(name, gen, policy, *problem))
        else:
            policies.append(policy)
            verdicts.append(
                Verdict(name, True, "Accepted", "the policy is enforced by the gateway", gen)
            )
    policies.sort(key=lambda p: p.metadata.name or "")
    return policies, sorted(verdicts, key=lambda v: v.name)


def _unenforceable(
    name: str, generation: int | None, policy: BudgetPolicy | None, reason: str, message: str
) -> Verdict:
    """The verdict of a policy that cannot be applied, and what the gateway refuses instead.

    Only a policy whose scope exists keeps it (NoAliasInTier); any other covers the tenant.
    """
    keeps_scope = policy is not None and reason == "NoAliasInTier"
    kind, scope_name = "Tenant", None
    if keeps_scope and policy is not None:
        kind, scope_name = policy.spec.scope.kind, policy.spec.scope.name
    refused = UnenforceableBudget(
        name=name,
        scope_kind=kind,
        scope_name=scope_name,
        period=policy.spec.period if policy is not None else "monthly",
        reason=reason,
        message=message,
    )
    if kind == "Tenant":
        scope = "the whole tenant"
    elif kind == "Session":
        scope = "every request with a session id"
    else:
        scope = f"{kind} {scope_name}"
    full = message + UNENFORCEABLE_SUFFIX.format(scope=scope)
    return Verdict(name, False, reason, full, generation, unenforceable=refused)


def unenforceable_budgets(verdicts: list[Verdict]) -> tuple[UnenforceableBudget, ...]:
    """The rejected BudgetPolicies the gateway must refuse requests for, by name."""
    found = [v.unenforceable for v in verdicts if v.unenforceable is not None]
    return tuple(sorted(found, key=lambda u: u.name))


def auto_mode_problem(tenant: Tenant, alias_verdicts: list[Verdict]) -> str | None:
    """Why spec.autoMode.classifierAlias cannot serve (None: unset or served)."""
    wanted = tenant.spec.auto_mode.classifier_alias
    if wanted is None:
        return None
    verdict = next((v for v in alias_verdicts if v.name == wanted), None)
    if verdict is not None and verdict.accepted:
        return None
    where = f"spec.autoMode.classifierAlias: ModelAlias {wanted!r}"
    if verdict is None:
        why = f"{where} not found in namespace {tenant.namespace_name()}"
    else:
        why = f"{where} is not accepted ({verdict.message})"
    return (
        f"{why}; until it serves, the gateway answers Claude Code's auto mode with no verdict "
        "and Claude Code checks tool calls with its own classifier requests"
    )
