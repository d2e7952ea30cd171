# sockd — set-up, run, install and test. Every target is idempotent and meant for root on Debian/Ubuntu.
#
#   make run        install what the daemon needs and run it in the foreground (development)
#   make install    install sockd as a systemd service (venv in /opt/sockd, socket-activated)
#   make uninstall  remove that again; PURGE=1 also removes an edited /etc/sockd/sockd.toml
#   make test       install what the tests need and run lint, types and the whole suite
#
# Venvs live outside the checkout, in world-readable places, so that ordinary users can run the
# installed sockctl and the tests can run clients as other uids. An offline install takes pip's own
# settings, e.g. `PIP_NO_INDEX=1 PIP_FIND_LINKS=/path/to/wheels make install`.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= /usr/bin/python3
PREFIX ?= /opt/sockd
VENV ?= $(PREFIX)/venv
TEST_ROOT ?= /var/cache/sockd-test
TEST_VENV ?= $(TEST_ROOT)/py3.11
APT_PACKAGES := python3 python3-venv python3-dev gcc pkg-config libsystemd-dev iproute2 util-linux procps nftables
# The system test boots systemd in a container (tests/test_systemd.py). Installing systemd-container
# upgrades the host's systemd packages to the matching point release. iperf3, passt (pasta) and
# slirp4netns are what bench/nat.py compares `ns link --nat` with.
TEST_APT_PACKAGES := systemd-container iperf3 passt slirp4netns
PYTEST_ARGS ?=

# Where `make install` puts things: the locations systemd reads for locally installed software;
# /etc stays the administrator's (drop-ins via `systemctl edit sockd.service`, the config file).
UNIT_DIR ?= /usr/local/lib/systemd/system
SYSUSERS_DIR ?= /usr/local/lib/sysusers.d
TMPFILES_DIR ?= /usr/local/lib/tmpfiles.d
CONFIG_DIR ?= /etc/sockd
# The shipped default config, kept so that uninstall can tell whether /etc/sockd/sockd.toml was edited.
DEFAULT_CONFIG_COPY := $(PREFIX)/share/sockd.toml.default
PURGE ?=
# The groups of the default policy, for machines without a running systemd (systemd/sockd.sysusers
# creates them under systemd).
CREATE_GROUPS := for g in sockd sockd-monitor; do getent group $$g >/dev/null || groupadd --system $$g; done

.PHONY: run test deps apt-deps test-deps groups venv test-venv lint pytest \
	pytest-all-pythons bench clean install uninstall soak fuzz bench-report

deps: apt-deps groups

apt-deps:
	@$(call apt_install,$(APT_PACKAGES))

test-deps:
	@$(call apt_install,$(TEST_APT_PACKAGES))

# $(call apt_install,PACKAGES): install the packages that are missing, nothing else.
define apt_install
missing=$$(for p in $(1); do [ "$$(dpkg-query -W -f='$${Status}' $$p 2>/dev/null)" = "install ok installed" ] || echo $$p; done); \
if [ -n "$$missing" ]; then \
	echo "installing: $$missing"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
fi
endef

groups:
	@$(CREATE_GROUPS)

