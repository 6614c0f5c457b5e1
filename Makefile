# asset-cycle developer targets. `make run` and `make test` work on a fresh machine with only
# Python 3.11/3.12 and Java 17: PostgreSQL and Redis are started locally when none answers
# (`asset-cycle services up`, real servers from the `local` extra's wheels, 127.0.0.1 only).

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
JARS := .jars
RUN_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup jars emulator web-assets services run test lint lock

$(PY):
	@test -n "$(PYTHON)" || { echo "error: no python3.11/python3.12 found" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

# The job's one uber-jar (java/: our Kinesis source and file format, JDBC connector, PostgreSQL
# driver), every third-party jar in it checked against java/dependencies.lock; rebuilt only when
# java/ changed.
UBER_JAR := $(JARS)/asset-cycle-flink-$(shell grep -A1 '<artifactId>asset-cycle-flink</artifactId>' java/pom.xml | sed -n 's:.*<version>\(.*\)</version>.*:\1:p').jar
JAVA_SOURCES := java/pom.xml java/dependencies.lock $(shell find java/src -type f 2>/dev/null)

$(UBER_JAR): $(JAVA_SOURCES) deploy/jars.py | $(VENV)/.installed
	$(PY) -m deploy.jars build --dest $(JARS)

jars: $(UBER_JAR)

# The local Kinesis emulator of the end-to-end tests (npm kinesis-local, version and integrity
# pinned in tools/kinesis-local/package-lock.json).
EMULATOR := tools/kinesis-local/node_modules/.package-lock.json

$(EMULATOR): tools/kinesis-local/package.json tools/kinesis-local/package-lock.json
	npm ci --prefix tools/kinesis-local --no-audit --no-fund --loglevel=error
	@touch $@

emulator: $(EMULATOR)

# The live view's JavaScript library (npm leaflet, version and integrity pinned in
# tools/web/package-lock.json), served by asset-cycle serve from the project: no CDN at run time.
WEB_ASSETS := tools/web/node_modules/.package-lock.json

$(WEB_ASSETS): tools/web/package.json tools/web/package-lock.json
	npm ci --prefix tools/web --no-audit --no-fund --loglevel=error
	@touch $@

web-assets: $(WEB_ASSETS)

setup: $(VENV)/.installed jars emulator web-assets

# the demo job, with the live operations view beside it (its URL is printed; Ctrl-C stops both)
run: setup
	$(VENV)/bin/asset-cycle run --serve $(RUN_ARGS)

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
