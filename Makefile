SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
BENCH_VENV := .venv-bench

.PHONY: help setup venv system-packages control-plane network-analyzer argocd-health manifest-tools claude-code images test test-unit lint fmt lock bench-deps \
        cluster-up cluster-down services-up services-down crds run bench soak

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# `make test` and `make demo` each install what they need first; `make setup` is an optional warm-up.
setup: venv system-packages control-plane network-analyzer argocd-health manifest-tools claude-code images ## Install everything the tests and the demo need

venv: $(VENV)/.installed ## Python dependencies from the lock file, into .venv

$(VENV)/.installed: requirements/dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements/dev.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

system-packages: ## PostgreSQL, Redis, openssl, curl, podman, mmdebstrap from Debian's packages
	bash e2e/install-system-packages.sh

control-plane: ## Build etcd, kube-* and kwok from Go modules into the cache (once per version)
	bash e2e/cluster/build.sh >/dev/null

network-analyzer: ## Build the NetworkPolicy analyzer (cyclonus) from its Go module into the cache
	bash e2e/netpol/build.sh

argocd-health: ## Build the Argo CD health check runner (gopher-lua) from its Go module into the cache
	bash e2e/argocd/build.sh

manifest-tools: ## Build helm, kubeconform and kube-score from their Go modules into the cache
	bash e2e/lint/build.sh

claude-code: system-packages ## The pinned Claude Code CLI from npm, into the cache
	bash e2e/install-claude-code.sh >/dev/null

images: system-packages ## Build tenantgw-operator and tenantgw-gateway with podman from Debian-package bases; digests in .dev/images.json
	bash docker/build.sh

test: venv system-packages control-plane network-analyzer argocd-health manifest-tools claude-code images ## The whole suite: unit, integration, end-to-end
	$(BIN)/pytest

test-unit: venv argocd-health ## Unit tests only, no servers
	$(BIN)/pytest -m unit

lint: venv ## ruff, mypy --strict, the import contracts and the dependency scan of the lock files
	$(BIN)/ruff check operator tests e2e
	$(BIN)/ruff format --check operator tests e2e
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m e2e.lint.depscan

fmt: venv ## Format and fix what ruff can
	$(BIN)/ruff format operator tests e2e
	$(BIN)/ruff check --fix operator tests e2e

crds: venv ## Generate crds/ (and the copies in manifests/crds/ and the Helm chart) and docs/api-reference.md from tenantgw.api
	$(BIN)/python -m tenantgw.api.crdgen crds/
	$(BIN)/python -m tenantgw.api.crdgen manifests/crds/
	$(BIN)/python -m tenantgw.api.crdgen charts/tenantgw/crds/
	$(BIN)/python -m tenantgw.api.apiref docs/api-reference.md

run: venv ## Run the operator locally against $$KUBECONFIG (CRDs applied first)
	kubectl apply --server-side --force-conflicts -f crds/
	$(BIN)/kopf run --standalone --all-namespaces -m tenantgw.operator.handlers

lock: venv ## Re-resolve the lock files from pyproject.toml
	for extra in operator gateway; do \
	  $(BIN)/uv pip compile pyproject.toml --extra $$extra -c requirements/constraints.txt \
	    --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	    -o requirements/$$extra.lock -q; done
	$(BIN)/uv pip compile pyproject.toml --extra operator --extra gateway --extra report --extra dev \
	  -c requirements/constraints.txt --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-unknown-linux-gnu -o requirements/dev.lock -q
	$(BIN)/uv pip compile pyproject.toml --extra bench -c requirements/constraints.txt \
	  --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	  -o requirements/bench.lock -q

cluster-up: control-plane ## Local control plane on loopback; writes .dev/kubeconfig and .dev/env
	bash e2e/cluster/up.sh

cluster-down: ## Stop the control plane processes started by cluster-up
	bash e2e/cluster/down.sh

services-up: system-packages ## PostgreSQL and Redis on loopback; admin credentials in .dev/env
	bash e2e/services/up.sh

services-down: ## Stop PostgreSQL and Redis
	bash e2e/services/down.sh

.PHONY: demo demo-down real-node
# The gateway runs from the tenantgw-gateway image (built first when missing, cached afterwards);
# DEMO_GATEWAY=process runs it as a local process instead (tenantctl dev gateway).
demo: venv system-packages claude-code cluster-up services-up ## The example tenant, its gateway (from its image), Claude Code, a few dozen requests and the cost report, left running
	$(BIN)/python -m e2e.demo up

demo-down: ## Stop the demo's gateway container, simulator and operator, then the services and control plane
	$(BIN)/python -m e2e.demo down
	bash e2e/cluster/down.sh
	bash e2e/services/down.sh

real-node: venv system-packages control-plane images ## The example tenant's gateway as real pods on a real kubelet (root; its own control plane; ~6 min; docs/real-node.md)
	{ command -v containerd && test -x /usr/lib/cni/bridge; } >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends containerd containernetworking-plugins >/dev/null; }
	$(BIN)/python -m e2e.real_node

bench-deps: $(BENCH_VENV)/.installed ## The PII benchmark's own venv (presidio, spaCy): never needed by the tests

$(BENCH_VENV)/.installed: requirements/bench.lock
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements/bench.lock
	touch $@

bench: venv bench-deps ## Measure the design's numbers into docs/benchmarks.md: PII detection, the gateway's, the operator's; then the targets table
	PYTHONPATH=operator:. $(BENCH_VENV)/bin/python -m e2e.bench.pii_bench
	$(BIN)/python -m e2e.bench.gateway_bench
	$(BIN)/python -m e2e.bench.audit_cpu
	if [ -f e2e/bench/operator_bench.py ]; then \
	  $(BIN)/python -m e2e.bench.operator_bench --isolated --tenants 50 --interval 0.2 --scale 50 \
	    --traffic-seconds 60 --converge 1000 --converge-timeout 300; \
	fi
	$(BIN)/python -m e2e.bench.targets

SOAK_MINUTES ?= 30
soak: venv system-packages ## Two tenants' gateways under mixed traffic for SOAK_MINUTES (30) through a Redis and a PostgreSQL restart: RSS, lost ledger rows, errors into docs/benchmarks.md
	$(BIN)/python -m e2e.bench.soak --minutes $(SOAK_MINUTES)
	$(BIN)/python -m e2e.bench.targets
