# The README's commands, and the separate targets for slow tests and benchmarks.
# Everything runs inside .venv, created and filled by `make setup`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test test-slow test-all bench report clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

# The main job: the quickstart sweep on an embedded local Ray, then its report.
run: setup
	$(BIN)/recourse-ray run sweeps/quickstart.yaml --results results --store-states
	$(BIN)/recourse-ray report results/quickstart -o results/quickstart-report

report: setup
	$(BIN)/recourse-ray report results/quickstart -o results/quickstart-report

test: setup
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: setup
	$(BIN)/python -m pytest -m slow -q

test-all: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf results .pytest_cache
