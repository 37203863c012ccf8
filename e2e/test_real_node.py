"""The example tenant's gateway as real pods on a real kubelet (e2e/real_node.py).

Opt-in: it needs root, builds on Debian's containerd/runc and the CNI plugins, starts a control
plane, PostgreSQL and Redis of its own and takes about 6 minutes of both CPUs of these machines,
so `make test` skips it unless TENANTGW_REAL_NODE=1 (`make real-node` runs it directly).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from e2e import real_node
from e2e.fixtures import ROOT

OPT_IN = "TENANTGW_REAL_NODE"


@pytest.mark.unit
def test_every_example_provider_is_pointed_at_the_simulator() -> None:
    """The run's only rewrite of examples/: apiBase and the provider Secrets, nothing else."""
    docs = real_node.example_docs("http://10.233.0.1:1234", "sim-key")
    for provider in docs["tenant"][0]["spec"]["providers"]:
        assert provider["apiBase"].startswith("http://10.233.0.1:1234"), provider
    for secret in docs["provider-secrets"]:
        assert set(secret["stringData"].values()) == {"sim-key"}, secret["metadata"]["name"]
    assert docs["tenant"][0]["metadata"]["name"] == real_node.TENANT


@pytest.mark.e2e
def test_example_gateway_runs_as_real_pods_on_a_real_kubelet() -> None:
    if os.environ.get(OPT_IN) != "1":
        pytest.skip(
            f"opt-in ({OPT_IN}=1 or `make real-node`): needs root, containerd, runc and the CNI "
            "plugins, and about 6 minutes of both CPUs (docs/real-node.md)"
        )
    problem = real_node.host_problem()
    if problem:
        pytest.skip(f"this host cannot run a real node: {problem}")
    proc = subprocess.run(
        [sys.executable, "-m", "e2e.real_node"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    evidence = proc.stdout
    assert proc.returncode == 0, f"{proc.stderr[-3000:]}\n{evidence[-6000:]}"
    # What each check wrote: a reply through the Service twice (before and after the roll), a
    # refused root pod, the process inside as uid 65532 on a read-only root.
    assert evidence.count("text='Hello from ") == 2, evidence
    assert "violates PodSecurity" in evidence
    assert "uid 65532 gid 65532 write /: Read-only file system" in evidence
    assert "Ready pods after:" in evidence
