"""Where `make setup` (e2e/lint/build.sh) caches helm, kubeconform and kube-score."""

from __future__ import annotations

import os
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VERSIONS = HERE / "versions.env"
CLUSTER_VERSIONS = ROOT / "e2e" / "cluster" / "versions.env"


class ToolMissingError(Exception):
    """A pinned tool is not in the cache; the message says how to build it."""


def cache() -> Path:
    return Path(os.environ.get("TENANTGW_CACHE", Path.home() / ".cache" / "tenantgw"))


def pinned(name: str, path: Path = VERSIONS) -> str:
    """The version `NAME=...` in a versions.env file."""
    found = re.search(rf"^{name}=(\S+)", path.read_text(), re.MULTILINE)
    if not found:
        raise ToolMissingError(f"{path} names no {name}")
    return found.group(1)


def kubernetes_version() -> str:
    return pinned("KUBERNETES_VERSION", CLUSTER_VERSIONS)


def tool(name: str) -> Path:
    """The cached binary of helm, kubeconform or kube-score (or kubectl, from the control
    plane's cache)."""
    if name == "kubectl":
        k8s = f"k8s-{kubernetes_version()}"
        etcd = pinned("ETCD_VERSION", CLUSTER_VERSIONS)
        kwok = pinned("KWOK_VERSION", CLUSTER_VERSIONS)
        binary = cache() / f"{k8s}-etcd-{etcd}-kwok-{kwok}" / "bin" / "kubectl"
        hint = "bash e2e/cluster/build.sh"
    else:
        version = pinned(name.upper().replace("-", "_") + "_VERSION")
        binary = cache() / f"{name}-{version}" / "bin" / name
        hint = "bash e2e/lint/build.sh"
    if not binary.is_file():
        raise ToolMissingError(f"{binary} is missing: run `make setup` (or {hint})")
    return binary
