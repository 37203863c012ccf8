"""Several gateway processes of one tenant, rendered once, behind a local round-robin balancer.

`run_replicas` renders a Tenant with `render_tenant`, mounts it as the kubelet would
(`rendered_gateway.materialize`) and starts N gateway processes from those files, as N pods of
the Deployment: each with the rendered env and argv (`--num_workers` included) and its own
/tmp (spool, Prometheus files), all sharing the tenant's throwaway redis-server and its role in
the shared PostgreSQL. `Balancer` is what the Service gives them: an asyncio TCP proxy that
picks a backend per new connection, round robin, among those whose readiness probe answers
200, polled every 0.1 s, as the endpoints controller and kube-proxy would (a connection keeps
its backend until it closes; a backend that fails readiness gets no new connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from prometheus_client.mmap_dict import MmapedDict

from e2e.fixtures import Services, tenant_role
from e2e.gateway_launch import LaunchedGateway, launch_gateway
from e2e.provider_sim import SimulatorHandle, start_simulator
from e2e.rendered_gateway import GatewayFiles, materialize
from e2e.throwaway_redis import ThrowawayRedis
from tenantgw.api import BudgetPolicy, ModelAlias, Tenant
from tenantgw.render import RenderInputs, StorageEndpoints, render_tenant

READINESS_PATH = "/health/readiness"
POLL_SECONDS = 0.1
SIM_MODEL = "claude-sonnet-4-5"
SIM_ALIAS = "claude-native"


def anthropic_tenant_inputs(
    name: str,
    sim: SimulatorHandle,
    storage: StorageEndpoints,
    keys: dict[str, str],
    *,
    spec: dict[str, Any],
    pricing: dict[str, float],
    budgets: Sequence[dict[str, Any]] = (),
) -> RenderInputs:
    """What the operator renders from for Tenant `name`: one `anthropic` provider (the
    simulator), alias `claude-native` serving `claude-sonnet-4-5` at `pricing`, the keys of
    `keys`; `spec` adds to the Tenant's spec (keys' limits, gateway), `budgets` are
    BudgetPolicy specs (named budget-0, budget-1, ...)."""
    namespace = f"tenant-{name}"
    tenant = Tenant.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": name, "uid": "00000000-0000-4000-8000-0000000d0001"},
            "spec": {
                "providers": [
                    {
                        "name": "anthropic",
                        "type": "anthropic",
                        "apiBase": sim.root_url,
                        "region": "us-east-1",
                        "credentialsSecretRef": {"name": "anthropic", "key": "apiKey"},
                    }
                ],
                "catalog": [
                    {
                        "provider": "anthropic",
                        "model": SIM_MODEL,
                        "costTier": "high",
                        "pricing": pricing,
                    }
                ],
                "keys": [{"name": key} for key in keys],
                "routing": {"defaultAlias": SIM_ALIAS},
                "compliance": {"piiRedaction": {"mode": "off"}},
                **spec,
            },
        }
    )
    alias = ModelAlias.model_validate(
        {
            "metadata": {"name": SIM_ALIAS, "namespace": namespace},
            "spec": {
                "aliases": [SIM_MODEL],
                "targets": [{"provider": "anthropic", "model": SIM_MODEL}],
            },
        }
    )
    policies = [
        BudgetPolicy.model_validate(
            {"metadata": {"name": f"budget-{n}", "namespace": namespace}, "spec": budget}
        )
        for n, budget in enumerate(budgets)
    ]
    return RenderInputs(
        tenant=tenant,
        aliases=[alias],
        budgets=policies,
        master_key="sk-tgw-master-" + secrets.token_hex(8),
        keys=keys,
        image="tenantgw/gateway:e2e",
        monitoring=False,
        storage=storage,
    )


class Balancer:
    """A round-robin TCP balancer over gateway URLs that drops a backend failing readiness.

    A backend whose readiness answers anything but 200 (a draining gateway's 503) is dropped
    at once, sooner than the kubelet would; one that does not answer within the probe's
    timeout is dropped after `UNANSWERED_PROBES` in a row, as the kubelet's default
    failureThreshold does: a gateway busy for a second on a loaded machine is not unready.
    """

    UNANSWERED_PROBES = 3

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.ready = {url: True for url in backends}
        self._unanswered = {url: 0 for url in backends}
        self.connections: Counter[str] = Counter()
        """New connections handed to each backend."""
        self.refused = 0
        """Connections accepted while no backend was ready (closed at once)."""
        self.port = 0
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="balancer", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Balancer:
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(server.sockets[0].getsockname()[1])
        poller = asyncio.create_task(self._poll())
        self._started.set()
        await self._stop.wait()
        poller.cancel()
        server.close()

    async def _poll(self) -> None:
        async with httpx.AsyncClient(timeout=1) as client:
            while True:
                for url in self.backends:
                    try:
                        answer = await client.get(url + READINESS_PATH)
                    except httpx.HTTPError:
                        self._unanswered[url] += 1
                        if self._unanswered[url] >= self.UNANSWERED_PROBES:
                            self.ready[url] = False
                        continue
                    self._unanswered[url] = 0
                    self.ready[url] = answer.status_code == 200
                await asyncio.sleep(POLL_SECONDS)

    def _pick(self) -> str | None:
        for _ in range(len(self.backends)):
            url = self.backends[self._next % len(self.backends)]
            self._next += 1
            if self.ready[url]:
                return url
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        url = self._pick()
        if url is None:
            self.refused += 1
            writer.close()
            return
        self.connections[url] += 1
        host, port = url.removeprefix("http://").rsplit(":", 1)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@dataclass
class Replicas:
    """Gateway processes of one tenant and what they share."""

    gateways: list[LaunchedGateway]
    files: GatewayFiles
    sim: SimulatorHandle
    keys: dict[str, str]
    dsn: str
    tmp_dirs: list[Path] = field(default_factory=list)

    def rows(self, since: float) -> list[dict[str, Any]]:
        """The ledger's rows since `since` (epoch seconds), oldest first."""
        with psycopg.connect(self.dsn, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT request_id, key_name, alias, status, stream, cost_usd FROM usage "
                "WHERE ts >= to_timestamp(%s) ORDER BY ts",
                [since],
            )
            columns = [c.name for c in cur.description or ()]
            return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]

    def requests_by_pid(self, replica: int = 0, metric: str = "tenantgw_requests") -> Counter[int]:
        """Requests counted by each worker process of a replica, from the per-process files
        the workers write to $PROMETHEUS_MULTIPROC_DIR (`counter_<pid>.db`)."""
        directory = self.tmp_dirs[replica] / "litellm_prometheus_multiproc"
        counts: Counter[int] = Counter()
        for path in directory.glob("counter_*.db"):
            pid = int(path.stem.split("_")[-1])
            values = MmapedDict.read_all_values_from_file(str(path))  # type: ignore[no-untyped-call]
            for key, value, *_ in values:
                name = json.loads(key)[0]
                if name == metric:
                    counts[pid] += int(value)
        return counts


