# One way to run things: `make test` here is exactly what .ci/run runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all venv tools test unit integration e2e lint bench demo manifests clean

all: test

# Reinstall when the dependency list changes; the editable install picks up code changes itself.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

tools:
	bash hack/tools.sh

test: venv tools
	bash hack/run-tests.sh tests/unit tests/integration tests/e2e

unit: venv
	bash hack/run-tests.sh tests/unit

integration: venv tools
	bash hack/run-tests.sh tests/integration

e2e: venv tools
	bash hack/run-tests.sh tests/e2e

lint: venv
	$(VENV)/bin/ruff check ganforge tests benchmarks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

bench: venv
	bash hack/run-benchmarks.sh

demo:
	@echo "make demo needs the GANTrainingJob operator, which is not built yet (see README: Status)." >&2
	@exit 1

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
