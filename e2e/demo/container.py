"""The demo's gateway: the `tenantgw-gateway` image run as the operator's Deployment runs it.

`read_pod` reads what the kubelet would start the gateway pod from: the Deployment's pod
template and every ConfigMap and Secret it mounts or takes env from, as the operator rendered
them (no rewrite of any file). `write_pod_files` projects the volumes into local directories
(a Secret's files with the volume's mode, handed to the pod's user as fsGroup does) and
resolves the env; `run_argv` is the `podman run` of e2e.containers.podman_run_argv: read-only
root filesystem, the pod's numeric user, every capability dropped, no privilege escalation,
the rendered command and args. On the host network only the listen address (loopback, not
0.0.0.0) and the metrics port (a free one: 9464 may be taken on a shared machine) differ from
the pod's args.

The container is named CONTAINER; its podman process runs in the foreground of its own session
(e2e.demo.processes.start_background), so SIGTERM reaches the gateway, which drains as in a pod.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api

from e2e.containers import give_to, podman, podman_run_argv, write_env_file
from e2e.demo.processes import DemoError
from e2e.gateway_launch import free_port

CONTAINER = "tenantgw-demo-gateway"
DEPLOYMENT = "gateway"
CONTAINER_NAME = "gateway"
DEFAULT_MODE = 0o644
"""The kubelet's mode of a projected file when the volume names none."""


@dataclass
class RenderedPod:
    """The gateway pod as the operator rendered it, and the objects it reads."""

    namespace: str
    template: dict[str, Any]
    configmaps: dict[str, dict[str, str]] = field(default_factory=dict)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    """`ConfigMap/<name>` or `Secret/<name>` -> resourceVersion."""

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.template["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        return next(c for c in self.pod["containers"] if c["name"] == CONTAINER_NAME)

    def fingerprint(self, image_id: str) -> str:
        """What a running container was started from: the image, the pod template (its
        config-hash annotation included) and the resourceVersion of each object it reads."""
        text = json.dumps([image_id, self.template, sorted(self.versions.items())])
        return hashlib.sha256(text.encode()).hexdigest()


def read_pod(api: ApiClient, namespace: str) -> RenderedPod:
    """The Deployment `gateway`'s pod template and the ConfigMaps and Secrets it reads."""
    core, apps = CoreV1Api(api), AppsV1Api(api)
    deployment = apps.read_namespaced_deployment(DEPLOYMENT, namespace)
    template: dict[str, Any] = api.sanitize_for_serialization(deployment.spec.template)
    rendered = RenderedPod(namespace=namespace, template=template)

    def configmap(name: str) -> dict[str, str]:
        if name not in rendered.configmaps:
            cm = core.read_namespaced_config_map(name, namespace)
            rendered.configmaps[name] = dict(cm.data or {})
            rendered.versions[f"ConfigMap/{name}"] = cm.metadata.resource_version
        return rendered.configmaps[name]

    def secret(name: str) -> dict[str, str]:
        if name not in rendered.secrets:
            obj = core.read_namespaced_secret(name, namespace)
            rendered.secrets[name] = {
                k: base64.b64decode(v).decode() for k, v in (obj.data or {}).items()
            }
            rendered.versions[f"Secret/{name}"] = obj.metadata.resource_version
        return rendered.secrets[name]

    for volume in rendered.pod.get("volumes", []):
        if "configMap" in volume:
            configmap(volume["configMap"]["name"])
        elif "secret" in volume:
            secret(volume["secret"]["secretName"])
        elif "emptyDir" not in volume:
            raise DemoError(f"the gateway pod's volume {volume['name']} is not one the demo mounts")
    for var in rendered.container.get("env", []):
        ref = var.get("valueFrom", {})
        if "secretKeyRef" in ref:
            secret(ref["secretKeyRef"]["name"])
        elif "configMapKeyRef" in ref:
            configmap(ref["configMapKeyRef"]["name"])
        elif ref:
            raise DemoError(f"env {var['name']} of the gateway pod comes from {sorted(ref)}")
    return rendered


def _projected(data: Mapping[str, str], source: Mapping[str, Any]) -> dict[str, tuple[str, int]]:
    """File name -> (content, mode) of a configMap or secret volume source."""
    mode = int(source.get("defaultMode", DEFAULT_MODE))
    items = source.get("items")
    if not items:
        return {name: (content, mode) for name, content in data.items()}
    return {
        item["path"]: (data[item["key"]], int(item.get("mode", mode)))
        for item in items
        if item["key"] in data
    }


def _resolve(rendered: RenderedPod, ref: Mapping[str, Any], kind: str, var: str) -> str | None:
    objects = rendered.secrets if kind == "secretKeyRef" else rendered.configmaps
    name = ref["name"]
    value = objects[name].get(ref["key"])
    if value is None and not ref.get("optional"):
        raise DemoError(f"{ref['key']} is missing in {name} of {rendered.namespace} (env {var})")
    return value


def write_pod_files(rendered: RenderedPod, workdir: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Each mounted volume as a directory of `workdir`, and the container's env resolved.

    Returns (mount path -> local directory, env). The files are the ConfigMaps' and Secrets'
    data verbatim, with the volume's modes, owned by the pod's user and fsGroup.
    """
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, mode=0o700)
    volumes = {v["name"]: v for v in rendered.pod.get("volumes", [])}
    mounts: dict[str, Path] = {}
    for mount in rendered.container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        local = workdir / mount["name"]
        local.mkdir(mode=0o700)
        files: dict[str, tuple[str, int]] = {}
        if "configMap" in volume:
            source = volume["configMap"]
            files = _projected(rendered.configmaps[source["name"]], source)
        elif "secret" in volume:
            source = volume["secret"]
            files = _projected(rendered.secrets[source["secretName"]], source)
        for name, (content, mode) in files.items():
            path = local / name
            path.write_text(content)
            path.chmod(mode)
        mounts[mount["mountPath"]] = local
    security = rendered.pod.get("securityContext", {})
    for local in mounts.values():
        give_to(local, int(security.get("runAsUser", 0)), int(security.get("fsGroup", 0)))

    env: dict[str, str] = {}
    for var in rendered.container.get("env", []):
        ref = var.get("valueFrom", {})
        kind = next((k for k in ("secretKeyRef", "configMapKeyRef") if k in ref), None)
        value = var.get("value", "") if kind is None else _resolve(rendered, ref[kind], kind, var)
        if value is not None:
            env[var["name"]] = value
    return mounts, env


def run_argv(
    rendered: RenderedPod,
    image_id: str,
    *,
    workdir: Path,
    mounts: Mapping[str, Path],
    env: Mapping[str, str],
    port: int,
) -> list[str]:
    """`podman run` of the rendered gateway container from `image_id`, listening on
    127.0.0.1:`port`; its env file (secrets: mode 0600) is written to `workdir`."""
    args = list(rendered.container.get("args", []))
    replace = {"--host": "127.0.0.1", "--port": str(port), "--metrics_port": str(free_port())}
    for option, value in replace.items():
        if option in args:
            args[args.index(option) + 1] = value
    return podman_run_argv(
        image_id,
        name=CONTAINER,
        pod=rendered.pod,
        container=rendered.container,
        env_file=write_env_file(workdir / "gateway.env", env),
        mounts=mounts,
        args=args,
    )


def remove() -> None:
    """The demo's gateway container gone, whatever state it was left in."""
    podman("rm", "--force", "--ignore", "--time", "30", CONTAINER)


def exists() -> bool:
    return podman("container", "exists", CONTAINER).returncode == 0
