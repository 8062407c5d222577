# One command to set up and run the test suite (`make test`), one to see it work (`make demo`).
# Everything lands in .venv; the install is redone only when pyproject.toml or requirements.lock changes.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup lock test test-unit lint demo clean

setup: $(STAMP)

# torch==2.13.0 is named beside the project so pip keeps the CPU build found on this machine's disk
# (a bare `torch` would download a multi-GB CUDA build). GPU machines install their own torch: see README.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[worker,test]' 'torch==2.13.0'
	touch $(STAMP)

# requirements.lock pins every package of a working environment (a pip constraints file); after a
# change of dependencies in pyproject.toml: `make lock` in a fresh setup, and commit both.
lock: setup
	$(PY) -m pip install --quiet -e '.[worker,test]' 'torch==2.13.0'
	$(PY) -m pip list --format=freeze --exclude-editable --exclude pip --exclude setuptools > requirements.lock

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The unit tier needs no service; `test` then runs its PostgreSQL variants, the gateway tier and the
# end-to-end tier (PostgreSQL, Redis, Chromium).
test-unit: setup
	$(PY) -m pytest tests/unit -m "not postgres"

test: lint test-unit
	$(PY) -m pytest tests/unit -m postgres
	$(PY) -m pytest tests/gateway tests/e2e

demo: setup
	$(VENV)/bin/ourvidz demo

clean:
	rm -rf $(VENV) .ourvidz .pytest_cache .ruff_cache
