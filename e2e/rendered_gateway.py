"""A tenant gateway started from exactly what the operator renders, for end-to-end tests.

`materialize` mounts the rendered ConfigMap and Secrets as the kubelet would and resolves the
container's env; `run_rendered_gateway` starts the provider simulator, a throwaway
redis-server and a tenant role in the shared PostgreSQL, renders the caller's `RenderInputs`
with `render_tenant`, and runs the gateway process from those files; `gateway_fixture` makes
a test module's `gateway` fixture of it. The benchmark (e2e/bench/gateway_bench.py) and
e2e/compaction_gateway.py use `materialize` too.

One rewrite is the harness's own, never the product's: EKS Pod Identity's agent listens on the
node's link-local 169.254.170.23, which a test process cannot reach, so with
`pod_identity_agent_at_simulator` the rendered `AWS_CONTAINER_CREDENTIALS_FULL_URI` is pointed
at the simulator's agent (`Gateway.rendered_env` keeps what the operator rendered).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import psycopg
import pytest
from psycopg import sql

from e2e.claude import ClaudeRun, check_tool_turn, run_claude, seed_home
from e2e.fixtures import Services, tenant_role
from e2e.gateway_launch import launch_gateway, launch_gateway_container
from e2e.provider_sim import SimulatorHandle, start_simulator
from e2e.throwaway_redis import ThrowawayRedis
from tenantgw.api import ModelAlias, Tenant
from tenantgw.render import RenderInputs, StorageEndpoints, render_tenant
from tenantgw.render.identity import POD_IDENTITY_CREDENTIALS_URI

POD_IDENTITY_URI_ENV = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
POD_IDENTITY_TOKEN_ENV = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"

LEDGER_COLUMNS = (
    "request_id",
    "key_name",
    "requested_model",
    "alias",
    "provider",
    "provider_model",
    "status",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "stream",
)
"""The `usage` columns `Gateway.rows` reads unless told otherwise."""


ProviderSecrets = dict[str, dict[str, str]] | Callable[[SimulatorHandle], dict[str, dict[str, str]]]
"""Provider credential Secrets by name (data key -> value), or a function of the simulator."""

READ_TOOL: dict[str, Any] = {
    "name": "Read",
    "description": "Read a file",
    "input_schema": {
        "type": "object",
        "properties": {"file_path": {"type": "string"}},
        "required": ["file_path"],
    },
}
"""Claude Code's Read tool as the anthropic SDK declares it (the simulator's tool plans use it)."""
READ_FUNCTION: Any = {
    "type": "function",
    "function": {
        "name": "Read",
        "description": "Read a file",
        "parameters": READ_TOOL["input_schema"],
    },
}
"""The same tool as the openai SDK declares it."""


@dataclass
class GatewayFiles:
    """What the gateway container would get: argv, resolved env, mounted files.

    `argv` and `env` point at the local copies of the mounted files (for a gateway process);
    `mounts` (mount path -> local directory), `pod_env` and `pod` (the rendered pod spec) are
    the same files and env at the container's own paths (for the gateway image).
    """

    argv: list[str]
    env: dict[str, str]
    config: Path
    workdir: Path
    mounts: dict[str, Path]
    pod_env: dict[str, str]
    pod: dict[str, Any]


def _b64(value: str) -> str:
    return base64.b64decode(value).decode()


def materialize(
    objects: list[dict[str, Any]],
    provider_secrets: dict[str, dict[str, str]],
    workdir: Path,
    service_account_tokens: dict[str, str] | None = None,
) -> GatewayFiles:
    """Mount the rendered ConfigMap and Secrets as the kubelet would, resolve the env.

    The same steps as `tenantctl dev gateway` (tenantgw.cli.devgateway), from the rendered
    objects instead of the API server; the pod's /tmp emptyDir is a directory here too.
    A projected ServiceAccount token (workload identity) is `service_account_tokens[audience]`,
    the token the kubelet would request for that audience. The pod's mount paths named in the
    env, the args and the ConfigMap's files are made the local directories.
    """
    secrets_by_name = {
        o["metadata"]["name"]: {k: _b64(v) for k, v in o.get("data", {}).items()}
        for o in objects
        if o["kind"] == "Secret"
    }
    secrets_by_name.update(provider_secrets)
    configmaps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    if workdir.exists():
        shutil.rmtree(workdir)
    rewrites = {m["mountPath"]: str(workdir / m["name"]) for m in container["volumeMounts"]}

    def local_path(value: str) -> str:
        for mount_path, local in sorted(rewrites.items(), key=lambda kv: -len(kv[0])):
            if value == mount_path or value.startswith(mount_path + "/"):
                return local + value[len(mount_path) :]
        return value

    def local_paths_in(text: str) -> str:
        """A mounted file's text with the pod's paths made local (a GCP credential
        configuration names the projected token's path)."""
        longest_first = sorted(rewrites, key=len, reverse=True)
        quoted = re.compile('"(' + "|".join(map(re.escape, longest_first)) + ")/")
        return quoted.sub(lambda m: f'"{rewrites[m.group(1)]}/', text)

    for mount in container["volumeMounts"]:
        local = workdir / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        volume = volumes[mount["name"]]
        data: dict[str, str] = {}
        items = None
        if "configMap" in volume:
            data = dict(configmaps[volume["configMap"]["name"]])
            items = volume["configMap"].get("items")
        elif "secret" in volume:
            data = dict(secrets_by_name[volume["secret"]["secretName"]])
            items = volume["secret"].get("items")
        elif "projected" in volume:
            for source in volume["projected"]["sources"]:
                token = source["serviceAccountToken"]
                data[token["path"]] = (service_account_tokens or {})[token["audience"]]
        if items:
            data = {item["path"]: data[item["key"]] for item in items}
        for file_name, content in data.items():
            text = local_paths_in(content) if "configMap" in volume else content
            (local / file_name).write_text(text)

    pod_env: dict[str, str] = {}
    for var in container["env"]:
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            pod_env[var["name"]] = secrets_by_name[ref["name"]][ref["key"]]
        else:
            pod_env[var["name"]] = var["value"]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(workdir)}
    env.update({name: local_path(value) for name, value in pod_env.items()})
    tmp = rewrites["/tmp"]  # the pod's emptyDir
    env["TMPDIR"] = tmp
    env["TENANTGW_SPOOL_DIR"] = f"{tmp}/tenantgw-spool"
    args = [local_path(a) for a in container["args"]]
    config = Path(args[args.index("--config") + 1])
    return GatewayFiles(
        argv=args,
        env=env,
        config=config,
        workdir=workdir,
        mounts={path: Path(local) for path, local in rewrites.items()},
        pod_env=pod_env,
        pod=pod,
    )


