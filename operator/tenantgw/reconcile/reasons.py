"""Every condition reason the operator can set, on which kind and condition, and what it means.

The registry the troubleshooting guide (docs/troubleshooting.md) and the Argo CD health checks
(manifests/argocd/health) are checked against. `tests/unit/test_reasons.py` scans the reconcile
sources for the reason literals that `condition()`, `Verdict` and `NamespaceVerdict` receive and
fails when one is missing here (or listed here but no longer set), and fails when a reason here
has no entry in the guide. Add a reason: set it in code, list it here, document it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["Tenant", "ModelAlias", "BudgetPolicy"]
Health = Literal["Healthy", "Progressing", "Degraded"]


@dataclass(frozen=True)
class Reason:
    """One reason: where it appears and the Argo CD health it gives its object."""

    name: str
    kind: Kind
    conditions: tuple[str, ...]
    """Condition types that carry it (Ready copies the reason of what keeps it False)."""
    health: Health | None
    """The Argo CD health of the object when this reason is on its Ready (Tenant) or Accepted
    (ModelAlias, BudgetPolicy) condition, or, for the Tenant's other conditions, the health
    it forces when Ready is True; None: it does not decide the health."""


def _r(
    name: str, kind: Kind, conditions: tuple[str, ...], health: Health | None
) -> tuple[tuple[Kind, str], Reason]:
    return (kind, name), Reason(name, kind, conditions, health)


REASONS: dict[tuple[Kind, str], Reason] = dict(
    [
        # Tenant: Ready
        _r("Ready", "Tenant", ("Ready",), "Healthy"),
        _r("Degraded", "Tenant", ("Ready",), "Degraded"),
        _r("ApplyFailed", "Tenant", ("Ready",), "Degraded"),
        _r("NamespaceTerminating", "Tenant", ("Ready",), "Progressing"),
        _r("DeploymentProgressing", "Tenant", ("Ready", "GatewayAvailable"), "Progressing"),
        _r("DeploymentAvailable", "Tenant", ("GatewayAvailable",), None),
        # Tenant: ConfigValid (the first four also on Ready)
        _r("InvalidSpec", "Tenant", ("Ready", "ConfigValid"), "Degraded"),
        _r("NamespaceReserved", "Tenant", ("Ready", "ConfigValid"), "Degraded"),
        _r("NamespaceConflict", "Tenant", ("Ready", "ConfigValid"), "Degraded"),
        _r("ProviderCredentialsMissing", "Tenant", ("Ready", "ConfigValid"), "Degraded"),
        _r("Valid", "Tenant", ("ConfigValid",), None),
        _r("ModelAliasRejected", "Tenant", ("ConfigValid",), "Degraded"),
        _r("BudgetPolicyRejected", "Tenant", ("ConfigValid",), "Degraded"),
        _r("ResourcesRejected", "Tenant", ("ConfigValid",), "Degraded"),
        _r("AutoModeClassifierNotServed", "Tenant", ("ConfigValid",), "Degraded"),
        # Tenant: StorageReady (StorageUnavailable also on Ready)
        _r("Provisioned", "Tenant", ("StorageReady",), None),
        _r("NotConfigured", "Tenant", ("StorageReady",), None),
        _r("StorageUnavailable", "Tenant", ("Ready", "StorageReady"), "Degraded"),
        # Tenant: MonitoringConfigured
        _r("ServiceMonitorCreated", "Tenant", ("MonitoringConfigured",), None),
        _r("MonitoringCRDsMissing", "Tenant", ("MonitoringConfigured",), None),
        # Tenant: TLSConfigured, with spec.gateway.tls only (the False ones also on Ready)
        _r("SecretReady", "Tenant", ("TLSConfigured",), None),
        _r("CertificatePending", "Tenant", ("Ready", "TLSConfigured"), "Progressing"),
        _r("TLSSecretMissing", "Tenant", ("Ready", "TLSConfigured"), "Degraded"),
        _r("TLSSecretInvalid", "Tenant", ("Ready", "TLSConfigured"), "Degraded"),
        # Tenant: EnforcementAvailable
        _r("Enforced", "Tenant", ("EnforcementAvailable",), None),
        _r("Recovered", "Tenant", ("EnforcementAvailable",), None),
        _r("StoreNotConfigured", "Tenant", ("EnforcementAvailable",), None),
        _r("StoreUnavailable", "Tenant", ("EnforcementAvailable",), "Degraded"),
        # ModelAlias: Accepted
        _r("Accepted", "ModelAlias", ("Accepted",), "Healthy"),
        _r("InvalidSpec", "ModelAlias", ("Accepted",), "Degraded"),
        _r("UnknownProvider", "ModelAlias", ("Accepted",), "Degraded"),
        _r("ResidencyViolation", "ModelAlias", ("Accepted",), "Degraded"),
        _r("NotInCatalog", "ModelAlias", ("Accepted",), "Degraded"),
        _r("DuplicateName", "ModelAlias", ("Accepted",), "Degraded"),
        _r("UnknownFallback", "ModelAlias", ("Accepted",), "Degraded"),
        _r("FallbackCycle", "ModelAlias", ("Accepted",), "Degraded"),
        # BudgetPolicy: Accepted
        _r("Accepted", "BudgetPolicy", ("Accepted",), "Healthy"),
        _r("InvalidSpec", "BudgetPolicy", ("Accepted",), "Degraded"),
        _r("UnknownKey", "BudgetPolicy", ("Accepted",), "Degraded"),
        _r("UnknownModelAlias", "BudgetPolicy", ("Accepted",), "Degraded"),
        _r("NoAliasInTier", "BudgetPolicy", ("Accepted",), "Degraded"),
    ]
)


def reason_names() -> frozenset[str]:
    """Every reason string the operator can set, whatever the kind."""
    return frozenset(name for _, name in REASONS)
