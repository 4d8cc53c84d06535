# Two commands matter: `make demo` (run the job on the bundled sample against the bundled
# simulator) and `make test` (the whole suite). Both build .venv from nothing.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Airflow gets its own venv: its ~150 dependencies stay out of the main suite's, and the
# main venv stays fast to build. Reinstalled only when pyproject.toml changes (the stamp).
AF_VENV  := .venv-airflow
AF_PY    := $(AF_VENV)/bin/python
AF_STAMP := $(AF_VENV)/.installed

.PHONY: venv test lint unit test-airflow demo bench bench-matrix clean redis-server tmux

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

$(AF_STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(AF_VENV)
	$(AF_PY) -m pip install --quiet --upgrade pip
	$(AF_PY) -m pip install --quiet -e '.[dev,airflow]'
	@touch $(AF_STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline jobs tests airflow_dags
	$(VENV)/bin/mypy

# The shared-budget tests start a real redis-server (tests/redis_support.py). Installed from the
# machine's package manager when missing and we are root; in CI (CI=true) a server that cannot be
# installed fails the build, elsewhere those tests skip with a hint (docs/decisions.md).
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server (apt-get)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      redis-server >/dev/null || exit 2; \
	  elif [ "$${CI:-}" = true ]; then \
	    echo "redis-server missing and cannot be installed (need root + apt-get)"; exit 2; \
	  else \
	    echo "warning: redis-server missing: the shared-budget tests will skip"; \
	  fi; }
	@command -v redis-server >/dev/null 2>&1 && redis-server --version || [ "$${CI:-}" != true ]

# tests/test_terminal.py records the bars in a real terminal with tmux; same rule as redis-server.
tmux:
	@command -v tmux >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing tmux (apt-get)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      tmux >/dev/null || exit 2; \
	  elif [ "$${CI:-}" = true ]; then \
	    echo "tmux missing and cannot be installed (need root + apt-get)"; exit 2; \
	  else \
	    echo "warning: tmux missing: the terminal-recording test will skip"; \
	  fi; }

unit: $(STAMP) redis-server tmux
	$(PY) -m pytest

# The DAG on a real Airflow 3: DagBag import, then `airflow dags test` against the simulator.
test-airflow: $(AF_STAMP)
	$(AF_PY) -m pytest -m airflow tests/airflow

test: lint unit test-airflow

demo: $(STAMP)
	$(VENV)/bin/reccobeats-etl demo --output data/demo

bench: $(STAMP)
	$(PY) -m tests.benchmarks.run

# the job as a user runs it (defaults + --rate-limit) vs the greedy client; QUICK=1: ~3-6 min;
# NIGHT2=1: + a second night of ours per case (new tracks, the state the first night left);
# ORACLE=1: + a client that knew the server; DRAWS=N: each latency case on N latency draws
bench-matrix: $(STAMP)
	$(PY) -m tests.benchmarks.matrix $(if $(QUICK),--quick) $(if $(NIGHT2),--night2) \
		$(if $(ORACLE),--oracle) $(if $(DRAWS),--draws $(DRAWS))

clean:
	rm -rf $(VENV) .venv-airflow data/state data/output data/demo
