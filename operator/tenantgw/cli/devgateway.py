"""Run a tenant's gateway as a local process, from exactly what its pod would mount.

Reads the Deployment, ConfigMap and Secrets the operator rendered, writes the mounted files to
a work directory, resolves every env var the way the kubelet would (values and secretKeyRefs)
and starts the container's command with the container's args. Only the listen address and,
on request, provider base URLs (to reach a local provider simulator) are changed.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client import ApiClient

from tenantgw.api import API_VERSION, Tenant

GATEWAY = "gateway"
GATEWAY_CONTAINER = "gateway"


@dataclass(frozen=True)
class GatewayProcessSpec:
    """What to run: argv, environment and the directory holding the mounted files."""

    argv: list[str]
    env: dict[str, str]
    workdir: Path


def _secret_data(core: client.CoreV1Api, name: str, namespace: str) -> dict[str, str]:
    secret = core.read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


def _mount_volume(core: client.CoreV1Api, namespace: str, volume: Any, target: Path) -> None:
    """Write one volume's files as the kubelet would project them."""
    target.mkdir(parents=True, exist_ok=True)
    if volume.config_map is not None:
        cm = core.read_namespaced_config_map(volume.config_map.name, namespace)
        data = dict(cm.data or {})
        items = volume.config_map.items
    elif volume.secret is not None:
        data = _secret_data(core, volume.secret.secret_name, namespace)
        items = volume.secret.items
    else:
        return  # emptyDir and friends: an empty directory is what the pod gets too
    if items:
        data = {item.path: data[item.key] for item in items if item.key in data}
    for name, content in data.items():
        path = target / name
        path.write_text(content)
        path.chmod(0o600)


def build_spec(
    api: ApiClient,
    tenant_name: str,
    *,
    workdir: Path,
    port: int = 4000,
    upstreams: dict[str, str] | None = None,
) -> GatewayProcessSpec:
    """Everything needed to start tenant `tenant_name`'s gateway locally."""
    custom = client.CustomObjectsApi(api)
    body = custom.get_cluster_custom_object(*API_VERSION.split("/"), "tenants", tenant_name)
    tenant = Tenant.model_validate(body)
    ns = tenant.namespace_name()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    dep = apps.read_namespaced_deployment(GATEWAY, ns)
    pod = dep.spec.template.spec
    container = next(c for c in pod.containers if c.name == GATEWAY_CONTAINER)

    if workdir.exists():
        shutil.rmtree(workdir)
    volumes = {v.name: v for v in pod.volumes or []}
    rewrites: dict[str, str] = {}
    for mount in container.volume_mounts or []:
        local = workdir / mount.name
        _mount_volume(core, ns, volumes[mount.name], local)
        rewrites[mount.mount_path] = str(local)

    def local_path(value: str) -> str:
        for mount_path, local in sorted(rewrites.items(), key=lambda kv: -len(kv[0])):
            if value == mount_path or value.startswith(mount_path + "/"):
                return local + value[len(mount_path) :]
        return value

    env: dict[str, str] = {"PATH": os.environ.get("PATH", ""), "HOME": str(workdir)}
    secrets: dict[str, dict[str, str]] = {}
    for var in container.env or []:
        if var.value_from is not None and var.value_from.secret_key_ref is not None:
            ref = var.value_from.secret_key_ref
            if ref.name not in secrets:
                secrets[ref.name] = _secret_data(core, ref.name, ns)
            if ref.key not in secrets[ref.name]:
                raise SystemExit(f"Secret {ns}/{ref.name} has no key {ref.key} (env {var.name})")
            env[var.name] = secrets[ref.name][ref.key]
        elif var.value is not None:
            env[var.name] = local_path(var.value)

    config_arg = None
    args = list(container.args or [])
    for i, arg in enumerate(args):
        args[i] = local_path(arg)
        if i > 0 and args[i - 1] == "--config":
            config_arg = args[i]
    if upstreams and config_arg:
        _override_upstreams(Path(config_arg), tenant, upstreams)
    args = _set_flag(_set_flag(args, "--host", "127.0.0.1"), "--port", str(port))
    command = list(container.command or ["litellm"])
    command[0] = _venv_tool(command[0])
    return GatewayProcessSpec(argv=[*command, *args], env=env, workdir=workdir)


def _set_flag(args: list[str], flag: str, value: str) -> list[str]:
    if flag in args:
        i = args.index(flag)
        return [*args[: i + 1], value, *args[i + 2 :]]
    return [*args, flag, value]


def _venv_tool(name: str) -> str:
    """The container's entrypoint from this Python environment (the gateway extra)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _override_upstreams(config_file: Path, tenant: Tenant, upstreams: dict[str, str]) -> None:
    """Point providers at other base URLs (`*` for every provider), e.g. a provider simulator."""
    config = yaml.safe_load(config_file.read_text())
    wanted = {p.name for p in tenant.spec.providers}
    unknown = set(upstreams) - wanted - {"*"}
    if unknown:
        raise SystemExit(f"--upstream names unknown providers: {', '.join(sorted(unknown))}")
    for entry in config.get("model_list", []):
        provider = (entry.get("model_info", {}).get("tenantgw") or {}).get("provider")
        url = upstreams.get(provider or "", upstreams.get("*"))
        if url:
            entry["litellm_params"]["api_base"] = url
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))


def run(spec: GatewayProcessSpec, *, log_file: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the gateway process; its output goes to `log_file` (or is inherited)."""
    out = log_file.open("ab") if log_file else None
    return subprocess.Popen(
        spec.argv,
        env=spec.env,
        cwd=spec.workdir,
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
    )
