# Two entry points on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# componentize-js and its node_modules live here, inside the project.
export KAMI_TOOLCHAIN ?= $(CURDIR)/.toolchain
# The demo's daemon keeps its state here, away from the user's own kamid.
DEMO_HOME ?= $(CURDIR)/.kami-demo

.PHONY: demo test lint typecheck pytest bench clean venv registry

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

KAMICTL := KAMI_HOME=$(DEMO_HOME) $(BIN)/kamictl

demo: $(STAMP)
	$(KAMICTL) build examples/echo
	$(KAMICTL) build examples/hello
	$(KAMICTL) install examples/echo --yes
	$(KAMICTL) install examples/hello --yes
	$(KAMICTL) list
	$(KAMICTL) exec dev.kami.echo --input '{"text": "hello from KAMI"}'
	$(KAMICTL) exec dev.kami.hello --input '{"name": "agent"}'
	@echo "The demo daemon keeps running (KAMI_HOME=$(DEMO_HOME)); stop it with: $(KAMICTL) daemon stop"

lint: $(STAMP)
	$(BIN)/ruff check kamid kamictl tests
	$(BIN)/ruff format --check kamid kamictl tests

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider

test: lint typecheck pytest

# A signed registry of the example tools in registry/build/ (docs/supply-chain.md).
registry: $(STAMP)
	KAMI_HOME=$(DEMO_HOME) $(BIN)/python registry/build.py

bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks

clean:
	-KAMI_HOME=$(DEMO_HOME) $(BIN)/kamictl --no-autostart daemon stop
	rm -rf $(VENV) $(DEMO_HOME) .mypy_cache .ruff_cache .pytest_cache
