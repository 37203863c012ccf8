"""The "Operator and gateway restore" procedure of docs/disaster-recovery.md, run from the page.

User story: the platform team loses the cluster's state for tenantgw (the operator's Secrets,
the Tenant, its namespace with the gateway's Secrets) while PostgreSQL and Redis survive. It
follows the page: restores the operator's Secrets before the operator starts, then the
tenant's namespace, Secrets and objects as Argo CD would. Afterwards the developers' key still
authenticates at the tenant's gateway, the gateway's storage credentials still work, the rows
from before and after the loss are in one ledger, and the audit trail's checkpoints signed
before and after the restore verify with the key from the backup. Restored without the signing
key, the operator makes a new one and the old checkpoints no longer verify with it.

Against the real control plane, the real operator (its ServiceAccount; its storage credentials
read from the restored `tenantgw-admin` Secret, as the Deployment's secretKeyRef does), the
shared PostgreSQL and Redis and a real gateway process run from the cluster's objects
(`tenantctl dev gateway`) in front of the provider simulator. The page's `run-by` blocks are
run with bash. The session's operator is stopped for this module; the operator's signing key
and `tenantgw-admin` are put back as they were afterwards.
"""

# ruff: noqa: S608  (SQL names the throwaway tenant's schemas)
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any

import openai
import psycopg
import pytest
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from e2e.fixtures import DEV, ROOT, Cluster, Services
from e2e.gateway_fixture import wait_ready
from e2e.helpers import K8s, alias_body, eventually, secret_body, tenant_body
from e2e.operator_fixture import (
    OPERATOR_NS,
    RunningOperator,
    free_port,
    start_operator,
    stop_operator,
)
from e2e.provider_sim import SimulatorHandle, start_simulator
from tenantgw.api.audit_trail import PRIVATE_KEY_FIELD, SIGNING_PUBLIC, SIGNING_SECRET, audit_schema
from tenantgw.cli import devgateway
from tenantgw.tenancy import schema_name

pytestmark = pytest.mark.e2e

PAGE = ROOT / "docs" / "disaster-recovery.md"
ADMIN_SECRET = "tenantgw-admin"
ADMIN_KEYS = ("TENANTGW_POSTGRES_DSN", "TENANTGW_REDIS_URL")
PUBLIC_FIELD = "ed25519.pub"


def doc_block(label: str) -> str:
    """The shell block of the page that follows `<!-- run-by: e2e/<this file> <label> -->`."""
    marker = re.escape(f"<!-- run-by: e2e/{Path(__file__).name} {label} -->")
    found = re.search(marker + r"\s*```sh\n(.*?)```", PAGE.read_text(), re.S)
    assert found, f"docs/disaster-recovery.md has no run-by block {label!r}"
    return found.group(1)


