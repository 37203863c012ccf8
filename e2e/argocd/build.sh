#!/usr/bin/env bash
# Build the Argo CD health check runner (e2e/argocd/luahealth, on gopher-lua) into a per-version
# cache. Idempotent: nothing happens when the binary is already cached and up to date.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${TENANTGW_CACHE:-$HOME/.cache/tenantgw}"
bin="$cache/argocd-health-gopher-lua-$GOPHER_LUA_VERSION/bin"
grep -q "github.com/yuin/gopher-lua v$GOPHER_LUA_VERSION\$" "$here/luahealth/go.mod" || {
  echo "e2e/argocd/luahealth/go.mod does not require gopher-lua v$GOPHER_LUA_VERSION" >&2
  exit 1
}
if [[ -x "$bin/argocd-health" && "$bin/argocd-health" -nt "$here/luahealth/main.go" ]]; then
  exit 0
fi
mkdir -p "$bin"
printf '[build] argocd-health with gopher-lua %s\n' "$GOPHER_LUA_VERSION" >&2
cd "$here/luahealth"
GOFLAGS="${GOFLAGS:--trimpath}" CGO_ENABLED=0 go build -mod=readonly -ldflags="-s -w" \
  -o "$bin/argocd-health" .
