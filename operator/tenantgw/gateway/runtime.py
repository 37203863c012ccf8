"""The gateway's runtime: every long-lived part of one gateway worker, built once.

`GatewayRuntime.from_settings()` is the only place that reads the gateway's storage settings
from the environment ($TENANTGW_TENANT, $TENANTGW_REDIS_URL, $TENANTGW_POSTGRES_DSN,
$TENANTGW_SPOOL_DIR). It builds the Redis client, the rate limiter, the budget guard, the
ledger and the meter, and hands each its parts by constructor; `app.create_app()` (the one
composition root) attaches it to the handler LiteLLM finds by name
(`tenantgw.gateway.callbacks.handler`) and `serve_with()` starts it on the serving loop
(ledger writer) and closes it at shutdown (pending Redis writes, ledger flush, connections).

Tests build one with `GatewayRuntime.assemble()` from real parts or small fakes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from tenantgw.gateway import files, unpriced
from tenantgw.gateway.audit import AuditTrail
from tenantgw.gateway.budgets import BudgetGuard
from tenantgw.gateway.enforcer import Enforcer
from tenantgw.gateway.files import Rules, StoreMode
from tenantgw.gateway.ledger import Ledger
from tenantgw.gateway.lifespan import flush_litellm_callbacks, stop_ledger
from tenantgw.gateway.metering import Meter
from tenantgw.gateway.metrics import GatewayMetrics
from tenantgw.gateway.ratelimit import RateLimiter
from tenantgw.gateway.redisclient import RedisClient, connect
from tenantgw.gateway.scripts import Scripts
from tenantgw.gateway.spool import DEFAULT_SPOOL_DIR
from tenantgw.gateway.storehealth import StoreHealth

log = logging.getLogger("tenantgw.gateway")

TENANT_ENV = "TENANTGW_TENANT"
REDIS_URL_ENV = "TENANTGW_REDIS_URL"
POSTGRES_DSN_ENV = "TENANTGW_POSTGRES_DSN"
SPOOL_DIR_ENV = "TENANTGW_SPOOL_DIR"
REDIS_TIMEOUT = 2.0
"""Seconds a request waits for Redis at most before the gateway calls it unavailable."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class GatewaySettings:
    """Where one gateway keeps its state."""

    tenant: str
    redis_url: str | None = None
    postgres_dsn: str | None = None
    spool_dir: str = DEFAULT_SPOOL_DIR

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> GatewaySettings:
        """From a gateway pod's environment (the tenant defaults to the rules file's)."""
        tenant = env.get(TENANT_ENV) or _tenant_from_rules()
        return cls(
            tenant=tenant,
            redis_url=env.get(REDIS_URL_ENV) or None,
            postgres_dsn=env.get(POSTGRES_DSN_ENV) or None,
            spool_dir=env.get(SPOOL_DIR_ENV) or DEFAULT_SPOOL_DIR,
        )


def _tenant_from_rules() -> str:
    try:
        return files.current_rules().tenant
    except files.FileError:
        return "unknown"


def connect_redis(url: str) -> RedisClient:
    """The gateway's Redis client (`redisclient.connect`): one server, or a Redis Cluster for a
    `redis+cluster://` URL; it fails fast, so an outage costs a request 2 s at most."""
    return connect(url, REDIS_TIMEOUT)


def _mode_of(rules: Callable[[], Rules]) -> Callable[[], StoreMode]:
    def mode() -> StoreMode:
        return rules().enforcement.on_store_unavailable

    return mode


