# Two commands: `make demo` and `make test`. Both build .venv/ from pyproject.toml's pins.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[server,bench,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/blindsum demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/blindsum bench

clean:
	rm -rf $(VENV)
