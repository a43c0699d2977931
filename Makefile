# django-tasks-local: development tasks. Run `make` (or `make help`) for a list.

SHELL := /bin/bash

VENV       := .venv
VENV60     := .venv-django60
VENV_SEED  := .venv-seed
PORT       ?= 8000
PYTEST_ARGS ?=
DJANGO_TESTS_ARGS ?=

# Django series installed in each virtualenv.
DJANGO_LATEST := Django>=6.1,<6.2
DJANGO_60     := Django>=6.0,<6.1
# The release the benchmarks compare ours with (docs/benchmarks.md).
SEED          := django-tasks-local==2.0.*

.DEFAULT_GOAL := help

.PHONY: help install services test test-fast lint format typecheck example \
        django-tests bench bench-quick docs clean distclean

help: ## Show this list of targets
	@echo "Usage: make <target>"
	@echo
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z0-9_-]+:.*## / { printf "  %-12s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

# $(call make-venv,<dir>,<django requirement>)
# (Re)creates <dir> with a Python >= 3.12 from scripts/find-python when it is
# missing or broken, then installs the package in editable mode with the dev
# extra and the given Django series. The stamp file makes reruns instant until
# pyproject.toml changes.
define make-venv
	@set -euo pipefail; \
	if ! $(1)/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then \
		py="$$(sh scripts/find-python)"; \
		echo ">> creating $(1) with $$py"; \
		rm -rf $(1); \
		"$$py" -m venv $(1); \
	fi; \
	echo ">> installing django-tasks-local[dev] with '$(2)' into $(1)"; \
	$(1)/bin/python -m pip install --quiet --upgrade pip; \
	$(1)/bin/python -m pip install --progress-bar off -e '.[dev]' '$(2)'; \
	$(1)/bin/python -c 'import django; print(">> $(1): Django", django.get_version())'; \
	touch $(1)/.installed
endef

$(VENV)/.installed: pyproject.toml scripts/find-python
	$(call make-venv,$(VENV),$(DJANGO_LATEST))

$(VENV60)/.installed: pyproject.toml scripts/find-python
	$(call make-venv,$(VENV60),$(DJANGO_60))

install: $(VENV)/.installed $(VENV60)/.installed ## Create .venv (Django 6.1) and .venv-django60 (Django 6.0)

services: ## Start PostgreSQL if it is not running
	@sh scripts/start-postgres

test: install services ## Run the whole test suite on Django 6.1 and 6.0, then the example project's (PYTEST_ARGS=...)
	@set -u; status=0; \
	echo ">> pytest on Django 6.1 ($(VENV))"; \
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS) || status=1; \
	echo ">> pytest on Django 6.0 ($(VENV60))"; \
	$(VENV60)/bin/python -m pytest $(PYTEST_ARGS) || status=1; \
	echo ">> example project in headless Chromium, under each DEMO_TASKS_BACKEND ($(VENV))"; \
	{ sh scripts/install-chromium && \
	  $(VENV)/bin/python -m pytest -c examples/demo/pytest.ini examples/demo; } || status=1; \
	if [ $$status -ne 0 ]; then echo ">> FAILED on at least one Django version or in the example project"; fi; \
	exit $$status

test-fast: $(VENV)/.installed services ## Run the tests not marked slow, on Django 6.1 only
	$(VENV)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(VENV)/.installed ## Check style (ruff) and the import contracts of src/ (import-linter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

format: $(VENV)/.installed ## Reformat the code and apply ruff's safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(VENV)/.installed ## Type-check src/ with mypy --strict (django-stubs)
	$(VENV)/bin/mypy

