#!/usr/bin/env bash
# Stop the PostgreSQL and Redis servers that up.sh started. Their data is kept.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
state="$(cd "$here/../.." && pwd)/.dev/services"
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
pgdata="$(readlink -f "$state/postgres" || true)"
if [[ -n "$pgdata" && -f "$pgdata/postmaster.pid" ]]; then
  if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null || true
  else "$pg_bin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null || true; fi
fi
if [[ -f "$state/redis.pid" ]]; then
  pid="$(cat "$state/redis.pid")"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$state/redis.pid"
fi
echo "[services] down" >&2
