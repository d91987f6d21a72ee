# Fulcrum. `make demo` runs the whole product; `make test` runs every check. Both work on a fresh machine:
# with DATABASE_URL / CELERY_BROKER_URL unset, embedded PostgreSQL and Redis are started under .data/.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: demo test check lint typecheck migrations-check pytest bench clean-data

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m apps.devstack.demo

test: $(VENV)/.installed
	$(PY) -m config.embedded run -- $(MAKE) --no-print-directory check

check: lint typecheck migrations-check pytest

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck:
	$(PY) -m mypy apps config bench

migrations-check:
	$(PY) manage.py makemigrations --check --dry-run

# --ds: importing `config` sets DJANGO_SETTINGS_MODULE to local settings for the processes it starts.
pytest:
	$(PY) -m pytest -q --ds=config.settings.test

bench: $(VENV)/.installed
	$(PY) -m config.embedded run -- $(PY) bench/sync.py

clean-data:
	$(PY) -m config.embedded stop; rm -rf .data