# The example keeps its data in SQLite (examples/demo/var/): no service needed.
# With DEMO_TASKS_BACKEND=db it also runs django-tasks-db's workers, one per
# backend alias, until the server stops. With DEMO_TASKS_BACKEND=durable it is
# served as deployments are, by gunicorn with 3 worker processes.
example: $(VENV)/.installed ## Set up and serve the example project (PORT=8000, DEMO_TASKS_BACKEND=local|immediate|db|durable)
	$(VENV)/bin/python examples/demo/manage.py migrate --noinput
	@set -eu; \
	if [ "$${DEMO_TASKS_BACKEND:-local}" = db ]; then \
		trap 'kill $$(jobs -p) 2>/dev/null' EXIT; \
		for alias in io cpu; do \
			$(VENV)/bin/python examples/demo/manage.py db_worker --backend "$$alias" & \
		done; \
	fi; \
	echo ">> serving the example project on http://127.0.0.1:$(PORT)/ (Ctrl-C to stop)"; \
	if [ "$${DEMO_TASKS_BACKEND:-local}" = durable ]; then \
		exec $(VENV)/bin/gunicorn --chdir examples/demo --workers 3 \
			--bind 127.0.0.1:$(PORT) demo.wsgi; \
	fi; \
	$(VENV)/bin/python examples/demo/manage.py runserver 127.0.0.1:$(PORT)

# Not part of `make test` or CI: some of Django's tests fail by design on our
# backends (docs/django-test-suite.md). Needs PyPI, for Django's sdist, the
# first time per Django version; it is kept in .django-suite/.
django-tests: $(VENV)/.installed ## Run Django's tests/tasks/ suite on both backends, on both stores (DJANGO_TESTS_ARGS=--strict ...)
	scripts/run-django-task-tests $(DJANGO_TESTS_ARGS)

# The seed release has our import name, so it gets a virtualenv of its own,
# with nothing of ours in it: benchmarks/run.py runs its side there.
$(VENV_SEED)/.installed: scripts/find-python
	@set -euo pipefail; \
	if ! $(VENV_SEED)/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then \
		py="$$(sh scripts/find-python)"; \
		echo ">> creating $(VENV_SEED) with $$py"; \
		rm -rf $(VENV_SEED); \
		"$$py" -m venv $(VENV_SEED); \
	fi; \
	echo ">> installing '$(SEED)' with '$(DJANGO_LATEST)' into $(VENV_SEED)"; \
	$(VENV_SEED)/bin/python -m pip install --quiet --upgrade pip; \
	$(VENV_SEED)/bin/python -m pip install --progress-bar off '$(SEED)' '$(DJANGO_LATEST)'; \
	$(VENV_SEED)/bin/python -c 'from importlib.metadata import version as v; \
		print(">> $(VENV_SEED): django-tasks-local", v("django-tasks-local"), "with Django", v("Django"))'; \
	touch $(VENV_SEED)/.installed

bench: $(VENV)/.installed $(VENV_SEED)/.installed ## Run the benchmarks, with django-tasks-local 2.0 beside ours; results in bench-results/ (docs/benchmarks.md)
	$(VENV)/bin/python benchmarks/run.py

bench-quick: $(VENV)/.installed $(VENV_SEED)/.installed ## Run a short benchmark pass (about two minutes)
	$(VENV)/bin/python benchmarks/run.py --quick

# NO_MKDOCS_2_WARNING: silences Material's banner about its own end of life,
# which is not a build warning and would only bury the real ones.
docs: $(VENV)/.installed ## Build the documentation site into site/ (mkdocs --strict: warnings fail)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean: ## Remove build artefacts and caches (keeps the virtualenvs)
	rm -rf build dist site bench-results .pytest_cache .mypy_cache .ruff_cache
	find . -path ./.venv -prune -o -path ./$(VENV60) -prune -o -path ./$(VENV_SEED) -prune -o \
		\( -name __pycache__ -o -name '*.egg-info' \) -type d -print0 | xargs -0 rm -rf

distclean: clean ## Also remove the virtualenvs and the Django sdist of make django-tests
	rm -rf $(VENV) $(VENV60) $(VENV_SEED) .django-suite
