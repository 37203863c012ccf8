"""Operator benchmark: apply→Ready latency, API writes idle and under traffic, memory, convergence.

    python -m e2e.bench.operator_bench --isolated --tenants 50 --scale 50,500 --converge 150,1000

Runs the real operator (kopf, `tenantgw.operator.handlers`) as its own ServiceAccount against the
local control plane, with per-tenant storage provisioning unless --no-storage, and measures what
DESIGN.md ("Numbers this design must reach") asks of it. Every Tenant it creates carries the
label tenantgw.io/bench=<run> and is deleted at the end. Each tenant has a ModelAlias and a
BudgetPolicy; the traffic phase adds spend to every tenant's budget counter in Redis, as the
gateways do after each request, instead of running a gateway per tenant. The numbers go to the
"Operator" section of docs/benchmarks.md and to JSON; nothing is asserted.

The operator logs to .dev/logs/operator-bench-<phase>.log rather than operator.log, so that a
test session's operator and this one never write the same file. Two operators must not reconcile
one cluster at once: on the shared control plane the benchmark waits for another session's
operator to exit and flags any that starts meanwhile. With --isolated it runs its own control
plane instead (the project's e2e/cluster scripts, rooted in .dev/bench/isolated, on other ports),
sharing only PostgreSQL and Redis, and stops it at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import pytest
from kubernetes import client
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from kubernetes.config import load_kube_config

from e2e.bench import report
from e2e.fixtures import DEV, ROOT, Cluster, _read_env
from e2e.operator_fixture import (
    OPERATOR_NS,
    OPERATOR_SA,
    free_port,
    install_crds_and_rbac,
    service_account_kubeconfig,
)
from tenantgw.render.workload import DEFAULT_RESOURCES

GROUP, VERSION = "tenantgw.io", "v1alpha1"
BENCH_LABEL = "tenantgw.io/bench"
TENANT_LABEL = "tenantgw.io/tenant"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}"
STORAGE_ENV = ("TENANTGW_POSTGRES_DSN", "TENANTGW_REDIS_URL")
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Milestones of one tenant, in the order they happen; the tracker stamps the first of each.
MILESTONES = {
    "namespace": "namespace exists",
    "alias": "ModelAlias created (by the benchmark)",
    "status": "first Tenant status written",
    "deployment": "gateway Deployment created",
    "scheduled": "gateway pod scheduled",
    "pod_ready": "gateway pod Ready (kwok)",
    "available": "gateway Deployment Available",
    "ready": "Tenant Ready, serving fast-code",
}
_T0 = time.monotonic()


class BenchError(Exception):
    """The benchmark could not run; the message says why."""


def say(message: str) -> None:
    print(f"[bench {time.monotonic() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def no_pytest_fail(what: str) -> Iterator[None]:
    """The e2e helpers report failures with pytest.fail; here that is an ordinary error."""
    try:
        yield
    except pytest.fail.Exception as exc:
        raise BenchError(f"{what}: {exc}") from None


# --------------------------------------------------------------------------- objects


def tenant_body(name: str, run: str) -> dict[str, Any]:
    """A tenant whose only provider needs no credentials, so no Secret races its namespace."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": name, "labels": {BENCH_LABEL: run}},
        "spec": {
            "displayName": f"Bench {name}",
            "deletionPolicy": "Delete",  # bench tenants leave no schema or namespace behind
            "providers": [
                {
                    "name": "local",
                    "type": "ollama",
                    "apiBase": "http://127.0.0.1:9",
                    "region": "us-east-1",
                }
            ],
            "catalog": [{"provider": "local", "model": "qwen3-coder", "costTier": "medium"}],
            "keys": [{"name": "alice"}],
            "routing": {"defaultAlias": "fast-code"},
            "gateway": {"replicas": 1},
        },
    }


def alias_body(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelAlias",
        "metadata": {"name": "fast-code", "namespace": namespace},
        "spec": {
            "aliases": ["claude-sonnet-4-5"],
            "targets": [{"provider": "local", "model": "qwen3-coder", "weight": 1}],
        },
    }


BUDGET_NAME = "monthly"
BUDGET_LIMIT_USD = 1000.0  # large enough that the traffic phase fires no threshold


def budget_body(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BudgetPolicy",
        "metadata": {"name": BUDGET_NAME, "namespace": namespace},
        "spec": {"scope": {"kind": "Tenant"}, "period": "monthly", "limitUSD": BUDGET_LIMIT_USD},
    }


def kwok_node_body(name: str, run: str) -> dict[str, Any]:
    """A simulated node like the ones e2e/cluster/up.sh makes."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"type": "kwok", "kubernetes.io/hostname": name, BENCH_LABEL: run},
        },
        "status": {"allocatable": dict(BENCH_NODE), "capacity": dict(BENCH_NODE)},
    }


# A node the benchmark adds holds NODE_PODS gateways at their default requests by every
# measure (e2e/cluster/up.sh's 64-CPU nodes hold only 256 of them by CPU).
NODE_PODS = 500
BENCH_NODE = {"cpu": "128", "memory": "300Gi", "pods": str(NODE_PODS)}
GATEWAY_REQUESTS = DEFAULT_RESOURCES["requests"]


_SUFFIX = {"m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}  # fmt: skip


def quantity(text: str | None) -> float:
    """A Kubernetes quantity as a number (CPU in cores, memory in bytes); 0 when unset."""
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", (text or "0").strip())
    if not match or match.group(2) not in _SUFFIX:
        raise BenchError(f"cannot read the quantity {text!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def gateways_that_fit(nodes: list[Any], pods: list[Any]) -> int:
    """How many more gateway pods (at their default requests) the Ready nodes can hold."""
    free = {"pods": 0.0, "cpu": 0.0, "memory": 0.0}
    for node in nodes:
        if any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or []):
            for key in free:
                free[key] += quantity((node.status.allocatable or {}).get(key))
    for pod in pods:
        free["pods"] -= 1
        for container in pod.spec.containers:
            requests = (container.resources and container.resources.requests) or {}
            for key in ("cpu", "memory"):
                free[key] -= quantity(requests.get(key))
    return int(
        max(
            0,
            min(
                free["pods"],
                free["cpu"] // quantity(GATEWAY_REQUESTS["cpu"]),
                free["memory"] // quantity(GATEWAY_REQUESTS["memory"]),
            ),
        )
    )


def ns_of(tenant: str) -> str:
    return f"tenant-{tenant}"


def _condition(obj: dict[str, Any], type_: str) -> bool:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return bool(cond.get("status") == "True")
    return False


# --------------------------------------------------------------------------- processes


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) of each process, and of the whole machine as "machine".

    PostgreSQL forks a backend per connection: its count adds the backends that ended (the
    postmaster's reaped-children time) and the live ones. Other processes count alone, so
    that the benchmark does not count the operator it started.
    """
    tick = os.sysconf("SC_CLK_TCK")
    backends: list[int] = []
    if "postgres" in pids:
        for entry in Path("/proc").iterdir():
            st = _stat(int(entry.name)) if entry.name.isdigit() else None
            if st and int(st[1]) == pids["postgres"]:
                backends.append(int(entry.name))
    out: dict[str, float] = {}
    for name, pid in pids.items():
        st = _stat(pid)
        total = sum(int(v) for v in st[11 : (15 if name == "postgres" else 13)]) if st else 0
        for child in backends if name == "postgres" else []:
            if cst := _stat(child):
                total += sum(int(v) for v in cst[11:13])
        out[name] = total / tick
    out["machine"] = machine_cpu_seconds()
    return out


