"""The two images `make images` builds, run as containers: what a platform team would deploy.

- Each image runs as its numeric non-root user, carries exactly the distributions of its lock
  file (hash-checked at build time), no compiler, pip or apt, and only its own side of the
  split (no LiteLLM in the operator, no Kubernetes client in the gateway); every shared object
  of its packages finds its libraries in the Debian base.
- The gateway image runs as the container the operator renders (its command, env, mounted
  ConfigMap and Secret, read-only root filesystem, every capability dropped), and the real
  Claude Code CLI runs a tool turn through it against the provider simulator; the answer is
  metered in the tenant's ledger, and from inside the container the root filesystem cannot be
  written.
- The operator image runs as the install's Deployment (its command, env, securityContext) with
  the operator's ServiceAccount, in place of the session's operator process, and reconciles a
  copy of the brief's example tenant (examples/) to Ready, creating its namespace, gateway
  Deployment (naming the gateway image) and provider Secrets' consumers.

The images are built by docker/build.sh (cached: seconds when nothing changed) and run by ID.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient

from e2e.claude import ClaudeCodeError
from e2e.containers import Image, ImageError, built_images, inspect_image, podman, run_in_image
from e2e.fixtures import ROOT, Cluster, Services
from e2e.gateway_fixture import load_examples
from e2e.helpers import K8s, eventually
from e2e.operator_fixture import (
    RunningOperator,
    start_operator,
    start_operator_container,
    stop_operator,
)
from e2e.provider_sim import SimulatorHandle
from e2e.rendered_gateway import Gateway, alice_inputs, run_rendered_gateway
from tenantgw.api import ModelAlias, Tenant
from tenantgw.render import RenderInputs, StorageEndpoints

pytestmark = pytest.mark.e2e

UID = 65532
TENANT = "img-" + secrets.token_hex(3)
NAMESPACE = f"tenant-{TENANT}"
MODEL = "claude-sonnet-4-5"
PROVIDER_KEY = "sk-ant-sim-provider-" + secrets.token_hex(6)
BUILD_TOOLS = ("gcc", "cc", "make", "pip", "pip3", "apt", "apt-get")


@pytest.fixture(scope="module")
def images() -> dict[str, Image]:
    try:
        return built_images()
    except ImageError as exc:
        pytest.fail(str(exc), pytrace=False)


def locked(lock: Path) -> dict[str, str]:
    """`name: version` of every pin in a lock file, names normalised (PEP 503)."""
    pins = re.findall(r"^([A-Za-z0-9._-]+)==([^\s\\]+)", lock.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins}


INSTALLED = (
    "import importlib.metadata as m, json, re; print(json.dumps({re.sub(r'[-_.]+', '-', "
    "d.metadata['Name']).lower(): d.version for d in m.distributions()}))"
)
PROBE = (
    "import importlib.util as u, json, os, shutil, sys; print(json.dumps({'uid': os.getuid(), "
    "'gid': os.getgid(), 'tools': [t for t in sys.argv[1:] if shutil.which(t)], 'modules': "
    "[m for m in ('pip', 'setuptools', 'litellm', 'kubernetes', 'kopf') if u.find_spec(m)]}))"
)


@pytest.mark.parametrize("name", ["gateway", "operator"])
def test_image_is_non_root_locked_and_carries_no_build_tools(
    images: dict[str, Image], name: str
) -> None:
    """Numeric non-root USER, exactly the lock's distributions, no compiler, pip or apt."""
    image = images[name]
    config = inspect_image(image.id)
    assert config["Config"]["User"] == f"{UID}:{UID}", "runAsNonRoot needs a numeric user"
    assert image.digest.startswith("sha256:")
    assert config["Digest"] == image.digest
    assert f"ghcr.io/tenantgw/{name}:0.1.0" in image.tags

    probe = run_in_image(image.id, "python", "-c", PROBE, *BUILD_TOOLS)  # the image's own user
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert (found["uid"], found["gid"]) == (UID, UID)
    assert found["tools"] == [], f"build tools in the final image: {found['tools']}"
    other_side = {"gateway": {"kubernetes", "kopf"}, "operator": {"litellm"}}[name]
    assert not {"pip", "setuptools"} & set(found["modules"]), found
    assert not other_side & set(found["modules"]), found

    installed = run_in_image(image.id, "python", "-c", INSTALLED)
    assert installed.returncode == 0, installed.stderr
    assert json.loads(installed.stdout) == locked(ROOT / "requirements" / f"{name}.lock")


