# tradeguard: `make run` starts the daemon on its built-in defaults, `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-stress lint bench soak deps mosquitto test-tools clean

run: deps
	$(BIN)/tradeguard run $(if $(CONFIG),--config $(CONFIG),)

test: deps test-tools
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: deps
	$(BIN)/python -m bench

# Memory over a long steady load (10 minutes at 200 intents/s by default); not part of CI.
soak: deps
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

# The whole suite beside one CPU-bound process per core: timing assumptions that only hold
# on a quiet machine fail here. Run it before resolving anything timing-related.
test-stress: deps test-tools
	@bash -c 'pids=(); for _ in $$(seq "$$(nproc)"); do (while :; do :; done) & pids+=($$!); done; \
	  trap "kill $${pids[*]} 2>/dev/null" EXIT; \
	  $(BIN)/python -m pytest -q $(PYTEST_ARGS)'

deps: mosquitto $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tradeguard needs Python 3.11 or newer")'
	@if ! $(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing python3-venv with apt-get"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null) \
	      || { echo "error: apt-get install python3-venv failed"; exit 1; }; \
	  else \
	    echo "error: Python's venv module is missing: run 'sudo apt-get install -y python3-venv' and try again"; exit 1; \
	  fi; \
	fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The daemon's built-in default runs its own loopback mosquitto; tests use a real one too.
mosquitto:
	@if { ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; } || ! command -v mosquitto_pub >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing mosquitto and mosquitto-clients with apt-get"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null) \
	      || { echo "error: apt-get install mosquitto mosquitto-clients failed"; exit 1; }; \
	  else \
	    echo "error: mosquitto is missing: run 'sudo apt-get install -y mosquitto mosquitto-clients' and try again"; exit 1; \
	  fi; \
	fi

# The test suite also checks the systemd unit (systemd-analyze), TLS for mosquitto (openssl)
# and the metrics exposition (promtool, from Debian's prometheus package).
test-tools:
	@if ! command -v systemd-analyze >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1 \
	    || ! command -v promtool >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing openssl, systemd (for systemd-analyze) and prometheus (for promtool) with apt-get"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	        openssl systemd prometheus >/dev/null) \
	      || echo "warning: apt-get install openssl systemd prometheus failed: the unit, TLS and promtool tests will skip"; \
	  else \
	    echo "note: systemd-analyze, openssl or promtool missing ('sudo apt-get install -y openssl systemd prometheus'): those tests will skip"; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info
