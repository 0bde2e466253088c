# wetbot-rewards: `make run` starts the service, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck check bench install clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "wetbot-rewards needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)  ## create .venv and install the service with its dev tools

run: $(STAMP)  ## start the Procfile (web, worker, eventsub); demo WetBot + Twitch simulators when WETBOT_API_KEY is unset
	@./scripts/run.sh

test: $(STAMP)  ## the whole suite (needs Redis at 127.0.0.1:6379, uses DB 15); six pytest workers, one file each at a time (the tests mostly wait, so more workers than cores pays)
	$(PY) -m pytest -n 6 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck test

bench: $(STAMP)  ## rate-limiter benchmark (prints figures; see BENCHMARKS.md)
	$(PY) -m bench.limiter

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
