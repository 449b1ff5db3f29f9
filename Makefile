# One entry point for common tasks. Every target installs what it needs first.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: setup test lint format demo bench devstack-up devstack-down clean

setup: $(VENV)/.installed $(VENV)/.tools

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.tools: $(VENV)/.installed
	$(BIN)/replicator devstack install
	touch $@

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: setup
	$(BIN)/replicator demo

SUITE ?= quick
bench: setup
	$(BIN)/replicator bench --suite $(SUITE) --out bench-results

devstack-up: setup
	$(BIN)/replicator devstack up

devstack-down:
	$(BIN)/replicator devstack down

clean:
	rm -rf $(VENV) .devstack .pytest_cache .mypy_cache .ruff_cache
