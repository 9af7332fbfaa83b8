# Two entry points for a fresh machine with Python 3.11: `make book` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= quick

.PHONY: install book test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq -e '.[dev]'
	touch $@

install: $(STAMP)

book: $(STAMP)
	$(BIN)/bmd book --profile $(PROFILE)

test: $(STAMP)
	$(BIN)/ruff check bmd tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check bmd tests benchmarks

clean:
	rm -rf _build runs book/_build
