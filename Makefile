# CartPulse: `make run` serves the API, `make test` runs every test.
# Needs only Python 3.11+ and make; everything else is installed into .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test serve bench faults loadtest clean help

help:
	@echo "make run    - install, start the embedded PostgreSQL, build the models, serve on 127.0.0.1:\$$PORT (8000)"
	@echo "make test   - install, then every test (pytest, including dbt build on a throwaway database)"
	@echo "make serve  - the production server only (needs a running database)"
	@echo "make bench  - the benchmark at EVENTS events (default 10,000,000); writes bench/results.md"
	@echo "make faults - the fault tests alone (kill the API, crash PostgreSQL during ingest)"
	@echo "make loadtest - 16 clients for 60 s against cartpulse serve; writes bench/loadtest.md"

$(STAMP): service/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e 'service[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cartpulse run

serve: $(STAMP)
	$(BIN)/cartpulse serve

test: $(STAMP)
	$(BIN)/pytest
	@if [ -n "$$TIMESCALE_URL" ]; then \
	  echo "== the whole suite again, on TimescaleDB ($$TIMESCALE_URL)"; \
	  CARTPULSE_TEST_DATABASE_URL="$$TIMESCALE_URL" $(BIN)/pytest; \
	else \
	  echo "TIMESCALE_URL is not set: the TimescaleDB pass is skipped (README: Testing on TimescaleDB)."; \
	fi

# DuckDB is the in-process peer the benchmark compares with; only the benchmark needs it.
bench: $(STAMP)
	$(BIN)/pip install --quiet 'duckdb>=1.1'
	$(BIN)/python bench/bench.py

faults: $(STAMP)
	$(BIN)/pytest -m faults

loadtest: $(STAMP)
	$(BIN)/python bench/loadtest.py

clean:
	rm -rf $(VENV) target logs .pytest_cache
