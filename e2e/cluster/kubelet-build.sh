#!/usr/bin/env bash
# Build the kubelet from the same Go module as the control plane (k8s.io/kubernetes, cmd/kubelet)
# into the same per-version cache as build.sh. Idempotent; serialized with a flock so that
# parallel callers do not build twice. Prints the binary's path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${TENANTGW_CACHE:-$HOME/.cache/tenantgw}"
bin="$cache/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION/bin"
mkdir -p "$bin" "$cache/build"
export GOFLAGS="${GOFLAGS:--trimpath}" CGO_ENABLED=0

exec 9>"$cache/build/kubelet.lock"
flock 9
if [[ ! -x "$bin/kubelet" ]]; then
  dir="$cache/build/kubelet"
  rm -rf "$dir" && mkdir -p "$dir"
  minor="${KUBERNETES_VERSION#*.}"
  {
    printf 'module tenantgw.local/kubelet\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes v%s\n' "$KUBERNETES_VERSION"
    # k8s.io/kubernetes requires its staging modules at v0.0.0; pin them to the release.
    for m in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
      cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api \
      cri-client cri-streaming csi-translation-lib dynamic-resource-allocation endpointslice externaljwt \
      kms kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics \
      mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller streaming; do
      printf 'replace k8s.io/%s => k8s.io/%s v0.%s\n' "$m" "$m" "$minor"
    done
  } >"$dir/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kubelet"\n' >"$dir/tools.go"
  (cd "$dir" && { go mod tidy -e >/dev/null 2>&1 || true; } && go mod download)
  printf '[kubelet-build] go build k8s.io/kubernetes/cmd/kubelet\n' >&2
  (cd "$dir" && go build -ldflags="-s -w" -o "$bin/kubelet.tmp" k8s.io/kubernetes/cmd/kubelet)
  mv "$bin/kubelet.tmp" "$bin/kubelet"
fi
echo "$bin/kubelet"