LDD_MISSING = (
    'find /opt/venv -name "*.so*" -type f | while read -r f; do '
    'ldd "$f" 2>/dev/null | grep "not found" | sed "s|^|$f: |"; done'
)


@pytest.mark.parametrize("name", ["gateway", "operator"])
def test_every_shared_object_finds_its_libraries(images: dict[str, Image], name: str) -> None:
    """A wheel's extension linking a library the Debian base lacks (numpy needs the system's
    libstdc++) would only fail at import, in production: none may be missing."""
    proc = run_in_image(images[name].id, "bash", "-c", LDD_MISSING)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"libraries missing in the {name} image:\n{proc.stdout}"


def test_image_root_filesystem_cannot_be_written_as_its_user(images: dict[str, Image]) -> None:
    """Even without --read-only, the image's user owns nothing outside /tmp."""
    write = (
        "import sys\nfor p in sys.argv[1:]:\n    try:\n        open(p, 'w')\n"
        "    except OSError:\n        continue\n    print(p)"
    )
    targets = ("/opt/venv/bin/python-x", "/opt/tenantgw/tenantgw/x.py", "/etc/x", "/x")
    proc = podman(
        "run", "--rm", "--network=host", "--ulimit=nofile=1024:1024", "--ulimit=nproc=1024:1024",
        "--entrypoint=python", images["gateway"].id, "-c", write, *targets,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == []


def tenant_inputs(sim: SimulatorHandle, storage: StorageEndpoints, key: str) -> RenderInputs:
    """One anthropic provider (the simulator's Messages API), one alias naming Claude's model."""
    tenant = Tenant.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": TENANT, "uid": "00000000-0000-4000-8000-0000000a1401"},
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
                "catalog": [{"provider": "anthropic", "model": MODEL, "costTier": "high"}],
                "keys": [{"name": "alice"}],
                "routing": {"defaultAlias": "claude"},
                "gateway": {"replicas": 1},
            },
        }
    )
    alias = ModelAlias.model_validate(
        {
            "apiVersion": "tenantgw.io/v1alpha1",
            "kind": "ModelAlias",
            "metadata": {"name": "claude", "namespace": NAMESPACE},
            "spec": {"aliases": [MODEL], "targets": [{"provider": "anthropic", "model": MODEL}]},
        }
    )
    return dataclasses.replace(
        alice_inputs(tenant, [alias], storage, key), image="ghcr.io/tenantgw/gateway:0.1.0"
    )


