# The README's two commands are `make run` and `make test`; CI calls `make test` as it is.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-unit lint typecheck pytest services bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: set up and start the whole local stack (broker, gateway, consumers, Graph emulator)
run: $(STAMP)
	$(BIN)/igw dev

## test: set up, start the services the tests need, lint, type-check and run the tests
test: $(STAMP) services lint typecheck pytest

## test-unit: the broker-free tier (no Kafka, no Redis), for quick feedback while changing code
test-unit: $(STAMP)
	$(BIN)/pytest -m "not kafka and not redis" $(PYTEST_ARGS)

services:
	bash scripts/ensure-services

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

## bench: the side-by-side throughput benchmark (bench/README.md)
bench: $(STAMP)
	bash bench/run

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
