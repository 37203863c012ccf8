"""Run the real operator (kopf) against the local control plane, as its own ServiceAccount.

The operator gets only the RBAC that `manifests/` grants: the fixture applies the CRDs and the
RBAC from the kustomization, mints a token for the operator's ServiceAccount and runs
`kopf run` with a kubeconfig holding that token. A missing permission fails the tests.
`start_operator_container` runs the operator IMAGE instead, as the install's Deployment.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from e2e.containers import remove_container, start_container
from e2e.fixtures import DEV, ROOT, Cluster, Services
from e2e.ports import free_port

OPERATOR_NS = "tenantgw-system"
OPERATOR_SA = "tenantgw-operator"
RBAC_KINDS = {
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
}


@dataclass
class RunningOperator:
    """A kopf process running tenantgw.operator.handlers."""

    process: subprocess.Popen[bytes]
    log_file: Path
    kubeconfig: Path
    username: str
    container: str | None = None
    """The podman container's name when the operator runs from its image."""

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


def install_crds_and_rbac(cluster: Cluster) -> None:
    cluster.run_kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.run_kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "-f", str(ROOT / "crds")
    )
    rendered = cluster.run_kubectl("kustomize", str(ROOT / "manifests")).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d and d.get("kind") in RBAC_KINDS]
    docs.sort(key=lambda d: 0 if d["kind"] == "Namespace" else 1)
    cluster.run_kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        "-",
        stdin="\n---\n".join(yaml.safe_dump(d) for d in docs),
    )


def service_account_kubeconfig(cluster: Cluster, path: Path) -> None:
    """A kubeconfig that authenticates as the operator's ServiceAccount."""
    token = cluster.run_kubectl(
        "create", "token", OPERATOR_SA, "-n", OPERATOR_NS, "--duration=24h"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    cluster_entry = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster_entry],
        "users": [{"name": OPERATOR_SA, "user": {"token": token}}],
        "contexts": [
            {"name": "operator", "context": {"cluster": cluster_entry["name"], "user": OPERATOR_SA}}
        ],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def _paced(resync_seconds: float) -> dict[str, str]:
    """The operator's periods on the pace of `resync_seconds` (production: 300 s)."""
    return {
        "TENANTGW_RESYNC_SECONDS": str(resync_seconds),
        "TENANTGW_BUDGET_SYNC_SECONDS": str(min(resync_seconds, 30)),
        "TENANTGW_BUDGET_REFRESH_SECONDS": str(min(resync_seconds, 60)),
        # Audit checkpoints and retention on the resync's pace (production: 60 s).
        "TENANTGW_AUDIT_CHECKPOINT_SECONDS": str(min(resync_seconds, 60)),
    }


def start_operator(
    cluster: Cluster,
    *,
    resync_seconds: float = 300,
    extra_env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> RunningOperator:
    """`kopf run` of the handlers as the operator's ServiceAccount; `args` go to `kopf run`."""
    install_crds_and_rbac(cluster)
    kubeconfig = DEV / "operator.kubeconfig"
    service_account_kubeconfig(cluster, kubeconfig)
    logs = DEV / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / "operator.log"
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        **_paced(resync_seconds),
        **(extra_env or {}),
    }
    kopf = Path(sys.executable).parent / "kopf"
    proc = subprocess.Popen(
        [
            str(kopf),
            "run",
            "--standalone",
            "--all-namespaces",
            f"--liveness=http://127.0.0.1:{port}/healthz",
            *args,
            "-m",
            "tenantgw.operator.handlers",
        ],
        env=env,
        stdout=log_file.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    _wait_live(proc, port, log_file)
    return RunningOperator(
        process=proc,
        log_file=log_file,
        kubeconfig=kubeconfig,
        username=f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}",
    )


