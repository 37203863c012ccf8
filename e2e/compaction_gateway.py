"""A tenant gateway whose only model has a small context window, for long Claude Code sessions.

The gateway process runs from exactly what the operator renders for a Tenant (render_tenant,
mounted as the kubelet would), with its own tenant role in the shared PostgreSQL and a
throwaway redis-server. One openai-compatible provider (the simulator's chat completions)
serves one model, `MODEL`, whose window is set twice to the same number: in the Tenant's
catalog (`contextWindow`, what the gateway's /v1/models and so `tenantctl onboard` report) and
in the simulator (`context_windows`, what the "provider" enforces). One alias, `long-session`,
is the tenant's default: every Claude Code model family lands on it.

Used by e2e/test_claude_code_compaction.py and the count_tokens benchmark.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from e2e.fixtures import Services, tenant_role
from e2e.gateway_launch import launch_gateway
from e2e.provider_sim import SimulatorHandle, start_simulator
from e2e.rendered_gateway import materialize
from e2e.throwaway_redis import ThrowawayRedis
from tenantgw.api import ModelAlias, Tenant
from tenantgw.cli.onboard import Onboarding, gateway_models, model_infos, pick_models
from tenantgw.render import RenderInputs, StorageEndpoints, render_tenant

ALIAS = "long-session"
MODEL = "sim-small"
PROVIDER_KEY = "sk-sim-compaction-" + secrets.token_hex(6)


@dataclass
class CompactionGateway:
    url: str
    sim: SimulatorHandle
    key: str
    window: int
    log: Path
    tenant: Tenant
    aliases: list[ModelAlias]

    def onboarding(self) -> Onboarding:
        """What `tenantctl onboard` prints for this tenant: the same code, minus the reads of
        the Tenant and its key from the API server (this gateway has no control plane)."""
        served = gateway_models(self.url, self.key)
        return Onboarding(
            base_url=self.url,
            token=self.key,
            models=model_infos(self.aliases, served),
            **pick_models(self.tenant, self.aliases),
        )


def tenant_objects(name: str, sim: SimulatorHandle, window: int) -> tuple[Tenant, list[ModelAlias]]:
    tenant = Tenant.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": name, "uid": "00000000-0000-4000-8000-0000000c0009"},
            "spec": {
                "providers": [
                    {
                        "name": "compat",
                        "type": "openai-compatible",
                        "apiBase": sim.url,
                        "region": "us-east-1",
                        "credentialsSecretRef": {"name": "compat", "key": "apiKey"},
                    }
                ],
                "catalog": [
                    {
                        "provider": "compat",
                        "model": MODEL,
                        "costTier": "low",
                        "pricing": {"inputPerMillion": 0.3, "outputPerMillion": 1.2},
                        "contextWindow": window,
                    }
                ],
                "keys": [{"name": "alice"}],
                "routing": {"defaultAlias": ALIAS},
                "compliance": {"piiRedaction": {"mode": "off"}},
                "gateway": {"replicas": 1},
            },
        }
    )
    alias = ModelAlias.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "ModelAlias",
            "metadata": {"name": ALIAS, "namespace": f"tenant-{name}"},
            "spec": {
                "displayName": "Long session",
                "aliases": ["claude-*"],
                "targets": [{"provider": "compat", "model": MODEL}],
            },
        }
    )
    return tenant, [alias]


@contextlib.contextmanager
def compaction_gateway(
    services: Services, workdir: Path, window: int
) -> Iterator[CompactionGateway]:
    """The gateway and its simulator (`MODEL` limited to `window` tokens), stopped on exit."""
    name = "compact-" + secrets.token_hex(3)
    _, sim = start_simulator(api_key=PROVIDER_KEY)
    sim.configure(context_windows={MODEL: window})
    sim.sim.keep_as_baseline()
    workdir.mkdir(parents=True, exist_ok=True)
    store = ThrowawayRedis(workdir)
    store.start()
    key = "sk-tgw-" + secrets.token_hex(20)
    try:
        with tenant_role(services, "tg_compact") as (_, dsn):
            tenant, aliases = tenant_objects(name, sim, window)
            inputs = RenderInputs(
                tenant=tenant,
                aliases=aliases,
                budgets=[],
                master_key="sk-tgw-master-" + secrets.token_hex(8),
                keys={"alice": key},
                image="tenantgw/gateway:e2e",
                monitoring=False,
                storage=StorageEndpoints(postgres_dsn=dsn, redis_url=store.url),
            )
            secrets_ = {"compat": {"apiKey": PROVIDER_KEY}}
            files = materialize(render_tenant(inputs), secrets_, workdir / "pod")
            with launch_gateway(files.workdir, files.config, files.env) as launched:
                yield CompactionGateway(
                    launched.url, sim, key, window, launched.log, tenant, aliases
                )
    finally:
        sim.stop()
        store.kill()
