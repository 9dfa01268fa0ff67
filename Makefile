# README's two commands: `make serve` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-test

.PHONY: serve test lint bench bench-ws soak autobahn conformance clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e .
	touch $@

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test]'
	touch $(VENV)/.installed $@

# the benchmarks' extra (matplotlib, for the PNG charts) on top of the test extras
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(VENV)/.installed $(STAMP) $@

## serve: install and start the server on http://127.0.0.1:8600 (demo pages at /)
serve: $(VENV)/.installed
	$(VENV)/bin/tidings serve $(ARGS)

## test: install the test extras and run the whole suite
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

bench-ws: $(BENCH_STAMP)
	$(PY) benchmarks/run.py ws-fanout

## bench: the peer suite side by side (~40 min), then http-transports, publish-api, webhooks and
## redis; BENCH_ONLY picks the steps, e.g. make bench BENCH_ONLY=publish-api,redis
BENCH_ONLY ?= suite,http-transports,publish-api,webhooks,redis
bench: $(BENCH_STAMP)
	$(PY) benchmarks/run.py all --only $(BENCH_ONLY) $(BENCH_ARGS)

## soak: a steady mixed load for 10 minutes, reporting RSS, fds, tasks and latency over time
soak: $(STAMP)
	$(PY) benchmarks/soak.py --duration 600

## autobahn: the Autobahn testsuite's fast set against both WebSocket stacks (full: ARGS=full)
autobahn: $(STAMP)
	bash scripts/autobahn.sh $(ARGS)

## conformance: SSE against Chromium and httpx-sse, schemathesis against the API, Autobahn
conformance: $(STAMP)
	$(PY) -m pytest tests/conformance -m "slow or not slow"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage

include benchmarks/Makefile.inc
