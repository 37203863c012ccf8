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
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client import ApiClient

import tenantgw
from tenantgw.api import API_VERSION, Tenant
from tenantgw.render.names import GATEWAY_NAME


@dataclass(frozen=True)
class GatewayProcessSpec:
    """What to run: argv, environment and the directory holding the mounted files.

    `sync` re-projects the mounted ConfigMap and Secret as the kubelet does for a running pod
    (so rotated keys and changed rules reach the process); it returns whether a file changed.
    """

    argv: list[str]
    env: dict[str, str]
    workdir: Path
    sync: Callable[[], bool] | None = None


def _secret_data(core: client.CoreV1Api, name: str, namespace: str) -> dict[str, str]:
    secret = core.read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


def _mount_volume(
    core: client.CoreV1Api,
    namespace: str,
    volume: Any,
    target: Path,
    transform: Callable[[Path, str], str] = lambda _path, text: text,
) -> bool:
    """Write one volume's files as the kubelet would project them; True if any changed."""
    target.mkdir(parents=True, exist_ok=True)
    if volume.config_map is not None:
        cm = core.read_namespaced_config_map(volume.config_map.name, namespace)
        data = dict(cm.data or {})
        items = volume.config_map.items
    elif volume.secret is not None:
        data = _secret_data(core, volume.secret.secret_name, namespace)
        items = volume.secret.items
    else:
        return False  # emptyDir and friends: an empty directory is what the pod gets too
    if items:
        data = {item.path: data[item.key] for item in items if item.key in data}
    changed = False
    for name, content in data.items():
        path = target / name
        content = transform(path, content)
        if path.exists() and path.read_text() == content:
            continue
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(content)
        tmp.chmod(0o600)
        tmp.replace(path)  # atomic, as the kubelet's symlink swap
        changed = True
    return changed


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
    dep = apps.read_namespaced_deployment(GATEWAY_NAME, ns)
    pod = dep.spec.template.spec
    container = next(c for c in pod.containers if c.name == GATEWAY_NAME)

    if workdir.exists():
        shutil.rmtree(workdir)
    volumes = {v.name: v for v in pod.volumes or []}
    rewrites = {m.mount_path: str(workdir / m.name) for m in container.volume_mounts or []}

    def local_path(value: str) -> str:
        for mount_path, local in sorted(rewrites.items(), key=lambda kv: -len(kv[0])):
            if value == mount_path or value.startswith(mount_path + "/"):
                return local + value[len(mount_path) :]
        return value

    args = [local_path(a) for a in container.args or []]
    config_arg = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"), None)

    def transform(path: Path, text: str) -> str:
        if upstreams and config_arg and path == Path(config_arg):
            return _override_upstreams(text, tenant, upstreams)
        return text

    def sync() -> bool:
        changed = False
        for mount in container.volume_mounts or []:
            local = workdir / mount.name
            changed |= _mount_volume(core, ns, volumes[mount.name], local, transform)
        return changed

    sync()

    env: dict[str, str] = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(workdir),
        # The gateway runs the same tenantgw as this command (a checkout's, not the venv's).
        "PYTHONPATH": str(Path(tenantgw.__file__).resolve().parent.parent),
    }
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

    args = _set_flag(_set_flag(args, "--host", "127.0.0.1"), "--port", str(port))
    if "--metrics_port" in args:  # the pod's fixed port would collide between local gateways
        args = _set_flag(args, "--metrics_port", str(_free_port()))
    command = list(container.command or ["litellm"])
    command[0] = _venv_tool(command[0])
    return GatewayProcessSpec(argv=[*command, *args], env=env, workdir=workdir, sync=sync)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _set_flag(args: list[str], flag: str, value: str) -> list[str]:
    if flag in args:
        i = args.index(flag)
        return [*args[: i + 1], value, *args[i + 2 :]]
    return [*args, flag, value]


def _venv_tool(name: str) -> str:
    """The container's entrypoint from this Python environment (the gateway extra)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def _override_upstreams(text: str, tenant: Tenant, upstreams: dict[str, str]) -> str:
    """Point providers at other base URLs (`*` for every provider), e.g. a provider simulator."""
    config = yaml.safe_load(text)
    wanted = {p.name for p in tenant.spec.providers}
    unknown = set(upstreams) - wanted - {"*"}
    if unknown:
        raise SystemExit(f"--upstream names unknown providers: {', '.join(sorted(unknown))}")
    for entry in config.get("model_list", []):
        provider = (entry.get("model_info", {}).get("tenantgw") or {}).get("provider")
        url = upstreams.get(provider or "", upstreams.get("*"))
        if url:
            entry["litellm_params"]["api_base"] = url
    dumped: str = yaml.safe_dump(config, sort_keys=False)
    return dumped


def run(
    spec: GatewayProcessSpec, *, log_file: Path | None = None, sync_seconds: float = 2.0
) -> subprocess.Popen[bytes]:
    """Start the gateway process; its output goes to `log_file` (or is inherited).

    While it runs, its mounted files are kept in step with the cluster every `sync_seconds`.
    """
    out = log_file.open("ab") if log_file else None
    proc = subprocess.Popen(
        spec.argv,
        env=spec.env,
        cwd=spec.workdir,
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
    )
    if spec.sync is not None:
        threading.Thread(
            target=_keep_in_sync, args=(proc, spec.sync, sync_seconds), daemon=True
        ).start()
    return proc


def _keep_in_sync(proc: subprocess.Popen[bytes], sync: Callable[[], bool], every: float) -> None:
    while proc.poll() is None:
        time.sleep(every)
        try:
            sync()
        except Exception as exc:
            print(f"tenantctl dev gateway: could not refresh mounted files: {exc}", file=sys.stderr)
