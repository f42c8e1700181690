# tokotani.dr: every target installs and starts what it needs.
#   make drill   the DR drill on the disposable sandbox (the main job)
#   make test    every test tier: lint, sanity, unit, integration, molecule
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.requirements.stamp
COLLECTION_LINK := $(CURDIR)/.collections/ansible_collections/tokotani/dr
ENSURE := $(CURDIR)/scripts/ensure.sh
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.collections
export ANSIBLE_FORCE_COLOR ?= 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Data scale of the sandbox shop database (tiny, small, medium, large ~ 1 GB).
SCALE ?= small
BENCH_SCALE ?= large
# The sandbox's secrets, as a real inventory keeps them: a vault file (written once by playbooks/secrets_init.yml)
# and its password, both outside git; the sandbox targets pass the password to ansible-playbook.
SANDBOX_SECRETS := $(CURDIR)/inventories/sandbox/group_vars/all/secrets.yml
SANDBOX_VAULT_PASSWORD := $(CURDIR)/.secrets/sandbox.vault-password
SANDBOX_VAULT := ANSIBLE_VAULT_IDENTITY_LIST=sandbox@$(SANDBOX_VAULT_PASSWORD)
# molecule scenarios to run (default: all), e.g. make molecule SCENARIOS='db_recovery pm2'; for make drill, the drill's
# scenarios (default: the set under 10 minutes), SCENARIOS=all adds 2.4 security_breach
SCENARIOS ?=

.PHONY: help venv lint sanity unit integration molecule test image sandbox-secrets sandbox-up sandbox-down drill bench clean

help:
	@echo "make drill         run the DR drill on the disposable sandbox (prepares everything)"
	@echo "make test          every test tier: lint sanity unit integration molecule"
	@echo "make venv | lint | sanity | unit | integration | molecule | image"
	@echo "make sandbox-secrets | sandbox-up | sandbox-down | bench | clean"

venv: $(STAMP)
	@mkdir -p $(dir $(COLLECTION_LINK)) && ln -sfn $(CURDIR) $(COLLECTION_LINK)

# Playbooks run from the repository root find tokotani.dr through $(COLLECTION_LINK).
$(STAMP): requirements.txt
	@$(ENSURE) python
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	@touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint
	$(BIN)/antsibull-changelog lint

sanity: venv
	@$(ENSURE) git shellcheck
	@scripts/sanity.sh

unit: venv
	$(BIN)/pytest tests/unit

integration: venv
	@$(ENSURE) postgres node zstd docker bind9 hey
	$(BIN)/pytest -n 2 --dist loadfile --durations=25 tests/integration

molecule: venv image
	cd $(CURDIR) && PATH=$(BIN):$$PATH scripts/molecule.sh $(SCENARIOS)

test: lint sanity unit integration molecule
	@echo "make test: every tier passed"

image:
	@$(ENSURE) docker debootstrap
	@sandbox/image/build.sh

# The sandbox's vault, written once; a vault whose password is gone is replaced (the sandbox is disposable), and
# one written before a secret was added here (the DNS TSIG key) gets only what it lacks (add_missing).
sandbox-secrets: venv
	@if [ -f $(SANDBOX_SECRETS) ] && [ ! -f $(SANDBOX_VAULT_PASSWORD) ]; then \
	  echo "$(SANDBOX_VAULT_PASSWORD) is gone: writing new sandbox secrets"; rm -f $(SANDBOX_SECRETS); fi
	@if [ ! -f $(SANDBOX_SECRETS) ] || ! grep -q '^vault_tokotani_dns_tsig_secret:' $(SANDBOX_SECRETS); then \
	  $(BIN)/ansible-playbook playbooks/secrets_init.yml -e vault_id=sandbox -e add_missing=true \
	    -e secrets_file=$(SANDBOX_SECRETS) -e vault_password_file=$(SANDBOX_VAULT_PASSWORD) -e generate_vault_password=true \
	    -e generate_dns_tsig_secret=true; fi

sandbox-up: venv image sandbox-secrets
	$(SANDBOX_VAULT) $(BIN)/ansible-playbook playbooks/sandbox.yml -e sandbox_state=present -e sandbox_scale=$(SCALE)

sandbox-down: venv sandbox-secrets
	@$(ENSURE) docker
	$(SANDBOX_VAULT) $(BIN)/ansible-playbook playbooks/sandbox.yml -e sandbox_state=absent

# The DR drill (scripts/drill.sh): the venv, the image, the sandbox, then playbooks/dr_drill.yml and its report.
drill:
	@SCALE=$(SCALE) SCENARIOS='$(SCENARIOS)' scripts/drill.sh

# bench/run.py: backup and restore beside the plan's pipeline; bench/rollback.py: rollback.yml on the sandbox
# (brought up at SCALE, left up afterwards like make drill).
bench: venv image sandbox-secrets
	@$(ENSURE) postgres zstd docker
	$(BIN)/python bench/run.py --scale $(BENCH_SCALE)
	$(SANDBOX_VAULT) $(BIN)/ansible-playbook playbooks/sandbox.yml -e sandbox_state=present -e sandbox_scale=$(SCALE)
	$(SANDBOX_VAULT) $(BIN)/python bench/rollback.py

clean:
	rm -rf .collections .pytest_cache .ruff_cache tests/output
