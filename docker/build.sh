#!/usr/bin/env bash
# `make images`: build tenantgw-operator and tenantgw-gateway with podman (buildah inside) from
# the Debian-package bases of docker/base.sh, tag them with the names the manifests and the
# operator use (ghcr.io/tenantgw/NAME:VERSION) and locally (localhost/tenantgw-NAME:VERSION),
# and record each image's ID, manifest digest and size in .dev/images.json, which the container
# tests read. Layers are cached in podman's storage: an unchanged lock file is not re-installed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { printf '[images] %s\n' "$*" >&2; }
version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
manifest="${TENANTGW_IMAGES_MANIFEST:-$root/.dev/images.json}"
mkdir -p "$(dirname "$manifest")"

# These machines run containers with Debian's runc (crun refuses their cgroup v1 hybrid), on the
# host network, with limits the host's hard limits allow.
podman=(podman --runtime runc)
run_opts=(--network host --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

# pip in the build stage trusts what pip trusts here (a TLS-inspecting proxy's CA included).
pip_ca="${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"

mapfile -t bases < <(bash docker/base.sh)
base="${bases[0]}" build_base="${bases[1]}"

entries=()
for name in operator gateway; do
  started=$SECONDS
  iid="$(mktemp)"
  "${podman[@]}" build --quiet --layers "${run_opts[@]}" \
    --file "docker/$name.Dockerfile" --ignorefile "docker/$name.Dockerfile.dockerignore" \
    --build-arg BASE="$base" --build-arg BUILD_BASE="$build_base" \
    --secret "id=pip-ca,src=$pip_ca" --iidfile "$iid" \
    --tag "localhost/tenantgw-$name:$version" --tag "ghcr.io/tenantgw/$name:$version" \
    . >/dev/null
  id="$(cat "$iid")"; rm -f "$iid"
  digest="$(podman image inspect --format '{{.Digest}}' "$id")"
  size="$(podman image inspect --format '{{.Size}}' "$id")"
  log "$name: $id ($((size / 1000000)) MB, $((SECONDS - started)) s)"
  entries+=("$(printf '"%s": {"id": "%s", "digest": "%s", "size": %s, "base": "%s", "tags": ["localhost/tenantgw-%s:%s", "ghcr.io/tenantgw/%s:%s"]}' \
    "$name" "$id" "$digest" "$size" "$base" "$name" "$version" "$name" "$version")")
done
{ printf '{\n  '; (IFS=$'\n'; printf '%s' "${entries[0]},"$'\n'"  ${entries[1]}"); printf '\n}\n'; } >"$manifest.tmp"
mv "$manifest.tmp" "$manifest"
cat "$manifest"
