#!/usr/bin/env bash
# On the real node of node.sh: a Deployment of the gateway image in a namespace enforcing the
# restricted Pod Security Standard, tolerating the node's taint; checks that the pod runs (CNI
# sandbox, image from containerd, restricted securityContext), its probes pass, a ConfigMap
# change rolls it, and it answers through `kubectl port-forward` (apiserver -> kubelet streaming).
# The container runs the image's Python as a static file server, not the gateway (see
# docs/real-node.md: the gateway's Postgres/Redis are on the host's loopback, out of a pod's reach).
# Needs node.sh up first. Leaves nothing behind.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=/dev/null
source "$root/.dev/env"
ns="realnode-$(openssl rand -hex 3)"
log() { printf '[realnode-smoke] %s\n' "$*" >&2; }
cleanup() { kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true; [[ -n "${pf:-}" ]] && kill "$pf" 2>/dev/null || true; }
trap cleanup EXIT

kubectl create namespace "$ns" >/dev/null
kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version=latest >/dev/null
log "restricted PSS refuses a root pod: $(kubectl -n "$ns" run root --image=ghcr.io/tenantgw/gateway:0.1.0 --overrides='{"spec":{"securityContext":{"runAsUser":0}}}' 2>&1 | head -1 | cut -c1-160)"

apply() { # page content
  kubectl -n "$ns" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: ConfigMap
metadata: {name: page}
data: {index.html: "$1"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: gateway}
spec:
  replicas: 1
  selector: {matchLabels: {app: gateway}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 0, maxSurge: 1}}
  template:
    metadata:
      labels: {app: gateway}
      annotations: {tenantgw.io/config-hash: "$(printf '%s' "$1" | sha256sum | cut -c1-16)"}
    spec:
      nodeSelector: {kubernetes.io/hostname: "127.0.0.1"}
      tolerations: [{key: tenantgw.io/real-node, operator: Exists, effect: NoSchedule}]
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
      - name: gateway
        image: ghcr.io/tenantgw/gateway:0.1.0
        imagePullPolicy: Never
        command: [python, -m, http.server, "8080", --directory, /page]
        ports: [{name: http, containerPort: 8080}]
        startupProbe: {httpGet: {path: /, port: http}, periodSeconds: 1, failureThreshold: 60}
        readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 5}
        livenessProbe: {httpGet: {path: /, port: http}, periodSeconds: 10}
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
          readOnlyRootFilesystem: true
          runAsNonRoot: true
        resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {memory: 256Mi}}
        volumeMounts: [{name: page, mountPath: /page, readOnly: true}]
      volumes: [{name: page, configMap: {name: page}}]
YAML
}

apply "first"
kubectl -n "$ns" rollout status deployment/gateway --timeout=120s >&2
kubectl -n "$ns" get pods -o wide >&2
pod="$(kubectl -n "$ns" get pods -l app=gateway -o jsonpath='{.items[0].metadata.name}')"
log "pod $pod uid/RO root: $(kubectl -n "$ns" exec "$pod" -- python -c 'import os;print(os.getuid(), end=" ");
try:
    open("/x","w")
except OSError as e:
    print("write / refused:", e.strerror)' 2>&1)"

port=$((20000 + RANDOM % 10000))
kubectl -n "$ns" port-forward "deployment/gateway" "$port:8080" >/dev/null 2>&1 & pf=$!
for _ in $(seq 1 40); do curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.5; done
got="$(curl -fsS "http://127.0.0.1:$port/")"; log "through port-forward: $got"; [[ "$got" == first ]]
kill "$pf"; wait "$pf" 2>/dev/null || true; pf=

apply "second"
kubectl -n "$ns" rollout status deployment/gateway --timeout=120s >&2
new="$(kubectl -n "$ns" get pods -l app=gateway --field-selector=status.phase=Running -o jsonpath='{.items[*].metadata.name}')"
log "after the ConfigMap change: pods $new (was $pod)"
[[ "$new" != *"$pod"* ]]
kubectl -n "$ns" port-forward "deployment/gateway" "$port:8080" >/dev/null 2>&1 & pf=$!
for _ in $(seq 1 40); do curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.5; done
got="$(curl -fsS "http://127.0.0.1:$port/")"; log "through port-forward after the roll: $got"; [[ "$got" == second ]]
log "OK"
