# CartPulse: `make run` serves the API, `make test` runs every test.
# Needs only Python 3.11+ and make; everything else is installed into .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test compat serve bench bench-capacity bench-tinybird faults fuzz loadtest loadtest-limits clean help browser vendor screenshot docs

help:
	@echo "make run    - install, start the embedded PostgreSQL, build the models, serve on 127.0.0.1:\$$PORT (8000)"
	@echo "make test   - install, then every test (pytest, including dbt build on a throwaway database)"
	@echo "make compat - only the tests that drive Tinybird's own clients (installed into .clients/ on first use)"
	@echo "make serve  - the production server only (needs a running database)"
	@echo "make bench  - the benchmark at EVENTS events (default 10,000,000); writes bench/results.md (results-<EVENTS>.md otherwise)"
	@echo "make bench-tinybird - the README's Tinybird project imported, read at EVENTS (1,000,000) events; writes bench/tinybird.md"
	@echo "make bench-capacity - only the capacity figures (CPU per event/read, bytes per event, replica reads)"
	@echo "make faults - the fault tests alone (kill the API, crash PostgreSQL during ingest)"
	@echo "make fuzz   - the HTTP front's framing fuzzed longer (FUZZ_EXAMPLES, default 10,000); writes bench/fuzz.md"
	@echo "make loadtest - 16 clients for 60 s against cartpulse serve; writes bench/loadtest.md"
	@echo "make loadtest-limits - the same clients beside 2,000 connections, then PostgreSQL at max_connections; writes bench/limits.md"
	@echo "make docs  - generate the dbt docs site and serve it on 127.0.0.1:\$$DOCS_PORT (8080)"
	@echo "make vendor - refresh the dashboard's Chart.js from npm (service/vendor/package.json) into static/vendor/"
	@echo "make screenshot - write docs/dashboard.png (the dashboard on a week of generated events)"

$(STAMP): service/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e 'service[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cartpulse run

# Tinybird's own clients (pinned in tests/clients/) against a running CartPulse; `make
# test` runs these too. They are installed into .clients/ on first use.
compat: $(STAMP)
	$(BIN)/pytest tests/test_clients.py tests/test_clients_api.py

serve: $(STAMP)
	$(BIN)/cartpulse serve

test: $(STAMP) browser
	$(BIN)/pytest
	@if [ -n "$$TIMESCALE_URL" ]; then \
	  echo "== the whole suite again, on TimescaleDB ($$TIMESCALE_URL)"; \
	  CARTPULSE_TEST_DATABASE_URL="$$TIMESCALE_URL" $(BIN)/pytest; \
	else \
	  echo "TIMESCALE_URL is not set: the TimescaleDB pass is skipped (README: Testing on TimescaleDB)."; \
	fi
	@if [ -n "$$CITUS_URL" ]; then \
	  echo "== the whole suite again, on Citus ($$CITUS_URL)"; \
	  CARTPULSE_TEST_DATABASE_URL="$$CITUS_URL" $(BIN)/pytest; \
	else \
	  echo "CITUS_URL is not set: the Citus pass is skipped (README: Testing on Citus)."; \
	fi

# DuckDB and chDB (in-process ClickHouse, issue #24's peer) are what the benchmark compares with;
# only the benchmark needs them.
bench: $(STAMP)
	$(BIN)/pip install --quiet 'duckdb>=1.1' 'chdb>=4.4'
	$(BIN)/python bench/bench.py
	$(BIN)/python bench/capacity.py

# The README's Tinybird project (the seed's datafiles) imported and read at 1M events,
# derived, beside its SQL as written (bench/tinybird.md).
bench-tinybird: $(STAMP)
	$(BIN)/python bench/tinybird.py

# The capacity figures alone (docs/scaling.md): CPU per event and per read, bytes per
# event, reads through a streaming replica. DATABASE_URL=<TimescaleDB> adds compression.
bench-capacity: $(STAMP)
	$(BIN)/python bench/capacity.py

faults: $(STAMP)
	$(BIN)/pytest -m faults

# The HTTP front's differential test and fuzz (tests/test_http_differential.py), with
# FUZZ_EXAMPLES examples (200 in `make test`); the figures go to bench/fuzz.md.
fuzz: $(STAMP)
	$(BIN)/python bench/fuzz.py

loadtest: $(STAMP)
	$(BIN)/python bench/loadtest.py

loadtest-limits: $(STAMP)
	LIMITS=1 $(BIN)/python bench/loadtest.py

# The browser tests drive Debian's Chromium (Playwright cannot download its own browser
# here). Installed when missing and running as root; elsewhere those tests are skipped.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "== installing Debian's chromium for the browser tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	      || echo "could not install chromium: the browser tests will be skipped"; \
	  else \
	    echo "no /usr/bin/chromium and not root: the browser tests will be skipped (apt-get install chromium)"; \
	  fi; \
	fi

# Chart.js, pinned in service/vendor/package-lock.json. Its build is committed, so run,
# test and a fresh clone need no npm; this is how it was made, and how to upgrade it.
vendor:
	cd service/vendor && npm ci --no-audit --no-fund
	mkdir -p service/cartpulse/web/static/vendor
	cp service/vendor/node_modules/chart.js/dist/chart.umd.min.js service/cartpulse/web/static/vendor/
	cp service/vendor/node_modules/chart.js/LICENSE.md service/cartpulse/web/static/vendor/chart.js.LICENSE.md

screenshot: $(STAMP) browser
	CARTPULSE_README_SCREENSHOT=1 $(BIN)/pytest -q tests/test_dashboard_browser.py -k readme_screenshot

# The dbt docs site (models, sources, lineage). `dbt docs generate` reads the database's
# catalog, so `cartpulse init` first starts the embedded server (left running) or checks
# DATABASE_URL; `cartpulse build` makes the models' columns appear in the catalog.
DOCS_PORT ?= 8080
docs: $(STAMP)
	$(BIN)/cartpulse init
	$(BIN)/cartpulse build --quiet
	$(BIN)/cartpulse dbt docs generate
	$(BIN)/cartpulse dbt docs serve --host 127.0.0.1 --port $(DOCS_PORT) --no-browser

clean:
	rm -rf $(VENV) target logs .pytest_cache
