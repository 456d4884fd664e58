# Pingyi: `make run` serves the demo, `make test` runs the whole suite (SQLite and PostgreSQL).
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FLASK_APP := wsgi
HOST ?= 127.0.0.1
PORT ?= 5000

CHROMIUM ?= /usr/bin/chromium
# Links printed and mailed by `make run` point at the port it serves, unless PINGYI_BASE_URL is
# set in the environment or in .env (phones on the network need the machine's own address).
LINK_HOST := $(if $(filter 0.0.0.0,$(HOST)),127.0.0.1,$(HOST))
BASE_URL_ENV := $(if $(PINGYI_BASE_URL)$(shell grep -s '^PINGYI_BASE_URL=' .env),,PINGYI_BASE_URL=http://$(LINK_HOST):$(PORT))

.PHONY: run test install translations demo-data clean bench system-deps

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
	$(BASE_URL_ENV) $(BIN)/flask demo

run: demo-data
	@echo "Pingyi on http://$(HOST):$(PORT)/  (staff pages: http://$(HOST):$(PORT)/staff/)"
	$(BASE_URL_ENV) $(BIN)/flask run --host $(HOST) --port $(PORT)

# The browser tests drive Debian's Chromium; CJK fonts make the screenshots readable.
system-deps:
	@if [ ! -x $(CHROMIUM) ] || ! fc-list 2>/dev/null | grep -qi "wenquanyi\|noto sans cjk"; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium and a CJK font"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null; \
	  else echo "missing: sudo apt-get install chromium fonts-wqy-microhei"; exit 1; fi; \
	fi

test: install translations system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench.ballots
	$(BIN)/python -m bench.results

clean:
	rm -rf $(VENV) instance .pytest_cache
