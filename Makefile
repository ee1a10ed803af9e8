# Two entry points for a fresh machine (Python 3.11+): `make serve` and `make test`.
# Both create .venv and install the project on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: serve test lint bench

$(BIN)/onboarding: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# Serves on http://$(HOST):$(PORT) with SQLite under var/, demo data, and the development mailbox;
# links in pages and emails follow HOST and PORT unless ONBOARDING_PUBLIC_BASE_URL is set.
# `make serve PORT=8731` (PORT also from the environment); `make serve HOST=0.0.0.0` listens on every
# interface. HOST only from make's command line: some shells export HOST as the machine's name.
PORT ?= 8000
HOST = 127.0.0.1
serve: $(BIN)/onboarding
	$(BIN)/onboarding demo
	$(BIN)/onboarding serve --host '$(HOST)' --port '$(PORT)'

lint: $(BIN)/onboarding
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# SQLite always; PostgreSQL too when ONBOARDING_TEST_DATABASE_URL is set; browser tests when Chromium is there.
test: lint
	$(BIN)/python -m pytest -q -n auto

bench: $(BIN)/onboarding
	$(BIN)/python bench/invitations.py
