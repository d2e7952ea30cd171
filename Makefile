# sockd — set-up, run and test. Every target is idempotent and meant for root on Debian/Ubuntu.
#
#   make run    install what the daemon needs and run it in the foreground (the main job)
#   make test   install what the tests need and run lint, types and the whole suite
#
# Venvs live outside the checkout, in world-readable places, so that ordinary users can run the
# installed sockctl and the tests can run clients as other uids.

SHELL := /bin/bash
PYTHON ?= /usr/bin/python3
PREFIX ?= /opt/sockd
VENV ?= $(PREFIX)/venv
TEST_ROOT ?= /var/cache/sockd-test
TEST_VENV ?= $(TEST_ROOT)/py3.11
APT_PACKAGES := python3 python3-venv python3-dev gcc pkg-config libsystemd-dev iproute2 util-linux procps
PYTEST_ARGS ?=

.PHONY: run test deps venv test-venv lint typecheck pytest pytest-all-pythons bench clean

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@getent group sockd >/dev/null || groupadd --system sockd
	@getent group sockd-monitor >/dev/null || groupadd --system sockd-monitor

# The runtime venv: the package itself (not editable) and its three dependencies.
venv: deps
	@umask 022; [ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	@umask 022; $(VENV)/bin/pip install -q --disable-pip-version-check . 2>&1 | grep -v '^WARNING: Location' || true
	@ln -sf $(VENV)/bin/sockctl /usr/local/bin/sockctl
	@ln -sf $(VENV)/bin/sockd /usr/local/sbin/sockd

run: venv
	exec $(VENV)/bin/sockd

# The test venvs: editable install plus test tools, one per Python found (3.11 always).
test-venv: deps
	@umask 022; .ci/venvs $(TEST_ROOT)

lint: test-venv
	$(TEST_VENV)/bin/ruff check .
	$(TEST_VENV)/bin/ruff format --check .
	$(TEST_VENV)/bin/mypy

pytest: test-venv
	$(TEST_VENV)/bin/pytest $(PYTEST_ARGS)

# The suite once per interpreter: 3.11 (the floor, Debian 12) and 3.12/3.13 where present.
pytest-all-pythons: test-venv
	@set -e; for v in $$(ls -d $(TEST_ROOT)/py3.* | sort); do \
		echo "=== pytest on $$($$v/bin/python --version)"; \
		$$v/bin/pytest $(PYTEST_ARGS); \
	done

test: lint pytest-all-pythons

bench: test-venv
	@for b in transport cli churn rss; do echo "== bench/$$b.py"; $(TEST_VENV)/bin/python bench/$$b.py || exit 1; done

clean:
	rm -rf build *.egg-info .mypy_cache .ruff_cache .pytest_cache