@dataclass(frozen=True)
class ClaudeTurn:
    """A finished `claude -p` turn that ran Read and answered with the file's codename."""

    run: ClaudeRun
    token: str
    started: float
    """Epoch seconds before the CLI started: its ledger rows are `rows(started)`."""


TLS_FLAGS = ("--ssl_certfile_path", "--ssl_keyfile_path")


def tls_flags(argv: Sequence[str]) -> tuple[str, ...]:
    """The rendered container's certificate and key flags with their (local) paths."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg in TLS_FLAGS:
            out += [arg, argv[i + 1]]
    return tuple(out)


@dataclass
class Gateway:
    """A running gateway: its URL, the simulator behind it, alice's key, the tenant's DSN."""

    url: str
    sim: SimulatorHandle
    key: str
    dsn: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    """The gateway process's environment, as the harness ran it."""
    rendered_env: dict[str, str] = field(default_factory=dict)
    """The same, as the operator rendered it (before any harness rewrite)."""
    ca: Path | None = None
    """The CA certificate the clients trust when the gateway serves HTTPS."""

    @property
    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=self.ca) if self.ca is not None else True

    def anthropic(self, **kw: Any) -> anthropic.Anthropic:
        if self.ca is not None and "http_client" not in kw:
            kw["http_client"] = httpx.Client(verify=self.verify)
        return anthropic.Anthropic(
            base_url=self.url, api_key=self.key, max_retries=0, timeout=60, **kw
        )

    def openai(self) -> openai.OpenAI:
        client = httpx.Client(verify=self.verify) if self.ca is not None else None
        return openai.OpenAI(
            base_url=self.url + "/v1",
            api_key=self.key,
            max_retries=0,
            timeout=60,
            http_client=client,
        )

    def post(
        self, body: dict[str, Any], headers: dict[str, str], path: str = "/v1/messages"
    ) -> httpx.Response:
        """A raw POST with exactly `headers` (no SDK adds or drops any)."""
        return httpx.post(
            self.url + path, json=body, headers=headers, timeout=60, verify=self.verify
        )

    def calls(self, marker: str) -> list[dict[str, Any]]:
        """Every request the simulator received whose body contains `marker`, oldest first."""
        return [r for r in self.sim.requests() if marker in json.dumps(r.get("body"))]

    def upstream(self, marker: str) -> dict[str, Any]:
        """The last request the simulator received whose body contains `marker`."""
        found = self.calls(marker)
        assert found, f"the provider received no request containing {marker!r}"
        return found[-1]

    def claude_env(self, model: str) -> dict[str, str]:
        """What `claude -p` needs to use this gateway as alice with `model` for everything."""
        return {
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_AUTH_TOKEN": self.key,
            "ANTHROPIC_MODEL": model,
            "ANTHROPIC_SMALL_FAST_MODEL": model,
        }

    def claude_read_turn(
        self, model: str, workdir: Path, extra_env: Mapping[str, str] | None = None
    ) -> ClaudeTurn:
        """`claude -p` with `model`, asked for the codename in a project's notes.txt.

        The simulated model runs Read on the file (a `tool_plan`), then answers from its
        result; the CLI must exit 0 with the codename in its answer and at least two turns
        (ClaudeCodeError otherwise). Claude Code retries nothing (`max_retries=0`).
        """
        project, home = workdir / "project", workdir / "home"
        project.mkdir(parents=True)
        token = "tgw-" + secrets.token_hex(6)
        notes = project / "notes.txt"
        notes.write_text(f"The release codename is {token}.\n")
        seed_home(home, [project])
        self.sim.configure(tool_plan={"tool": "Read", "arguments": {"file_path": str(notes)}})
        started = time.time()
        run = run_claude(
            "What is the release codename in notes.txt?",
            project=project,
            home=home,
            gateway_env={**self.claude_env(model), **(extra_env or {})},
            model=model,
            max_retries=0,
        )
        return ClaudeTurn(check_tool_turn(run, token), token, started)

    def rows(self, since: float, columns: Sequence[str] = LEDGER_COLUMNS) -> list[dict[str, Any]]:
        """The tenant's ledger rows written since `since` (epoch seconds), oldest first."""
        query = sql.SQL("SELECT {} FROM usage WHERE ts >= to_timestamp(%s) ORDER BY ts").format(
            sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        with psycopg.connect(self.dsn, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(query, [since])
            return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


def model_aliases(namespace: str, specs: dict[str, dict[str, Any]]) -> list[ModelAlias]:
    """ModelAliases in `namespace`, one per name of `specs` with that spec."""
    return [
        ModelAlias.model_validate(
            {
                "apiVersion": "tenantgw.io/v1alpha1",
                "kind": "ModelAlias",
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec,
            }
        )
        for name, spec in specs.items()
    ]


def alice_inputs(
    tenant: Tenant, aliases: list[ModelAlias], storage: StorageEndpoints, key: str
) -> RenderInputs:
    """What the operator renders from for `tenant` and its `aliases`: no budgets, no
    monitoring, a fresh master key and one tenant key, `alice`'s, whose value is `key`."""
    return RenderInputs(
        tenant=tenant,
        aliases=aliases,
        budgets=[],
        master_key="sk-tgw-master-" + secrets.token_hex(8),
        keys={"alice": key},
        image="tenantgw/gateway:e2e",
        monitoring=False,
        storage=storage,
    )


@contextlib.contextmanager
def run_rendered_gateway(
    services: Services,
    workdir: Path,
    *,
    role_prefix: str,
    inputs: Callable[[SimulatorHandle, StorageEndpoints, str], RenderInputs],
    provider_secrets: ProviderSecrets,
    simulator_kwargs: dict[str, Any] | None = None,
    service_account_tokens: dict[str, str] | None = None,
    image: str | None = None,
    pod_identity_agent_at_simulator: bool = False,
    ca: Path | None = None,
) -> Iterator[Gateway]:
    """A gateway run from what `render_tenant(inputs(sim, storage, key))` renders.

    With `image`, the gateway image runs as the rendered container (read-only root filesystem,
    the files mounted at the pod's paths: `launch_gateway_container`); otherwise a process.

    The simulator starts with `simulator_kwargs` as the configuration its `reset` restores;
    `key` is a fresh tenant key for the Tenant's `alice` to carry; storage is a tenant role
    named after `role_prefix` in the shared PostgreSQL (dropped afterwards) and a throwaway
    redis-server. `provider_secrets` and `service_account_tokens` are what the kubelet would
    mount for the provider credential Secrets and the projected ServiceAccount tokens; the
    Secrets may be made from the running simulator (a service-account key naming its token
    endpoint). `image`: run the gateway image as a container instead of a process.
    `pod_identity_agent_at_simulator`: the rendered EKS Pod Identity agent URL (link-local,
    on the node) becomes the simulator's agent, the one rewrite of rendered values here.
    With spec.gateway.tls its Secret is one of `provider_secrets` too, and the clients trust
    `ca`.
    """
    _, sim = start_simulator(**(simulator_kwargs or {}))
    store = ThrowawayRedis(workdir)
    store.start()
    key = "sk-tgw-" + secrets.token_hex(20)
    try:
        with tenant_role(services, role_prefix) as (_, dsn):
            storage = StorageEndpoints(postgres_dsn=dsn, redis_url=store.url)
            if callable(provider_secrets):
                provider_secrets = provider_secrets(sim)
            files = materialize(
                render_tenant(inputs(sim, storage, key)),
                provider_secrets,
                workdir / "pod",
                service_account_tokens,
            )
            rendered_env = dict(files.env)
            if pod_identity_agent_at_simulator:
                assert files.env[POD_IDENTITY_URI_ENV] == POD_IDENTITY_CREDENTIALS_URI
                files.env[POD_IDENTITY_URI_ENV] = sim.root_url + "/v1/credentials"
                files.pod_env[POD_IDENTITY_URI_ENV] = files.env[POD_IDENTITY_URI_ENV]
            launcher = (
                launch_gateway(
                    files.workdir, files.config, files.env, args=tls_flags(files.argv), ca=ca
                )
                if image is None
                else launch_gateway_container(
                    image, files.workdir, files.pod, files.mounts, files.pod_env
                )
            )
            with launcher as launched:
                yield Gateway(
                    launched.url,
                    sim,
                    key,
                    dsn,
                    launched.log,
                    env=dict(files.env),
                    rendered_env=rendered_env,
                    ca=ca,
                )
    finally:
        sim.stop()
        store.kill()


def gateway_fixture(
    name: str,
    *,
    role_prefix: str,
    inputs: Callable[[SimulatorHandle, StorageEndpoints, str], RenderInputs],
    provider_secrets: ProviderSecrets,
    simulator_kwargs: dict[str, Any] | None = None,
    service_account_tokens: dict[str, str] | None = None,
    pod_identity_agent_at_simulator: bool = False,
) -> Any:
    """A module-scoped `gateway` fixture: `run_rendered_gateway` with these arguments, in a
    temporary directory named after `name`. Assign it to `gateway` in the test module."""

    @pytest.fixture(scope="module")
    def gateway(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
        with run_rendered_gateway(
            services,
            tmp_path_factory.mktemp(name),
            role_prefix=role_prefix,
            inputs=inputs,
            provider_secrets=provider_secrets,
            simulator_kwargs=simulator_kwargs,
            service_account_tokens=service_account_tokens,
            pod_identity_agent_at_simulator=pod_identity_agent_at_simulator,
        ) as running:
            yield running

    return gateway
