"""The example tenant's gateway as REAL pods on a real kubelet (issue 14, item 3).

``python -m e2e.real_node`` (as root; `make real-node`) runs, and removes again at the end:

- a control plane of its own (the project's e2e/cluster scripts copied under $WORK, other ports,
  no kwok node), so the shared control plane and its tests are not touched;
- one real node (e2e/cluster/node.sh: kubelet from the Kubernetes module, Debian's containerd
  and runc, the bridge CNI), untainted: it is the cluster's only node;
- a PostgreSQL and a Redis of its own listening on the pod bridge's gateway address (besides
  loopback), so that pods reach them; the operator gets their admin URLs and renders the bridge
  address into the tenant's Secret ($TENANTGW_TENANT_POSTGRES_HOST / _REDIS_HOST);
- the provider simulator on the same address; the example Tenant's providers get it as apiBase;
- the operator (kopf, as its ServiceAccount, the RBAC of manifests/).

Then it checks what a platform team would: the Deployment rolls out (pods Running and Ready,
so the startup/readiness probes passed), the namespace enforces the restricted Pod Security
Standard (a root pod is refused), a request with a tenant key is answered through
`kubectl port-forward service/gateway` (apiserver -> kubelet -> containerd's streaming server;
there is no kube-proxy, so a ClusterIP is not routable), and a ModelAlias edit reaches the
serving pods through the kubelet's refresh of their ConfigMap volume, without a roll.

Exit status 0 when every check passed, 1 when one failed, 77 when this host cannot run it
(the reason on stderr). Evidence goes to stdout and $WORK/evidence.txt; docs/real-node.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from e2e.ports import free_port
from e2e.throwaway_postgres import as_postgres

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("TENANTGW_REAL_NODE_WORK", "/var/tmp/tenantgw-realnode"))
CLUSTER_ENV = {
    "TENANTGW_API_PORT": "18443",
    "TENANTGW_ETCD_PORT": "25790",
    "TENANTGW_KWOK_NODES": "0",
}
BRIDGE = "tgw-cni0"
POD_SUBNET = "10.233.0.0/24"
BRIDGE_IP = "10.233.0.1"
TENANT = "engineering-team"
NAMESPACE = "tenant-engineering-team"
IMAGE = "ghcr.io/tenantgw/gateway:0.1.0"
SKIP = 77


def say(msg: str) -> None:
    print(f"[real-node] {msg}", file=sys.stderr, flush=True)


def host_problem() -> str | None:
    """Why this host cannot run a real node, or None."""
    if os.geteuid() != 0:
        return "not root: the kubelet, containerd and the pod network need root"
    for tool in ("containerd", "ctr", "runc", "podman", "go", "gcc", "redis-server", "ip"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (apt-get install containerd runc podman ...)"
    for plugin in ("bridge", "host-local", "loopback"):
        if not Path(f"/usr/lib/cni/{plugin}").exists():
            return f"/usr/lib/cni/{plugin} missing (apt-get install containernetworking-plugins)"
    if not sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return "PostgreSQL is not installed (make setup installs it)"
    if subprocess.run(["podman", "image", "exists", IMAGE], check=False).returncode != 0:
        return f"image {IMAGE} not built (make images)"
    if subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "to", POD_SUBNET],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip():
        return f"{POD_SUBNET} is already in use on this host (a real node still up?)"
    return None


def run(
    *argv: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    check: bool = True,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv),
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:4])} ... exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        )
    return proc


def eventually(check: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {seconds:.0f}s: {what}")
        time.sleep(1)


class Evidence:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def add(self, title: str, text: str) -> None:
        block = f"### {title}\n{text.rstrip()}\n\n"
        print(block, end="", flush=True)
        with self.path.open("a") as f:
            f.write(block)


class Kube:
    def __init__(self, kubeconfig: Path, bin_dir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.bin_dir = bin_dir

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}:{os.environ['PATH']}",
        }

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return run(
            str(self.bin_dir / "kubectl"), *args, env=self.env(), stdin=stdin, check=check
        ).stdout

    def apply(self, docs: list[dict[str, Any]]) -> None:
        self(
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "-",
            stdin="\n---\n".join(yaml.safe_dump(d) for d in docs),
        )

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))


# --------------------------------------------------------------------------- pieces


@contextlib.contextmanager
def control_plane() -> Iterator[Kube]:
    """The project's cluster scripts, copied under WORK (they keep their state next to
    themselves), on other ports and without kwok nodes."""
    scripts = WORK / "e2e" / "cluster"
    shutil.copytree(ROOT / "e2e" / "cluster", scripts, dirs_exist_ok=True)
    for helper in (ROOT / "e2e").glob("*.sh"):
        shutil.copy2(helper, WORK / "e2e" / helper.name)
    say(f"control plane of its own on 127.0.0.1:{CLUSTER_ENV['TENANTGW_API_PORT']}")
    try:
        run("bash", str(scripts / "up.sh"), env={**os.environ, **CLUSTER_ENV})
        env = dict(
            line.removeprefix("export ").split("=", 1)
            for line in (WORK / ".dev" / "cluster.env").read_text().splitlines()
            if line.startswith("export ")
        )
        bin_dir = Path(env["PATH"].strip('"').split(":")[0])
        yield Kube(WORK / ".dev" / "kubeconfig", bin_dir)
    finally:
        run("bash", str(scripts / "down.sh"), check=False)


@contextlib.contextmanager
def bridge() -> Iterator[None]:
    """The CNI bridge made before any pod, so that the stores can listen on its address (the
    bridge plugin adopts an existing bridge holding the gateway address)."""
    run("ip", "link", "add", BRIDGE, "type", "bridge")
    try:
        run("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        yield
    finally:
        run("ip", "link", "del", BRIDGE, check=False)


@contextlib.contextmanager
def postgres() -> Iterator[tuple[str, int]]:
    """A PostgreSQL of its own on loopback and the bridge address; yields (admin DSN, port)."""
    bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))[-1].parent
    base = WORK / "postgres"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    data, pwfile = base / "data", base / "pw"
    password = secrets.token_hex(16)
    pwfile.write_text(password + "\n")
    shutil.chown(base, "postgres", "postgres")
    shutil.chown(pwfile, "postgres", "postgres")
    run(
        *as_postgres(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "tenantgw_admin",
                "--pwfile",
                str(pwfile),
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
            ]
        )
    )
    with (data / "pg_hba.conf").open("a") as f:
        f.write(f"host all all {POD_SUBNET} scram-sha-256\n")
    port = free_port()
    opts = (
        f"-c listen_addresses=127.0.0.1,{BRIDGE_IP} -c port={port} "
        f"-c unix_socket_directories={base} -c fsync=off -c max_connections=200"
    )
    say(f"PostgreSQL of its own on 127.0.0.1/{BRIDGE_IP}:{port}")
    run(
        *as_postgres(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(base / "log"),
                "-w",
                "-t",
                "60",
                "start",
                "-o",
                opts,
            ]
        ),
        timeout=90,
    )
    try:
        dsn = f"postgresql://tenantgw_admin:{password}@127.0.0.1:{port}"
        run("psql", f"{dsn}/postgres", "-qtAc", "create database tenantgw")
        yield f"{dsn}/tenantgw", port
    finally:
        run(
            *as_postgres(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
            ),
            check=False,
        )


@contextlib.contextmanager
def redis() -> Iterator[tuple[str, int]]:
    """A redis-server of its own (ACL file, as e2e/services/up.sh) on loopback and the bridge."""
    base = WORK / "redis"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    password = secrets.token_hex(16)
    (base / "users.acl").write_text(f"user default off\nuser admin on >{password} ~* &* +@all\n")
    port = free_port()
    say(f"Redis of its own on 127.0.0.1/{BRIDGE_IP}:{port}")
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            BRIDGE_IP,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(base),
            "--aclfile",
            str(base / "users.acl"),
            "--logfile",
            str(base / "log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"redis://admin:{password}@127.0.0.1:{port}/0"
        eventually(
            lambda: (
                run("redis-cli", "-u", url, "--no-auth-warning", "ping", check=False).stdout.strip()
                == "PONG"
            ),
            20,
            "redis up",
        )
        yield url, port
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def simulator(api_key: str) -> Iterator[str]:
    """The provider simulator on the bridge address; yields its root URL."""
    from e2e.gateway_fixture import example_simulator_config

    cfg = example_simulator_config()
    port = free_port(BRIDGE_IP)
    log = (WORK / "simulator.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "e2e.provider_sim",
            "--host",
            BRIDGE_IP,
            "--port",
            str(port),
            "--api-key",
            api_key,
            "--models",
            ",".join(cfg["models"]),
            "--judge-models",
            ",".join(cfg["judge_models"]),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}"},
    )
    try:
        root = f"http://{BRIDGE_IP}:{port}"

        def up() -> bool:
            with contextlib.suppress(OSError), socket.create_connection((BRIDGE_IP, port), 1):
                return True
            return False

        eventually(up, 30, "provider simulator up")
        say(f"provider simulator at {root}")
        yield root
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def real_node(kube: Kube) -> Iterator[None]:
    node_sh = WORK / "e2e" / "cluster" / "node.sh"
    env = {
        **kube.env(),
        "TENANTGW_REAL_NODE_TAINT": "0",
        "TENANTGW_REAL_NODE_POD_SUBNET": POD_SUBNET,
    }
    say("real node: kubelet + containerd + runc (node.sh up)")
    try:
        run("bash", str(node_sh), "up", env=env, timeout=1200)
        yield
    finally:
        run("bash", str(node_sh), "down", env=env, check=False, timeout=300)


@contextlib.contextmanager
def operator(kube: Kube, storage: dict[str, str]) -> Iterator[Path]:
    """kopf running tenantgw.operator.handlers as its ServiceAccount (manifests/' RBAC)."""
    from e2e.fixtures import Cluster
    from e2e.operator_fixture import install_crds_and_rbac, service_account_kubeconfig

    cluster = Cluster(kubeconfig=kube.kubeconfig, bin_dir=kube.bin_dir)
    install_crds_and_rbac(cluster)
    kubeconfig = WORK / "operator.kubeconfig"
    service_account_kubeconfig(cluster, kubeconfig)
    log_file = WORK / "operator.log"
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}",
        "TENANTGW_RESYNC_SECONDS": "30",
        **storage,
    }
    kopf = Path(sys.executable).parent / "kopf"
    say("operator (kopf run, as system:serviceaccount:tenantgw-system:tenantgw-operator)")
    proc = subprocess.Popen(
        [
            str(kopf),
            "run",
            "--standalone",
            "--all-namespaces",
            f"--liveness=http://127.0.0.1:{port}/healthz",
            "-m",
            "tenantgw.operator.handlers",
        ],
        env=env,
        cwd=ROOT,
        stdout=log_file.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield log_file
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def port_forward(kube: Kube, target: str, remote: int) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            str(kube.bin_dir / "kubectl"),
            "-n",
            NAMESPACE,
            "port-forward",
            target,
            f"{port}:{remote}",
        ],
        env=kube.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode(errors="replace").strip()
        if not first.startswith("Forwarding from"):
            raise RuntimeError(f"kubectl port-forward {target}: {first or 'exited'}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


# --------------------------------------------------------------------------- the checks


def example_docs(sim_root: str, sim_key: str) -> dict[str, list[dict[str, Any]]]:
    """examples/, as a platform team applies it, with every provider's apiBase at the simulator
    and the provider Secrets holding the simulator's key."""
    from e2e.gateway_fixture import SIMULATOR_BASES, load_examples

    docs = load_examples()
    for provider in docs["tenant"][0]["spec"]["providers"]:
        provider["apiBase"] = sim_root + SIMULATOR_BASES[provider["type"]]
    for secret in docs["provider-secrets"]:
        secret["stringData"] = {k: sim_key for k in secret.get("stringData", {})}
    return docs


def pods(kube: Kube) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.json(
        "-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/name=gateway"
    )["items"]
    return items


def ready_pods(kube: Kube) -> list[str]:
    names = []
    for pod in pods(kube):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
        if conds.get("Ready") == "True":
            names.append(pod["metadata"]["name"])
    return sorted(names)


def rollout(kube: Kube) -> None:
    kube("-n", NAMESPACE, "rollout", "status", "deployment/gateway", "--timeout=600s")


def message(base_url: str, key: str) -> str:
    import anthropic

    client = anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=2, timeout=60)
    reply = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "hello from a real pod"}],
    )
    block = reply.content[0]
    if block.type != "text" or not block.text:
        raise RuntimeError(f"no text in the reply: {reply}")
    usage = reply.usage
    return (
        f"model={reply.model} text={block.text!r} tokens={usage.input_tokens}/{usage.output_tokens}"
    )


