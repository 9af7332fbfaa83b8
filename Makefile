# Two entry points for a fresh machine with Python >= 3.11: `make book` and `make test`.
# PYTHON may be overridden (make test PYTHON=python3.12); it is only used to create .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONSTRAINTS := constraints/docs.txt
PROFILE ?= quick
PY_OK  := import sys; sys.exit(sys.version_info < (3, 11))

.PHONY: install book test lint clean

# (Re)create .venv when it is missing, half-created (no working bin/python) or left by a failed
# install (no stamp), then install the project with the pinned documentation toolchain.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	@if [ ! -f $@ ] || ! $(BIN)/python -c '$(PY_OK)' >/dev/null 2>&1; then \
	    $(PYTHON) -c '$(PY_OK)' >/dev/null 2>&1 || { \
	        echo "make: bmd-cxr needs Python >= 3.11, but PYTHON=$(PYTHON) is $$($(PYTHON) --version 2>/dev/null || echo "not found"); run: make $(MAKECMDGOALS) PYTHON=/path/to/python3.11" >&2; \
	        exit 1; }; \
	    if [ -e $(VENV) ]; then echo "make: $(VENV) is incomplete (no working python or no finished install): recreating it"; rm -rf $(VENV); fi; \
	    $(PYTHON) -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

install: $(STAMP)

book: $(STAMP)
	$(BIN)/bmd book --profile $(PROFILE)

test: $(STAMP)
	$(BIN)/ruff check bmd tests benchmarks book
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check bmd tests benchmarks book
	$(BIN)/lint-imports

clean:
	rm -rf _build runs book/_build
