# Two commands matter: `make demo` (run the job on the bundled sample against the bundled
# simulator) and `make test` (the whole suite). Both build .venv from nothing.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv test lint unit demo bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline jobs tests airflow_dags

unit: $(STAMP)
	$(PY) -m pytest

test: lint unit

demo: $(STAMP)
	$(VENV)/bin/reccobeats-etl demo

bench: $(STAMP)
	$(PY) -m tests.benchmarks.run

clean:
	rm -rf $(VENV) .venv-airflow data/state data/output data/demo
