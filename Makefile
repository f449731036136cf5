# mlgate developer entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Control-plane binaries (kube-apiserver, etcd, kubectl, helm) live outside the repo and are reused.
export MLGATE_CACHE ?= $(HOME)/.cache/mlgate
STAMP := $(VENV)/.installed

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

.PHONY: venv
venv: $(STAMP) ## Create .venv and install mlgate with its dev dependencies

.PHONY: lint
lint: $(STAMP) ## ruff, mypy --strict and the import-layering contracts
	$(BIN)/ruff check operator tests hack bench
	$(BIN)/ruff format --check operator tests hack bench
	$(BIN)/mypy operator/mlgate
	cd operator && ../$(BIN)/lint-imports --config ../pyproject.toml

.PHONY: fmt
fmt: $(STAMP) ## Format and auto-fix with ruff
	$(BIN)/ruff format operator tests hack bench
	$(BIN)/ruff check --fix operator tests hack bench

.PHONY: crds
crds: $(STAMP) ## Regenerate crds/*.yaml and the chart's CRDs from the pydantic models
	$(BIN)/mlgate crds --output-dir crds
	@if [ -d charts/mlgate ]; then mkdir -p charts/mlgate/crds && $(BIN)/mlgate crds --output-dir charts/mlgate/crds; fi

.PHONY: controlplane-assets
controlplane-assets: ## Build or reuse kube-apiserver, etcd, kubectl, helm in ~/.cache/mlgate (MLGATE_CACHE)
	@hack/controlplane-assets.sh

# Signed-image tests: Debian's distribution registry and skopeo, cosign built from source.
REGISTRY_PACKAGES := docker-registry skopeo
.PHONY: registry-assets
registry-assets: ## Install docker-registry and skopeo (apt-get) if missing; build or reuse cosign
	@command -v docker-registry >/dev/null && command -v skopeo >/dev/null || { \
	  [ "$$(id -u)" = 0 ] || { echo "registry-assets: as root: apt-get install $(REGISTRY_PACKAGES)" >&2; exit 1; }; \
	  echo "registry-assets: apt-get install $(REGISTRY_PACKAGES)" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $(REGISTRY_PACKAGES) >/dev/null; }
	@hack/cosign-assets.sh

.PHONY: unit
unit: $(STAMP) ## Unit tests only (seconds)
	$(BIN)/pytest -m "not e2e and not registry" tests

.PHONY: e2e
e2e: $(STAMP) controlplane-assets registry-assets ## End-to-end tests on a real kube-apiserver + etcd on loopback
	KUBEBUILDER_ASSETS="$${KUBEBUILDER_ASSETS:-$$(hack/controlplane-assets.sh --print-dir)}" \
	  $(BIN)/pytest -m "e2e or registry" tests

.PHONY: test
test: $(STAMP) lint controlplane-assets registry-assets ## Everything CI runs: lint, types, layering, unit and e2e tests
	KUBEBUILDER_ASSETS="$${KUBEBUILDER_ASSETS:-$$(hack/controlplane-assets.sh --print-dir)}" \
	  $(BIN)/pytest tests

.PHONY: demo
demo: $(STAMP) controlplane-assets ## Run mlgate end to end on an embedded local control plane
	KUBEBUILDER_ASSETS="$${KUBEBUILDER_ASSETS:-$$(hack/controlplane-assets.sh --print-dir)}" \
	  $(BIN)/python hack/demo.py

.PHONY: bench
# The webhook-alone benchmark drives the server with wrk; without it (not root, no apt-get) a
# pooled aiohttp client stands in, and the page says which one measured.
BENCH_PACKAGES := wrk
.PHONY: bench-assets
bench-assets: ## Install wrk (apt-get) if missing and possible
	@command -v wrk >/dev/null || { \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; } || { \
	    echo "bench-assets: no wrk (as root: apt-get install $(BENCH_PACKAGES)); the aiohttp client stands in" >&2; exit 0; }; \
	  echo "bench-assets: apt-get install $(BENCH_PACKAGES)" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $(BENCH_PACKAGES) >/dev/null || \
	    echo "bench-assets: apt-get install $(BENCH_PACKAGES) failed; the aiohttp client stands in" >&2; }

.PHONY: bench
bench: $(STAMP) controlplane-assets bench-assets ## Benchmarks (timings are measured here, never asserted in tests)
	KUBEBUILDER_ASSETS="$${KUBEBUILDER_ASSETS:-$$(hack/controlplane-assets.sh --print-dir)}" \
	  $(BIN)/python bench/run.py

.PHONY: clean
clean: ## Remove the venv and caches (keeps the control-plane binary cache)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache operator/*.egg-info
