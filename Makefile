# Each target sets up .venv itself on a fresh machine, then runs.
# TORCH picks the PyTorch build; CI sets TORCH=torch==2.13.0 (a local CPU wheel).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch>=2.3
# The shared datasets beside the repo, unless the caller points elsewhere.
ifneq ($(wildcard ../shared/data),)
export DEEPZOO_DATA ?= $(abspath ../shared/data)
endif

.PHONY: demo test test-seeds bench lint clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/deepzoo list
	$(BIN)/deepzoo train cnn-mnist --run-dir runs/demo/cnn-mnist --overwrite
	$(BIN)/deepzoo eval runs/demo/cnn-mnist

# Debian's headless Chromium for the report's browser test (tests/test_report.py); where it cannot
# be installed (no root, no apt) that test fails and says so.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium could not be installed: the report's browser test will fail"

# One test worker per core (pytest-xdist), idle workers taking tests from busy ones.
PARALLEL := -n auto --dist worksteal

test: $(VENV)/.installed browser
	$(BIN)/python -m pytest $(PARALLEL)

# The benchmarks the docs show, each with --quick (a few minutes; CI runs it after `make test`).
test-docs-bench: $(VENV)/.installed
	$(BIN)/python -m pytest -m docs_bench tests/test_docs.py

# Every test under five seed offsets (see tests/conftest.py): a training test must pass for each.
test-seeds: $(VENV)/.installed
	for k in 0 1 2 3 4; do DEEPZOO_TEST_SEED_OFFSET=$$k $(BIN)/python -m pytest $(PARALLEL) || exit 1; done

# The peers the speed benchmarks compare against are installed for the benchmarks only.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/deepzoo bench

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) runs
