# asset-cycle developer targets. `make run` and `make test` work on a fresh machine with only
# Python 3.11/3.12 and Java 17: PostgreSQL and Redis are started locally when none answers
# (`asset-cycle services up`, real servers from the `local` extra's wheels, 127.0.0.1 only).

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
JARS := .jars
RUN_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup jars services run test lint lock

$(PY):
	@test -n "$(PYTHON)" || { echo "error: no python3.11/python3.12 found" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

# JDBC connector + PostgreSQL driver (from a PyPI wheel, checksums pinned in deploy/jars.py);
# the Kinesis connector is tried but optional (only `--source kinesis` needs it).
jars: $(VENV)/.installed
	$(PY) -m deploy.jars fetch --dest $(JARS) --kinesis-optional

setup: $(VENV)/.installed jars

run: setup
	$(VENV)/bin/asset-cycle run $(RUN_ARGS)

services: setup
	$(VENV)/bin/asset-cycle services up

test: services
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: setup
	$(VENV)/bin/ruff check .

# Hash-pinned lock of the runtime dependencies (pyproject's [project] dependencies, Linux x86_64,
# Python 3.11); install from it with: pip install --require-hashes -r requirements.lock
lock: $(VENV)/.installed
	$(VENV)/bin/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --no-header --quiet -o requirements.lock
