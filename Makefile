# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
DATA   ?= ./var
DOMAIN ?= demo.waypost.test
# Privileged ports need root; everyone else gets every port shifted by 10000.
PORT_OFFSET ?= $(shell [ "$$(id -u)" = 0 ] && echo 0 || echo 10000)
LISTEN ?= 127.0.0.1

.PHONY: run test lint bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

run: $(BIN)/.installed
	test -f $(DATA)/waypost.db || $(BIN)/waypost --data $(DATA) init --domain $(DOMAIN)
	$(BIN)/waypost --data $(DATA) serve --listen $(LISTEN) --port-offset $(PORT_OFFSET)

# Static checks first (style, types, the layers of design.md), then the tests.
test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo

bench: $(BIN)/.installed
	$(BIN)/python bench/router.py

clean:
	rm -rf $(VENV) build src/*.egg-info