def machine_cpu_seconds() -> float:
    """CPU time all processes of the machine have used (busy time from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per process between two snapshots, and what the rest of the machine used."""
    used = {k: round(v - before.get(k, 0.0), 1) for k, v in after.items() if k != "machine"}
    used["other processes"] = round(after["machine"] - before["machine"] - sum(used.values()), 1)
    return used


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (the peak) of a process, in MB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def operator_pids(exclude: Iterable[int] = ()) -> list[int]:
    """kopf processes running the tenantgw handlers (other sessions' operators)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in set(exclude):
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"kopf" in c for c in cmd[:2]) and b"tenantgw.operator.handlers" in cmd:
            found.append(int(entry.name))
    return found


@dataclass
class Operator:
    """One run of the operator process."""

    phase: str
    process: subprocess.Popen[bytes]
    log_file: Path
    started: float  # monotonic, just before the process was spawned
    live_after: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def sample_memory(self, samples: int = 5, every: float = 1.0) -> dict[str, float]:
        rss = []
        for i in range(samples):
            if i:
                time.sleep(every)
            rss.append(memory_mb(self.pid)["VmRSS"])
        return {
            "rss_mb": report.percentile(rss, 50),
            "rss_max_mb": max(rss),
            "hwm_mb": memory_mb(self.pid)["VmHWM"],
            "samples": len(rss),
        }


_KOPF_LINE = re.compile(r"^\[[^\]]+\] (\S+)\s+\[(\w+)\s*\] (.*)$")


def analyse_log(path: Path) -> dict[str, Any]:
    """What the operator logged: reconciles that wrote, warnings, errors, retries."""
    counts: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        match = _KOPF_LINE.match(line)
        if not match:
            counts["traceback lines" if line.startswith((" ", "Traceback")) else "other"] += 1
            continue
        logger, level, message = match.groups()
        counts[level] += 1
        if "reconciled:" in message:
            counts["reconciles that wrote"] += 1
        if level in ("WARNING", "ERROR", "CRITICAL"):
            shape = re.sub(r"bench-[0-9a-f]{6}-[a-z]?\d{4}", "<tenant>", message)
            shape = re.sub(r"bench_[0-9a-f]{6}_[a-z]?\d{4}", "<tenant>", shape)
            shape = re.sub(r"'[0-9a-f-]{36}'", "<uid>", shape)[:240]
            problems[f"{level} {logger}: {shape}"] += 1
    return {
        "file": str(path.relative_to(ROOT)),
        "counts": dict(counts),
        "problems": [{"count": n, "message": m} for m, n in problems.most_common(8)],
    }


# --------------------------------------------------------------------------- audit log


class AuditLog:
    """The operator's requests, read incrementally from the API server's audit log.

    The same source as e2e.operator_fixture.audit_events, but read once per line: the log
    grows by tens of MB during a run and the quiet check polls it every second.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.rotated = False

    def poll(self) -> None:
        size = self.path.stat().st_size if self.path.exists() else 0
        if size < self.offset:
            self.rotated, self.offset = True, 0
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        needle = f'"{OPERATOR_USER}"'.encode()
        for line in data[:end].splitlines():
            if needle not in line:
                continue
            event = json.loads(line)
            if event.get("user", {}).get("username") != OPERATOR_USER:
                continue
            stamp = event["requestReceivedTimestamp"].replace("Z", "+00:00")
            self.events.append((datetime.fromisoformat(stamp).timestamp(), event))

    def between(self, since: float, until: float, verbs: Iterable[str]) -> list[dict[str, Any]]:
        self.poll()
        wanted = set(verbs)
        return [e for t, e in self.events if since <= t < until and e.get("verb") in wanted]


WRITES = ("create", "update", "patch", "delete", "deletecollection")


def describe(events: list[dict[str, Any]], top: int = 8) -> list[dict[str, Any]]:
    """Requests grouped by verb and resource (with subresource), most frequent first."""
    shapes: Counter[str] = Counter()
    for e in events:
        ref = e.get("objectRef") or {}
        res = ref.get("resource", "?") + (
            f"/{ref['subresource']}" if ref.get("subresource") else ""
        )
        shapes[f"{e.get('verb')} {res}"] += 1
    return [{"request": s, "count": n} for s, n in shapes.most_common(top)]


# --------------------------------------------------------------------------- watching


