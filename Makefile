# The project's commands. Every target installs what it needs into .venv first: `install` and `demo`
# only what the bridge runs on, the development targets the test and lint tools as well.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-dev demo test test-quick lint types format ci audit lock bench

# constraints.txt pins every package to the versions CI tested (scripts/lock rewrites it).
# scripts/system-packages adds redis-server (the demo's and the tests' private Redis) when it is
# missing, as root; otherwise it says in one line how to get it.
$(BIN)/.installed-run: pyproject.toml constraints.txt
	scripts/system-packages redis-server
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(BIN)/.installed: $(BIN)/.installed-run
	scripts/system-packages
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(BIN)/.installed-run

install-dev: $(BIN)/.installed

# On a redis-server of its own; `magbridge demo --redis-url URL` runs on an empty database instead.
demo: install
	$(BIN)/magbridge demo

test: install-dev
	$(BIN)/pytest

# The tests not marked slow (no worker processes, outages or long fuzzing): well under a minute.
test-quick: install-dev
	$(BIN)/pytest -m "not slow"

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: install-dev
	$(BIN)/mypy

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Known vulnerabilities in the pinned versions (pip-audit); says so loudly when no service answers.
audit: install-dev
	$(BIN)/python scripts/audit

lock:
	PYTHON=$(PYTHON) scripts/lock

# The benchmark needs wrk (a Debian package); it runs real processes on loopback, a few minutes.
bench: install-dev
	command -v wrk >/dev/null || apt-get install -y wrk
	$(BIN)/python benchmarks/run.py
