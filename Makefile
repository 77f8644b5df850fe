# Newcomer commands: `make run` serves everything, `make test` runs the whole suite.
# Both set up what they need first (virtualenv, Python packages, Debian packages when root).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Test processes running at once (pytest-xdist): most tests wait on real servers and workers.
TEST_PROCESSES ?= 3
# The suite starts hundreds of interpreters (APIs, workers, schedulers): each reuses the bytecode the first
# one wrote (__pycache__, ignored by git) instead of compiling the project again (~0.5 s of CPU per API
# start), whatever the caller's PYTHONDONTWRITEBYTECODE says.
TEST_ENV := env -u PYTHONDONTWRITEBYTECODE

.DEFAULT_GOAL := help
.PHONY: help setup system-deps browser-deps run worker test faults lint format bench clean

help:
	@echo "make run      set up, then run API + dashboard, workers + scheduler in RQ mode (Ctrl-C stops all)"
	@echo "make test     set up, then run the whole test suite on SQLite and PostgreSQL (TEST_PROCESSES=3 at once)"
	@echo "make faults   only the fault-injection suite"
	@echo "make lint     ruff + mypy"
	@echo "make bench    benchmarks: print a table, write bench/results/*.json (BENCH_ARGS: --quick, --analysis-only, --uploads-only, --workers-only, --breakdown, --rounds N, --baseline DIR)"

$(STAMP): pyproject.toml
	@bash scripts/ensure-venv.sh "$(PYTHON)" "$(VENV)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

setup: $(STAMP) system-deps

system-deps:
	@bash scripts/ensure-system-deps.sh redis-server postgresql prometheus

browser-deps:
	@bash scripts/ensure-system-deps.sh chromium

run: setup
	$(PY) -m devserver.run

worker: setup
	./start_worker.sh

test: setup browser-deps
	$(TEST_ENV) $(PY) -m pytest -n $(TEST_PROCESSES) --dist loadgroup $(PYTEST_ARGS)

faults: setup
	$(TEST_ENV) $(PY) -m pytest -m faults tests/faults $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
