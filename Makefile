# Tidings — the two commands a user needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint typecheck pytest bench docs clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

## run: install, migrate the SQLite file and serve API + worker + mail catcher on :8000
run: $(STAMP)
	$(BIN)/tidings serve

## test: linters, type checks and the whole suite (PostgreSQL too when TIDINGS_TEST_DATABASE_URL is set)
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

## bench: the benchmarks in bench/ (prints our figures beside their baselines)
bench: $(STAMP)
	$(BIN)/python -m bench

## docs: regenerate the reference pages that come from the code
docs: $(STAMP)
	$(BIN)/python -m tidings.docgen

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
