# The two commands of the README: `make demo` (set up, then show real decisions) and
# `make test` (set up, then run the whole suite: lint, types, tests). Both work on a fresh clone.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test check pytest clean servers

# Debian packages of the real servers the suite runs: the proxies of tests/serve (nginx, caddy)
# and the fleet's shared stores of tests/fleet (redis-server, postgresql).
SERVER_PACKAGES := nginx caddy redis-server postgresql

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

pytest: setup servers
	$(BIN)/python -m pytest

test: servers check pytest

# Installed when missing and when we are root (CI is); elsewhere the tests skip what is
# missing, and under CI=true they fail.
servers:
	@missing=$$(for p in $(SERVER_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