def run_block(
    label: str, env: dict[str, str], *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a block of the page with bash (errexit, nounset, pipefail)."""
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", doc_block(label)],
        env=env,
        cwd=env["HOME"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check:
        assert done.returncode == 0, f"{label} failed:\n{done.stdout}\n{done.stderr}"
    return done


def tenant_spec() -> dict[str, Any]:
    return {
        "providers": [
            {
                "name": "sim",
                "type": "openai-compatible",
                "apiBase": "http://127.0.0.1:9/v1",  # the simulator's URL is set at start-up
                "region": "us-east-1",
                "credentialsSecretRef": {"name": "sim", "key": "apiKey"},
            }
        ],
        "catalog": [{"provider": "sim", "model": "*", "costTier": "medium"}],
        "keys": [{"name": "alice"}],
        "routing": {"defaultAlias": "fast-code"},
        "gateway": {"replicas": 1},
        "compliance": {"audit": {"enabled": True, "bodies": "redacted", "retentionDays": 365}},
        "deletionPolicy": "Delete",
    }


@dataclass
class Restore:
    """The module's tenant, its storage as the admin sees it, and the operator of the module."""

    cluster: Cluster
    k8s: K8s
    kube: ApiClient
    services: Services
    name: str
    ns: str
    env: dict[str, str]
    """The environment the page's blocks run with."""
    backup: Path
    current: RunningOperator | None = None

    # ------------------------------------------------------------------ the operator

    def admin_env(self) -> dict[str, str]:
        """The operator Deployment's env from Secret `tenantgw-admin` (optional keys)."""
        try:
            data = self.k8s.core.read_namespaced_secret(ADMIN_SECRET, OPERATOR_NS).data or {}
        except ApiException as exc:
            if exc.status != 404:
                raise
            data = {}
        # Empty when the Secret lacks them: nothing from this test process's environment leaks in.
        return {k: base64.b64decode(data[k]).decode() if k in data else "" for k in ADMIN_KEYS}

    def start(self, **extra: str) -> None:
        assert self.current is None
        self.current = start_operator(
            self.cluster, resync_seconds=5, extra_env={**self.admin_env(), **extra}
        )

    def stop(self) -> None:
        if self.current is not None:
            stop_operator(self.current)
            with (self.current.log_file.parent / "operator-restore.log").open("a") as kept:
                kept.write(self.current.log_file.read_text(errors="replace"))
            self.current = None

    # ------------------------------------------------------------------ storage, as the admin

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.services.postgres_dsn, autocommit=True) as conn:
            cur = conn.execute(statement.encode())
            return cur.fetchall() if cur.description else []

    def ledger_ids(self) -> set[str]:
        return {r[0] for r in self.sql(f"SELECT request_id FROM {schema_name(self.name)}.usage")}

    def heads(self) -> tuple[int, int]:
        """(last record's seq, last signed checkpoint's seq) of the tenant's audit trail."""
        schema = audit_schema(self.name)
        head = self.sql(f"SELECT coalesce(max(seq), 0) FROM {schema}.records")[0][0]
        signed = self.sql(
            f"SELECT coalesce(max(seq), 0) FROM {schema}.checkpoints WHERE kind = 'checkpoint'"
        )[0][0]
        return int(head), int(signed)

    def signed_up_to_head(self, above: int) -> int:
        """Wait until the operator signed the head and it is past `above`; the signed seq."""

        def signed() -> int | None:
            head, at = self.heads()
            return at if at == head and at > above else None

        result: int = eventually(signed, 60, "a checkpoint signing the trail's head")
        return result

    # ------------------------------------------------------------------ the cluster side

    def signing_public(self) -> str | None:
        try:
            cm = self.k8s.core.read_namespaced_config_map(SIGNING_PUBLIC, OPERATOR_NS)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return None
        return (cm.data or {}).get(PUBLIC_FIELD)

    def lose_everything_but_storage(self) -> None:
        """What a rebuilt cluster lacks: the operator's Secrets, the Tenant, its namespace.

        Nobody runs the Tenant's finalizer (etcd is gone, not the Tenant deleted), so the
        finalizer is removed and the storage stays as it was."""
        assert self.current is None, "the operator is stopped first"
        for kind, name in (("secret", ADMIN_SECRET), ("secret", SIGNING_SECRET),
                           ("configmap", SIGNING_PUBLIC)):  # fmt: skip
            self.cluster.run_kubectl("-n", OPERATOR_NS, "delete", kind, name, "--ignore-not-found")
        self.cluster.run_kubectl(
            "patch", "tenant", self.name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
        )
        self.cluster.run_kubectl("delete", "tenant", self.name, "--wait=true")
        self.cluster.run_kubectl("delete", "namespace", self.ns, "--wait=true", "--timeout=120s")
        assert not self.k8s.namespace_exists(self.ns)


@dataclass
class RunningGateway:
    url: str
    process: Popen[bytes]
    log_file: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_gateway(r: Restore, simulator_url: str, tag: str) -> RunningGateway:
    """The tenant's gateway from exactly what its pod would mount (`tenantctl dev gateway`)."""
    port = free_port()
    spec = devgateway.build_spec(
        r.kube, r.name, workdir=DEV / "gateways" / f"{r.name}-{tag}", port=port,
        upstreams={"*": simulator_url},
    )  # fmt: skip
    spec.env["PYTHONPATH"] = str(ROOT / "operator")  # this checkout's gateway plugins
    log_file = DEV / "logs" / f"gateway-{r.name}-{tag}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    process = devgateway.run(spec, log_file=log_file)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process, log_file)
    return RunningGateway(url, process, log_file)


def ask(url: str, key: str, text: str) -> str:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)
    answer = client.chat.completions.create(
        model="fast-code", messages=[{"role": "user", "content": text}]
    )
    return answer.id


def refused(url: str, key: str) -> int:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="fast-code", messages=[{"role": "user", "content": "who am I"}]
        )
    return caught.value.status_code


@dataclass(frozen=True)
class OperatorState:
    """What this module changes in `tenantgw-system`, as it was before, to put back after."""

    private_key: str | None
    public_key: str | None
    admin: dict[str, str] | None


