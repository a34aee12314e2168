# fleetcap: `make demo` and `make test` set up everything they need on a fresh Debian machine
# (as root): system packages, a virtualenv, the Python dependencies, Azurite.
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
APT_PACKAGES := etcd-server etcd-client tcpdump tshark iproute2 libpcap0.8 chromium chromium-driver systemd
STAMP := .venv/.fleetcap-installed
# The installed layout (fleetcap.core, fleetcap.coordinator, ...) as a tree of links, for the
# tools that read packages from the file system rather than import them (import-linter, mypy).
LAYOUT := build/layout
# A test that hangs fails after this many seconds instead of stalling CI.
TEST_TIMEOUT_S := 300

.PHONY: setup demo test test-unit lint layers typecheck protos layout clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --disable-pip-version-check -e '.[dev]'
	@test -x node_modules/.bin/azurite-blob || npm install --no-save --no-audit --no-fund azurite@3.35.0
	@# promtool (checks deploy/prometheus): taken out of Debian's prometheus package without
	@# installing it, so that no Prometheus daemon is set up or started on this machine.
	@test -x .venv/bin/promtool || { mkdir -p build/prometheus && cd build/prometheus && \
	  { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; }; } && \
	  dpkg-deb -x prometheus_*.deb root && cp root/usr/bin/promtool ../../.venv/bin/promtool && rm -rf root; }
	@# kubectl (renders deploy/kubernetes with its built-in kustomize; no cluster), the same way.
	@test -x .venv/bin/kubectl || { mkdir -p build/kubectl && cd build/kubectl && \
	  { apt-get download kubernetes-client >/dev/null 2>&1 || { apt-get update -qq && apt-get download kubernetes-client >/dev/null; }; } && \
	  dpkg-deb -x kubernetes-client_*.deb root && cp root/usr/bin/kubectl ../../.venv/bin/kubectl && rm -rf root; }
	@touch $(STAMP)

protos: setup
	$(PY) protos/generate.py

demo: setup
	$(PY) -m deploy.demo

# The layers contract (.importlinter), the linter and the type checker; `make test` runs them first.
lint: layers
	.venv/bin/ruff format --check .
	.venv/bin/ruff check .
	$(MAKE) --no-print-directory typecheck

layout: setup
	@rm -rf $(LAYOUT) && mkdir -p $(LAYOUT)
	@cp -rs $(CURDIR)/fleetcap $(LAYOUT)/fleetcap
	@cp -rs $(CURDIR)/protos/fleetcap/v1 $(LAYOUT)/fleetcap/v1
	@for c in coordinator node_agent clients; do cp -rs $(CURDIR)/$$c $(LAYOUT)/fleetcap/$$c; done
	@find $(LAYOUT) -name __pycache__ -prune -exec rm -rf {} +

layers: layout
	cd $(LAYOUT) && PYTHONPATH=. $(CURDIR)/.venv/bin/lint-imports --config $(CURDIR)/.importlinter --no-cache --no-logo

typecheck: layout
	cd $(LAYOUT) && $(CURDIR)/.venv/bin/mypy --config-file $(CURDIR)/pyproject.toml -p fleetcap

# The whole suite under branch coverage (the daemons it starts included; pyproject.toml's
# [tool.coverage.run]); the report is printed, and tests/coverage_gate.py holds the domain
# modules of the coordinator and the agent to 85 %.
test: setup lint
	@rm -rf build/coverage && mkdir -p build/coverage
	$(PY) -m pytest -q -n 2 --dist loadgroup --timeout $(TEST_TIMEOUT_S) --cov --cov-report= tests
	@# pytest-cov has combined what the test processes wrote; a daemon a test SIGKILLed leaves a
	@# partial file, which is skipped with a warning.
	@$(PY) -m coverage combine --append -q 2>/dev/null || true
	$(PY) -m coverage report --sort=cover
	@$(PY) -m coverage json -q -o build/coverage/coverage.json
	$(PY) -m tests.coverage_gate build/coverage/coverage.json

test-unit: setup
	$(PY) -m pytest -q --timeout $(TEST_TIMEOUT_S) tests/unit

clean:
	rm -rf .venv build *.egg-info demo-out
