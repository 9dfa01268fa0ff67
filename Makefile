# README's two commands: `make serve` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test
# every install is pinned by this file (regenerate with `make lock`); `make test-latest` tries the newest
CONSTRAINTS := constraints.txt

.PHONY: serve test coverage-machines test-long test-webhooks-process test-latest test-bounds lock lint bench bench-ws bench-compression bench-deflate-memory bench-proxy bench-outbox bench-consumers-queues soak autobahn conformance clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(CONSTRAINTS) --upgrade pip

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(VENV)/bin/python
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e .
	touch $@

$(STAMP): pyproject.toml $(CONSTRAINTS) | $(VENV)/bin/python
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[test]'
	touch $(VENV)/.installed $@

# the benchmarks' extra (matplotlib, for the PNG charts) on top of the test extras
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): pyproject.toml $(CONSTRAINTS) | $(VENV)/bin/python
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[test,bench]'
	touch $(VENV)/.installed $(STAMP) $@

## serve: install and start the server on http://127.0.0.1:8600 (demo pages at /)
serve: $(VENV)/.installed
	$(VENV)/bin/tidings serve $(ARGS)

## test: install the test extras and run the whole suite, with the package's branch coverage and
## its floor (a part of the suite: make test PYTEST_ARGS="tests/x --no-cov")
COVERAGE_FLOOR ?= 92
test: $(STAMP)
	$(PY) -m pytest --cov=tidings --cov-branch --cov-report=term \
	    --cov-fail-under=$(COVERAGE_FLOOR) $(PYTEST_ARGS)

## coverage-machines: the sans-I/O core and the transports' machines, from their own tests
## (tests/core, tests/machines), at 100 % branch coverage (CI runs it)
MACHINES_COVERAGE_FLOOR ?= 100
MACHINES_TESTS := tests/core tests/machines
coverage-machines: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(MACHINES_TESTS) --cov=tidings.core \
	    --cov=tidings.machines --cov-branch --cov-report=term-missing \
	    --cov-fail-under=$(MACHINES_COVERAGE_FLOOR)

## test-long: the long runs of the races and bounds that make test checks in short (minutes)
test-long: $(STAMP)
	$(PY) -m pytest -m long $(PYTEST_ARGS)

## test-webhooks-process: the whole webhooks suite with deliveries in the dispatcher process
## (make test runs it inline, plus tests/webhooks/test_process.py and the crash tests on the child)
test-webhooks-process: $(STAMP)
	TIDINGS_TEST_WEBHOOK_DISPATCHER=process $(PY) -m pytest tests/webhooks $(PYTEST_ARGS)

## test-latest: the suite against the newest releases allowed by pyproject.toml, in .venv-latest
## (drift shows here first, not as a red main); a failure here means: fix, then `make lock`
LATEST := .venv-latest
test-latest:
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[test]'
	$(LATEST)/bin/python -m pip freeze --exclude-editable | diff constraints.txt - | grep '^[<>] [A-Za-z]' || true
	$(LATEST)/bin/python -m pytest $(PYTEST_ARGS)

## test-bounds: the engine tests on the lowest and on the highest uvicorn and websockets that
## pyproject.toml allows, in .venv-lowest and .venv-highest (every other package as constraints.txt
## pins it); the engines build on their internals (src/tidings/engines/uvicorn_internals.py).
## BOUNDS=lowest or BOUNDS=highest runs one side; BOUNDS_TESTS picks the tests.
BOUNDS ?= both
BOUNDS_TESTS ?= tests/fast tests/e2e/test_websocket.py tests/e2e/test_hostile_clients.py tests/transports -x
test-bounds:
	PYTHON=$(PYTHON) bash scripts/test_bounds.sh $(BOUNDS) $(BOUNDS_TESTS)

