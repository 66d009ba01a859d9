# Two commands: `make demo` and `make test`. Both build .venv/ from pyproject.toml's pins.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench screenshots clean chromium

# Playwright must never download a browser: the browser tests drive Debian's chromium,
# which only the test target needs.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/python -m pip install --quiet -e '.[server,bench,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/blindsum demo

chromium:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

test: $(STAMP) chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/blindsum bench

# Regenerates docs/dashboard.png from the browser tests' screenshots.
screenshots: $(STAMP) chromium
	BLINDSUM_UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/browser

clean:
	rm -rf $(VENV)
