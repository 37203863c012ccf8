"""Operator settings, from the environment of the operator's pod."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from tenantgw.api.tenant import OPERATOR_NAMESPACE

DEFAULT_IMAGE = "ghcr.io/tenantgw/gateway:0.1.0"


@dataclass(frozen=True)
class Settings:
    """What the operator needs to know that no custom resource says."""

    gateway_image: str = DEFAULT_IMAGE
    resync_seconds: float = 300.0
    monitoring_namespace: str = "monitoring"
    events_namespace: str = "default"
    key_grace: timedelta = timedelta(hours=24)
    budget_sync_seconds: float = 30.0
    operator_namespace: str = OPERATOR_NAMESPACE
    """The operator's own namespace (from the downward API): never given to a Tenant."""

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            gateway_image=env.get("TENANTGW_GATEWAY_IMAGE", DEFAULT_IMAGE),
            resync_seconds=float(env.get("TENANTGW_RESYNC_SECONDS", "300")),
            monitoring_namespace=env.get("TENANTGW_MONITORING_NAMESPACE", "monitoring"),
            events_namespace=env.get("TENANTGW_EVENTS_NAMESPACE", "default"),
            budget_sync_seconds=float(env.get("TENANTGW_BUDGET_SYNC_SECONDS", "30")),
            key_grace=timedelta(hours=float(env.get("TENANTGW_KEY_GRACE_HOURS", "24"))),
            operator_namespace=env.get("TENANTGW_OPERATOR_NAMESPACE") or OPERATOR_NAMESPACE,
        )
