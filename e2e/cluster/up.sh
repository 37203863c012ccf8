#!/usr/bin/env bash
# Start a local Kubernetes control plane on loopback: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok (simulated nodes).
# Reuses a cluster that is already up. Writes .dev/kubeconfig and .dev/cluster.env.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
source "$here/versions.env"
bin="$("$here/build.sh")"
dev="$root/.dev"
state="$dev/cluster"
pki="$state/pki"
logs="$dev/logs"
mkdir -p "$pki" "$logs" "$state/pids"

API_PORT="${TENANTGW_API_PORT:-16443}"
ETCD_PORT="${TENANTGW_ETCD_PORT:-23790}"
KWOK_NODES="${TENANTGW_KWOK_NODES:-2}"
server="https://127.0.0.1:$API_PORT"
kubeconfig="$dev/kubeconfig"

log() { printf '[cluster] %s\n' "$*" >&2; }

alive() { local f="$state/pids/$1.pid"; [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null; }

readyz() {
  curl -fsS --max-time 2 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "$server/readyz" >/dev/null 2>&1
}

write_env() {
  cat >"$dev/cluster.env" <<ENV
export PATH="$bin:\$PATH"
export KUBECONFIG="$kubeconfig"
ENV
  "$here/../dev-env.sh" "$dev"
}

all_up=1
for c in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do alive "$c" || all_up=0; done
if ((all_up)) && readyz; then
  write_env
  log "already up at $server"
  exit 0
fi
# A partial cluster is not reused: stop what is left and start clean.
"$here/down.sh" --keep-data >/dev/null 2>&1 || true

gen_pki() {
  [[ -f "$pki/ca.crt" && -f "$pki/sa.key" ]] && return 0
  log "generating certificates"
  local o=(openssl)
  "${o[@]}" req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=tenantgw-local-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  cat >"$pki/apiserver.ext" <<EXT
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EXT
  cert() { # name subject extfile
    "${o[@]}" req -newkey rsa:2048 -nodes -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
    "${o[@]}" x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 3650 -out "$pki/$1.crt" ${3:+-extfile "$3"} 2>/dev/null
  }
  printf 'extendedKeyUsage=clientAuth\n' >"$pki/client.ext"
  cert apiserver "/CN=kube-apiserver" "$pki/apiserver.ext"
  cert admin "/O=system:masters/CN=kubernetes-admin" "$pki/client.ext"
  cert controller-manager "/CN=system:kube-controller-manager" "$pki/client.ext"
  cert scheduler "/CN=system:kube-scheduler" "$pki/client.ext"
  cert kwok "/O=system:masters/CN=kwok" "$pki/client.ext"
  "${o[@]}" genrsa -out "$pki/sa.key" 2048 2>/dev/null
  "${o[@]}" rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

mk_kubeconfig() { # file user
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: tenantgw-local
  cluster: {server: "$server", certificate-authority: "$pki/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$pki/$2.crt", client-key: "$pki/$2.key"}
contexts:
- name: tenantgw-local
  context: {cluster: tenantgw-local, user: $2}
current-context: tenantgw-local
KC
}

start() { # name args...
  local name="$1"; shift
  setsid "$@" >"$logs/$name.log" 2>&1 </dev/null &
  echo $! >"$state/pids/$name.pid"
}

wait_for() { # description seconds command...
  local what="$1" secs="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    if ((SECONDS >= deadline)); then log "$what did not come up in ${secs}s; see $logs"; return 1; fi
    sleep 0.2
  done
}

gen_pki
mk_kubeconfig "$kubeconfig" admin
mk_kubeconfig "$state/controller-manager.kubeconfig" controller-manager
mk_kubeconfig "$state/scheduler.kubeconfig" scheduler
mk_kubeconfig "$state/kwok.kubeconfig" kwok

log "starting etcd on 127.0.0.1:$ETCD_PORT"
start etcd "$bin/etcd" --name tenantgw --data-dir "$state/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
  --initial-cluster "tenantgw=http://127.0.0.1:$((ETCD_PORT + 10))" \
  --unsafe-no-fsync --quota-backend-bytes 4294967296 --log-level warn
wait_for etcd 20 curl -fs --max-time 1 "http://127.0.0.1:$ETCD_PORT/health" -o /dev/null

# Audit every write made by clients other than the control plane's own components, so that
# tests can count the operator's API writes from the server's side.
cat >"$state/audit-policy.yaml" <<AUDIT
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  users: [system:kube-controller-manager, system:kube-scheduler, kwok, system:apiserver]
- level: None
  userGroups: [system:serviceaccounts:kube-system, system:nodes]
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
# Reads of Tenants too, so a test can see that a resync happened while it wrote nothing.
- level: Metadata
  verbs: [get]
  resources: [{group: tenantgw.io, resources: [tenants]}]
- level: None
AUDIT

log "starting kube-apiserver on $server"
start kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 \
  --authorization-mode Node,RBAC \
  --enable-priority-and-fairness=false \
  --endpoint-reconciler-type none \
  --audit-policy-file "$state/audit-policy.yaml" --audit-log-path "$logs/audit.log" \
  --audit-log-maxsize 200 --audit-log-maxbackup 1 --audit-log-format json \
  --profiling=false
wait_for kube-apiserver 60 readyz

log "starting kube-controller-manager, kube-scheduler and kwok"
start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig "$state/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$state/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$state/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$((API_PORT + 1))" \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --use-service-account-credentials=true --leader-elect=false \
  --controllers '*' \
  --concurrent-deployment-syncs 20 --concurrent-replicaset-syncs 20 --concurrent-gc-syncs 40 \
  --kube-api-qps 200 --kube-api-burst 400 --profiling=false
start kube-scheduler "$bin/kube-scheduler" \
  --kubeconfig "$state/scheduler.kubeconfig" \
  --authentication-kubeconfig "$state/scheduler.kubeconfig" \
  --authorization-kubeconfig "$state/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$((API_PORT + 2))" --leader-elect=false \
  --kube-api-qps 200 --kube-api-burst 400 --profiling=false
start kwok "$bin/kwok" --kubeconfig "$state/kwok.kubeconfig" --config "$bin/../kwok-stages.yaml" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --node-ip 10.244.0.1 --cidr 10.244.0.0/16 \
  --server-address "127.0.0.1:$((API_PORT + 3))"

kc=("$bin/kubectl" --kubeconfig "$kubeconfig")
for ((i = 0; i < KWOK_NODES; i++)); do
  "${kc[@]}" apply --server-side --field-manager tenantgw-local -f - >/dev/null <<NODE
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {type: kwok, kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64, topology.kubernetes.io/zone: local-$i}
status:
  allocatable: {cpu: "64", memory: 256Gi, pods: "500"}
  capacity: {cpu: "64", memory: 256Gi, pods: "500"}
NODE
done

nodes_ready() {
  [[ "$("${kc[@]}" get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c True)" -ge "$KWOK_NODES" ]]
}
default_sa() { "${kc[@]}" get serviceaccount default -n default >/dev/null 2>&1; }
wait_for "kwok nodes" 60 nodes_ready
wait_for "service account controller" 60 default_sa
write_env
log "up at $server (kubeconfig $kubeconfig)"