class Tracker:
    """Watches tenants, namespaces, Deployments and pods; stamps each tenant's first milestones.

    Raw watch streams (JSON lines, no client models) keep the benchmark's own CPU low: on two
    cores it competes with the control plane it measures.
    """

    def __init__(self, api: ApiClient, run: str) -> None:
        self.api = api
        self.run = run
        self.prefix = f"bench-{run}-"
        self.stamps: dict[str, dict[str, float]] = defaultdict(dict)
        self.tenants: set[str] = set()  # Bench tenants that exist
        self.namespaces: set[str] = set()  # tenants whose namespace exists
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.on_namespace: Callable[[str], None] | None = None

    def stamp(self, tenant: str, milestone: str, when: float | None = None) -> None:
        with self.lock:
            self.stamps[tenant].setdefault(milestone, time.monotonic() if when is None else when)

    def at(self, tenant: str, milestone: str) -> float | None:
        with self.lock:
            return self.stamps.get(tenant, {}).get(milestone)

    def progress(self, names: Iterable[str]) -> int:
        """How many milestones `names` have reached in all: it grows while anything moves."""
        with self.lock:
            return sum(len(self.stamps.get(n, {})) for n in names)

    def count(self, names: Iterable[str], milestone: str) -> int:
        with self.lock:
            return sum(1 for n in names if milestone in self.stamps.get(n, {}))

    def start(self) -> None:
        sel = f"labelSelector={TENANT_LABEL}"
        watches: list[tuple[str, Callable[[str, dict[str, Any]], None]]] = [
            (
                f"/apis/{GROUP}/{VERSION}/tenants?labelSelector={BENCH_LABEL}%3D{self.run}",
                self._tenant,
            ),
            (f"/api/v1/namespaces?{sel}", self._namespace),
            (f"/apis/apps/v1/deployments?{sel}", self._deployment),
            (f"/api/v1/pods?{sel}", self._pod),
        ]
        for path, handle in watches:
            threading.Thread(target=self._watch, args=(path, handle), daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()

    def _get(self, path: str, timeout: float) -> Any:
        resp = self.api.call_api(
            path,
            "GET",
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=(5, timeout),
        )
        return resp[0] if isinstance(resp, tuple) else resp

    def _watch(self, path: str, handle: Callable[[str, dict[str, Any]], None]) -> None:
        rv = ""
        while not self.stopping.is_set():
            try:
                if not rv:
                    listed = json.loads(self._get(path, 60).data)
                    handle("RESET", {})
                    for item in listed.get("items", []):
                        handle("ADDED", item)
                    rv = listed["metadata"]["resourceVersion"]
                resp = self._get(
                    f"{path}&watch=1&allowWatchBookmarks=true&timeoutSeconds=30"
                    f"&resourceVersion={rv}",
                    45,
                )
                for line in resp:
                    if self.stopping.is_set():
                        break
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        rv = ""  # 410 Gone: too old; list again
                        break
                    rv = event["object"]["metadata"].get("resourceVersion", rv)
                    if event["type"] != "BOOKMARK":
                        handle(event["type"], event["object"])
                resp.release_conn()
            except Exception as exc:  # the watch must survive API hiccups; say so and retry
                if not self.stopping.is_set():
                    say(f"watch {path.split('?')[0]} failed ({exc!r:.120}); retrying")
                    time.sleep(1)

    def _owner(self, obj: dict[str, Any]) -> str | None:
        if not obj:
            return None
        tenant = (obj["metadata"].get("labels") or {}).get(TENANT_LABEL, "")
        return tenant if tenant.startswith(self.prefix) else None

    def _tenant(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "RESET":  # a fresh list follows: forget what may have gone meanwhile
            with self.lock:
                self.tenants.clear()
            return
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            with self.lock:
                self.tenants.discard(name)
            return
        with self.lock:
            self.tenants.add(name)
        status = obj.get("status") or {}
        if status.get("conditions"):
            self.stamp(name, "status")
        if _condition(obj, "Ready"):
            self.stamp(name, "ready_any")
            if "fast-code" in (status.get("models") or []) and status.get(
                "observedGeneration"
            ) == obj["metadata"].get("generation"):
                self.stamp(name, "ready")

    def _namespace(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "RESET":
            with self.lock:
                self.namespaces.clear()
            return
        tenant = self._owner(obj)
        if tenant is None or obj["metadata"]["name"] != ns_of(tenant):
            return
        if kind == "DELETED":
            with self.lock:
                self.namespaces.discard(tenant)
            return
        with self.lock:
            new = tenant not in self.namespaces
            self.namespaces.add(tenant)
        self.stamp(tenant, "namespace")
        if new and self.on_namespace and not obj["metadata"].get("deletionTimestamp"):
            self.on_namespace(tenant)

    def _deployment(self, kind: str, obj: dict[str, Any]) -> None:
        tenant = self._owner(obj)
        if tenant is None or kind == "DELETED":
            return
        self.stamp(tenant, "deployment")
        if _condition(obj, "Available"):
            self.stamp(tenant, "available")

    def _pod(self, kind: str, obj: dict[str, Any]) -> None:
        tenant = self._owner(obj)
        if tenant is None or kind == "DELETED":
            return
        if obj.get("spec", {}).get("nodeName"):
            self.stamp(tenant, "scheduled")
        if _condition(obj, "Ready"):
            self.stamp(tenant, "pod_ready")


# --------------------------------------------------------------------------- the benchmark


def admin_client(kubeconfig: Path, pool: int) -> ApiClient:
    config = Configuration()
    load_kube_config(config_file=str(kubeconfig), client_configuration=config)
    config.connection_pool_maxsize = pool
    return ApiClient(config)


def wait_until(
    done: Callable[[], bool], timeout: float, progress: Callable[[], str], every: float = 10
) -> bool:
    """Poll `done` every 0.1 s; log `progress()` every `every` s. False on timeout."""
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + every
    while not done():
        now = time.monotonic()
        if now >= deadline:
            return False
        if now >= next_note:
            say(progress())
            next_note = now + every
        time.sleep(0.1)
    return True


@dataclass
class Bench:
    """Everything the phases share."""

    args: argparse.Namespace
    cluster: Cluster
    cluster_dev: Path  # the .dev directory of the control plane: pids, audit log
    storage_env: dict[str, str]
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    operator: Operator | None = None
    operators: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra_nodes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.api = admin_client(self.cluster.kubeconfig, 32)
        self.watch_api = admin_client(self.cluster.kubeconfig, 8)
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.tracker = Tracker(self.watch_api, self.run)
        self.audit = AuditLog(self.cluster_dev / "logs" / "audit.log")
        self.others_seen: set[int] = set()
        self.pool = ThreadPoolExecutor(16, thread_name_prefix="bench")
        self.want_alias: set[str] = set()
        self.names: list[str] = []  # this run's tenants that exist now
        self.alias_errors: list[str] = []
        self.tracker.on_namespace = self._namespace_appeared

    # ---- tenants

    def name(self, i: int, tag: str = "") -> str:
        return f"bench-{self.run}-{tag}{i:04d}"

    def create_tenant(self, name: str) -> None:
        self.tracker.stamp(name, "created")
        self.custom.create_cluster_custom_object(
            GROUP, VERSION, "tenants", tenant_body(name, self.run)
        )

    def create_alias(self, tenant: str) -> None:
        """The tenant's ModelAlias and BudgetPolicy."""
        for plural, body in (
            ("modelaliases", alias_body(ns_of(tenant))),
            ("budgetpolicies", budget_body(ns_of(tenant))),
        ):
            try:
                self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, ns_of(tenant), plural, body
                )
            except ApiException as exc:
                if exc.status != 409:
                    self.alias_errors.append(f"{tenant}: {plural}: {exc.status} {exc.reason}")
                    return
        self.tracker.stamp(tenant, "alias")

    def _namespace_appeared(self, tenant: str) -> None:
        # The namespace is the operator's; the alias can only be created once it exists.
        if tenant in self.want_alias:
            self.want_alias.discard(tenant)
            self.pool.submit(self.create_alias, tenant)

    def create_tenants(self, names: list[str]) -> None:
        """Create the Tenants; each one's ModelAlias follows when its namespace appears."""
        self.names += names
        self.want_alias.update(names)
        list(self.pool.map(self.create_tenant, names))

    def wait_ready(self, names: list[str], timeout: float, every: float = 10) -> str:
        """Wait until all `names` are Ready: "ready", "timeout", or "stalled".

        Stalled means no tenant reached any milestone for --stall-timeout seconds.
        """
        now = time.monotonic()
        deadline, note, moved, last = now + timeout, now + every, now, -1
        while self.tracker.count(names, "ready") < len(names):
            now = time.monotonic()
            if (progress := self.tracker.progress(names)) != last:
                moved, last = now, progress
            elif now - moved >= self.args.stall_timeout:
                say(f"no tenant progressed for {self.args.stall_timeout:.0f} s: stalled")
                return "stalled"
            if now >= deadline:
                return "timeout"
            if now >= note:
                say(self.progress(names)())
                note = now + every
            time.sleep(0.1)
        return "ready"

    def steps(self, names: list[str]) -> dict[str, Any]:
        """Per milestone of STEPS: the distribution of the time since the previous one."""
        out: dict[str, Any] = {}
        for a, z in itertools.pairwise(STEPS):
            gaps = [
                tz - ta
                for n in names
                if (ta := self.tracker.at(n, a)) is not None
                and (tz := self.tracker.at(n, z)) is not None
            ]
            summary = report.summarize(gaps)
            out[z] = summary.as_dict() if summary else None
        return out

    def all_reached(self, names: list[str], milestone: str) -> Callable[[], bool]:
        return lambda: self.tracker.count(names, milestone) == len(names)

    def progress(self, names: list[str]) -> Callable[[], str]:
        def line() -> str:
            counts = ", ".join(
                f"{k} {self.tracker.count(names, k)}"
                for k in ("namespace", "deployment", "scheduled", "available", "ready")
            )
            return f"{len(names)} tenants: {counts}"

        return line

    def latencies(self, names: list[str], start: str = "created") -> dict[str, Any]:
        """Per milestone: the distribution of (milestone - start) over tenants that reached it."""
        out: dict[str, Any] = {}
        for key in MILESTONES:
            deltas = []
            for n in names:
                t0, t1 = self.tracker.at(n, start), self.tracker.at(n, key)
                if t0 is not None and t1 is not None:
                    deltas.append(t1 - t0)
            summary = report.summarize(deltas)
            out[key] = summary.as_dict() if summary else None
        return out

    def reached_by(self, names: list[str], t0: float) -> dict[str, Any]:
        """Per milestone: seconds after `t0` until 50 %, 95 % and all of `names` reached it."""
        out: dict[str, Any] = {}
        for key in MILESTONES:
            times = sorted(t - t0 for n in names if (t := self.tracker.at(n, key)) is not None)
            if not times:
                out[key] = None
                continue
            at = {}
            for q in (50, 95, 100):
                rank = -(-len(names) * q // 100)  # ceil: the rank-th tenant to get there
                at[q] = times[rank - 1] if rank <= len(times) else None
            out[key] = {
                "reached": len(times),
                "p50_tenants_s": at[50],
                "p95_tenants_s": at[95],
                "all_s": at[100],
            }
        return out

    # ---- the operator

    def control_plane_pids(self) -> dict[str, int]:
        state = self.cluster_dev / "cluster" / "pids"
        pids = {n: p for n in CONTROL_PLANE if (p := _pid(state / f"{n}.pid"))}
        if pg := _pid(DEV / "services" / "postgres" / "postmaster.pid"):
            pids["postgres"] = pg
        if rd := _pid(DEV / "services" / "redis.pid"):
            pids["redis"] = rd
        if self.operator:
            pids["operator"] = self.operator.pid
        pids["benchmark"] = os.getpid()
        return pids

    def watch_for_other_operators(self) -> None:
        """On the shared control plane, note every other operator that runs during the run."""

        def loop() -> None:
            while not self.tracker.stopping.is_set():
                mine = [self.operator.pid] if self.operator else []
                for pid in set(operator_pids(exclude=mine)) - self.others_seen:
                    self.others_seen.add(pid)
                    say(f"WARNING: another session's operator (pid {pid}) reconciles too")
                time.sleep(2)

        threading.Thread(target=loop, daemon=True).start()

    def prepare(self) -> None:
        """The CRDs, the operator's RBAC and a kubeconfig with its ServiceAccount's token."""
        (DEV / "bench").mkdir(parents=True, exist_ok=True)
        with no_pytest_fail("installing the CRDs and RBAC"):
            install_crds_and_rbac(self.cluster)
            service_account_kubeconfig(self.cluster, DEV / "bench" / "operator.kubeconfig")

        def served() -> bool:  # fresh CRDs answer 429 "storage is (re)initializing" at first
            try:
                for plural in ("tenants", "modelaliases", "budgetpolicies"):
                    self.custom.list_cluster_custom_object(GROUP, VERSION, plural, limit=1)
            except ApiException:
                return False
            return True

        wait_until(served, 60, lambda: "waiting for the API server to serve the CRDs")

    def start_operator(self, phase: str, resync: float) -> Operator:
        env = {k: v for k, v in os.environ.items() if k not in STORAGE_ENV}
        env |= {
            "KUBECONFIG": str(DEV / "bench" / "operator.kubeconfig"),
            "TENANTGW_RESYNC_SECONDS": str(resync),
            **self.storage_env,
        }
        log_file = DEV / "logs" / f"operator-bench-{phase}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        port = free_port()
        kopf = Path(sys.executable).parent / "kopf"
        started = time.monotonic()
        with log_file.open("wb") as out:
            proc = subprocess.Popen(
                [str(kopf), "run", "--standalone", "--all-namespaces",
                 f"--liveness=http://127.0.0.1:{port}/healthz", "-m", "tenantgw.operator.handlers"],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            )  # fmt: skip
        op = Operator(phase, proc, log_file, started)
        self.operator = op
        deadline = started + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"the operator exited with {proc.returncode}; see {log_file}")
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{port}/healthz"
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        op.live_after = time.monotonic() - started
                        say(f"operator ({phase}, resync {resync:g} s) live, pid {op.pid}")
                        return op
            time.sleep(0.1)
        raise BenchError(f"the operator did not become live in 60 s; see {log_file}")

    def stop_operator(self) -> None:
        if self.operator is None:
            return
        op, self.operator = self.operator, None
        op.process.terminate()
        try:
            op.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            op.process.kill()
            op.process.wait()
        self.operators.append({"phase": op.phase, **analyse_log(op.log_file)})

    def wait_quiet(self, quiet: float = 3, cap: float = 120) -> float:
        """Wait until the operator has made no write for `quiet` s; returns when that began."""
        start = time.time()
        while time.time() - start < cap:
            time.sleep(1)
            now = time.time()
            recent = self.audit.between(now - quiet, now + 1, WRITES)
            if not recent and now - start >= quiet:
                return now - quiet
        self.warnings.append(f"the operator kept writing for {cap:.0f} s (no quiet period)")
        return time.time()

    # ---- capacity

    def ensure_pod_capacity(self, needed: int) -> dict[str, Any]:
        """Add simulated nodes when the existing ones cannot hold `needed` more gateways, by
        pod count, CPU or memory requests."""
        nodes = self.core.list_node().items
        pods = self.core.list_pod_for_all_namespaces(
            field_selector="status.phase!=Succeeded,status.phase!=Failed"
        ).items
        fits = gateways_that_fit(nodes, pods)
        missing = needed + 10 - fits
        added = []
        for _ in range(max(0, -(-missing // NODE_PODS))):
            name = f"kwok-bench-{self.run}-{len(self.extra_nodes)}"
            self.core.create_node(kwok_node_body(name, self.run))
            self.extra_nodes.append(name)
            added.append(name)
        if added:
            say(f"room for {fits} more gateways, {len(pods)} pods running: added kwok nodes "
                f"{added}")  # fmt: skip
            wait_until(self._nodes_ready(added), 60, lambda: "waiting for the added nodes")
        return {"gateways_that_fit": fits, "pods_running": len(pods), "nodes_added": added}

    def _nodes_ready(self, names: list[str]) -> Callable[[], bool]:
        def ready() -> bool:
            nodes = [self.core.read_node(n) for n in names]
            return all(
                any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
                for n in nodes
            )

        return ready

    # ---- cleanup

    def delete_tenants(self, timeout: float) -> dict[str, Any]:
        """Delete every Tenant of this run and wait for them and their namespaces to go."""
        t0 = time.monotonic()
        listed = self.custom.list_cluster_custom_object(
            GROUP, VERSION, "tenants", label_selector=f"{BENCH_LABEL}={self.run}"
        )["items"]
        names = [t["metadata"]["name"] for t in listed]

        def delete(name: str) -> None:
            with contextlib.suppress(ApiException):
                self.custom.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)

        list(self.pool.map(delete, names))
        self.names = []
        say(f"deleting {len(names)} tenants")

        def gone() -> bool:
            with self.tracker.lock:
                return not self.tracker.tenants and not self.tracker.namespaces

        def progress() -> str:
            with self.tracker.lock:
                return (
                    f"cleanup: {len(self.tracker.tenants)} tenants and "
                    f"{len(self.tracker.namespaces)} namespaces left"
                )

        deadline = time.monotonic() + timeout
        no_tenants = wait_until(lambda: not self.tracker.tenants, timeout, progress, every=15)
        # A Tenant created while the operator was down and deleted before it ran had no
        # finalizer, so its pre-created namespace is left for us. Deleting a namespace the
        # operator is already deleting is harmless.
        with self.tracker.lock:
            left_ns = sorted(self.tracker.namespaces)
        for tenant in left_ns if no_tenants else []:
            with contextlib.suppress(ApiException):
                self.core.delete_namespace(ns_of(tenant))
        done = no_tenants and wait_until(
            gone, max(0.0, deadline - time.monotonic()), progress, every=15
        )
        with self.tracker.lock:
            left_tenants, left_ns = sorted(self.tracker.tenants), sorted(self.tracker.namespaces)
        result = {
            "tenants": len(names),
            "seconds": time.monotonic() - t0,
            "complete": done,
            "tenants_left": len(left_tenants),
            "namespaces_left": len(left_ns),
        }
        say(f"deleted {len(names)} tenants in {result['seconds']:.0f} s (complete: {done})")
        return result

    def cleanup(self) -> dict[str, Any]:
        if self.operator is None:
            self.start_operator("cleanup", self.args.default_resync)
        result = self.delete_tenants(self.args.cleanup_timeout)
        for node in self.extra_nodes:
            with contextlib.suppress(ApiException):
                self.core.delete_node(node)
        self.stop_operator()
        self.tracker.stop()
        return result


# --------------------------------------------------------------------------- phases

# The chain of a tenant's milestones whose consecutive gaps say where its time went.
STEPS = ["created", "namespace", "deployment", "scheduled", "pod_ready", "available", "ready"]
STEP_OWNER = {
    "namespace": "operator: first reconcile",
    "deployment": "operator: applies the children",
    "scheduled": "controller-manager + scheduler",
    "pod_ready": "kwok",
    "available": "controller-manager",
    "ready": "operator: reconcile on the Deployment event",
}


def phase_latency(b: Bench) -> dict[str, Any]:
    """Time tenants from apply to Available and Ready: alone first, then at a steady pace."""
    solo = [b.name(i, "s") for i in range(b.args.solo)]
    say(f"latency: {len(solo)} tenants one at a time, each waited for")
    for name in solo:
        b.create_tenants([name])
        b.wait_ready([name], 60)
    n, every = b.args.tenants, b.args.interval
    names = [b.name(i) for i in range(n)]
    say(f"latency: applying {n} tenants, one every {every * 1000:.0f} ms")
    cpu0 = cpu_seconds(b.control_plane_pids())
    since, start = time.time(), time.monotonic()
    for i, name in enumerate(names):
        time.sleep(max(0.0, start + i * every - time.monotonic()))
        b.create_tenants([name])
    outcome = b.wait_ready(names, b.args.scale_timeout)
    cpu1, wall = cpu_seconds(b.control_plane_pids()), time.monotonic() - start
    writes = b.audit.between(since, time.time(), WRITES)
    return {
        "tenants": n,
        "interval_s": every,
        "outcome": outcome,
        "ready": b.tracker.count(names, "ready"),
        "solo": {"tenants": len(solo), "from_apply": b.latencies(solo)},
        "from_apply": b.latencies(names),
        "steps": b.steps(names),
        "operator_writes": len(writes),
        "operator_writes_by_request": describe(writes, top=40),
        "alias_errors": b.alias_errors[:5],
        "cpu_seconds": cpu_used(cpu0, cpu1),
        "wall_seconds": wall,
    }


def phase_idle(b: Bench) -> dict[str, Any]:
    """Restart with a short resync; count the operator's writes and reads over two periods."""
    resync, tenants = b.args.resync, len(b.names)
    b.stop_operator()
    restart = time.time()
    b.start_operator("idle", resync)
    quiet_from = b.wait_quiet()
    restart_writes = b.audit.between(restart, quiet_from, WRITES)
    metrics_before = apiserver_requests(b.api)
    since = time.time()
    say(f"idle: counting the operator's requests over 2 resyncs of {resync:g} s")
    time.sleep(2 * resync + 1)
    until = time.time()
    reads = Counter(apiserver_requests(b.api))
    reads.subtract(metrics_before)
    writes = b.audit.between(since, until, WRITES)
    prefix = f"bench-{b.run}-"
    per_tenant = Counter(
        e["objectRef"]["name"]
        for e in b.audit.between(since, until, ["get"])
        if e.get("objectRef", {}).get("resource") == "tenants"
        and e["objectRef"].get("name", "").startswith(prefix)
    )
    resyncs = (until - since) / resync
    return {
        "tenants": tenants,
        "resync_s": resync,
        "window_s": until - since,
        "restart_writes": len(restart_writes),
        "restart_writes_by_request": describe(restart_writes),
        "writes": len(writes),
        "writes_of_this_run": sum(1 for e in writes if prefix in json.dumps(e["objectRef"])),
        "writes_by_request": describe(writes),
        "writes_per_tenant_per_resync": len(writes) / (tenants * resyncs),
        "tenant_gets": sum(per_tenant.values()),
        "tenant_gets_per_tenant": {
            "min": min(per_tenant.get(name, 0) for name in b.names),
            "max": max(per_tenant.values(), default=0),
        },
        "apiserver_reads_all_clients": {k: v for k, v in reads.most_common(12) if v > 0},
        "apiserver_reads_per_tenant_per_resync": sum(v for v in reads.values() if v > 0)
        / (tenants * resyncs),
    }


def spend_traffic(
    redis_url: str, tenants: list[str], every: float, stop: threading.Event
) -> dict[str, Any]:
    """Add spend to each tenant's budget counter every `every` s until `stop`, as gateways do.

    A gateway adds each request's cost in micro-USD to `t:{<tenant>}:budget:<policy>:<period>`
    (INCRBY); here each tenant "serves" a few requests of 0.2 to 2 cents per round.
    """
    import redis

    from tenantgw.api.periods import budget_counter_key

    client = redis.Redis.from_url(redis_url)
    rounds, added = 0, 0
    try:
        while not stop.is_set():
            now = datetime.now(UTC)
            pipe = client.pipeline(transaction=False)
            for i, tenant in enumerate(tenants):
                cost = 2_000 + (rounds * 7_919 + i * 104_729) % 18_000  # varied, reproducible
                pipe.incrby(budget_counter_key(tenant, BUDGET_NAME, "monthly", now), cost)
                added += cost
            pipe.execute()
            rounds += 1
            stop.wait(every)
    finally:
        client.close()
    return {"rounds": rounds, "usd_added": added / 1_000_000}


def phase_traffic(b: Bench) -> dict[str, Any]:
    """Spend flows into every tenant's budget: count the operator's writes per tenant per minute.

    Runs on the operator of the idle phase, whose writes were zero; the budget status loop runs
    at its defaults (a pass every 30 s, spend-only changes written at most once a minute).
    """
    tenants, window = list(b.names), b.args.traffic_seconds
    redis_url = b.storage_env.get("TENANTGW_REDIS_URL")
    if not redis_url:
        return {"skipped": "no storage (--no-storage): no budget counters"}
    stop = threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        result.update(spend_traffic(redis_url, tenants, b.args.traffic_every, stop))

    say(f"traffic: spend on {len(tenants)} budgets every {b.args.traffic_every:g} s for "
        f"{window:g} s")  # fmt: skip
    thread = threading.Thread(target=run, daemon=True)
    since = time.time()
    thread.start()
    time.sleep(window)
    until = time.time()
    stop.set()
    thread.join(30)
    writes = b.audit.between(since, until, WRITES)
    status_writes = [e for e in writes if e["objectRef"].get("resource") == "budgetpolicies"]
    shown = 0
    for tenant in tenants:
        with contextlib.suppress(ApiException):
            policy = b.custom.get_namespaced_custom_object(
                GROUP, VERSION, ns_of(tenant), "budgetpolicies", BUDGET_NAME
            )
            shown += bool((policy.get("status") or {}).get("spentUSD"))
    minutes = (until - since) / 60
    return {
        "tenants": len(tenants),
        "window_s": until - since,
        "every_s": b.args.traffic_every,
        **result,
        "writes": len(writes),
        "writes_by_request": describe(writes),
        "budget_status_writes": len(status_writes),
        "writes_per_tenant_per_minute": len(writes) / (len(tenants) * minutes),
        "policies_showing_spend": shown,
    }


_METRIC = re.compile(r"^apiserver_request_total\{(.*)\} (\S+)$")


def apiserver_requests(api: ApiClient) -> dict[str, int]:
    """GET and LIST requests the API server has served so far, by resource (all clients)."""
    resp = api.call_api("/metrics", "GET", auth_settings=["BearerToken"], _preload_content=False)
    raw = resp[0] if isinstance(resp, tuple) else resp
    totals: Counter[str] = Counter()
    for line in raw.data.decode().splitlines():
        if match := _METRIC.match(line):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            if labels.get("verb") in ("GET", "LIST"):
                res = labels.get("resource") or "(non-resource)"
                if labels.get("subresource"):
                    res += "/" + labels["subresource"]
                totals[f"{labels['verb']} {res}"] += int(float(match.group(2)))
    return dict(totals)


def phase_memory(b: Bench) -> dict[str, Any]:
    """RSS at each scale point: add the missing tenants at once, wait until Ready, sample."""
    b.stop_operator()
    b.start_operator("scale", b.args.default_resync)
    b.wait_quiet()
    points: list[dict[str, Any]] = []
    for target in sorted(set(b.args.scale)):
        point: dict[str, Any] = {}
        if target > len(b.names):
            new = [b.name(i) for i in range(len(b.names), target)]
            say(f"scale: adding {len(new)} tenants at once ({target} in all)")
            point |= b.ensure_pod_capacity(len(new))
            cpu0, t0 = cpu_seconds(b.control_plane_pids()), time.monotonic()
            b.create_tenants(new)
            outcome = b.wait_ready(new, b.args.scale_timeout, every=15)
            elapsed = time.monotonic() - t0
            cpu1 = cpu_seconds(b.control_plane_pids())
            point |= {
                "added": len(new),
                "outcome": outcome,
                "ready": b.tracker.count(new, "ready"),
                "seconds_to_ready": elapsed if outcome == "ready" else None,
                "from_apply": b.latencies(new),
                "cpu_seconds": cpu_used(cpu0, cpu1),
                "wall_seconds": elapsed,
            }
            time.sleep(5)  # let the last reconciles finish before sampling
        point["tenants"] = len(b.names)
        if b.operator:
            point |= b.operator.sample_memory()
        say(f"scale: operator RSS {point.get('rss_mb', 0):.0f} MB at {len(b.names)} tenants")
        points.append(point)
        if point.get("outcome", "ready") != "ready":
            break  # a further point would measure a backlog, not a size
    return {"points": points}


def phase_converge(b: Bench, n: int, tag: str) -> dict[str, Any]:
    """Create N tenants while the operator is down, start it, time until all are Ready."""
    say(f"converge {n}: removing the earlier tenants first")
    result: dict[str, Any] = {"tenants": n, "earlier_cleanup": b.delete_tenants(600)}
    result |= b.ensure_pod_capacity(n)
    b.stop_operator()
    names = [b.name(i, tag) for i in range(n)]

    def prepare(name: str) -> None:
        # The namespace and alias exist before the operator starts, as Argo CD with
        # CreateNamespace=true makes them; the tenant label makes the namespace the operator's
        # own rather than an adopted one.
        ns = {"metadata": {"name": ns_of(name), "labels": {TENANT_LABEL: name}}}
        b.core.create_namespace(ns)
        b.create_tenant(name)
        b.custom.create_namespaced_custom_object(
            GROUP, VERSION, ns_of(name), "modelaliases", alias_body(ns_of(name))
        )
        b.custom.create_namespaced_custom_object(
            GROUP, VERSION, ns_of(name), "budgetpolicies", budget_body(ns_of(name))
        )
        b.tracker.stamp(name, "alias")

    say(f"converge {n}: creating the tenants, their namespaces and aliases (operator down)")
    t0 = time.monotonic()
    b.names += names
    list(b.pool.map(prepare, names))
    result["setup_s"] = time.monotonic() - t0
    cpu0 = cpu_seconds(b.control_plane_pids())
    since, start = time.time(), time.monotonic()
    b.start_operator(f"converge-{n}", b.args.default_resync)
    result["operator_live_s"] = b.operator.live_after if b.operator else None
    outcome = b.wait_ready(names, b.args.converge_timeout)
    elapsed = time.monotonic() - start
    cpu1 = cpu_seconds(b.control_plane_pids())
    say(f"converge {n}: {b.tracker.count(names, 'ready')}/{n} Ready after {elapsed:.0f} s")
    writes = b.audit.between(since, time.time(), WRITES)
    gets = b.audit.between(since, time.time(), ["get"])
    result |= {
        "outcome": outcome,
        "ready": b.tracker.count(names, "ready"),
        "seconds_to_all_ready": elapsed if outcome == "ready" else None,
        "stages_from_operator_start": b.reached_by(names, start),
        "cpu_seconds": cpu_used(cpu0, cpu1),
        "wall_seconds": elapsed,
        "operator_writes": len(writes),
        "operator_writes_by_request": describe(writes),
        # Reconciles read from the watch caches: Tenant GETs are what the caches could not say.
        "tenant_gets": sum(1 for e in gets if e.get("objectRef", {}).get("resource") == "tenants"),
    }
    time.sleep(3)
    if b.operator:
        # Sampled with a backlog too: the operator then holds every tenant's objects in its
        # watch caches, which is most of what its memory grows with.
        result["memory"] = b.operator.sample_memory()
    return result


def contention(res: dict[str, Any]) -> list[str]:
    """Caveats for phases during which other processes took a large share of the CPU."""
    phases = [("latency", res.get("latency"))]
    phases += [(f"scale to {p['tenants']}", p) for p in (res.get("memory") or {}).get("points", [])]
    phases += [(f"converge {c['tenants']}", c) for c in res.get("converge", [])]
    notes = []
    for label, phase in phases:
        if phase and phase.get("cpu_seconds") and phase.get("wall_seconds"):
            share = phase["cpu_seconds"]["other processes"] / (
                (os.cpu_count() or 1) * phase["wall_seconds"]
            )
            if share > 0.15:
                notes.append(
                    f"other processes on the machine used {share:.0%} of its CPU during the "
                    f"{label} phase: its times are slower than on a quiet machine"
                )
    return notes


# --------------------------------------------------------------------------- output


def versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (ROOT / "e2e" / "cluster" / "versions.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    out["kopf"] = kopf.__version__
    out["kubernetes-client"] = kubernetes.__version__
    postgres = next(Path("/usr/lib/postgresql").glob("*/bin/postgres"), Path("postgres"))
    for key, argv in (
        ("postgres", [str(postgres), "--version"]),
        ("redis", ["redis-server", "-v"]),
    ):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            text = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
            if found := re.search(r"\d+\.\d+(\.\d+)?", text):
                out[key] = found.group(0)
    return out


def _triple(summary: dict[str, float] | None) -> str:
    if not summary:
        return "n/a"
    return " / ".join(f"{summary[k]:.2f}" for k in ("p50", "p95", "max")) + " s"


def _verdict(value: float | None, target: float) -> str:
    if value is None:
        return "not measured"
    return "meets the target" if value <= target else "misses the target"


def _top(counts: dict[str, int], n: int = 6) -> list[tuple[str, int]]:
    return list(counts.items())[:n]


def _requests(shapes: list[dict[str, Any]]) -> str:
    return ", ".join(f"{s['count']} {s['request']}" for s in shapes) or "none"


def _busiest(cpu: dict[str, float], wall: float) -> str:
    top = sorted(((v, k) for k, v in cpu.items() if k != "benchmark"), reverse=True)[:3]
    cores = os.cpu_count() or 1
    return f"of {cores * wall:.0f} CPU-s ({cores} cores): " + ", ".join(
        f"{k} {v:.0f}" for v, k in top
    )


def _converge_reading(conv: dict[str, Any]) -> str:
    took, n = conv.get("seconds_to_all_ready"), conv["tenants"]
    if conv["operator_writes"] == 0:
        return (
            f"{conv['outcome']}: the operator made no API write in "
            f"{conv['wall_seconds']:.0f} s after starting, so no tenant was reconciled"
        )
    verdict = _verdict(took, 120) if n >= 1000 else "below the target's size"
    rate = (conv["ready"] / took) if took else None
    return (
        f"{verdict}; {conv['operator_writes'] / n:.1f} writes per tenant"
        + (f", {rate:.1f} tenants/s" if rate else "")
        + "; CPU "
        + _busiest(conv["cpu_seconds"], conv["wall_seconds"])
    )


def summary_rows(res: dict[str, Any]) -> list[list[str]]:
    """The headline table: measure, result, DESIGN target, one-line reading."""
    rows: list[list[str]] = []
    if lat := res.get("latency"):
        solo = lat["solo"]["from_apply"]["available"]
        avail, ready = lat["from_apply"]["available"], lat["from_apply"]["ready"]
        steps = {k: v for k, v in lat["steps"].items() if v}
        big = max(steps, key=lambda k: steps[k]["p50"], default=None)
        rows.append([
            f"apply → gateway Deployment Available, one tenant at a time "
            f"({lat['solo']['tenants']} tenants), p50 / p95 / max",
            _triple(solo), "p95 ≤ 3 s", _verdict(solo and solo["p95"], 3),
        ])  # fmt: skip
        rows.append([
            f"apply → gateway Deployment Available, {lat['tenants']} tenants one per "
            f"{lat['interval_s'] * 1000:.0f} ms, p50 / p95 / max",
            _triple(avail),
            "p95 ≤ 3 s",
            _verdict(avail and avail["p95"], 3)
            + (f"; largest step: {MILESTONES[big]} ({STEP_OWNER[big]}), p50 "
               f"{steps[big]['p50']:.1f} s" if big else ""),
        ])  # fmt: skip
        rows.append([
            "apply → Tenant Ready (serving fast-code), same tenants, p50 / p95 / max",
            _triple(ready),
            "-",
            f"{lat['ready']}/{lat['tenants']} Ready ({lat['outcome']})",
        ])  # fmt: skip
    if idle := res.get("idle"):
        rows.append([
            f"API writes per tenant per idle resync ({idle['tenants']} tenants, resync "
            f"{idle['resync_s']:g} s, {idle['window_s']:.0f} s window)",
            f"{idle['writes_per_tenant_per_resync']:.2f} ({idle['writes']} writes, "
            f"{idle['tenant_gets']} Tenant reads)",
            "0",
            ("meets the target" if idle["writes"] == 0 else "misses the target")
            + f"; ~{idle['apiserver_reads_per_tenant_per_resync']:.0f} GET/LIST per tenant "
            "per resync",
        ])  # fmt: skip
    if (traffic := res.get("traffic")) and "writes" in traffic:
        idle_per_minute = (
            idle["writes"] / (idle["tenants"] * idle["window_s"] / 60) if idle else None
        )
        rows.append([
            f"API writes per tenant per minute under traffic ({traffic['tenants']} tenants, each "
            f"with a BudgetPolicy, spend added every {traffic['every_s']:g} s for "
            f"{traffic['window_s']:.0f} s)",
            f"{traffic['writes_per_tenant_per_minute']:.2f} ({traffic['writes']} writes); idle: "
            + (f"{idle_per_minute:.2f}" if idle_per_minute is not None else "n/a"),
            "≤ 2 (0 idle)",
            ("meets the target" if traffic["writes_per_tenant_per_minute"] <= 2
             and not (idle and idle["writes"]) else "misses the target")
            + f"; {traffic['policies_showing_spend']}/{traffic['tenants']} policies show spend",
        ])  # fmt: skip
    for point in (res.get("memory") or {}).get("points", []):
        if point.get("outcome", "ready") != "ready":
            reading = (
                f"sampled with a backlog: {point['ready']}/{point['added']} new tenants Ready "
                f"after {point['wall_seconds']:.0f} s ({point['outcome']})"
            )
        elif point.get("added"):
            reading = (
                f"{point['added']} added at once, all Ready in {point['seconds_to_ready']:.0f} s"
            )
        else:
            reading = "every tenant Ready"
        rows.append([
            f"operator RSS at {point['tenants']} tenants, median of {point.get('samples', 0)} "
            "(peak)",
            f"{report.fmt_mb(point.get('rss_mb'))} ({report.fmt_mb(point.get('hwm_mb'))})",
            "≤ 250 MB at 1000",
            reading,
        ])  # fmt: skip
    for conv in res.get("converge", []):
        took = conv.get("seconds_to_all_ready")
        rows.append([
            f"{conv['tenants']} tenants from cold (operator start → all Ready)",
            report.fmt_seconds(took, 0) if took else
            f"{conv['ready']}/{conv['tenants']} Ready after {conv['wall_seconds']:.0f} s",
            "≤ 120 s for 1000",
            _converge_reading(conv),
        ])  # fmt: skip
        if mem := conv.get("memory"):
            rows.append([
                f"operator RSS at {conv['tenants']} tenants "
                + ("after convergence" if conv.get("outcome", "ready") == "ready"
                   else "with a backlog")
                + " (peak)",
                f"{report.fmt_mb(mem['rss_mb'])} ({report.fmt_mb(mem['hwm_mb'])})",
                "≤ 250 MB at 1000",
                _verdict(mem["rss_mb"], 250) if conv["tenants"] >= 1000 else "-",
            ])  # fmt: skip
    return rows


def _p50(summary: dict[str, float] | None) -> str:
    return report.fmt_seconds(summary["p50"]) if summary else "n/a"


def render_section(res: dict[str, Any]) -> str:
    """The `## Operator` section of docs/benchmarks.md."""
    m, v = res["machine"], res["versions"]
    out = [
        f"Measured {res['date']} on {m['cores']} cores ({m['cpu']}), {m['memory_gb']} GB RAM, "
        f"Linux {m['kernel']}. Control plane: Kubernetes {v.get('KUBERNETES_VERSION')} "
        f"(kube-apiserver, kube-controller-manager, kube-scheduler), etcd "
        f"{v.get('ETCD_VERSION')}, kwok {v.get('KWOK_VERSION')} simulating the nodes"
        + (", started for the benchmark alone (--isolated)" if res["isolated"] else "")
        + f". Operator: kopf {v.get('kopf')}, Python {m['python']}, "
        + (
            f"provisioning PostgreSQL {v.get('postgres', '?')} and Redis {v.get('redis', '?')} "
            "storage per tenant."
            if res["storage"]
            else "storage provisioning off (--no-storage)."
        ),
        "",
        "```",
        res["command"],
        "```",
        "",
        "The operator runs as a process (`kopf run`) with its ServiceAccount's token. Each tenant "
        "is a Tenant (one `ollama` provider, which needs no credential Secret; one key; one "
        "gateway replica), a ModelAlias `fast-code` and a BudgetPolicy `monthly` (1000 USD), "
        "which the benchmark creates as soon as the operator has made the namespace. Under "
        "traffic the benchmark adds each round's spend to every tenant's budget counter in Redis "
        "(INCRBY, as the gateways do) while the operator runs with its default budget settings. "
        "Times run from the benchmark's create call to "
        "the moment a watch sees the change; writes and Tenant reads are counted from the API "
        "server's audit log, other reads from its `/metrics`, CPU from `/proc`.",
        "",
        report.markdown_table(["Measure", "Result", "Target", "Reading"], summary_rows(res)),
    ]
    if lat := res.get("latency"):
        solo = lat["solo"]["from_apply"]
        rows = [
            [MILESTONES[k], STEP_OWNER[k], _p50(solo.get(k)), _triple(lat["from_apply"].get(k)),
             _p50(lat["steps"].get(k))]
            for k in STEPS[1:]
        ]  # fmt: skip
        out += [
            "",
            "### Where a tenant's time goes",
            "",
            report.markdown_table(
                ["Milestone", "Done by", "Alone: p50", "Paced: p50 / p95 / max", "Paced: step p50"],
                rows,
            ),
            "",
            f"Bringing up the {lat['tenants']} paced tenants took {lat['operator_writes']} "
            f"operator writes: {_requests(lat['operator_writes_by_request'])}.",
        ]
    if idle := res.get("idle"):
        out += [
            "",
            f"Restarting the operator on {idle['tenants']} Ready tenants cost "
            f"{idle['restart_writes']} writes ({_requests(idle['restart_writes_by_request'])}). "
            f"In the idle window: {idle['writes']} writes ({_requests(idle['writes_by_request'])});"
            f" each tenant was reconciled {idle['tenant_gets_per_tenant']['min']} to "
            f"{idle['tenant_gets_per_tenant']['max']} times; reads served by the API server "
            "(all clients): "
            + ", ".join(f"{n} {k}" for k, n in _top(idle["apiserver_reads_all_clients"]))
            + ".",
        ]  # fmt: skip
    if (traffic := res.get("traffic")) and "writes" in traffic:
        out += [
            "",
            f"Under traffic ({traffic.get('rounds', 0)} rounds of spend, "
            f"{traffic.get('usd_added', 0):.2f} USD in all): {traffic['writes']} writes "
            f"({_requests(traffic['writes_by_request'])}), of which "
            f"{traffic['budget_status_writes']} BudgetPolicy status patches.",
        ]
    for point in (res.get("memory") or {}).get("points", []):
        if point.get("added"):
            fa = point["from_apply"]
            out += [
                "",
                f"Adding {point['added']} tenants at once (to {point['tenants']}): apply → "
                f"Available {_triple(fa['available'])}, → Ready {_triple(fa['ready'])} (of the "
                f"{point['ready']} Ready); CPU "
                + _busiest(point["cpu_seconds"], point["wall_seconds"])
                + ".",
            ]
    for conv in res.get("converge", []):
        rows = [
            [MILESTONES[k], report.fmt_seconds(st["p50_tenants_s"], 1),
             report.fmt_seconds(st["p95_tenants_s"], 1), report.fmt_seconds(st["all_s"], 1),
             f"{st['reached']}/{conv['tenants']}"]
            for k in STEPS[2:]
            if (st := conv["stages_from_operator_start"].get(k))
        ]  # fmt: skip
        cpu = sorted(conv["cpu_seconds"].items(), key=lambda kv: -kv[1])
        out += [
            "",
            f"### Cold convergence of {conv['tenants']} tenants",
            "",
            f"Created with their namespaces and aliases while the operator was down (in "
            f"{conv['setup_s']:.0f} s); the clock starts when the operator process is spawned "
            f"(live after {conv['operator_live_s']:.1f} s); outcome: {conv['outcome']}.",
            "",
            report.markdown_table(
                ["Milestone (from operator start)", "50 % of tenants", "95 %", "all", "reached"],
                rows or [["no tenant reached any milestone", "-", "-", "-", "-"]],
            ),
            "",
            f"CPU seconds used in those {conv['wall_seconds']:.0f} s ({m['cores']} cores: "
            f"{m['cores'] * conv['wall_seconds']:.0f} CPU-s): "
            + ", ".join(f"{k} {val:.0f}" for k, val in cpu)
            + f". The operator read {conv['tenant_gets']} Tenants from the API server and made "
            f"{conv['operator_writes']} writes ({_requests(conv['operator_writes_by_request'])}).",
        ]
    problems = [(o["phase"], p) for o in res.get("operator_logs", []) for p in o["problems"]]
    out += [
        "",
        "### The operator's log",
        "",
        "Warnings and errors per phase, from `.dev/logs/operator-bench-<phase>.log` (the last "
        "phase's operator also handles the final cleanup):",
        "",
    ]
    out += [f"- {phase}: {p['count']} x `{p['message']}`" for phase, p in problems[:12]] or [
        "No warnings or errors in any phase."
    ]
    if res.get("warnings") or res.get("error"):
        out += ["", "### Caveats of this run", ""]
        out += [f"- {w}" for w in res.get("warnings", [])]
        if res.get("error"):
            out.append(f"- the run stopped early: {res['error']}")
    return "\n".join(out)


def target_rows(res: dict[str, Any]) -> list[report.TargetRow]:
    """Issue 13's operator targets with this run's values, for `make bench`'s one table."""
    rows: list[report.TargetRow] = []

    def row(measure: str, value: str, target: str, verdict: str) -> None:
        rows.append(report.TargetRow("operator", measure, value, target, verdict))

    if lat := res.get("latency"):
        avail = lat["from_apply"]["available"]
        p95 = avail["p95"] if avail and lat["outcome"] == "ready" else None
        row(f"operator: apply → Deployment Available, {lat['tenants']} tenants at "
            f"{1 / lat['interval_s']:g}/s, p95", report.fmt_seconds(p95), "≤ 3 s",
            report.verdict(p95, 3))  # fmt: skip
        per_tenant = lat["operator_writes"] / lat["tenants"]
        row("operator: API writes per new tenant (paced tenants)", f"{per_tenant:.1f}",
            "< 21 (issue 13's count)", report.verdict(per_tenant, 20.99))  # fmt: skip
    if idle := res.get("idle"):
        row(f"operator: API writes in an idle window ({idle['tenants']} tenants)",
            str(idle["writes"]), "0", report.verdict(idle["writes"], 0))  # fmt: skip
    if (traffic := res.get("traffic")) and "writes" in traffic:
        value = traffic["writes_per_tenant_per_minute"]
        row("operator: API writes per tenant per minute under budget traffic", f"{value:.2f}",
            "≤ 2", report.verdict(value, 2))  # fmt: skip
    for conv in res.get("converge", []):
        if conv["tenants"] < 1000:
            continue
        took = conv.get("seconds_to_all_ready")
        row(f"operator: {conv['tenants']} tenants from cold → all Ready",
            report.fmt_seconds(took, 0) if took else
            f"{conv['ready']}/{conv['tenants']} after {conv['wall_seconds']:.0f} s",
            "≤ 120 s", report.verdict(took, 120))  # fmt: skip
        rss = (conv.get("memory") or {}).get("rss_mb")
        row(f"operator: RSS at {conv['tenants']} tenants"
            + ("" if conv.get("outcome", "ready") == "ready"
               else " (sampled with tenants not yet Ready)"),
            report.fmt_mb(rss), "≤ 250 MB", report.verdict(rss, 250))  # fmt: skip
    return rows


def render_table(res: dict[str, Any]) -> str:
    return report.text_table(["Measure", "Result", "Target", "Reading"], summary_rows(res))


# --------------------------------------------------------------------------- main


ISOLATED = DEV / "bench" / "isolated"
# Ports of the isolated control plane; up.sh also takes API_PORT+1..+3 and ETCD_PORT+10.
ISOLATED_ENV = {"TENANTGW_API_PORT": "17443", "TENANTGW_ETCD_PORT": "24790"}


def _script(path: Path, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(
        ["bash", str(path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800
    )
    if proc.returncode != 0:
        raise BenchError(f"{path} exited {proc.returncode}:\n{proc.stderr[-3000:]}")


def bring_up(args: argparse.Namespace) -> tuple[Cluster, Path, dict[str, str]]:
    """Start or reuse the control plane (and, with storage, PostgreSQL and Redis).

    --isolated runs the project's own cluster scripts from a copy under .dev/bench/isolated:
    they put their state next to themselves, so the copy gets a control plane of its own.
    """
    dev = DEV
    if args.isolated:
        scripts = ISOLATED / "e2e" / "cluster"
        shutil.copytree(ROOT / "e2e" / "cluster", scripts, dirs_exist_ok=True)
        for helper in (ROOT / "e2e").glob("*.sh"):  # what the cluster scripts call
            shutil.copy2(helper, ISOLATED / "e2e" / helper.name)
        tenants = max([args.tenants + args.solo, *args.converge, *args.scale])
        nodes = str(max(2, -(-(tenants + 100) // 500)))
        say(f"starting an isolated control plane with {nodes} kwok nodes")
        _script(scripts / "up.sh", {**os.environ, **ISOLATED_ENV, "TENANTGW_KWOK_NODES": nodes})
        dev = ISOLATED / ".dev"
    else:
        _script(ROOT / "e2e" / "cluster" / "up.sh")
    if not args.no_storage:
        _script(ROOT / "e2e" / "services" / "up.sh")
    env = _read_env(dev / "cluster.env")
    cluster = Cluster(kubeconfig=Path(env["KUBECONFIG"]), bin_dir=Path(env["PATH"].split(":")[0]))
    services = {} if args.no_storage else _read_env(DEV / "services.env")
    return cluster, dev, {k: services[k] for k in STORAGE_ENV if k in services}


def wait_for_other_operators(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while others := operator_pids():
        if time.monotonic() > deadline:
            raise BenchError(f"another tenantgw operator is still running: pids {others}")
        say(f"waiting for the running operator (pids {others}) to exit: two would both reconcile")
        time.sleep(10)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m e2e.bench.operator_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = p.add_argument
    add("--tenants", type=int, default=50, help="tenants of the latency phase (default 50)")
    add("--interval", type=float, default=0.2, help="seconds between their applies")
    add("--scale", type=_ints, default=[50, 500],
        help="tenant counts at which to sample the operator's memory (default 50,500)")  # fmt: skip
    add("--converge", type=_ints, default=[],
        help="tenants to converge from cold, e.g. 150,1000 (default: skip)")  # fmt: skip
    add("--solo", type=int, default=5, help="tenants applied one at a time first (baseline)")
    add("--stall-timeout", type=float, default=120,
        help="give up waiting when no tenant progressed for this long (s)")  # fmt: skip
    add("--resync", type=float, default=10, help="resync period of the idle phase (s)")
    add("--traffic-seconds", type=float, default=180,
        help="length of the budget traffic window, 0 to skip (default 180)")  # fmt: skip
    add("--traffic-every", type=float, default=2,
        help="seconds between rounds of spend on every budget (default 2)")  # fmt: skip
    add("--default-resync", type=float, default=300, help="resync of the other phases (s)")
    add("--scale-timeout", type=float, default=300, help="cap per scale point (s)")
    add("--converge-timeout", type=float, default=420, help="cap of cold convergence (s)")
    add("--cleanup-timeout", type=float, default=420, help="cap of the final cleanup (s)")
    add("--wait-for-other", type=float, default=900,
        help="seconds to wait for another session's operator to exit")  # fmt: skip
    add("--no-storage", action="store_true", help="run without PostgreSQL and Redis")
    add("--isolated", action="store_true",
        help="run on a control plane of its own, stopped at the end")  # fmt: skip
    add("--out", type=Path, default=report.DOC, help="results page (Markdown)")
    add("--json", type=Path, default=DEV / "bench" / "operator.json", help="results (JSON)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    cluster, cluster_dev, storage_env = bring_up(args)
    if not args.isolated:
        wait_for_other_operators(args.wait_for_other)
    b = Bench(args, cluster, cluster_dev, storage_env)
    say(f"run {b.run}: tenants are named bench-{b.run}-NNNN")
    res: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python -m e2e.bench.operator_bench", *given]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": report.machine(),
        "versions": versions(),
        "storage": not args.no_storage,
        "isolated": args.isolated,
        "run": b.run,
    }
    b.prepare()
    b.tracker.start()
    if not args.isolated:
        b.watch_for_other_operators()
    try:
        b.start_operator("latency", args.default_resync)
        res["latency"] = phase_latency(b)
        res["idle"] = phase_idle(b)
        if args.traffic_seconds > 0:
            res["traffic"] = phase_traffic(b)
        res["memory"] = phase_memory(b)
        res["converge"] = []
        for k, n in enumerate(args.converge):
            res["converge"].append(phase_converge(b, n, "cdefgh"[k % 6]))
    except (Exception, KeyboardInterrupt) as exc:
        res["error"] = f"{type(exc).__name__}: {exc}"
        say(f"stopped early: {res['error']}")
    try:
        res["cleanup"] = b.cleanup()
    except (Exception, KeyboardInterrupt) as exc:
        res["error"] = res.get("error") or f"cleanup failed: {type(exc).__name__}: {exc}"
        say(f"cleanup failed: {exc}; delete tenants labelled {BENCH_LABEL}={b.run} by hand")
    b.pool.shutdown(wait=False, cancel_futures=True)
    if args.isolated:
        _script(ISOLATED / "e2e" / "cluster" / "down.sh")
    if b.others_seen:
        b.warnings.append(
            f"other sessions' operators (pids {sorted(b.others_seen)}) reconciled the same "
            "control plane during the run: counts and times include their work; use --isolated"
        )
    if b.audit.rotated:
        b.warnings.append("the audit log rotated during the run: some requests were not counted")
    res["warnings"] = b.warnings + contention(res)
    res["operator_logs"] = b.operators
    report.write_json(args.json, res)
    report.write_section("Operator", render_section(res), args.out)
    report.write_targets("operator", target_rows(res))
    print(render_table(res))
    print(f"\nwrote {args.json} and the Operator section of {args.out}")
    return 1 if res.get("error") else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as err:
        print(f"operator benchmark: {err}", file=sys.stderr)
        sys.exit(2)
