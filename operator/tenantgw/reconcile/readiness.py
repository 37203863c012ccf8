"""The Tenant's conditions, from what the plan found and what the apply answered (pure).

`Ready` means the gateway serves the tenant's valid configuration; see `tenant_conditions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tenantgw.api import Tenant
from tenantgw.kube.apply import ApplyResult
from tenantgw.kube.client import JSON
from tenantgw.reconcile.conditions import condition, find
from tenantgw.reconcile.namespace import terminating_message
from tenantgw.reconcile.storage import StorageOutcome
from tenantgw.reconcile.validate import Verdict, auto_mode_problem
from tenantgw.render.objects import service_url


def missing_credentials(tenant: Tenant, secrets: Mapping[str, JSON | None]) -> list[str]:
    """Provider credential references whose Secret or key does not exist."""
    ns = tenant.namespace_name()
    missing = []
    for i, provider in enumerate(tenant.spec.providers):
        ref = provider.credentials_secret_ref
        if ref is None:
            continue
        secret = secrets.get(ref.name)
        if secret is None:
            missing.append(
                f'spec.providers[{i}].credentialsSecretRef: Secret "{ref.name}" not found in '
                f"namespace {ns}; create it there with key {ref.key}"
            )
        elif ref.key not in (secret.get("data") or {}):
            missing.append(
                f'spec.providers[{i}].credentialsSecretRef: Secret "{ref.name}" in namespace '
                f'{ns} has no key "{ref.key}"'
            )
    return missing


def tenant_conditions(
    tenant: Tenant,
    generation: int | None,
    alias_verdicts: list[Verdict],
    budget_verdicts: list[Verdict],
    missing: list[str],
    result: ApplyResult,
    monitoring: bool,
    storage: StorageOutcome,
    tls: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Ready means the gateway serves the tenant's valid configuration.

    A rejected ModelAlias or BudgetPolicy is left out of that configuration: ConfigValid says
    which and why, and Ready stays True with reason `Degraded` (the printer column shows it)
    while the rest keeps serving. Ready is False when nothing serves the current spec: a
    missing credential, an apply the API server refused, the TLS Secret (spec.gateway.tls),
    storage, or a gateway not available. `tls` is the TLSConfigured condition, with TLS only.
    """
    rejected = [f"ModelAlias {v.name}: {v.message}" for v in alias_verdicts if not v.accepted]
    rejected_budgets = [
        f"BudgetPolicy {v.name}: {v.message}" for v in budget_verdicts if not v.accepted
    ]
    auto_mode = auto_mode_problem(tenant, alias_verdicts)
    if missing:
        config = condition(
            "ConfigValid", False, "ProviderCredentialsMissing", "; ".join(missing), generation
        )
    elif auto_mode is not None and not (rejected or rejected_budgets):
        config = condition(
            "ConfigValid", False, "AutoModeClassifierNotServed", auto_mode, generation
        )
    elif rejected or rejected_budgets:
        reason = (
            "ResourcesRejected"
            if rejected and rejected_budgets
            else "ModelAliasRejected"
            if rejected
            else "BudgetPolicyRejected"
        )
        detail = "; ".join(rejected + rejected_budgets + ([auto_mode] if auto_mode else []))
        config = condition("ConfigValid", False, reason, detail, generation)
    else:
        config = condition("ConfigValid", True, "Valid", "the configuration is valid", generation)

    dep = result.live.get(("apps/v1", "Deployment", "gateway", tenant.namespace_name()))
    available = deployment_available(dep)
    # Available while still rolling: it serves, but not all of it the current config yet.
    rolling = rollout_left(dep) if available and dep is not None else None
    if available:
        gateway = condition(
            "GatewayAvailable",
            True,
            "DeploymentAvailable",
            "the gateway Deployment is available",
            generation,
        )
    else:
        gateway = condition(
            "GatewayAvailable",
            False,
            "DeploymentProgressing",
            "waiting for the gateway Deployment to become available",
            generation,
        )

    if monitoring:
        mon = condition(
            "MonitoringConfigured",
            True,
            "ServiceMonitorCreated",
            "ServiceMonitor and PrometheusRule are applied",
            generation,
        )
    else:
        mon = condition(
            "MonitoringConfigured",
            False,
            "MonitoringCRDsMissing",
            "the monitoring.coreos.com CRDs are not installed; "
            "no ServiceMonitor or PrometheusRule was created",
            generation,
        )
    store = storage.condition
    store_ok = store["status"] == "True" or store["reason"] == "NotConfigured"
    serves = f"the gateway serves {service_url(tenant)}"
    if result.failed and all(f.namespace_terminating for f in result.failed):
        # The cache had not yet seen the namespace's deletion when this pass planned: the
        # API server's refusal says it (the requeue comes back once it is gone).
        message = terminating_message(tenant.namespace_name())
        ready = condition("Ready", False, "NamespaceTerminating", message, generation)
    elif result.failed:
        message = "the API server refused: " + "; ".join(f.describe() for f in result.failed)
        ready = condition("Ready", False, "ApplyFailed", message, generation)
    elif missing:
        ready = condition("Ready", False, config["reason"], config["message"], generation)
    elif tls is not None and tls["status"] != "True":
        ready = condition("Ready", False, tls["reason"], tls["message"], generation)
    elif not available:
        ready = condition("Ready", False, gateway["reason"], gateway["message"], generation)
    elif rolling is not None:
        ready = condition("Ready", False, "DeploymentProgressing", rolling, generation)
    elif not store_ok:
        ready = condition("Ready", False, store["reason"], store["message"], generation)
    elif config["status"] == "False":
        left_out = [f"ModelAlias {v.name}" for v in alias_verdicts if not v.accepted] + [
            f"BudgetPolicy {v.name}" for v in budget_verdicts if not v.accepted
        ]
        if auto_mode is not None:
            left_out.append("spec.autoMode.classifierAlias")
        message = f"{serves}; left out (see ConfigValid): {', '.join(left_out)}"
        ready = condition("Ready", True, "Degraded", message, generation)
    else:
        ready = condition("Ready", True, "Ready", serves, generation)
    return [ready, config, gateway, store, mon, *([tls] if tls is not None else [])]


def rollout_left(dep: JSON) -> str | None:
    """Why the Deployment is still rolling out, None when every pod runs the current template.

    An Available Deployment can still be rolling: pods of the previous template (say, before
    a provider or storage change) keep answering until the rollout ends, so the gateway does
    not yet serve what status says. (A ModelAlias change rolls nothing: serving pods reload
    their model routing, `tenantgw.api.gateway_config`.) The same test as `kubectl rollout
    status` and kstatus.
    The message names no pod counts: each step of a rollout would otherwise be one more
    Tenant status write, and the Deployment's own status has them.
    """
    status = dep.get("status", {})
    want = dep.get("spec", {}).get("replicas")
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    ready = int(status.get("availableReplicas") or 0)
    stale = status.get("observedGeneration", 0) < dep["metadata"].get("generation", 0)
    if stale or (want is not None and updated < int(want)) or total > updated or ready < updated:
        ns = dep["metadata"].get("namespace", "")
        return (
            "rolling out the gateway to the current configuration "
            f"(kubectl rollout status deployment/gateway -n {ns})"
        )
    return None


def deployment_available(dep: JSON | None) -> bool:
    """Whether the gateway Deployment is Available: its pods answer, possibly still those of
    the previous template while a rollout goes on (then `rollout_left` says so)."""
    if not dep:
        return False
    avail = find(dep.get("status", {}).get("conditions"), "Available")
    return bool(avail and avail.get("status") == "True")