@contextlib.contextmanager
def run_replicas(
    services: Services,
    workdir: Path,
    *,
    role_prefix: str,
    inputs: Callable[[SimulatorHandle, StorageEndpoints, dict[str, str]], RenderInputs],
    key_names: tuple[str, ...],
    provider_secrets: dict[str, dict[str, str]],
    count: int = 2,
    env: dict[str, str] | None = None,
    simulator_kwargs: dict[str, Any] | None = None,
) -> Iterator[Replicas]:
    """`count` gateway processes from what `render_tenant(inputs(sim, storage, keys))` renders.

    `keys` holds a fresh value for each of `key_names`; `env` is added to each process's
    rendered environment (a test's shorter drain, never a product setting otherwise).
    """
    _, sim = start_simulator(**(simulator_kwargs or {}))
    store = ThrowawayRedis(workdir)
    store.start()
    keys = {name: "sk-tgw-" + secrets.token_hex(20) for name in key_names}
    try:
        with tenant_role(services, role_prefix) as (_, dsn), contextlib.ExitStack() as stack:
            storage = StorageEndpoints(postgres_dsn=dsn, redis_url=store.url)
            files = materialize(
                render_tenant(inputs(sim, storage, keys)), provider_secrets, workdir / "pod"
            )
            workers = int(files.argv[files.argv.index("--num_workers") + 1])
            launched, tmp_dirs = [], []
            for n in range(count):
                home = workdir / f"replica-{n}"
                tmp = home / "tmp"  # the pod's own emptyDir
                tmp.mkdir(parents=True)
                own_env = {
                    **files.env,
                    "TMPDIR": str(tmp),
                    "TENANTGW_SPOOL_DIR": str(tmp / "tenantgw-spool"),
                    **(env or {}),
                }
                launched.append(
                    stack.enter_context(
                        launch_gateway(home, files.config, own_env, workers=workers)
                    )
                )
                tmp_dirs.append(tmp)
            yield Replicas(launched, files, sim, keys, dsn, tmp_dirs)
    finally:
        sim.stop()
        store.kill()
