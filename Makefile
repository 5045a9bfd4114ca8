# The README's two commands are `make run` and `make test`; CI calls `make test` as it is.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# What running the local stack needs (igw, uvloop, PyYAML for the sample rules, the Tansu broker);
# `make test` adds the test toolchain on top.
RUN_STAMP := $(VENV)/.run-stamp
STAMP := $(VENV)/.installed-stamp
# Flags for `igw dev`, e.g. make run ARGS='--port 18080 --kafka-port 19092'
ARGS ?=

.PHONY: run test test-unit lint typecheck pytest services container-check bench clean

$(BIN)/python:
	@echo "make: creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): setup.cfg pyproject.toml | $(BIN)/python
	@echo "make run: installing what the local stack needs into $(VENV) (once: 22 packages, about 120 MB, under a minute)"
	$(BIN)/pip install --disable-pip-version-check --progress-bar on -e '.[fast,yaml,local]'
	touch $(RUN_STAMP)

$(STAMP): setup.cfg pyproject.toml | $(BIN)/python
	@echo "make: installing igw and the test toolchain into $(VENV) (once; a few minutes on a fresh machine)"
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP) $(RUN_STAMP)

## run: set up and start the whole local stack (broker, gateway, consumers, Graph emulator); ARGS= passes flags
run: $(RUN_STAMP)
	$(BIN)/igw dev $(ARGS)

## test: check the services the tests need first (fails at once, with the command to install them),
## then set up, lint, type-check and run the tests
test: services $(STAMP) lint typecheck pytest

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

## container-check: build the image and run the gateway in real containers with its secrets mounted
## as each deploy file mounts them (podman; installs it from Debian when missing). Not part of CI.
container-check:
	bash scripts/container-check

## bench: the side-by-side throughput benchmark (bench/README.md)
bench: $(STAMP)
	bash bench/run

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
