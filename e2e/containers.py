"""The tenantgw images, built by `make images` (docker/build.sh), run as containers with podman.

`built_images` runs docker/build.sh (cached layers: seconds when nothing changed) and reads the
image IDs it records in .dev/images.json; a container always runs by ID, so another checkout
re-tagging the shared names meanwhile changes nothing. `podman_run_argv` turns a rendered
container (its securityContext, env, mounted files) into the `podman run` that keeps the same
promises: read-only root filesystem, the pod's numeric user, every capability dropped, no
privilege escalation, only the pod's volumes writable.

On these machines podman runs as root with Debian's runc on the host network (cgroup v1 hybrid;
crun refuses), with open-file and process limits the host's hard limits allow.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "docker" / "build.sh"
PODMAN = ("podman", "--runtime", "runc")
RUN_OPTIONS = (
    "--network=host",
    "--ulimit=nofile=1024:1024",
    "--ulimit=nproc=1024:1024",
)
BUILD_TIMEOUT = 3600


class ImageError(RuntimeError):
    """The images could not be built, or a container would not start."""


@dataclass(frozen=True)
class Image:
    """One image of .dev/images.json."""

    name: str
    id: str
    digest: str
    size: int
    tags: tuple[str, ...]


@cache
def built_images() -> dict[str, Image]:
    """`make images` (docker/build.sh) for this checkout, then its manifest, by image name."""
    manifest = ROOT / ".dev" / f"images-{os.getpid()}.json"
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        env={**os.environ, "TENANTGW_IMAGES_MANIFEST": str(manifest)},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise ImageError(f"docker/build.sh exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    try:
        entries: dict[str, dict[str, Any]] = json.loads(manifest.read_text())
    finally:
        manifest.unlink(missing_ok=True)
    return {
        name: Image(
            name=name,
            id=entry["id"],
            digest=entry["digest"],
            size=int(entry["size"]),
            tags=tuple(entry["tags"]),
        )
        for name, entry in entries.items()
    }


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`podman --runtime runc ARGS`, its output captured; never raises on the exit code."""
    return subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def inspect_image(image: str) -> dict[str, Any]:
    proc = podman("image", "inspect", image)
    if proc.returncode != 0:
        raise ImageError(f"podman image inspect {image}: {proc.stderr}")
    found: list[dict[str, Any]] = json.loads(proc.stdout)
    return found[0]


def run_in_image(
    image: str, *argv: str, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    """A one-off command in `image` (its own entrypoint replaced), read-only root filesystem."""
    options = ["--rm", "--read-only", "--read-only-tmpfs=false", "--entrypoint", argv[0]]
    if user is not None:
        options += ["--user", user]
    return podman("run", *RUN_OPTIONS, *options, image, *argv[1:])


def write_env_file(path: Path, env: Mapping[str, str]) -> Path:
    """An --env-file (mode 0600): secret values never appear in a command line."""
    for name, value in env.items():
        if "\n" in value:
            raise ImageError(f"env {name} holds a newline, which --env-file cannot carry")
    path.write_text("".join(f"{name}={value}\n" for name, value in env.items()))
    path.chmod(0o600)
    return path


def podman_run_argv(
    image: str,
    *,
    name: str,
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    env_file: Path,
    mounts: Mapping[str, Path],
    args: Sequence[str],
) -> list[str]:
    """`podman run` for `container` of the rendered `pod` spec, in the foreground.

    The pod's and container's securityContext become --user, --read-only (nothing else
    writable: no tmpfs of podman's own), --cap-drop and no-new-privileges; each volume mount is
    a bind mount of its local copy in `mounts` (mount path -> directory), read-only where the
    pod mounts it so. `args` replace the container's (its command stays the entrypoint).
    """
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    if not security.get("readOnlyRootFilesystem"):
        raise ImageError(f"{container['name']} does not ask for a read-only root filesystem")
    options = [
        "--rm",
        f"--name={name}",
        "--read-only",
        "--read-only-tmpfs=false",
        "--security-opt=no-new-privileges",
        f"--env-file={env_file}",
    ]
    if "runAsUser" in security:
        options.append(f"--user={security['runAsUser']}:{security.get('runAsGroup', 0)}")
    for capability in security.get("capabilities", {}).get("drop", []):
        options.append(f"--cap-drop={capability.lower()}")
    for mount in container.get("volumeMounts", []):
        path = mount["mountPath"]
        mode = "ro" if mount.get("readOnly") else "rw"
        options.append(f"--volume={mounts[path]}:{path}:{mode}")
    command = list(container.get("command", []))
    if command:
        options.append("--entrypoint=" + json.dumps(command))
    return [*PODMAN, "run", *RUN_OPTIONS, *options, image, *args]


def start_container(
    image: str,
    workdir: Path,
    *,
    role: str,
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    env: Mapping[str, str],
    mounts: Mapping[str, Path],
    args: Sequence[str],
) -> tuple[str, subprocess.Popen[bytes], Path]:
    """`podman_run_argv` started in the background: (container name, podman, log file).

    The env file and the log (podman's and the container's output) are ROLE.env and ROLE.log
    in `workdir`; SIGTERM to the podman process reaches the container.
    """
    name = f"tenantgw-e2e-{role}-{secrets.token_hex(4)}"
    argv = podman_run_argv(
        image,
        name=name,
        pod=pod,
        container=container,
        env_file=write_env_file(workdir / f"{role}.env", env),
        mounts=mounts,
        args=args,
    )
    log = workdir / f"{role}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    return name, proc, log


def give_to(directory: Path, uid: int, gid: int) -> None:
    """Hand a mounted directory's files to the pod's user, as the kubelet's fsGroup does."""
    for path in [directory, *directory.rglob("*")]:
        os.chown(path, uid, gid)


def remove_container(name: str) -> None:
    podman("rm", "--force", "--ignore", name)