def checks(kube: Kube, ev: Evidence, sim_root: str, sim_key: str, operator_log: Path) -> None:
    docs = example_docs(sim_root, sim_key)
    kube.apply(docs["tenant"])
    eventually(lambda: kube("get", "namespace", NAMESPACE, check=False), 60, "tenant namespace")
    for group in ("provider-secrets", "model-aliases", "budget"):
        kube.apply(docs[group])
    say("waiting for the gateway Deployment (real pods: image start, probes)")
    eventually(
        lambda: kube("-n", NAMESPACE, "get", "deployment", "gateway", check=False),
        120,
        f"Deployment gateway (operator log: {operator_log})",
    )
    rollout(kube)
    first = ready_pods(kube)
    ev.add("kubectl get nodes -o wide", kube("get", "nodes", "-o", "wide"))
    ev.add(
        "kubectl -n tenant-engineering-team get pods -o wide",
        kube("-n", NAMESPACE, "get", "pods", "-o", "wide"),
    )
    if not first:
        raise RuntimeError("rollout finished without a Ready gateway pod")
    pod = kube.json("-n", NAMESPACE, "get", "pod", first[0])
    c = pod["spec"]["containers"][0]
    probes = {k: c[k] for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in c}
    status = pod["status"]["containerStatuses"][0]
    ev.add(
        f"pod {first[0]}: probes, container state, securityContext",
        json.dumps(
            {
                "nodeName": pod["spec"]["nodeName"],
                "podIP": pod["status"].get("podIP"),
                "probes": probes,
                "ready": status["ready"],
                "started": status.get("started"),
                "restartCount": status["restartCount"],
                "imageID": status.get("imageID"),
                "podSecurityContext": pod["spec"].get("securityContext"),
                "securityContext": c.get("securityContext"),
            },
            indent=1,
        ),
    )
    ev.add(
        "events of the first pod (kubelet)",
        kube(
            "-n",
            NAMESPACE,
            "get",
            "events",
            "--field-selector",
            f"involvedObject.name={first[0]}",
            "-o",
            "custom-columns=TYPE:.type,REASON:.reason,FROM:.source.component,MESSAGE:.message",
        ),
    )

    # The kubelet really ran it: the process inside answers as uid 65532 on a read-only root.
    inside = kube(
        "-n",
        NAMESPACE,
        "exec",
        first[0],
        "--",
        "python",
        "-c",
        "import os\ntry:\n open('/x','w')\nexcept OSError as e:\n r=e.strerror\n"
        "print('uid', os.getuid(), 'gid', os.getgid(), 'write /:', r)",
    )
    ev.add("kubectl exec: inside the container", inside)
    if "uid 65532" not in inside or "Read-only" not in inside:
        raise RuntimeError(f"unexpected identity inside the pod: {inside}")

    # Restricted Pod Security Standard: labelled by the operator, enforced by the apiserver.
    labels = kube.json("get", "namespace", NAMESPACE)["metadata"]["labels"]
    # A pod meeting every other rule of the profile, but running as root: refused for that alone.
    root_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root-probe", "namespace": NAMESPACE},
        "spec": {
            "securityContext": {"runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "c",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "1"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    refused = run(
        str(kube.bin_dir / "kubectl"),
        "create",
        "-f",
        "-",
        env=kube.env(),
        stdin=json.dumps(root_pod),
        check=False,
    )
    ev.add(
        "restricted PSS",
        f"namespace labels: {json.dumps(labels)}\nroot pod: "
        f"exit {refused.returncode}: {refused.stderr.strip()[:400]}",
    )
    if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
        raise RuntimeError("tenant namespace does not enforce the restricted PSS")
    if (
        refused.returncode == 0
        or "violates PodSecurity" not in refused.stderr
        or ("runAsUser=0" not in refused.stderr)
    ):
        raise RuntimeError("a root pod was admitted in the tenant namespace")

    # A request with the tenant's key, through the Service, by port-forward.
    secret = kube.json("-n", NAMESPACE, "get", "secret", "gateway-key-alice")
    key = base64.b64decode(secret["data"]["apiKey"]).decode()
    with port_forward(kube, "service/gateway", 4000) as url:
        ev.add(
            "anthropic SDK -> kubectl port-forward service/gateway 4000 -> pod", message(url, key)
        )

    # A ModelAlias edit reaches the serving pods without a roll: the operator rewrites
    # gateway-config, the pod template's config hash stays, the kubelet refreshes the mounted
    # ConfigMap and each pod reloads its model routing (gateway/modelsync.py).
    cm_before = kube.json("-n", NAMESPACE, "get", "configmap", "gateway-config")

    def hash_of() -> str | None:
        deployment = kube.json("-n", NAMESPACE, "get", "deployment", "gateway")
        notes: dict[str, str] = deployment["spec"]["template"]["metadata"]["annotations"]
        return notes.get("tenantgw.io/config-hash")

    hash_before = hash_of()
    alias = docs["model-aliases"][0]
    targets = alias["spec"]["targets"]
    targets[0]["weight"] = int(targets[0].get("weight", 1)) + 1  # 80 -> 81: a new config.yaml
    patch = {"spec": {"targets": targets}}
    kube(
        "-n",
        NAMESPACE,
        "patch",
        f"modelalias/{alias['metadata']['name']}",
        "--type",
        "merge",
        "-p",
        json.dumps(patch),
    )
    version = cm_before["metadata"]["resourceVersion"]
    eventually(
        lambda: (
            kube.json("-n", NAMESPACE, "get", "configmap", "gateway-config")["metadata"][
                "resourceVersion"
            ]
            != version
        ),
        120,
        "gateway-config rewritten after the alias change",
    )

    def reloaded() -> bool:
        return all(
            "model routing reloaded" in kube("-n", NAMESPACE, "logs", name, check=False)
            for name in first
        )

    # The kubelet refreshes a mounted ConfigMap within its sync period (a minute by default).
    eventually(reloaded, 300, "every pod to reload its model routing from the refreshed volume")
    if hash_of() != hash_before:
        raise RuntimeError("an alias edit changed the pod template's config hash")
    if ready_pods(kube) != first:
        raise RuntimeError(f"pods changed on an alias edit: {first} -> {ready_pods(kube)}")
    cm_after = kube.json("-n", NAMESPACE, "get", "configmap", "gateway-config")
    ev.add(
        "model routing reloaded on the ConfigMap change, no roll",
        "\n".join(
            [
                f"ModelAlias {alias['metadata']['name']} patched: {json.dumps(patch)}",
                f"gateway-config resourceVersion {version} -> "
                f"{cm_after['metadata']['resourceVersion']}",
                f"config-hash {hash_before} (unchanged)",
                f"Ready pods before and after: {first}",
                *(
                    line
                    for name in first
                    for line in kube("-n", NAMESPACE, "logs", name, check=False).splitlines()
                    if "model routing reloaded" in line
                ),
            ]
        ),
    )
    with port_forward(kube, "service/gateway", 4000) as url:
        ev.add("after the reload: anthropic SDK -> port-forward service/gateway", message(url, key))
    ev.add(
        "kubectl -n tenant-engineering-team get events (all)",
        kube(
            "-n",
            NAMESPACE,
            "get",
            "events",
            "--sort-by=.lastTimestamp",
            "-o",
            "custom-columns=TYPE:.type,REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message",
        ),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m e2e.real_node",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--keep", action="store_true", help="leave everything running (debugging)")
    args = p.parse_args(argv)
    problem = host_problem()
    if problem:
        say(f"SKIP: {problem}")
        return SKIP
    WORK.mkdir(parents=True, exist_ok=True)
    ev = Evidence(WORK / "evidence.txt")
    sim_key = "sim-" + secrets.token_hex(8)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        kube = stack.enter_context(control_plane())
        stack.enter_context(bridge())
        dsn, _ = stack.enter_context(postgres())
        url, _ = stack.enter_context(redis())
        sim_root = stack.enter_context(simulator(sim_key))
        stack.enter_context(real_node(kube))
        log = stack.enter_context(
            operator(
                kube,
                {
                    "TENANTGW_POSTGRES_DSN": dsn,
                    "TENANTGW_REDIS_URL": url,
                    "TENANTGW_TENANT_POSTGRES_HOST": BRIDGE_IP,
                    "TENANTGW_TENANT_REDIS_HOST": BRIDGE_IP,
                },
            )
        )
        try:
            checks(kube, ev, sim_root, sim_key, log)
        except Exception as exc:
            ev.add("FAILED", f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                ev.add("pods", kube("-n", NAMESPACE, "get", "pods", "-o", "wide"))
                ev.add("events", kube("-n", NAMESPACE, "get", "events", "--sort-by=.lastTimestamp"))
            if args.keep:
                stack.pop_all()
            return 1
        ev.add("result", f"OK in {time.monotonic() - started:.0f}s (including set-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
