#!/usr/bin/env bash
# Start PostgreSQL and Redis from Debian's packages on loopback, with admin credentials.
# Reuses servers that are already up. Writes .dev/services.env.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dev="$root/.dev"
state="$dev/services"
logs="$dev/logs"
# Ports below the ephemeral range (32768-60999), so that no outgoing connection can hold them.
PG_PORT="${TENANTGW_PG_PORT:-25432}"
REDIS_PORT="${TENANTGW_REDIS_PORT:-26379}"
mkdir -p "$state" "$logs"
chmod 755 "$dev" "$state"

log() { printf '[services] %s\n' "$*" >&2; }
secret() { # name -> a random password generated once
  local f="$state/$1.password"
  [[ -s "$f" ]] || { umask 077; openssl rand -hex 24 >"$f"; }
  cat "$f"
}

pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[[ -x "$pg_bin/postgres" ]] || { log "PostgreSQL is not installed: run 'make setup'"; exit 1; }
command -v redis-server >/dev/null || { log "redis-server is not installed: run 'make setup'"; exit 1; }

# PostgreSQL refuses to run as root; it runs as the 'postgres' user from the Debian package.
as_pg() { if [[ "$(id -u)" == 0 ]]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
[[ -s "$state/postgres.password" ]] && fresh_pw=0 || fresh_pw=1
pg_pw="$(secret postgres)"
pgdata="$state/postgres"
pgrun="$state/run"
pglog="$logs/postgres.log"
if [[ "$(id -u)" == 0 ]] && ! runuser -u postgres -- test -x "$state"; then
  # The checkout is not reachable by the postgres user (e.g. under /root): keep its files outside.
  outside="/var/tmp/tenantgw-$(printf '%s' "$root" | sha256sum | cut -c1-12)"
  mkdir -p "$outside" && chown postgres:postgres "$outside"
  pgdata="$outside/postgres" pgrun="$outside/run" pglog="$outside/postgres.log"
  ln -sfn "$pgdata" "$state/postgres"
fi
if ((fresh_pw)) && [[ -f "$pgdata/PG_VERSION" ]]; then
  # A data directory left by an earlier checkout at this path: its admin password is not ours.
  log "replacing a stale PostgreSQL data directory in $pgdata"
  as_pg "$pg_bin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$pgdata"
fi
if [[ ! -f "$pgdata/PG_VERSION" ]]; then
  log "initialising PostgreSQL in $pgdata"
  mkdir -p "$pgdata"
  pwfile="$(dirname "$pgdata")/.pgpw"; printf '%s\n' "$pg_pw" >"$pwfile"
  if [[ "$(id -u)" == 0 ]]; then chown postgres:postgres "$pgdata" "$pwfile"; fi
  as_pg "$pg_bin/initdb" -D "$pgdata" -U tenantgw_admin --pwfile "$pwfile" \
    --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 >"$logs/postgres-init.log" 2>&1
  rm -f "$pwfile"
fi
mkdir -p "$pgrun"; touch "$pglog"
if [[ "$(id -u)" == 0 ]]; then chown postgres:postgres "$pgrun" "$pglog"; fi
if ! as_pg "$pg_bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  as_pg "$pg_bin/pg_ctl" -D "$pgdata" -l "$pglog" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$pgrun -c max_connections=400 -c fsync=off -c synchronous_commit=off" >/dev/null
fi
export PGPASSWORD="$pg_pw"
psql_admin=(psql -h 127.0.0.1 -p "$PG_PORT" -U tenantgw_admin -v ON_ERROR_STOP=1 -qtA)
if [[ "$("${psql_admin[@]}" -d postgres -c "select 1 from pg_database where datname='tenantgw'")" != 1 ]]; then
  "${psql_admin[@]}" -d postgres -c "create database tenantgw"
fi

redis_pw="$(secret redis)"
rconf="$state/redis.conf"
# Keep the tenant users the operator saved (ACL SAVE); rewrite only ours.
others="$(grep -v -E '^user (default|admin) ' "$state/users.acl" 2>/dev/null || true)"
{
  echo "user default off"
  echo "user admin on >$redis_pw ~* &* +@all"
  [[ -n "$others" ]] && printf '%s\n' "$others"
} >"$state/users.acl"
chmod 600 "$state/users.acl"
cat >"$rconf" <<CONF
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
daemonize yes
pidfile $state/redis.pid
logfile $logs/redis.log
dir $state
aclfile $state/users.acl
save ""
appendonly no
CONF
rping() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" --user admin --pass "$redis_pw" --no-auth-warning ping 2>/dev/null | grep -q PONG; }
if ! rping; then
  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  redis-server "$rconf"
  for _ in $(seq 1 100); do rping && break; sleep 0.1; done
  rping || { log "Redis did not come up; see $logs/redis.log"; exit 1; }
fi

cat >"$dev/services.env" <<ENV
export TENANTGW_POSTGRES_DSN="postgresql://tenantgw_admin:$pg_pw@127.0.0.1:$PG_PORT/tenantgw"
export TENANTGW_REDIS_URL="redis://admin:$redis_pw@127.0.0.1:$REDIS_PORT/0"
ENV
chmod 600 "$dev/services.env"
"$here/../dev-env.sh" "$dev"
log "PostgreSQL 127.0.0.1:$PG_PORT and Redis 127.0.0.1:$REDIS_PORT are up"