@pytest.fixture(scope="module")
def gateway(
    images: dict[str, Image], services: Services, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    with run_rendered_gateway(
        services,
        tmp_path_factory.mktemp("gateway-image"),
        role_prefix="tg_image",
        inputs=tenant_inputs,
        provider_secrets={"anthropic": {"apiKey": PROVIDER_KEY}},
        simulator_kwargs={"api_key": PROVIDER_KEY},
        image=images["gateway"].id,
    ) as gateway:
        yield gateway


def running_container(image: Image) -> dict[str, Any]:
    proc = podman("ps", "--filter", f"ancestor={image.id}", "--format", "json")
    containers: list[dict[str, Any]] = json.loads(proc.stdout or "[]")
    assert len(containers) == 1, f"expected one container of the gateway image: {containers}"
    inspected = podman("container", "inspect", containers[0]["Id"])
    found: list[dict[str, Any]] = json.loads(inspected.stdout)
    return found[0]


def test_claude_code_runs_a_tool_through_the_gateway_image(
    gateway: Gateway, images: dict[str, Image], tmp_path: Path
) -> None:
    """US-001 through the image: `claude -p` reads a file and answers, metered as alice's."""
    container = running_container(images["gateway"])
    assert container["HostConfig"]["ReadonlyRootfs"] is True
    assert container["Config"]["User"] == f"{UID}:{UID}"
    entrypoint = container["Config"]["Entrypoint"]  # podman 4.3 shows it as one string
    assert (entrypoint.split() if isinstance(entrypoint, str) else entrypoint) == [
        "python",
        "-m",
        "tenantgw.gateway",
    ], "the rendered command runs, not the image's own entrypoint"

    gateway.sim.configure(api_key=PROVIDER_KEY)
    try:
        started = gateway.claude_read_turn(MODEL, tmp_path).started
    except ClaudeCodeError as exc:
        pytest.fail(str(exc), pytrace=False)

    upstream = [r for r in gateway.sim.requests() if r["path"] == "/v1/messages"]
    assert upstream, "the provider received nothing"
    for request in upstream:  # the platform's key upstream, never the tenant's
        assert gateway.key not in json.dumps(request)
    rows = eventually(
        lambda: [r for r in [gateway.rows(started)] if len(r) >= len(upstream)],
        what="a ledger row per upstream call",
    )[0]
    assert {(r["key_name"], r["provider"], r["status"]) for r in rows} == {
        ("alice", "anthropic", "success")
    }


def test_nothing_outside_the_pods_volumes_is_writable_in_the_gateway_container(
    gateway: Gateway, images: dict[str, Image]
) -> None:
    """From inside the running gateway: the root filesystem and the mounted config refuse writes;
    only the /tmp volume takes them."""
    container = running_container(images["gateway"])
    write = (
        "import sys\nfor p in sys.argv[1:]:\n    try:\n        open(p, 'w').write('x')\n"
        "    except OSError as e:\n        print(p, e.errno)\n        continue\n    print(p, 0)"
    )
    targets = (
        "/opt/venv/x",
        "/etc/tenantgw/config/config.yaml",
        "/etc/tenantgw/secret/k",
        "/tmp/x",
    )
    proc = podman("exec", container["Id"], "python", "-c", write, *targets)
    assert proc.returncode == 0, proc.stderr
    outcome = dict(line.split() for line in proc.stdout.splitlines())
    assert outcome == {
        "/opt/venv/x": "30",  # EROFS
        "/etc/tenantgw/config/config.yaml": "30",
        "/etc/tenantgw/secret/k": "30",
        "/tmp/x": "0",
    }


@pytest.fixture(scope="module")
def operator_image(
    images: dict[str, Image],
    cluster: Cluster,
    services: Services,
    operator: RunningOperator,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningOperator]:
    """The operator image in place of the session's operator process, which comes back after."""
    admin = {
        "TENANTGW_POSTGRES_DSN": services.postgres_dsn,
        "TENANTGW_REDIS_URL": services.redis_url,
    }
    stop_operator(operator)
    try:
        running = start_operator_container(
            cluster,
            images["operator"].id,
            tmp_path_factory.mktemp("operator-image"),
            admin=admin,
            resync_seconds=5,
        )
        try:
            yield running
        finally:
            stop_operator(running)
    finally:
        again = start_operator(cluster, resync_seconds=5, extra_env=admin)
        operator.process, operator.log_file = again.process, again.log_file


def example_copy() -> list[dict[str, Any]]:
    """examples/ for a tenant named TENANT: the Tenant first, then its namespace's objects."""
    docs = load_examples()
    text = yaml.safe_dump_all(
        [
            d
            for group in ("tenant", "provider-secrets", "model-aliases", "budget")
            for d in docs[group]
        ]
    )
    copied = [
        d
        for d in yaml.safe_load_all(
            text.replace("tenant-engineering-team", NAMESPACE).replace("engineering-team", TENANT)
        )
        if d
    ]
    copied[0]["spec"]["deletionPolicy"] = "Delete"  # a test leaves no data behind
    return copied


def test_operator_image_reconciles_the_example_tenant_to_ready(
    operator_image: RunningOperator, kube: ApiClient
) -> None:
    """The brief's example tenant, reconciled by the operator image alone."""
    k8s = K8s(kube)
    objects = example_copy()
    tenant, namespaced = objects[0], objects[1:]
    assert tenant["kind"] == "Tenant"
    k8s.apply(tenant)
    try:
        eventually(lambda: k8s.namespace_exists(NAMESPACE), 60, "the tenant's namespace")
        for obj in namespaced:
            k8s.apply(obj)
        k8s.wait_condition(lambda: k8s.tenant(TENANT), "Ready", "True", timeout=120)
        deployment = k8s.apps.read_namespaced_deployment("gateway", NAMESPACE)
        assert deployment.spec.template.spec.containers[0].image == "ghcr.io/tenantgw/gateway:0.1.0"
        assert operator_image.process.poll() is None, operator_image.log()[-4000:]
        assert TENANT in operator_image.log(), "the operator image logged nothing of the tenant"
        assert "Traceback" not in operator_image.log(), operator_image.log()[-4000:]
    finally:
        k8s.delete("tenantgw.io/v1alpha1", "Tenant", TENANT)
        eventually(lambda: not k8s.namespace_exists(NAMESPACE), 120, "the namespace to go")