def start_operator_container(
    cluster: Cluster,
    image: str,
    workdir: Path,
    *,
    admin: dict[str, str],
    resync_seconds: float = 300,
) -> RunningOperator:
    """The operator IMAGE run as the Deployment of manifests/ runs it, with podman.

    The container gets the Deployment's command, env (the namespace from its fieldRef, the
    optional `tenantgw-admin` Secret's keys from `admin`), securityContext and /tmp volume; a
    kubeconfig holding the ServiceAccount's token (CA inline) stands in for the token the
    kubelet would mount. Its liveness endpoint listens on a free loopback port (the host's
    network) instead of 0.0.0.0:8080, the one change to the command.
    """
    install_crds_and_rbac(cluster)
    manifests = [
        d
        for d in yaml.safe_load_all(
            cluster.run_kubectl("kustomize", str(ROOT / "manifests")).stdout
        )
        if d
    ]
    for doc in manifests:  # the peering the Deployment's --peering=tenantgw names
        if doc["kind"] in {"CustomResourceDefinition", "ClusterKopfPeering"} and "kopf" in (
            doc["apiVersion"] + doc["metadata"]["name"]
        ):
            cluster.run_kubectl(
                "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump(doc)
            )
            if doc["kind"] == "CustomResourceDefinition":
                cluster.run_kubectl(
                    "wait",
                    "--for=condition=Established",
                    "--timeout=60s",
                    f"crd/{doc['metadata']['name']}",
                )
    deployment = next(
        d for d in manifests if d["kind"] == "Deployment" and d["metadata"]["name"] == OPERATOR_SA
    )
    pod = deployment["spec"]["template"]["spec"]
    container = dict(pod["containers"][0])
    kube_dir, tmp = workdir / "kubeconfig", workdir / "tmp"
    for directory in (kube_dir, tmp):
        directory.mkdir(parents=True, exist_ok=True)
    kubeconfig = kube_dir / "config"
    service_account_kubeconfig(cluster, kubeconfig)
    config = yaml.safe_load(kubeconfig.read_text())
    entry = config["clusters"][0]["cluster"]
    ca = Path(entry.pop("certificate-authority"))
    entry["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    kubeconfig.write_text(yaml.safe_dump(config))
    uid = int(pod["securityContext"]["runAsUser"])
    for path in (kube_dir, kubeconfig, tmp):
        os.chown(path, uid, uid)
    env: dict[str, str] = {}
    for var in container["env"]:
        source = var.get("valueFrom", {})
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.namespace", var
            env[var["name"]] = deployment["metadata"]["namespace"]
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            assert ref["name"] == "tenantgw-admin", var
            if ref["key"] in admin:
                env[var["name"]] = admin[ref["key"]]
        else:
            env[var["name"]] = var["value"]
    env.update({"KUBECONFIG": "/var/run/tenantgw/kubeconfig/config", **_paced(resync_seconds)})
    port = free_port()
    container["command"] = [
        f"--liveness=http://127.0.0.1:{port}/healthz" if arg.startswith("--liveness=") else arg
        for arg in container["command"]
    ]
    container["volumeMounts"] = [
        *container["volumeMounts"],
        {"name": "kubeconfig", "mountPath": "/var/run/tenantgw/kubeconfig", "readOnly": True},
    ]
    name, proc, log_file = start_container(
        image,
        workdir,
        role="operator",
        pod=pod,
        container=container,
        env=env,
        mounts={"/tmp": tmp, "/var/run/tenantgw/kubeconfig": kube_dir},
        args=[],
    )
    try:
        _wait_live(proc, port, log_file)
    except BaseException:
        remove_container(name)
        raise
    return RunningOperator(
        process=proc,
        log_file=log_file,
        kubeconfig=kubeconfig,
        username=f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}",
        container=name,
    )


def _wait_live(proc: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
    """Until the operator's /healthz answers 200; fails the test with its log's tail otherwise."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"the operator exited with {proc.returncode}:\n{log_file.read_text()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
    else:
        proc.terminate()
        pytest.fail(f"the operator did not become live in 60s:\n{log_file.read_text()[-4000:]}")


def stop_operator(op: RunningOperator) -> None:
    op.process.terminate()
    try:
        op.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        op.process.kill()
    if op.container is not None:
        remove_container(op.container)


@pytest.fixture(scope="session")
def operator(cluster: Cluster, services: Services) -> Iterator[RunningOperator]:
    """The tenantgw operator, as its ServiceAccount, with storage admin rights, a 5 s resync and
    audit checkpoints every 5 s."""
    op = start_operator(
        cluster,
        resync_seconds=5,
        extra_env={
            "TENANTGW_POSTGRES_DSN": services.postgres_dsn,
            "TENANTGW_REDIS_URL": services.redis_url,
        },
    )
    yield op
    stop_operator(op)


def audit_events(
    username: str,
    since: float,
    verbs: frozenset[str] = frozenset({"create", "update", "patch", "delete"}),
) -> list[dict[str, object]]:
    """Requests `username` made since epoch `since`, from the API server's audit log."""
    from datetime import datetime

    writes = []
    for path in sorted((DEV / "logs").glob("audit*.log")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("user", {}).get("username") != username or event.get("verb") not in verbs:
                continue
            stamp = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            if stamp.timestamp() >= since:
                writes.append(event)
    return writes
