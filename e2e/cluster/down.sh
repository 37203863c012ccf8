#!/usr/bin/env bash
# Stop exactly the control-plane processes that up.sh started (by pid).
# --keep-data keeps etcd's data and the certificates; by default both are removed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="$root/.dev/cluster"
keep=0; [[ "${1:-}" == "--keep-data" ]] && keep=1

stop() {
  local f="$state/pids/$1.pid" pid
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}
for c in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$c"; done
if ((!keep)); then rm -rf "$state/etcd" "$root/.dev/cluster.env"; fi
echo "[cluster] down" >&2
