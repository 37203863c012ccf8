#!/usr/bin/env bash
# One real kubelet beside the kwok nodes: containerd (Debian) + runc (Debian), a bridge CNI,
# node "127.0.0.1" registered to the local control plane with a NoSchedule taint.
#   node.sh prepare build kubelet, start containerd, import images (does not touch the cluster)
#   node.sh up      build kubelet, start containerd + kubelet, import images, wait for Ready
#   node.sh down    delete the Node and its pods, stop kubelet and containerd, remove the bridge
# e2e/real_node.py (`make real-node`) runs it on a control plane of its own with TENANTGW_REAL_NODE_TAINT=0.
# See docs/real-node.md.
# Run under the cluster lock:  flock -o /work/locks/cluster.lock e2e/cluster/node.sh up
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dev="$root/.dev"
pki="$dev/cluster/pki"
state="$dev/realnode"
logs="$dev/logs"
# The apiserver reaches a kubelet at the node's first address of type Hostname; a node named by
# its loopback IP needs no name resolution.
NODE="127.0.0.1"
TAINT_KEY="tenantgw.io/real-node"
# 1 (default): register tainted, so that only pods tolerating it land here (beside kwok nodes).
# 0: no taint, for a control plane whose only node is this one (e2e/real_node.py).
TAINT="${TENANTGW_REAL_NODE_TAINT:-1}"
KUBELET_PORT="${TENANTGW_KUBELET_PORT:-10250}"
CTRD_ROOT=/var/lib/tenantgw-containerd
CTRD_STATE=/run/tenantgw-containerd
SOCK="$CTRD_STATE/containerd.sock"
KUBELET_ROOT=/var/lib/tenantgw-kubelet
BRIDGE=tgw-cni0
POD_SUBNET="${TENANTGW_REAL_NODE_POD_SUBNET:-10.233.0.0/24}"
PAUSE_IMAGE="localhost/tenantgw/pause:3.10"
IMAGES=("ghcr.io/tenantgw/gateway:0.1.0")

log() { printf '[realnode] %s\n' "$*" >&2; }
# shellcheck source=/dev/null
source "$dev/env"
kc=(kubectl --kubeconfig "$dev/kubeconfig")
ctr_=(ctr --address "$SOCK" -n k8s.io)

alive() { local f="$state/$1.pid"; [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null; }
start() { # name args...
  local name="$1"; shift
  setsid "$@" >"$logs/realnode-$name.log" 2>&1 </dev/null &
  echo $! >"$state/$name.pid"
}
stop() {
  local f="$state/$1.pid" pid
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}
wait_for() { # what seconds command...
  local what="$1" secs="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    if ((SECONDS >= deadline)); then log "$what: not within ${secs}s (logs: $logs/realnode-*.log)"; return 1; fi
    sleep 0.5
  done
}

gen_pki() {
  [[ -f "$state/pki/kubelet.crt" && -f "$state/pki/node.crt" ]] && return 0
  mkdir -p "$state/pki"
  local p="$state/pki"
  printf 'extendedKeyUsage=clientAuth\n' >"$p/client.ext"
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$p/serving.ext"
  openssl req -newkey rsa:2048 -nodes -subj "/O=system:nodes/CN=system:node:$NODE" \
    -keyout "$p/node.key" -out "$p/node.csr" 2>/dev/null
  openssl x509 -req -in "$p/node.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 365 -out "$p/node.crt" -extfile "$p/client.ext" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$NODE" \
    -keyout "$p/kubelet.key" -out "$p/kubelet.csr" 2>/dev/null
  openssl x509 -req -in "$p/kubelet.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 365 -out "$p/kubelet.crt" -extfile "$p/serving.ext" 2>/dev/null
}

write_configs() {
  local server; server="$(kubectl config view --kubeconfig "$dev/kubeconfig" --minify -o jsonpath='{.clusters[0].cluster.server}')"
  cat >"$state/kubelet.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "$server", certificate-authority: "$pki/ca.crt"}
users:
- name: node
  user: {client-certificate: "$state/pki/node.crt", client-key: "$state/pki/node.key"}
contexts:
- name: local
  context: {cluster: local, user: node}
current-context: local
KC
  mkdir -p "$state/cni/net.d"
  cat >"$state/cni/net.d/10-tenantgw.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "tenantgw-real-node",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": "$state/cni/ipam"}}
  ]
}
CNI
  cat >"$state/containerd.toml" <<TOML
version = 2
root = "$CTRD_ROOT"
state = "$CTRD_STATE"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Lowering a process's oom_score_adj is refused here (runc: "can't get final child's PID from
  # pipe: EOF", the same as podman --oom-score-adj=-998): never below containerd's own score.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni/net.d"
TOML
  cat >"$state/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# These machines are cgroup v1 (hybrid); recent kubelets refuse v1 unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$SOCK
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
tlsCertFile: $state/pki/kubelet.crt
tlsPrivateKeyFile: $state/pki/kubelet.key
# The shared apiserver was started without --kubelet-client-certificate, so it calls kubelets
# (logs, exec, port-forward) anonymously: the kubelet listens on loopback only.
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: AlwaysAllow}
$(if [[ "$TAINT" == 1 ]]; then printf 'registerWithTaints:\n- {key: %s, value: "true", effect: NoSchedule}\n' "$TAINT_KEY"; fi)
failSwapOn: false
maxPods: 20
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
YAML
}

