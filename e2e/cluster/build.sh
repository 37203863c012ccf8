#!/usr/bin/env bash
# Build the local control plane from Go modules into a per-version cache outside the repo.
# Idempotent: a tool whose binary is already cached is not rebuilt.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${TENANTGW_CACHE:-$HOME/.cache/tenantgw}"
bin="$cache/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION/bin"
mkdir -p "$bin"
export GOFLAGS="${GOFLAGS:--trimpath}" CGO_ENABLED=0

log() { printf '[build] %s\n' "$*" >&2; }

# One throwaway module per tool: their dependency graphs disagree with each other.
build_module() {
  local name="$1" gomod="$2"; shift 2
  local dir="$cache/build/$name"
  rm -rf "$dir" && mkdir -p "$dir"
  printf '%s\n' "$gomod" >"$dir/go.mod"
  printf 'package tools\n\nimport (\n' >"$dir/tools.go"
  local pkg
  for pkg in "$@"; do printf '\t_ "%s"\n' "$pkg" >>"$dir/tools.go"; done
  printf ')\n' >>"$dir/tools.go"
  sed -i '1i //go:build tools\n' "$dir/tools.go"
  (cd "$dir" && go mod tidy -e >/dev/null 2>&1 || true; go mod download)
  for pkg in "$@"; do
    log "go build $pkg"
    (cd "$dir" && go build -ldflags="-s -w" -o "$bin/" "$pkg")
  done
}

k8s_staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
  cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
  cri-client cri-streaming csi-translation-lib dynamic-resource-allocation endpointslice externaljwt
  kms kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
  mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller streaming)

k8s_bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
missing=()
for b in "${k8s_bins[@]}"; do [[ -x "$bin/$b" ]] || missing+=("$b"); done
if ((${#missing[@]})); then
  minor="${KUBERNETES_VERSION#*.}"
  gomod="module tenantgw.local/k8s

go 1.26.0

require k8s.io/kubernetes v$KUBERNETES_VERSION
"
  for m in "${k8s_staging[@]}"; do gomod+="replace k8s.io/$m => k8s.io/$m v0.$minor
"; done
  pkgs=(); for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  build_module kubernetes "$gomod" "${pkgs[@]}"
fi

if [[ ! -x "$bin/etcd" ]]; then
  build_module etcd "module tenantgw.local/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
" go.etcd.io/etcd/server/v3
  mv "$bin/v3" "$bin/etcd" 2>/dev/null || true
  [[ -x "$bin/server" ]] && mv "$bin/server" "$bin/etcd"
fi

if [[ ! -x "$bin/kwok" ]]; then
  build_module kwok "module tenantgw.local/kwok

go 1.26.0

require sigs.k8s.io/kwok v$KWOK_VERSION
" sigs.k8s.io/kwok/cmd/kwok
fi

# kwok ships its node and pod lifecycles as Stage objects; keep the "fast" ones beside it.
stages="$bin/../kwok-stages.yaml"
if [[ ! -s "$stages" ]]; then
  kwok_src="$(cd "$cache/build/kwok" 2>/dev/null && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok 2>/dev/null || true)"
  if [[ -z "$kwok_src" ]]; then
    build_dir="$cache/build/kwok-stages"; rm -rf "$build_dir"; mkdir -p "$build_dir"
    printf 'module tenantgw.local/kwokstages\n\ngo 1.26.0\n\nrequire sigs.k8s.io/kwok v%s\n' "$KWOK_VERSION" >"$build_dir/go.mod"
    (cd "$build_dir" && go mod download sigs.k8s.io/kwok)
    kwok_src="$(go env GOMODCACHE)/sigs.k8s.io/kwok@v$KWOK_VERSION"
  fi
  : >"$stages.tmp"
  for f in "$kwok_src"/kustomize/stage/node/fast/node-initialize.yaml \
           "$kwok_src"/kustomize/stage/node/heartbeat/node-heartbeat.yaml \
           "$kwok_src"/kustomize/stage/pod/fast/*.yaml; do
    { echo "---"; cat "$f"; } >>"$stages.tmp"
  done
  mv "$stages.tmp" "$stages"
fi

for b in "${k8s_bins[@]}" etcd kwok; do
  [[ -x "$bin/$b" ]] || { log "missing $bin/$b after build"; exit 1; }
done
echo "$bin"
