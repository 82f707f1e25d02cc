# ringfence — every target sets up what it needs (virtualenv, install, Kafka jars) and is idempotent.
# `make help` lists the targets. Kafka: RINGFENCE_KAFKA_BOOTSTRAP names an existing cluster; when it
# is unset, `make test` starts a throwaway local broker (Java 17+ and Maven) and always stops it.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ringfence-installed
# Broker port for `make test` (default: a free port pair chosen by the OS; never 19092/19093).
KAFKA_PORT ?=
PYTEST_ARGS ?=
LINT_PATHS := schemas agents pipeline tests bench scripts

.PHONY: help venv kafka-jars browser-deps test demo lint typecheck bench bench-quick compose-config clean

help: ## show this help
	@echo "ringfence — open, Kafka-native client behavioral blocking"
	@echo
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'
	@echo
	@echo "Variables: RINGFENCE_KAFKA_BOOTSTRAP (use an existing Kafka), KAFKA_PORT (test broker port),"
	@echo "           PYTEST_ARGS (extra pytest arguments), PYTHON (interpreter for the virtualenv)"

$(STAMP): pyproject.toml setup.py $(wildcard pipeline/*.c pipeline/*.h)
	@test -n "$(PYTHON)" || { echo "Python 3.11+ not found (set PYTHON=...)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
		|| { echo "ringfence needs Python 3.11+, $(PYTHON) is older (set PYTHON=...)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP) ## create .venv, install ringfence with all extras, build the C extensions (again when pyproject.toml, setup.py, pipeline/*.c or *.h change)

kafka-jars: venv ## resolve and cache Apache Kafka's jars (skipped when RINGFENCE_KAFKA_BOOTSTRAP is set)
	@if [[ -n "$${RINGFENCE_KAFKA_BOOTSTRAP:-}" ]]; then \
		echo "kafka-jars: using $$RINGFENCE_KAFKA_BOOTSTRAP, no local broker needed"; \
	else \
		$(PY) -m pipeline.cli kafka jars; \
	fi

browser-deps: ## Debian's chromium + chromium-driver for the console browser tests (only if missing)
	@if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then \
		echo "browser-deps: chromium and chromedriver present"; \
	elif command -v apt-get >/dev/null; then \
		SUDO=$$([[ $$(id -u) -eq 0 ]] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
			--no-install-recommends chromium chromium-driver; \
	else \
		echo "browser-deps: install chromium and its chromedriver (Debian: chromium chromium-driver)"; exit 1; \
	fi

test: kafka-jars browser-deps ## unit + integration tests against real Kafka (starts and stops a broker if none is configured)
	PY=$(PY) KAFKA_PORT=$(KAFKA_PORT) scripts/with-kafka.sh $(PY) -m pytest tests/unit tests/integration $(PYTEST_ARGS)

demo: kafka-jars ## the end-to-end demo (see scripts/demo.sh)
	PY=$(PY) scripts/demo.sh

lint: venv ## ruff check
	$(VENV)/bin/ruff check $(LINT_PATHS)

typecheck: venv ## mypy --strict on schemas, agents, pipeline (configured in pyproject.toml)
	$(VENV)/bin/mypy

bench: venv kafka-jars ## all benchmarks, 3 runs each: medians of figure, same-run baseline, ratio (BENCH_ARGS="pipeline --json out.json")
	$(PY) -m bench $(BENCH_ARGS)

bench-quick: venv kafka-jars ## the whole benchmark suite in under 3 minutes (smaller workloads, 1-2 runs each)
	$(PY) -m bench --quick $(BENCH_ARGS)

compose-config: ## validate docker-compose.yml (docker compose config, else the compose-go checker with Go)
	@if docker compose version >/dev/null 2>&1; then \
		docker compose config --quiet && echo "docker-compose.yml: valid (docker compose config)"; \
	elif command -v go >/dev/null; then \
		(cd deploy/docker/composecheck && go run . ../../../docker-compose.yml >/dev/null) \
			&& echo "docker-compose.yml: valid (compose-go, the loader of docker compose)"; \
	else \
		echo "compose-config: needs the Docker compose plugin or Go"; exit 1; \
	fi

clean: ## remove caches (keeps .venv and the Kafka jar cache)
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
