# The two set-up commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
DATA   ?= ./var
DOMAIN ?= demo.waypost.test
# Privileged ports need root; everyone else gets every port shifted by 10000.
PORT_OFFSET ?= $(shell [ "$$(id -u)" = 0 ] && echo 0 || echo 10000)
LISTEN ?= 127.0.0.1

.PHONY: run test lint bench fuzz clean

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

# The long fuzz pass (tests/fuzz, README "Testing"): FUZZ_EXAMPLES per target,
# repeated with fresh random seeds until FUZZ_SECONDS have passed (0: once).
# ATHERIS=FILE::TEST runs that one target coverage-guided with atheris instead.
FUZZ_EXAMPLES ?= 5000
FUZZ_SECONDS ?= 0
ATHERIS ?=
fuzz: $(BIN)/.installed
ifeq ($(ATHERIS),)
	end=$$(( $$(date +%s) + $(FUZZ_SECONDS) )); \
	while :; do \
	  HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q \
	    tests/fuzz $(wildcard tests/test_*_fuzz.py) || exit 1; \
	  [ $$(date +%s) -lt $$end ] || break; \
	done
else
	$(BIN)/python -m pip install -q -e '.[fuzz]'
	$(BIN)/python -m tests.fuzz.atheris_run $(ATHERIS) -max_total_time=$(or $(filter-out 0,$(FUZZ_SECONDS)),600)
endif

bench: $(BIN)/.installed
	$(BIN)/python bench/router.py

clean:
	rm -rf $(VENV) build src/*.egg-info