## lock: pin what pyproject.toml allows today into constraints.txt (then run `make test`)
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --upgrade pip
	.venv-lock/bin/python -m pip install -q -e '.[test,bench]'
	{ sed -n '1,2p' constraints.txt; echo '# pip itself, so the installer is the same on every machine'; \
	  .venv-lock/bin/python -m pip --version | awk '{print "pip==" $$2}'; \
	  .venv-lock/bin/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .venv-lock

## lint: ruff (check and format), mypy (strict), and the import contracts of pyproject.toml (import-linter)
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench-ws: $(BENCH_STAMP)
	$(PY) benchmarks/run.py ws-fanout

## bench: the peer suite side by side (~40 min), then http-transports, publish-api, webhooks,
## redis and compression; BENCH_ONLY picks the steps, e.g. make bench BENCH_ONLY=publish-api,redis
BENCH_ONLY ?= suite,http-transports,publish-api,webhooks,redis,compression
bench: $(BENCH_STAMP)
	$(PY) benchmarks/run.py all --only $(BENCH_ONLY) $(BENCH_ARGS)

## bench-compare: tidings alone, BEFORE=<git ref> against the working tree (or AFTER=<git ref>),
## F1 F2 S1 N1 C1 L1, runs alternating: each figure within 5 %? (~9-15 min) -> performance.md
.PHONY: bench-compare
ifneq ($(filter bench-compare,$(MAKECMDGOALS)),)
ifeq ($(BEFORE),)
$(error usage: make bench-compare BEFORE=<git ref> [AFTER=<git ref>] [BENCH_ARGS='--repeat 5'])
endif
endif
bench-compare: $(BENCH_STAMP)
	$(PY) benchmarks/run.py compare --before '$(BEFORE)' $(if $(AFTER),--after '$(AFTER)') $(BENCH_ARGS)

## soak: a steady mixed load for 10 minutes, reporting RSS, fds, tasks and latency over time
soak: $(STAMP)
	$(PY) benchmarks/soak.py --duration 600

## bench-compression: 1,000 WebSocket subscribers of a 1 KB ticker: tidings with and without
## permessage-deflate and delta updates, Node ws with and without perMessageDeflate, SSE plain
## and gzip (needs `make bench-setup` for Node ws)
bench-compression: $(BENCH_STAMP)
	$(PY) benchmarks/run.py compression $(BENCH_ARGS)

## bench-deflate-memory: idle WebSocket RSS with and without permessage-deflate (10,000 connections)
bench-deflate-memory: $(STAMP)
	$(PY) benchmarks/ws_deflate_memory.py --conns 10000 --publish 10 --out benchmarks/results/ws-deflate-memory.json
	$(PY) benchmarks/ws_deflate_memory.py --conns 10000 --channels 10000 --publish 2 \
	    --out benchmarks/results/ws-deflate-memory-traffic.json

## bench-proxy: the connect proxy's cost and a 1,000-client connect storm
bench-proxy: $(STAMP)
	$(PY) benchmarks/proxy_connect.py --samples 500 --storm 1000 --concurrency 16 --json benchmarks/results/proxy-connect.json

## bench-outbox: PostgreSQL outbox -> WebSocket drain rate and commit -> delivery latency
bench-outbox: $(STAMP)
	PYTHONPATH=src $(PY) benchmarks/outbox.py $(BENCH_ARGS)

## bench-consumers-queues: messages/s from Redis Streams, NATS JetStream, RabbitMQ to a WebSocket
## subscriber, and their latency at 1,000 messages/s
bench-consumers-queues: $(STAMP)
	PYTHONPATH=src:. $(PY) benchmarks/consumers_queues.py --json benchmarks/results/consumers_queues.json
	PYTHONPATH=src:. $(PY) benchmarks/consumers_queues.py --messages 5000 --rate 1000

## autobahn: the Autobahn testsuite's fast set against both WebSocket stacks (full: ARGS=full;
## permessage-deflate, cases 12 and 13: ARGS=compression)
autobahn: $(STAMP)
	bash scripts/autobahn.sh $(ARGS)

## conformance: SSE against Chromium and httpx-sse, schemathesis against the API, Autobahn
conformance: $(STAMP)
	$(PY) -m pytest tests/conformance -m "slow or not slow"

clean:
	rm -rf $(VENV) .venv-latest .venv-lowest .venv-highest .pytest_cache .mypy_cache .ruff_cache .coverage

include benchmarks/Makefile.inc
