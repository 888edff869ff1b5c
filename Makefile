# The two commands of the README: `make demo` and `make test`. Each creates .venv and installs
# what it needs by itself, so a fresh machine needs nothing but python3.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist workers; each test file runs whole on one worker (module-scoped servers are built once).
# Most e2e time is spent waiting on processes, so 2 workers halve the suite on a 2-core machine.
TEST_WORKERS ?= 2

.PHONY: test typecheck demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check --quiet src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

typecheck: $(STAMP)
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/rollwise demo

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
