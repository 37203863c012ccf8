#!/usr/bin/env bash
# Build the NetworkPolicy analyzer (cyclonus) from its Go module into a per-version cache.
# Idempotent: nothing happens when the binary is already cached.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${TENANTGW_CACHE:-$HOME/.cache/tenantgw}"
bin="$cache/cyclonus-$CYCLONUS_VERSION/bin"
[[ -x "$bin/cyclonus" ]] && exit 0
mkdir -p "$bin"
printf '[build] go install github.com/mattfenwick/cyclonus %s\n' "$CYCLONUS_VERSION" >&2
GOBIN="$bin" GOFLAGS="${GOFLAGS:--trimpath}" CGO_ENABLED=0 \
  go install -ldflags="-s -w" "github.com/mattfenwick/cyclonus/cmd/cyclonus@v$CYCLONUS_VERSION"
