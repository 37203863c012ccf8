#!/usr/bin/env bash
# Build the images' two base root filesystems from Debian's packages with mmdebstrap, and import
# them into podman's storage. No image is pulled from a registry:
#   tenantgw-base        Debian bookworm's essential set + python3, ca-certificates and libstdc++6
#                        (runtime: manylinux wheels such as numpy's link the system's libstdc++)
#   tenantgw-build-base  the same + python3-venv (pip and its wheels: the build stage only)
# The tarballs are cached per package list under ~/.cache/tenantgw/images (TENANTGW_CACHE);
# delete them to take Debian's newer security updates. Prints the two image references.
set -euo pipefail

cache="${TENANTGW_CACHE:-$HOME/.cache/tenantgw}/images"
suite=bookworm
runtime_packages=(python3 ca-certificates libstdc++6)
build_packages=("${runtime_packages[@]}" python3-venv)
mirrors=(
  "deb http://deb.debian.org/debian $suite main"
  "deb http://deb.debian.org/debian $suite-updates main"
  "deb http://deb.debian.org/debian-security $suite-security main"
)
log() { printf '[images] %s\n' "$*" >&2; }

# The cache key: everything that decides what goes into the root filesystems.
key="$(printf '%s\n' "$suite" "${runtime_packages[*]}" "${build_packages[*]}" "${mirrors[@]}" \
  "$(sed -n '/^rootfs()/,/^}/p' "${BASH_SOURCE[0]}")" | sha256sum | cut -c1-12)"
mkdir -p "$cache"

rootfs() {
  local out="$1"; shift
  local include; include="$(IFS=,; echo "$*")"
  # Only copyright files of /usr/share/doc, no manuals or translations; no apt lists or caches.
  mmdebstrap --quiet --mode=root --format=tar --variant=essential --include="$include" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook='rm -rf "$1"/var/cache/apt "$1"/var/lib/apt/lists "$1"/var/log/* "$1"/tmp/*' \
    "$suite" "$out.part" "${mirrors[@]}"
  mv "$out.part" "$out"
}

image_for() {
  local name="$1" tarball="$2"; shift 2
  local ref="localhost/$name:$suite-$key"
  if ! podman image exists "$ref"; then
    if [[ ! -s "$tarball" ]]; then
      log "mmdebstrap $suite ($*) -> $tarball"
      rootfs "$tarball" "$@"
    fi
    log "podman import $tarball -> $ref"
    podman import --quiet \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
      "$tarball" "$ref" >/dev/null
  fi
  echo "$ref"
}

# One build at a time (another checkout's `make images` waits, then finds the images there).
exec 9>"$cache/.lock"
flock 9
# Tarballs of an earlier package list are of no further use.
find "$cache" -maxdepth 1 -name "*base-$suite-*.tar*" ! -name "*-$key.tar*" -delete
image_for tenantgw-base "$cache/base-$suite-$key.tar" "${runtime_packages[@]}"
image_for tenantgw-build-base "$cache/build-base-$suite-$key.tar" "${build_packages[@]}"
