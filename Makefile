# fleetcap: `make demo` and `make test` set up everything they need on a fresh Debian machine
# (as root): system packages, a virtualenv, the Python dependencies, Azurite.
SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
APT_PACKAGES := etcd-server etcd-client tcpdump tshark iproute2 libpcap0.8 chromium chromium-driver
STAMP := .venv/.fleetcap-installed

.PHONY: setup demo test test-unit test-e2e protos check-protos bench clean

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
	@touch $(STAMP)

protos: setup
	$(PY) protos/generate.py

demo: setup
	$(PY) -m deploy.demo

test: setup
	$(PY) -m pytest -q -n 2 --dist loadgroup tests

test-unit: setup
	$(PY) -m pytest -q tests/unit

bench: setup
	@echo "benchmarks: see bench/README.md"

clean:
	rm -rf .venv build *.egg-info demo-out
