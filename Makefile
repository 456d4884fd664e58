# Pingyi: `make run` serves the demo, `make test` runs the whole suite (SQLite and PostgreSQL).
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FLASK_APP := wsgi
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: run test install translations demo-data clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

translations: $(STAMP)
	$(BIN)/pybabel compile --use-fuzzy -d translations -f >/dev/null

demo-data: install translations
	mkdir -p instance
	$(BIN)/flask db upgrade
	$(BIN)/flask demo

run: demo-data
	@echo "Pingyi on http://$(HOST):$(PORT)/  (staff pages: http://$(HOST):$(PORT)/staff/)"
	$(BIN)/flask run --host $(HOST) --port $(PORT)

test: install translations
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) instance .pytest_cache