def snapshot(k8s: K8s) -> OperatorState:
    def secret(name: str) -> dict[str, str] | None:
        try:
            data = k8s.core.read_namespaced_secret(name, OPERATOR_NS).data or {}
        except ApiException as exc:
            if exc.status != 404:
                raise
            return None
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    signing = secret(SIGNING_SECRET) or {}
    try:
        cm = k8s.core.read_namespaced_config_map(SIGNING_PUBLIC, OPERATOR_NS)
        public = (cm.data or {}).get(PUBLIC_FIELD)
    except ApiException as exc:
        if exc.status != 404:
            raise
        public = None
    return OperatorState(signing.get(PRIVATE_KEY_FIELD), public, secret(ADMIN_SECRET))


def put_back(cluster: Cluster, k8s: K8s, state: OperatorState) -> None:
    """`tenantgw-system` as `snapshot` found it (the signing key above all: other tenants'
    checkpoints are signed with it)."""
    for name, data in ((SIGNING_SECRET, {PRIVATE_KEY_FIELD: state.private_key}
                        if state.private_key else None), (ADMIN_SECRET, state.admin)):  # fmt: skip
        cluster.run_kubectl("-n", OPERATOR_NS, "delete", "secret", name, "--ignore-not-found")
        if data is not None:
            body = secret_body(OPERATOR_NS, name, data)
            body["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "tenantgw-operator"}
            k8s.apply(body)
    if state.public_key is not None:
        k8s.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": SIGNING_PUBLIC,
                    "namespace": OPERATOR_NS,
                    "labels": {"app.kubernetes.io/managed-by": "tenantgw-operator"},
                },
                "data": {PUBLIC_FIELD: state.public_key},
            }
        )


@pytest.fixture(scope="module")
def restore(
    kube: ApiClient,
    cluster: Cluster,
    services: Services,
    operator: RunningOperator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Restore]:
    """A Ready, audited tenant on an operator configured from Secret `tenantgw-admin`."""
    k8s = K8s(kube)
    state = snapshot(k8s)
    name = f"dr-{uuid.uuid4().hex[:6]}"
    home = tmp_path_factory.mktemp("operator-restore")
    env = {
        **cluster.env(),
        "PATH": f"{Path(sys.executable).parent}:{cluster.env()['PATH']}",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT)]),
        "HOME": str(home),
        "TENANT": name,
        "BACKUP_DIR": str(home / "backup"),
        "TENANTGW_POSTGRES_DSN": services.postgres_dsn,
    }
    r = Restore(cluster, k8s, kube, services, name, f"tenant-{name}", env, home / "backup")
    stop_operator(operator)
    try:
        # The install: the admin Secret the operator's Deployment reads.
        k8s.apply(secret_body(OPERATOR_NS, ADMIN_SECRET, {
            "TENANTGW_POSTGRES_DSN": services.postgres_dsn,
            "TENANTGW_REDIS_URL": services.redis_url,
        }))  # fmt: skip
        r.start()
        yield r
    finally:
        r.stop()
        put_back(cluster, k8s, state)
        storage = {
            "TENANTGW_POSTGRES_DSN": services.postgres_dsn,
            "TENANTGW_REDIS_URL": services.redis_url,
        }
        again = start_operator(cluster, resync_seconds=5, extra_env=storage)
        operator.process, operator.log_file = again.process, again.log_file
        k8s.delete("tenantgw.io/v1alpha1", "Tenant", name)  # Delete: schemas, role, namespace
        eventually(lambda: not k8s.tenant_exists(name), 120, f"Tenant {name} deleted")


