#!/usr/bin/env bash
# Install the Debian packages the tests and the demo run: PostgreSQL, Redis, openssl, curl,
# tmux (Claude Code's interactive sessions are driven in it), chromium-headless-shell (the
# html report's screenshot), prometheus (promtool tests the alert rules; a throwaway Prometheus
# scrapes a gateway in e2e/test_dashboard_queries.py), podman with Debian's runc and mmdebstrap
# (`make images` builds the images from a Debian root filesystem; the container tests run them:
# runc, not crun, which refuses these machines' cgroup v1 hybrid), jq (the disaster-recovery
# page's backup strips exported objects with it; e2e/test_operator_restore.py runs it).
# Idempotent: installs only what is missing.
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v psql >/dev/null || need+=(postgresql-client)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v jq >/dev/null || need+=(jq)
command -v npm >/dev/null || need+=(npm)
command -v tmux >/dev/null || need+=(tmux)
# The html report is opened and screenshot in a headless browser by the tests.
command -v chromium-headless-shell >/dev/null || need+=(chromium-headless-shell fonts-dejavu-core)
{ command -v promtool && command -v prometheus; } >/dev/null || need+=(prometheus)
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
((${#need[@]})) || { echo "[setup] system packages present" >&2; exit 0; }
echo "[setup] installing ${need[*]}" >&2
sudo=(); [[ "$(id -u)" == 0 ]] || sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The Debian packages start their own Redis and Prometheus; the tests start theirs.
for service in redis-server prometheus; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
    "${sudo[@]}" systemctl disable --now "$service" >/dev/null 2>&1 || true
  fi
done
