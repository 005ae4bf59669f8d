# qfbridge — two commands: `make demo` and `make test`. Both bootstrap .venv themselves.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Prefer a working python3.13 (Lambda's runtime); pyenv shims may exist without being active.
PYTHON ?= $(shell for p in python3.13 $$(pyenv root 2>/dev/null)/versions/3.13*/bin/python3.13 python3; do \
             $$p -c 'import sys' >/dev/null 2>&1 && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= auto
PIP_VERSION := 26.3
SAM_CLI_VERSION := 1.170.0

help:
	@echo "make demo       run the whole pipeline on the laptop runtime and print what happened"
	@echo "make test       lint, type-check and run the test suite"
	@echo "make reliability  the full fault campaign (500+ dossiers, figures printed)"
	@echo "make bench      run the benchmarks (bench/results.json)"
	@echo "make openapi    regenerate docs/openapi.json, docs/api.md, docs/events/*.schema.json and docs/events.md from the code"
	@echo "make sam-check  sam validate --lint and sam build (own virtualenv)"
	@echo "make aws-models regenerate layers/core/qfbridge/aws_models (after a botocore upgrade or a new AWS call)"
	@echo "make ca-roots   regenerate layers/core/qfbridge/ca_roots (after a certifi upgrade)"
	@echo "make layer-lock recompile the layer's hashed lock from layers/core/requirements.in"
	@echo "make dev-lock   recompile the development environment's hashed lock (requirements-dev.txt)"

# The development environment is the lock (requirements-dev.txt: every package of the dev and local
# extras, pinned with its hashes), then qfbridge itself, editable, with the locked build backend.
$(STAMP): pyproject.toml requirements-dev.txt layers/core/requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==$(PIP_VERSION)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/qfbridge demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(STAMP) lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) -q

# The full fault campaign (>= 500 dossiers over >= 10 tenants, ~8 minutes); make test runs a quick one.
reliability: $(STAMP)
	QFBRIDGE_CAMPAIGN=full $(BIN)/python -m pytest tests/reliability/test_fault_campaign.py -p no:xdist -q

bench: $(STAMP)
	$(BIN)/python -m bench

# The AWS service models qfbridge's clients load (botocore's, cut to the operations qfbridge sends).
aws-models: $(STAMP)
	$(BIN)/python -m qfbridge_local.aws_models

# The root certificates of qfbridge's HTTPS clients: certifi's, one file per certificate named by
# its subject's hash (OpenSSL reads the ones a chain names, not all of them at the first request).
ca-roots: $(STAMP)
	$(BIN)/python -m qfbridge_local.ca_roots

openapi: $(STAMP)
	$(BIN)/qfbridge openapi --write docs/openapi.json --markdown docs/api.md
	$(BIN)/python -c "from qfbridge_local.operator import event_catalogue; event_catalogue('docs/events', 'docs/events.md')"

# The development environment's lock, resolved for every platform and Python 3.11+ from the dev and
# local extras of pyproject.toml; `make venv` installs it.
dev-lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra local --universal --python-version 3.11 \
	  --generate-hashes -o requirements-dev.txt

# The layer's lock: every package sam build installs, pinned with its hashes, resolved for Lambda
# (arm64, python3.13) from the direct dependencies in layers/core/requirements.in.
layer-lock: $(STAMP)
	$(BIN)/uv pip compile layers/core/requirements.in --generate-hashes --python-version 3.13 \
	  --python-platform aarch64-manylinux_2_28 -o layers/core/requirements.txt

# SAM CLI lives in its own virtualenv: its pins must not constrain the application's.
SAM_VENV := .venv-sam
$(SAM_VENV)/.installed:
	@test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet pip==$(PIP_VERSION)
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION)
	@touch $@

sam-check: $(SAM_VENV)/.installed
	PATH="$(dir $(PYTHON)):$$PATH" SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam validate --lint -t infra/template.yaml --region eu-west-3
	PATH="$(dir $(PYTHON)):$$PATH" SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam build -t infra/template.yaml --build-dir .aws-sam/build
	@# Lambda's /opt is read-only: a layer module without its .pyc is compiled at every cold request.
	$(PYTHON) -c "import sys; from bench.package_size import bytecode; \
	  b = bytecode(__import__('pathlib').Path('.aws-sam/build/CoreLayer/python')); print('layer bytecode:', b); \
	  sys.exit(b['without_bytecode'] != 0 or b['modules'] == 0)"

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache

.PHONY: help venv demo lint test reliability bench aws-models ca-roots openapi sam-check layer-lock dev-lock clean
