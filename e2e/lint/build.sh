#!/usr/bin/env bash
# Build helm, kubeconform and kube-score from their Go modules into a per-version cache.
# Idempotent: a tool whose binary is already cached is not rebuilt.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${TENANTGW_CACHE:-$HOME/.cache/tenantgw}"

install() {
  local name="$1" version="$2" pkg="$3" ldflags="-s -w ${4:-}"
  local bin="$cache/$name-$version/bin"
  [[ -x "$bin/$name" ]] && return 0
  mkdir -p "$bin"
  printf '[build] go install %s@v%s\n' "$pkg" "$version" >&2
  GOBIN="$bin" GOFLAGS="${GOFLAGS:--trimpath}" CGO_ENABLED=0 \
    go install -ldflags="$ldflags" "$pkg@v$version"
  [[ -x "$bin/$name" ]] || { printf '[build] missing %s after build\n' "$bin/$name" >&2; exit 1; }
}

# What helm's own Makefile stamps in: its version, and the Kubernetes version of its client-go
# (else `helm template` and `helm lint` assume Kubernetes 1.20 and refuse kubeVersion ranges).
helm_bin="$cache/helm-$HELM_VERSION/bin/helm"
if [[ -x "$helm_bin" && "$("$helm_bin" version --template '{{.Version}}')" != "v$HELM_VERSION" ]]; then
  rm -f "$helm_bin"  # built without the stamps
fi
if [[ ! -x "$helm_bin" ]]; then
  helm_mod="$(go mod download -json "helm.sh/helm/v3@v$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
  client_go="$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$helm_mod" | head -1)"
  [[ -n "$client_go" ]] || { printf '[build] no k8s.io/client-go in %s\n' "$helm_mod" >&2; exit 1; }
  stamps="-X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    stamps+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$client_go"
  done
  install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm "$stamps"
fi
install kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform
install kube-score "$KUBE_SCORE_VERSION" github.com/zegl/kube-score/cmd/kube-score
