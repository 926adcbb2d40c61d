# The two commands of the README: `make demo` (set up, then show real decisions) and
# `make test` (set up, then run the whole suite: lint, types, tests). Both work on a fresh clone.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test check pytest clean fleet-packages

# Debian packages the fleet tests run for real (tests/fleet): installed when missing and root.
FLEET_PACKAGES := redis-server postgresql

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

pytest: setup fleet-packages
	$(BIN)/python -m pytest

test: check pytest

fleet-packages:
	@missing=$$(for p in $(FLEET_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
