# The README's two commands: `make run` and `make test`. Everything else is a helper for them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# uv installs exactly what uv.lock holds (the versions the tests ran against); the Dockerfile and CI
# install from the same file. `uv lock` after changing pyproject.toml's dependencies.
UV_VERSION := 0.13.8
UV := UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv
STAMP := $(VENV)/.installed-dev

.PHONY: run test lint typecheck pytest services demo bench clean

$(BIN)/uv:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)

# --inexact: keep uv itself in the environment.
$(STAMP): pyproject.toml uv.lock | $(BIN)/uv
	$(UV) sync --frozen --inexact --extra dev
	@touch $(STAMP)

## make run: install, migrate, then the API on :8000 and one worker in the foreground (Ctrl-C stops both)
run: $(STAMP)
	@scripts/run

## make test: install, make sure PostgreSQL and Redis run, then lint, type-check and test
test: $(STAMP) services lint typecheck pytest

services:
	@scripts/services

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict app

pytest: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

## make demo: the simulator and the service play shuffled, duplicated lifecycles
demo: $(STAMP) services
	$(BIN)/python -m app demo

## make bench: the three benchmarks of bench/ (see bench/README.md); wants an otherwise idle machine
bench: $(STAMP) services
	$(BIN)/python -m bench.callbacks; \
	$(BIN)/python -m bench.worker; \
	$(BIN)/python -m bench.api

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