def test_a_rebuilt_cluster_gets_its_tenant_back_with_the_same_keys_ledger_and_signing_key(
    restore: Restore,
) -> None:
    r, k8s = restore, restore.k8s
    simulator: SimulatorHandle | None = None
    gateway: RunningGateway | None = None
    try:
        # A tenant at work: requests through its gateway, ledger rows, a signed trail.
        k8s.apply(tenant_body(r.name, **tenant_spec()))
        eventually(lambda: k8s.namespace_exists(r.ns), 30, f"namespace {r.ns}")
        k8s.apply(secret_body(r.ns, "sim", {"apiKey": "sim-key-" + r.name}))
        k8s.apply(alias_body(r.ns, "fast-code", targets=[{"provider": "sim", "model": "sim-fast"}]))
        k8s.wait_condition(lambda: k8s.tenant(r.name), "Ready", "True", timeout=120)
        simulator_url, simulator = start_simulator()
        gateway = start_gateway(r, simulator_url, "before")
        key = k8s.secret_value(r.ns, "gateway-key-alice", "apiKey")
        gateway_secret = {
            field: k8s.secret_value(r.ns, "gateway", field)
            for field in ("masterKey", "postgresDsn", "redisUrl")
        }
        for i in range(3):
            ask(gateway.url, key, f"before the loss {i}")
        assert refused(gateway.url, key + "x") == 401
        eventually(lambda: len(r.ledger_ids()) == 3 or None, 60, "3 ledger rows")
        gateway.stop()
        gateway = None
        signed_before = r.signed_up_to_head(0)
        ids_before = r.ledger_ids()
        public_before = r.signing_public()
        assert public_before

        # The backup of the page.
        run_block("export", r.env)
        assert (r.backup / "audit-signing.pub").read_text() == public_before
        exported = json.loads((r.backup / "operator-secrets.json").read_text())
        assert {i["metadata"]["name"] for i in exported["items"]} == {
            ADMIN_SECRET,
            SIGNING_SECRET,
        }
        for item in exported["items"]:
            assert "uid" not in item["metadata"]
            assert "ownerReferences" not in item["metadata"]

        # The disaster: the operator is gone with the cluster's state; storage survives.
        r.stop()
        r.lose_everything_but_storage()
        assert r.signing_public() is None

        # The restore of the page: operator Secrets, the operator, then the tenant.
        run_block("restore-operator", r.env)
        r.start()
        run_block("restore-tenant", r.env)
        assert k8s.secret_value(r.ns, "gateway-key-alice", "apiKey") == key
        for field, value in gateway_secret.items():
            assert k8s.secret_value(r.ns, "gateway", field) == value, field
        tenant_uid = k8s.tenant(r.name)["metadata"]["uid"]
        eventually(
            lambda: [o.uid for o in k8s.core.read_namespaced_secret("gateway", r.ns)
                     .metadata.owner_references or []] == [tenant_uid] or None,
            30, "the restored Secret owned by the restored Tenant",
        )  # fmt: skip

        # The developers' key works at the restored gateway, which writes to the same ledger.
        gateway = start_gateway(r, simulator_url, "after")
        for i in range(2):
            ask(gateway.url, key, f"after the restore {i}")
        assert refused(gateway.url, key + "x") == 401
        eventually(lambda: len(r.ledger_ids()) == 5 or None, 60, "5 ledger rows")
        ids = r.ledger_ids()
        assert ids_before < ids
        assert len(ids - ids_before) == 2
        gateway.stop()
        gateway = None

        # The trail: a checkpoint signed after the restore, both verify with the backup's key.
        signed_after = r.signed_up_to_head(signed_before)
        assert signed_after > signed_before
        verified = run_block("verify", r.env).stdout.splitlines()
        assert verified[-1].startswith(f"OK: audit trail of {r.name} verifies ("), verified
        checkpoints = int(re.search(r"(\d+) signed checkpoints", verified[-1]).group(1))  # type: ignore[union-attr]
        assert checkpoints >= 2

        # Restored WITHOUT the signing key: the operator makes a new one, and the checkpoints
        # signed before no longer verify with the ConfigMap's key.
        r.stop()
        for kind, name in (("secret", SIGNING_SECRET), ("configmap", SIGNING_PUBLIC)):
            r.cluster.run_kubectl("-n", OPERATOR_NS, "delete", kind, name)
        vault = r.backup.parent / "vault-without-signing-key"
        vault.mkdir()
        kept = json.loads((r.backup / "operator-secrets.json").read_text())
        kept["items"] = [i for i in kept["items"] if i["metadata"]["name"] == ADMIN_SECRET]
        (vault / "operator-secrets.json").write_text(json.dumps(kept))
        (vault / "audit-signing.pub").write_text(public_before)
        run_block("restore-operator", {**r.env, "BACKUP_DIR": str(vault)})
        r.start(TENANTGW_AUDIT_CHECKPOINT_SECONDS="3600")  # signs nothing with the new key
        new_public = eventually(
            lambda: (p := r.signing_public()) and p != public_before and p, 60,
            "a new public key in the ConfigMap",
        )  # fmt: skip
        assert new_public != public_before
        plain = subprocess.run(
            ["tenantctl", "audit", "verify", r.name],
            env=r.env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert plain.returncode == 1, plain.stdout + plain.stderr
        assert "signed by unknown key" in plain.stderr
        assert run_block("verify", r.env, check=False).returncode != 0
        # The page's answer to a key change: every key the trail was signed with.
        both = run_block("verify-after-key-change", r.env).stdout.splitlines()
        assert both[-1].startswith(f"OK: audit trail of {r.name} verifies ("), both
    finally:
        if gateway is not None:
            gateway.stop()
        if simulator is not None:
            simulator.stop()
