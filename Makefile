# The two commands of the README: `make demo` (set up, then show real decisions) and
# `make test` (set up, then run the whole suite: lint, types, tests). Both work on a fresh clone.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test check pytest clean servers

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: setup
	$(BIN)/python examples/demo.py

check: setup
	$(BIN)/ruff check policyauth tests benchmarks examples
	$(BIN)/ruff format --check policyauth tests benchmarks examples
	$(BIN)/mypy

pytest: setup
	$(BIN)/python -m pytest

test: servers check pytest

# The real proxies the serve tests run (tests/serve/proxies.py): installed when missing and
# when we are root (CI is); elsewhere the tests skip them, and under CI=true they fail.
servers:
	@if [ "$$(id -u)" = 0 ] && ! { command -v nginx && command -v caddy; } >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx caddy; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
