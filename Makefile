# selfheal.core: one place for setup, lab, demo, lint and tests.
#   make demo   set up everything, bring the lab up, heal a crashed service, print the timeline
#   make test   set up everything and run every check and test
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
COLL_ROOT := $(CURDIR)/.build/collections
COLL_LINK := $(COLL_ROOT)/ansible_collections/selfheal/core
SANITY_DIR := $(CURDIR)/.build/sanity/ansible_collections/selfheal/core
# python3-venv: Debian's python3 has no working `-m venv` (ensurepip) without it.
APT_PACKAGES := prometheus prometheus-alertmanager openssh-server openssh-client nginx-light \
	prometheus-postgres-exporter prometheus-node-exporter postgresql iproute2 util-linux procps curl default-jdk-headless python3-venv
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH := $(COLL_ROOT)
export PATH := $(BIN):$(PATH)
PYTEST_ARGS ?=

.PHONY: help deps apt venv collection lint sanity build unit integration e2e pytest test \
	lab-up lab-status lab-down daemon-up daemon-down demo bench bench-storm clean

# Every target says what it does after `##` on its own line: `make help` lists them from there.
help: ## list the targets
	@awk -F':[^#]*## ' '/^[a-z][a-z0-9-]*:.*## / {printf "make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: apt venv collection ## apt + venv + collection: everything the lab and the tests need

# Debian packages the lab needs; installed only when one is missing.
apt: ## install the Debian packages that are missing (needs root)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "[deps] apt-get install $$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "[deps] error: installing Debian packages needs root"; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "[deps] Debian packages present"; fi

$(BIN)/.installed: requirements.txt constraints.txt
	@echo "[deps] creating $(VENV)"
	@$(PYTHON) -m venv $(VENV) || { echo "[deps] error: $(PYTHON) -m venv failed; on Debian: apt-get install python3-venv (make apt does)"; exit 1; }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	touch $@

venv: $(BIN)/.installed ## create .venv from requirements.txt pinned by constraints.txt

# The checkout is the collection: link it where Ansible looks for selfheal.core.
collection: ## link this checkout as selfheal.core under .build/collections
	@mkdir -p $(dir $(COLL_LINK))
	@ln -sfn $(CURDIR) $(COLL_LINK)

lint: venv collection ## ruff, mypy, ansible-lint (production profile)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/ansible-lint --profile production

# ansible-test needs a real ansible_collections/selfheal/core path: copy the tracked files there.
sanity: venv ## ansible-test sanity on a copy of the tracked files
	@rm -rf $(SANITY_DIR) && mkdir -p $(SANITY_DIR)
	@git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C $(SANITY_DIR)
	@# A repository of its own, so ansible-test does not see the copy as ignored files of this one.
	@cd $(SANITY_DIR) && git init -q && git add -A
	@# ansible-test downloads get-pip.py from a host out of reach here: give it a local stand-in.
	@pipv=$$($(BIN)/python -c "from ansible_test._internal.python_requirements import get_venv_packages; print('x')" >/dev/null 2>&1; \
		grep -oP "pip='\K[0-9.]+" $(VENV)/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py | head -1); \
		mkdir -p $$HOME/.ansible/test/cache && cp tools/get_pip_offline.py $$HOME/.ansible/test/cache/get_pip_$${pipv//./_}.py
	cd $(SANITY_DIR) && $(BIN)/ansible-test sanity --python 3.11 --color no

build: venv ## build the collection tarball into .build/dist
	@mkdir -p .build/dist
	$(BIN)/ansible-galaxy collection build --force --output-path .build/dist .

unit: venv collection ## unit tests (no lab)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: venv collection apt ## integration tests against the lab (brought up if it is not)
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

e2e: venv collection apt ## end-to-end tests: the lab with the rulebook daemon
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

# Integration tests break lab services on purpose with no daemon running; end-to-end tests run last.
pytest: venv collection apt ## unit, integration and end-to-end tests, in that order
	$(BIN)/pytest tests/unit tests/integration tests/e2e $(PYTEST_ARGS)

test: deps lint sanity pytest ## deps, lint, sanity, then every test

lab-up: deps ## deps, then bring the lab up (idempotent)
	$(PYTHON) lab/labctl.py up

lab-status: ## show every part of the lab; fails if one is down
	$(PYTHON) lab/labctl.py status

lab-down: ## end every process of the lab, remove its network
	$(PYTHON) lab/labctl.py down

daemon-up: lab-up ## lab-up, then start the ansible-rulebook daemon
	$(PYTHON) lab/labctl.py daemon start

daemon-down: ## stop the ansible-rulebook daemon
	$(PYTHON) lab/labctl.py daemon stop

demo: daemon-up ## daemon-up, crash a service, show it heal with its timeline
	$(BIN)/python lab/demo.py

bench: daemon-up ## daemon-up, then the recovery, rolling restart, storm and guard benchmarks
	$(BIN)/python bench/mttr.py --profile $(BENCH_ARGS)
	$(BIN)/python bench/rollout.py $(ROLLOUT_ARGS)
	$(BIN)/python bench/storm.py $(STORM_ARGS)
	$(BIN)/python bench/guard.py $(GUARD_ARGS)

bench-storm: deps ## the storm benchmark only (its own daemons, no lab)
	$(BIN)/python bench/storm.py $(STORM_ARGS)

clean: ## lab clean (down, delete .lab), delete .build and .venv
	-$(PYTHON) lab/labctl.py clean
	rm -rf .build .venv
