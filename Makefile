# One entry point for common tasks. Every target installs what it needs first.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: setup test lint format demo bench chaos devstack-up devstack-down clean

setup: $(VENV)/.installed $(VENV)/.tools $(VENV)/.checkov $(VENV)/.rclone

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.tools: $(VENV)/.installed
	$(BIN)/replicator devstack install
	touch $@

# checkov (tests/deploy) in a virtualenv of its own: its pinned dependencies would downgrade
# the SDKs the product is tested with.
$(VENV)/.checkov:
	$(PYTHON) -m venv $(VENV)/tools/checkov
	$(VENV)/tools/checkov/bin/pip install --quiet 'checkov>=3.2,<4'
	touch $@

# rclone: the chaos suite's outside checker and the benchmarks' peer, from the system's packages.
$(VENV)/.rclone:
	@command -v rclone >/dev/null || apt-get install -y -q rclone || sudo apt-get install -y -q rclone \
		|| { echo "the tests need rclone: install it (apt-get install rclone, brew install rclone)" >&2; exit 1; }
	touch $@

test: setup
	$(BIN)/pytest

# deptry: every imported package is declared; tests/ and benchmarks/ may also import the test
# extra, the product may not.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/deptry .
	$(BIN)/deptry tests benchmarks --exclude '\.venv' --ignore DEP002,DEP004 \
		--known-first-party replicator --known-first-party connectors \
		--known-first-party tests --known-first-party benchmarks

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: setup
	$(BIN)/replicator demo

SUITE ?= quick
bench: setup
	$(BIN)/replicator bench --suite $(SUITE) --out bench-results

# The chaos suite's acceptance run on a private test bed (tests/chaos/README.md); ~20 min.
chaos: setup
	$(BIN)/python -m tests.chaos --seed 7 --mutations 2000 --minutes 10

devstack-up: setup
	$(BIN)/replicator devstack up

devstack-down:
	$(BIN)/replicator devstack down

clean:
	rm -rf $(VENV) .devstack .pytest_cache .mypy_cache .ruff_cache
