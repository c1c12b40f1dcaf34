# One way to run things: `make test` here is exactly what .ci/run runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all venv tools test unit integration e2e lint bench demo manifests constraints clean

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

# Needs an NVIDIA GPU (fails without one); CI has none and runs `make test` only.
test-gpu: venv
	bash hack/run-tests.sh --noconftest -p no:cacheprovider tests/gpu

bench: venv
	bash hack/run-benchmarks.sh

# The CRDs are generated from the pydantic models in ganforge/api; never edit them by hand. The
# generator names each kind with its file; each file is written to .tmp first, so a failed
# generation leaves the committed one as it was.
manifests: venv tools
	@set -eo pipefail; $(PY) -m ganforge.api.crd --list | while read -r kind path; do \
		mkdir -p "$$(dirname "$$path")"; \
		echo "$(PY) -m ganforge.api.crd --kind $$kind > $$path"; \
		$(PY) -m ganforge.api.crd --kind "$$kind" > "$$path.tmp"; \
		mv "$$path.tmp" "$$path"; \
	done
	$(PY) -m ganforge.local.chart

# The exact package versions the images install: those of the virtualenv the tests pass in, less
# the test and lint tools.
DEV_ONLY := pytest pytest-timeout ruff mypy mypy_extensions types-PyYAML import-linter grimp iniconfig pluggy pathspec lupa tritonclient geventhttpclient gevent greenlet zope.event zope.interface brotli python-rapidjson promql-parser
constraints: venv
	@{ echo "# Exact versions the images install (pip -c): the set the test suite last passed with."; \
	  echo "# Regenerate with \`make constraints\` after changing dependencies in pyproject.toml."; \
	  $(VENV)/bin/pip freeze --exclude-editable | grep -v -i -E "^($$(echo $(DEV_ONLY) | tr ' ' '|'))=="; \
	} > images/constraints.txt.tmp && mv images/constraints.txt.tmp images/constraints.txt

# Starts `ganforge local` (left running; `ganforge local down` stops it), installs the operator,
# trains the Fashion-MNIST example with a spot reclaim half-way. DEMO_ARGS=--down stops it at the end.
demo: venv tools
	$(PY) hack/demo.py $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
