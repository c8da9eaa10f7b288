# The two commands of the README: `make run` (local mode serving examples/) and `make test`.
# Both create .venv and install what they need on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 8080
HOST   ?= 127.0.0.1
STAMP  := $(VENV)/.installed

.PHONY: run test venv system-deps bench-cluster bench-peers lint typecheck unit api local crds bench e2e e2e-test k8s-binaries cluster-up cluster-down images clean

# The product with every extra, plus the dev-only local-cluster tooling (cluster/, its own
# distribution: never in the product wheel or the images).
$(STAMP): pyproject.toml cluster/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip uv
	$(VENV)/bin/uv pip install -q --python $(PY) -e '.[all,dev]' -e './cluster[pytest]'
	@touch $(STAMP)

venv: $(STAMP)

# Debian packages the test tiers start for real: redis-server (the Redis queue backend and
# Redis Streams triggers), nats-server (NATS JetStream triggers), prometheus (`promtool check
# rules` on the chart's alerts), docker-registry (the CNCF distribution registry, for
# `kubefaas build --push`), chromium and chromium-driver (the console's browser tests).
# Installed only when missing; CI machines may be fresh.
SYSTEM_PACKAGES := redis-server nats-server prometheus docker-registry chromium chromium-driver
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do command -v $$p >/dev/null || dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null; \
	fi

## The main job: serve every Function manifest in examples/ on $(HOST):$(PORT), no cluster.
run: venv
	$(VENV)/bin/kubefaas local examples/ --host $(HOST) --port $(PORT)

## Everything CI checks: lint, types, import layers, unit + API-server + local tiers.
test: venv system-deps k8s-binaries lint typecheck
	$(PY) -m pytest tests

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: venv
	$(VENV)/bin/mypy kubefaas operator/kubefaas_operator gateway/kubefaas_gateway runtime/kubefaas_runtime cluster/kubefaas_cluster

unit: venv k8s-binaries
	$(PY) -m pytest tests/unit

## Regenerate crds/ from the Python model (a test fails when they differ).
crds: venv
	$(VENV)/bin/kubefaas crd > crds/function.yaml
	cp crds/function.yaml charts/kubefaas/crds/function.yaml

## Benchmarks (figures, never pass/fail): each prints a table and records JSON in bench/.
## The cluster ones need `make cluster-up` first: make bench-cluster.
bench: venv
	@$(MAKE) --no-print-directory system-deps SYSTEM_PACKAGES="redis-server wrk"
	$(PY) bench/runtime_direct.py --kind both --baseline
	$(PY) bench/gateway_overhead.py --json bench/gateway_overhead.json
	$(PY) bench/local_coldstart.py --json bench/local_coldstart.json
	$(PY) bench/runtime_start.py --json bench/runtime_start.json
	$(PY) bench/async_queue.py --json bench/async_queue.json
	$(PY) bench/autoscale.py --json bench/autoscale_local.json --plot bench/autoscale_local.png
	$(PY) bench/operator_scale.py --json bench/operator_scale.json

bench-cluster: venv
	$(PY) bench/cluster_coldstart.py --json bench/cluster_coldstart.json
	$(PY) bench/autoscale.py --cluster --json bench/autoscale_cluster.json --plot bench/autoscale_cluster.png

## kubefaas and Knative Serving side by side on the local cluster (docs/peers.md); needs
## `make cluster-up`; builds Knative once (cached), installs it, removes it at the end.
bench-peers: venv
	$(PY) bench/peers.py --json bench/peers.json --record

k8s-binaries: venv
	$(PY) -m kubefaas_cluster build

cluster-up: venv
	$(PY) -m kubefaas_cluster up $(if $(API_ONLY),--api-only,)

cluster-down: venv
	$(PY) -m kubefaas_cluster down

## The operator, gateway and runtime images, built without Docker (cached by their inputs)
## and imported into the local node if it runs. `make cluster-up` builds and imports them too.
images: venv
	$(PY) -m kubefaas_cluster images

## End to end against $KUBECONFIG if set, else the local cluster, which is brought up first.
## Not part of `make test`.
e2e: venv
ifeq ($(KUBECONFIG),)
	$(MAKE) cluster-up
endif
	$(PY) -m pytest e2e

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .state
