# Every target sets itself up: a virtual environment in .venv that sees the system's packages
# (so an already-installed PyTorch is reused) and weakseg installed into it in editable mode.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: setup demo bench test lint

$(VENV)/.setup-stamp: pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.setup-stamp

demo: setup
	$(VENV)/bin/weakseg demo

bench: setup
	$(PY) benchmarks/filtering.py

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