@dataclass(frozen=True)
class GatewayRuntime:
    """Every long-lived part of one gateway worker, built once.

    Without Redis there is no limiter and no budget guard (requests that need them get the
    Tenant's onStoreUnavailable); without Postgres no ledger.
    """

    tenant: str
    metrics: GatewayMetrics
    store: StoreHealth
    meter: Meter
    redis: RedisClient | None = None
    ledger: Ledger | None = None
    limiter: RateLimiter | None = None
    budgets: BudgetGuard | None = None
    rules: Callable[[], Rules] = files.current_rules
    owns_redis: bool = False
    audit: AuditTrail | None = None
    enforcer: Enforcer | None = None
    """The limiter and the guard called together: one ADMIT and one SETTLE per request."""

    @classmethod
    def from_settings(cls, settings: GatewaySettings | None = None) -> GatewayRuntime:
        """The runtime of this process, from `settings` or else the environment."""
        if settings is None:
            settings = GatewaySettings.from_environ(os.environ)
        if not settings.redis_url:
            log.warning(
                "%s is not set: requests of tenant %s that need rate limits or budgets get "
                "its onStoreUnavailable (Closed: 503)",
                REDIS_URL_ENV,
                settings.tenant,
            )
        if not settings.postgres_dsn:
            log.warning("%s is not set: usage is not written to the ledger", POSTGRES_DSN_ENV)
        redis = connect_redis(settings.redis_url) if settings.redis_url else None
        ledger = (
            Ledger(settings.postgres_dsn, settings.spool_dir, redis=redis, tenant=settings.tenant)
            if settings.postgres_dsn
            else None
        )
        audit = (
            AuditTrail(
                settings.postgres_dsn,
                settings.tenant,
                files.current_rules,
                settings.spool_dir,
                redis=redis,
            )
            if settings.postgres_dsn
            else None
        )
        return cls.assemble(
            settings.tenant, redis=redis, ledger=ledger, owns_redis=True, audit=audit
        )

    @classmethod
    def assemble(
        cls,
        tenant: str,
        *,
        redis: RedisClient | None = None,
        ledger: Ledger | None = None,
        metrics: GatewayMetrics | None = None,
        rules: Callable[[], Rules] = files.current_rules,
        owns_redis: bool = False,
        store: StoreHealth | None = None,
        limiter: RateLimiter | None = None,
        budgets: BudgetGuard | None = None,
        audit: AuditTrail | None = None,
        enforcer: Enforcer | None = None,
    ) -> GatewayRuntime:
        """A runtime from its parts; those not given are built from `redis` and `ledger`."""
        metrics = metrics or GatewayMetrics.registered()
        if store is None:
            store = StoreHealth(tenant, metrics, redis=redis, mode=_mode_of(rules))
        if redis is not None:
            scripts = Scripts(redis, tenant)
            if limiter is None:
                limiter = RateLimiter(redis, tenant, store, scripts=scripts)
            if budgets is None:
                budgets = BudgetGuard(redis, tenant, store, ledger_reader=ledger, scripts=scripts)
            if enforcer is None:
                enforcer = Enforcer(limiter, budgets, store, scripts)
        # The guard that checks a request is the one that adds its spend: it holds the
        # request's reservation.
        meter = Meter(ledger=ledger, enforcer=enforcer, metrics=metrics, rules=rules)
        return cls(
            tenant=tenant,
            metrics=metrics,
            store=store,
            meter=meter,
            redis=redis,
            ledger=ledger,
            limiter=limiter,
            budgets=budgets,
            rules=rules,
            owns_redis=owns_redis,
            audit=audit,
            enforcer=enforcer,
        )

    async def start(self) -> None:
        """Start the ledger writer (on the serving event loop); log the unpriced models."""
        try:
            unpriced.load(self.rules())
        except files.FileError as exc:
            log.warning("models not priced at start-up: no rules file (%s)", exc)
        if self.ledger is not None:
            await self.ledger.start()
        if self.audit is not None:
            await self.audit.start()

    async def aclose(self) -> None:
        """Run LiteLLM's pending callbacks, deliver pending Redis writes, flush the ledger (to
        Postgres, else to the tenant's Redis stream) and close everything; each step bounded."""
        await flush_litellm_callbacks()
        if self.budgets is not None:
            await self.budgets.aclose()
        await self.store.aclose()
        if self.ledger is not None:
            await stop_ledger(self.ledger)
        if self.audit is not None:
            await self.audit.stop()
        if self.redis is not None and self.owns_redis:
            await self.redis.aclose()


def serve_with(
    app: ASGIApp, runtime: GatewayRuntime, after_startup: Callable[[], object] | None = None
) -> ASGIApp:
    """`app` with `runtime` started at the ASGI lifespan's startup and closed at its shutdown;
    `after_startup` runs once the app's own startup is complete, before the server hears it."""

    async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        starting: list[asyncio.Task[None]] = []

        async def send_around(message: Message) -> None:
            kind = message["type"]
            if kind == "lifespan.startup.complete" and after_startup is not None:
                after_startup()  # the app's own start-up is done, no request served yet
            if kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                # After LiteLLM's own shutdown, before uvicorn hears it is complete (see
                # `lifespan`): the last usage rows are written or spooled before the exit.
                await asyncio.gather(*starting, return_exceptions=True)
                await runtime.aclose()
            await send(message)
            if kind == "lifespan.startup.complete":
                # In the background: a Postgres that does not answer never delays readiness,
                # and a new pod replays what an old one left in the stream without traffic.
                starting.append(
                    asyncio.get_running_loop().create_task(
                        runtime.start(), name="tenantgw-runtime-start"
                    )
                )

        await app(scope, receive, send_around)

    return lifespan_app
