# matloop — every target builds what it needs from scratch.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: install lint test test-all demo bench clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU torch first (local wheel); a bare `torch` would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	# constraints.txt: the exact versions CI tests, inside pyproject's ranges (deploy/freeze_constraints.py).
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	# GPAW (real DFT, `gpaw` oracle) builds against Debian's libxc-dev/libblas-dev/liblapack-dev
	# (.ci/run installs them); the C++ extension only compiles with CC=g++. ~40 s.
	CC=g++ $(PY) -m pip install --quiet -c constraints.txt -e '.[dev,dft]' || { echo "GPAW build failed: apt-get install libxc-dev libblas-dev liblapack-dev" >&2; exit 1; }
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install matloop with dev tools

lint: $(STAMP)  ## ruff + mypy
	$(VENV)/bin/ruff check discovery oracles orchestration tests
	$(VENV)/bin/mypy

test: $(STAMP) lint  ## lint, then the test suite (everything but the real-DFT tests)
	$(VENV)/bin/pytest -m "not dft" -q

test-all: $(STAMP) lint  ## every test, DFT included
	$(VENV)/bin/pytest -q

demo: $(STAMP)  ## 3-round CHGNet demo (configs/demo.yaml): ephemeral Prefect, SQLite store, local MLflow; prints where to look
	PREFECT_HOME=$(CURDIR)/.prefect PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120 $(VENV)/bin/matloop run configs/demo.yaml
	$(VENV)/bin/matloop status demo
	@echo "results: runs/demo/ (store.db, batch tables, CIFs, plots); MLflow + Prefect UIs: .venv/bin/matloop ui"

bench: $(STAMP)  ## speed benchmarks as JSON
	$(VENV)/bin/matloop bench gfn --json

clean:  ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