start_containerd() {
  alive containerd && return 0
  mkdir -p "$CTRD_STATE"
  log "starting containerd ($(containerd --version | awk '{print $3}'))"
  start containerd containerd --config "$state/containerd.toml"
  wait_for containerd 30 "${ctr_[@]}" version >/dev/null
}

import_images() {
  if ! "${ctr_[@]}" images ls -q | grep -qx "$PAUSE_IMAGE"; then
    # No registry is reachable: the sandbox image is Kubernetes' own pause.c, built here.
    local src; src="$(go env GOMODCACHE)/k8s.io/kubernetes@v$(. "$here/versions.env"; echo "$KUBERNETES_VERSION")/build/pause/linux/pause.c"
    local b="$state/pause-build"; rm -rf "$b"; mkdir -p "$b"
    gcc -Os -static -DVERSION=tenantgw -o "$b/pause" "$src" && strip "$b/pause"
    printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$b/Containerfile"
    podman build -q -t "$PAUSE_IMAGE" -f "$b/Containerfile" "$b" >/dev/null
    podman save "$PAUSE_IMAGE" | "${ctr_[@]}" images import - >/dev/null
  fi
  local img id mark
  for img in "${IMAGES[@]}"; do
    id="$(podman image inspect --format '{{.Id}}' "$img")"
    mark="$state/imported-${img//[\/:]/_}"
    if [[ "$(cat "$mark" 2>/dev/null)" == "$id" ]] && "${ctr_[@]}" images ls -q | grep -qx "$img"; then continue; fi
    log "importing $img (podman save | ctr import)"
    podman save "$img" | "${ctr_[@]}" images import - >/dev/null
    echo "$id" >"$mark"
  done
}

node_ready() {
  [[ "$("${kc[@]}" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

prepare() {
  mkdir -p "$state" "$logs"
  command -v containerd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends containerd; }
  "$here/kubelet-build.sh" >/dev/null
  gen_pki
  write_configs
  start_containerd
  import_images
}

up() {
  prepare
  local kubelet; kubelet="$("$here/kubelet-build.sh")"
  if ! alive kubelet; then
    log "starting kubelet on 127.0.0.1:$KUBELET_PORT as node $NODE"
    mkdir -p "$KUBELET_ROOT"
    # The kubelet refuses a loopback node IP; it still listens on loopback only (address above).
    local node_ip; node_ip="$(ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -1)"
    start kubelet "$kubelet" --config "$state/kubelet.yaml" --kubeconfig "$state/kubelet.kubeconfig" \
      --hostname-override "$NODE" --node-ip "$node_ip" --root-dir "$KUBELET_ROOT" --v 2
  fi
  wait_for "node $NODE Ready" 120 node_ready
  log "node $NODE Ready ($([[ "$TAINT" == 1 ]] && echo "taint $TAINT_KEY=true:NoSchedule" || echo untainted))"
}

down() {
  if "${kc[@]}" get node "$NODE" >/dev/null 2>&1; then
    if alive kubelet; then
      # Let the kubelet stop its pods (and release their sandboxes) before it goes.
      "${kc[@]}" delete pods -A --field-selector "spec.nodeName=$NODE" --wait=false >/dev/null 2>&1 || true
      wait_for "pods of $NODE gone" 60 bash -c "[[ -z \$(${kc[*]} get pods -A --field-selector spec.nodeName=$NODE -o name 2>/dev/null) ]]" || true
    fi
    "${kc[@]}" delete node "$NODE" --wait=true >/dev/null 2>&1 || true
  fi
  stop kubelet
  if alive containerd; then
    local c
    for c in $("${ctr_[@]}" tasks ls -q 2>/dev/null); do "${ctr_[@]}" tasks kill -s KILL "$c" >/dev/null 2>&1 || true; done
    sleep 1
    for c in $("${ctr_[@]}" tasks ls -q 2>/dev/null); do "${ctr_[@]}" tasks delete -f "$c" >/dev/null 2>&1 || true; done
    for c in $("${ctr_[@]}" containers ls -q 2>/dev/null); do "${ctr_[@]}" containers delete "$c" >/dev/null 2>&1 || true; done
  fi
  stop containerd
  # Shims outlive containerd by design: end those of this containerd only (by its socket path).
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $SOCK" || true); do kill -KILL "$pid" 2>/dev/null || true; done
  { grep -o " $KUBELET_ROOT[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  { grep -o " $CTRD_STATE[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  # Pod network namespaces left by sandboxes: those holding an address of this node's pod subnet.
  local ns prefix="${POD_SUBNET%.*}."
  for ns in /run/netns/cni-*; do
    [[ -e "$ns" ]] || continue
    if ip -n "${ns##*/}" -4 -o addr 2>/dev/null | grep -q " inet ${prefix//./\\.}"; then ip netns del "${ns##*/}" || true; fi
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  rm -rf "$state/cni/ipam"
  log "down (node $NODE deleted, kubelet and containerd stopped)"
}

case "${1:-}" in
  prepare) prepare ;;
  up) up ;;
  down) down ;;
  *) echo "usage: $0 prepare|up|down" >&2; exit 2 ;;
esac
