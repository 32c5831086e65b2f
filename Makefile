# The project's commands. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-quick lint types format ci audit lock bench

# constraints.txt pins every package to the versions CI tested (scripts/lock rewrites it).
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/magbridge demo

test: install
	$(BIN)/pytest

# The tests not marked slow (no worker processes, outages or long fuzzing): well under a minute.
test-quick: install
	$(BIN)/pytest -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: install
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Known vulnerabilities in the pinned versions (pip-audit); says so loudly when no service answers.
audit: install
	$(BIN)/python scripts/audit

lock:
	PYTHON=$(PYTHON) scripts/lock

# The benchmark needs wrk (a Debian package); it runs real processes on loopback, a few minutes.
bench: install
	command -v wrk >/dev/null || apt-get install -y wrk
	$(BIN)/python benchmarks/run.py
