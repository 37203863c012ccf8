#!/usr/bin/env bash
# Write .dev/env, which sources the fragments the launchers write (cluster.env, services.env).
# Usage: e2e/dev-env.sh <.dev directory>
set -euo pipefail
dev="$1"
mkdir -p "$dev"
[[ -f "$dev/env" ]] && exit 0
cat >"$dev/env" <<'ENV'
# Source this file: PATH with kubectl, KUBECONFIG, and the admin DSN and Redis URL of the local services.
_tenantgw_dev="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)"
[ -f "$_tenantgw_dev/cluster.env" ] && . "$_tenantgw_dev/cluster.env"
[ -f "$_tenantgw_dev/services.env" ] && . "$_tenantgw_dev/services.env"
unset _tenantgw_dev
ENV
