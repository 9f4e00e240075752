# Everything a fresh machine needs: `make run` and `make test` set up .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit e2e proto proto-check clean sidecar bench browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Main job: sidecar on its embedded SQLite store + a sample orchestration end to end.
run: $(STAMP)
	$(PY) -m samples.run_demo

# Start only the sidecar (foreground), on the default SQLite store.
sidecar: $(STAMP)
	$(VENV)/bin/durabletask-sidecar

# The whole test suite: lint, type check, generated-code check, unit tests, the store contract
# (SQLite memory, SQLite file, PostgreSQL), end-to-end tests; then the end-to-end tests again with
# every in-process sidecar on PostgreSQL. PostgreSQL tests skip when no server answers on
# 127.0.0.1:5432 (DURABLETASK_TEST_POSTGRES names another), and fail if DURABLETASK_REQUIRE_POSTGRES=1.
# Three pytest processes, a test file each at a time (module fixtures stay in one process); most
# tests wait on a sidecar more than they compute (three keep the two cores about half busy). The
# slow ones (crash and scale-out runs against deadlines) run on their own afterwards.
# PARALLEL= runs everything in one process.
PARALLEL ?= -n 3 --dist loadfile

test: $(STAMP) tests/azurite/node_modules/.installed browser lint typecheck proto-check
	$(PY) -m pytest -q -p no:cacheprovider $(PARALLEL) -m "not slow"
	$(PY) -m pytest -q -p no:cacheprovider -m slow
	DURABLETASK_TEST_STORE=postgresql $(PY) -m pytest -q -p no:cacheprovider $(PARALLEL) -m "not slow" tests/e2e

# Azurite, the Azure Storage emulator (pinned in tests/azurite/package.json and its lock file), for
# the Azure Blob payload store's tests; they skip when it is not installed.
AZURITE_STAMP := tests/azurite/node_modules/.installed

$(AZURITE_STAMP): tests/azurite/package.json tests/azurite/package-lock.json
	cd tests/azurite && npm ci --no-audit --no-fund --loglevel=error
	touch $(AZURITE_STAMP)

# The dashboard's browser tests drive Debian's chromium through chromedriver; install them when
# missing (needs root; apt-get update first when the package lists are empty). Without root the
# browser tests skip.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "chromium/chromedriver missing and not root: the browser tests will skip"; exit 0; fi; \
		apt-cache show chromium >/dev/null 2>&1 || apt-get update -qq; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check durabletask sidecar tests samples tools bench compat

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit tests/contract

e2e: $(STAMP)
	$(PY) -m pytest -q tests/e2e

# Benchmarks (not part of the tests): the official SDK on its in-memory backend side by side with ours on
# our sidecar (SQLite file, and PostgreSQL when reachable), then pick-up and timer latency. The
# in-process throughput benchmark runs on its own: $(PY) -m bench.throughput
# (The compat stamp is spelled out: COMPAT_STAMP is defined further down, after this rule is read.)
bench: $(STAMP) .venv-compat/.installed
	$(PY) -m bench.compare --compat-python $(COMPAT_PY)
	$(PY) -m bench.latency

proto: $(STAMP)
	$(PY) tools/gen_proto.py

proto-check: $(STAMP)
	$(PY) tools/gen_proto.py --check

clean:
	rm -rf $(VENV) .durabletask build *.egg-info

# Compatibility: Microsoft's official Python SDK (pinned in compat/requirements.txt, in its own
# environment, since it shares our import name) runs its client and worker against our sidecar.
COMPAT_VENV := .venv-compat
COMPAT_PY := $(COMPAT_VENV)/bin/python
COMPAT_STAMP := $(COMPAT_VENV)/.installed

$(COMPAT_STAMP): compat/requirements.txt
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install --quiet --upgrade pip
	$(COMPAT_PY) -m pip install --quiet -r compat/requirements.txt
	touch $(COMPAT_STAMP)

# Microsoft's JavaScript SDK, pinned in compat/js/package.json and package-lock.json, for the js step.
JS_COMPAT_STAMP := compat/js/node_modules/.installed

$(JS_COMPAT_STAMP): compat/js/package.json compat/js/package-lock.json
	cd compat/js && npm ci --no-audit --no-fund --loglevel=error
	touch $(JS_COMPAT_STAMP)

.PHONY: compat
compat: $(STAMP) $(COMPAT_STAMP) $(JS_COMPAT_STAMP) $(AZURITE_STAMP)
	$(PY) compat/run.py --compat-python $(COMPAT_PY)
