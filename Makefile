# rbee model dashboard. `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
PORT ?= 8000
VENV := .venv
PY := $(VENV)/bin/python
PYTHON_VERSION := $(shell cat .python-version)
# The interpreter named by .python-version: pyenv's build if there is one, else python3.13.
BASE_PYTHON := $(firstword $(wildcard $(HOME)/.pyenv/versions/$(PYTHON_VERSION)/bin/python $(PYENV_ROOT)/versions/$(PYTHON_VERSION)/bin/python) $(shell command -v python3.13))
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# Debian packages the tests and the benchmark drive: a real browser, a real OCI registry,
# and aria2c, the multi-connection downloader the benchmark compares against.
DEBS := aria2 chromium docker-registry

.PHONY: run test test-fast worker bench bench-fleet deps venv migrate lint clean

$(VENV)/.installed: requirements.lock .python-version
	@test -n "$(BASE_PYTHON)" || { echo "Python $(PYTHON_VERSION) not found (pyenv install $(PYTHON_VERSION))"; exit 1; }
	@test -x $(PY) || $(BASE_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@touch $@

venv: $(VENV)/.installed

deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

migrate: venv
	$(PY) manage.py migrate --noinput
	$(PY) manage.py ensure_admin

run: migrate
	@echo "rbee model dashboard on http://127.0.0.1:$(PORT)/ (Ctrl-C stops it)"
	$(VENV)/bin/daphne -b 127.0.0.1 -p $(PORT) rbee.asgi:application

worker: venv
	@test -n "$(HIVE)" || { echo "usage: make worker HIVE=<name>"; exit 2; }
	$(PY) manage.py hive_worker --hive $(HIVE)

test: venv deps
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not browser and not slow"

bench: venv deps
	$(PY) bench/download.py

# Three hives against a throttled origin (needs PostgreSQL and Redis on 127.0.0.1).
bench-fleet: venv
	$(PY) bench/fleet.py

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