# The runtime venv: the package itself (not editable) and its three dependencies.
venv: apt-deps
	@umask 022; [ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	@umask 022; $(VENV)/bin/pip install -q --disable-pip-version-check . 2>&1 | { grep -v '^WARNING: Location' || true; }
	@ln -sf $(VENV)/bin/sockctl /usr/local/bin/sockctl
	@ln -sf $(VENV)/bin/sockd /usr/local/sbin/sockd

run: venv groups
	exec $(VENV)/bin/sockd

# The service: the venv above, the units, sysusers/tmpfiles entries and the config. Under a running
# systemd (sd_booted(3): /run/systemd/system exists) it also creates the groups and /run/sockd, reloads systemd and starts listening; without
# one (a chroot, a container without systemd) it lays the files, creates the groups with groupadd,
# and enables the socket for the next boot.
install: venv
	@umask 022; set -e; \
	install -d $(PREFIX)/share; \
	install -m 0644 systemd/sockd.toml $(DEFAULT_CONFIG_COPY); \
	if [ -f README.md ]; then install -m 0644 README.md $(PREFIX)/README.md; fi; \
	install -d $(UNIT_DIR) $(SYSUSERS_DIR) $(TMPFILES_DIR); \
	for unit in sockd.socket sockd.service; do \
		sed -e 's|/opt/sockd/venv|$(VENV)|g' -e 's|/opt/sockd|$(PREFIX)|g' systemd/$$unit > $(UNIT_DIR)/$$unit.tmp; \
		chmod 0644 $(UNIT_DIR)/$$unit.tmp; mv $(UNIT_DIR)/$$unit.tmp $(UNIT_DIR)/$$unit; \
	done; \
	install -m 0644 systemd/sockd.sysusers $(SYSUSERS_DIR)/sockd.conf; \
	install -m 0644 systemd/sockd.tmpfiles $(TMPFILES_DIR)/sockd.conf; \
	if [ -e $(CONFIG_DIR)/sockd.toml ]; then \
		cmp -s $(CONFIG_DIR)/sockd.toml $(DEFAULT_CONFIG_COPY) || \
			echo "kept your $(CONFIG_DIR)/sockd.toml; the shipped default is $(DEFAULT_CONFIG_COPY)"; \
	else \
		install -D -m 0644 systemd/sockd.toml $(CONFIG_DIR)/sockd.toml; \
	fi; \
	if [ -d /run/systemd/system ]; then \
		systemd-sysusers $(SYSUSERS_DIR)/sockd.conf; \
		systemd-tmpfiles --create $(TMPFILES_DIR)/sockd.conf; \
		systemctl daemon-reload; \
		systemctl enable --now sockd.socket; \
		systemctl try-restart sockd.service; \
		echo "sockd installed: sockd.socket listens on /run/sockd/sockd.sock, the first client starts sockd.service"; \
	else \
		$(CREATE_GROUPS); \
		if command -v systemctl >/dev/null; then systemctl enable sockd.socket; fi; \
		echo "sockd installed; systemd is not running here, so nothing was started (run sockd in the foreground: make run)"; \
	fi

# Everything install laid down, except an edited config (PURGE=1 removes it and the drop-ins of
# `systemctl edit` too), the groups (files may still carry their gids) and /run/sockd (the registry
# of namespaces that still exist; it goes at reboot with them).
uninstall:
	@set -e; \
	if [ -d /run/systemd/system ]; then \
		systemctl disable --now sockd.socket sockd.service 2>/dev/null || true; \
	elif command -v systemctl >/dev/null; then \
		systemctl disable sockd.socket sockd.service 2>/dev/null || true; \
	fi; \
	rm -f $(UNIT_DIR)/sockd.socket $(UNIT_DIR)/sockd.service $(SYSUSERS_DIR)/sockd.conf $(TMPFILES_DIR)/sockd.conf; \
	if [ -d /run/systemd/system ]; then \
		systemctl daemon-reload; \
		systemctl reset-failed sockd.service sockd.socket 2>/dev/null || true; \
	fi; \
	for link in /usr/local/bin/sockctl /usr/local/sbin/sockd; do \
		case "$$(readlink $$link)" in $(VENV)/*) rm -f $$link;; esac; \
	done; \
	if [ -e $(CONFIG_DIR)/sockd.toml ]; then \
		if [ -n "$(PURGE)" ] || cmp -s $(CONFIG_DIR)/sockd.toml $(DEFAULT_CONFIG_COPY); then \
			rm -f $(CONFIG_DIR)/sockd.toml; \
		else \
			echo "kept $(CONFIG_DIR)/sockd.toml: it differs from the shipped default (make uninstall PURGE=1 removes it)"; \
		fi; \
	fi; \
	if [ -n "$(PURGE)" ]; then rm -rf /etc/systemd/system/sockd.service.d /etc/systemd/system/sockd.socket.d; fi; \
	rmdir $(CONFIG_DIR) 2>/dev/null || true; \
	rm -rf $(VENV); \
	rm -f $(DEFAULT_CONFIG_COPY) $(PREFIX)/README.md; \
	rmdir $(PREFIX)/share $(PREFIX) 2>/dev/null || true; \
	echo "sockd uninstalled"

# The test venvs: editable install plus test tools, one per Python found (3.11 always).
test-venv: deps test-deps
	@umask 022; .ci/venvs $(TEST_ROOT)

lint: test-venv
	$(TEST_VENV)/bin/ruff check .
	$(TEST_VENV)/bin/ruff format --check .
	$(TEST_VENV)/bin/mypy

# Tests run clients as other uids with this world-readable interpreter (tests/conftest.py).
export SOCKD_TEST_USER_PYTHON := $(TEST_VENV)/bin/python

pytest: test-venv
	$(TEST_VENV)/bin/pytest $(PYTEST_ARGS)

# The suite once per interpreter: 3.11 (the floor, Debian 12) and 3.12/3.13 where present.
# The system tests (marker `system`) install the project into a booted container and run it with
# the container's /usr/bin/python3, not the interpreter pytest runs on: they run once, on 3.11.
# The soak (marker `soak`, 2 minutes of mixed traffic) proves the daemon, not the interpreter:
# once, on 3.11, too.
pytest-all-pythons: test-venv
	@set -e; for v in $$(ls -d $(TEST_ROOT)/py3.* | sort); do \
		echo "=== pytest on $$($$v/bin/python --version)"; \
		if [ "$$v" = "$(TEST_VENV)" ]; then $$v/bin/pytest $(PYTEST_ARGS); \
		else $$v/bin/pytest -m "not system and not soak" $(PYTEST_ARGS); fi; \
	done

# The long variants of issue 7 (not part of `make test`):
#   make soak          30 minutes of mixed traffic (SOAK_SECONDS=...)
#   make fuzz          1 million coverage-guided inputs (FUZZ_INPUTS=...), with line coverage
#   make bench-report  every benchmark, with its comparison tools, into bench/RESULTS.md + PNG
SOAK_SECONDS ?= 1800
FUZZ_INPUTS ?= 1000000

soak: test-venv
	SOCKD_SOAK_SECONDS=$(SOAK_SECONDS) $(TEST_VENV)/bin/pytest -m soak -s tests/test_soak.py

fuzz: test-venv
	@umask 022; $(TEST_VENV)/bin/pip install -q --disable-pip-version-check -e '.[fuzz]' 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(TEST_VENV)/bin/python bench/fuzz.py --inputs $(FUZZ_INPUTS) --output bench/FUZZ.md

bench-report: test-venv
	@umask 022; $(TEST_VENV)/bin/pip install -q --disable-pip-version-check -e '.[bench]' 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(TEST_VENV)/bin/python bench/report.py

test: lint pytest-all-pythons

bench: test-venv
	@for b in transport cli churn rss exec nat; do echo "== bench/$$b.py"; $(TEST_VENV)/bin/python bench/$$b.py || exit 1; done

clean:
	rm -rf build *.egg-info .mypy_cache .ruff_cache .pytest_cache
