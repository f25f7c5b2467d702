# Build/test entry points. Every target runs with the project's tools first in PATH:
#   scripts/bin   -> "anvil" wrapper (adds --prune-history, drops --steps-tracing) for ape-foundry
#   .venv/bin     -> ape, pytest
# solc comes from solc-js through scripts/solc/bin/solc-v0.8.30 (SOLCX_BINARY_PATH); nothing is
# downloaded at run time. Ape's data (dependency cache, accounts) stays in .ape/.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
NODE_STAMP := node_modules/.package-lock.stamp
VENV_STAMP := $(VENV)/.installed.stamp

export PATH := $(CURDIR)/scripts/bin:$(CURDIR)/$(VENV)/bin:$(PATH)
export SOLCX_BINARY_PATH := $(CURDIR)/scripts/solc/bin
export APE_DATA_FOLDER := $(CURDIR)/.ape
# Ape treats a project whose path starts with the temp dir as "already isolated" and then unpacks
# dependency sources (~800 files) into contracts/.cache; Ape lists at most 500 files of the contracts
# folder, so our own sources can vanish (seen with a clone under /tmp). A project-local TMPDIR keeps
# any clone location "not in tempdir", so ape-solidity compiles in an isolated copy as intended.
export TMPDIR := $(CURDIR)/.tmp
$(shell mkdir -p $(TMPDIR))

.PHONY: all deps venv node_modules compile demo test test-forge test-forge-long test-hardhat test-pyevm test-all bench perf-page clean browser mutants
all: test

deps: venv node_modules
venv: $(VENV_STAMP)
node_modules: $(NODE_STAMP)

# Re-installs only when pyproject.toml changes; the stamp makes a second run instant.
$(VENV_STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $@

# npm ci wipes node_modules, so the stamp lives inside it and goes with it.
$(NODE_STAMP): package-lock.json package.json
	npm ci --no-audit --no-fund
	touch $@

# Ape rebuilds a contract when its own source changes, not when an imported one does (AllianceLedger
# embeds the AllianceLedgerShapes module's code): any change to a contract source rebuilds them all.
compile: deps
	rm -rf contracts/.cache  # stale unpacked dependencies would hide sources (see TMPDIR above)
	@sum=$$(find contracts -name '*.sol' | LC_ALL=C sort | xargs cat | sha256sum | cut -d' ' -f1); \
	if [ "$$sum" = "$$(cat .build/sources.sha256 2>/dev/null)" ]; then ape compile; else ape compile --force; fi \
	  && mkdir -p .build && echo "$$sum" > .build/sources.sha256

# Sets everything up, starts the local chain (left running for the commands the demo suggests next),
# and runs the smart-kitchen alliance end to end. `.venv/bin/ledger chain down` stops the chain.
demo: compile
	ledger demo

# Debian's Chromium for the dashboard's browser test (tests/test_dashboard.py): Playwright drives
# /usr/bin/chromium and never downloads a browser. Installed only when missing (as root, like CI; about
# 40 s with its ~130 packages). Without it the browser test fails under CI=true and skips elsewhere.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The contract's Foundry suite (forge/, foundry.toml): the invariant campaign over the ledger handler
# and the fuzz tests of SplitMath against a reference. forge comes from npm and compiles offline with the
# solc-js adapter; the quick campaign is 50,000 handler calls (about a minute), the long one
# (FOUNDRY_PROFILE=long, in `make test-all`) 2,000,000. See docs/verification.md.
FORGE := node_modules/@foundry-rs/forge-linux-amd64/bin/forge
FORGE_TEST := $(FORGE) test --offline --use scripts/solc/bin/solc-v0.8.30

test-forge: node_modules
	$(FORGE_TEST)

# The long campaign checks the cheap invariants every 10th call and the full ones every 50th (and at the
# end of every sequence): errors persist in the books, and per-call checks would triple its time.
test-forge-long: node_modules
	FOUNDRY_PROFILE=long LEDGER_FORGE_CHECK_EVERY=10 LEDGER_FORGE_FULL_CHECK_EVERY=50 $(FORGE_TEST)

test: compile browser test-forge
	ape test tests/ -m "not slow"

# The same tests on Hardhat's node (npm hardhat 2.x through ape-hardhat): LEDGER_NODE=hardhat is the one
# setting; tests/conftest.py turns it into Ape's network ethereum:local:hardhat, whose node ape-hardhat
# starts on a free port (ape-config.yaml); the command-line tests start theirs with `ledger chain up`.
# Tests marked anvil_only are skipped there, each with its reason.
test-hardhat: compile browser
	LEDGER_NODE=hardhat ape test tests/ -m "not slow"

# The contract and service tests on py-evm, an EVM independent of revm (which Anvil and Hardhat both run),
# in process through Ape's ethereum:local:test network; tests marked http_node or anvil_only are skipped
# there with their reason. See docs/verification.md.
test-pyevm: compile
	LEDGER_NODE=pyevm ape test tests/ -m "not slow"

# Hand-written mutants of the contract, each applied to a copy of the project and run against the forge
# suite (then a pytest subset if forge misses it); fails if any survives. See docs/verification.md.
mutants: compile
	python scripts/mutants.py

test-all: compile browser test-forge-long
	ape test tests/

bench: compile
	python scripts/bench.py
	python scripts/bench_cli.py
	python scripts/bench_audit.py
	python scripts/bench_settle.py
	python scripts/bench_history.py
	python scripts/bench_chain.py
	python scripts/bench_import.py
	python scripts/perf_table.py

# docs/performance.md again from bench/results.json (make bench ends with it; tests/test_docs.py checks it).
perf-page:
	python scripts/perf_table.py

# Generated state only; keeps .venv and node_modules.
clean:
	rm -rf .build .ape .tmp contracts/.cache

# Static analysis: slither over the contracts (fails on a high or medium finding not accepted, with its
# reason, in scripts/lint.sh) and ruff over ledger/, scripts/ and tests/. The tools live in their own venv,
# built from the fully pinned requirements-lint.txt: slither's dependencies must not move Ape's pins.
LINT_VENV := .venv-lint
LINT_STAMP := $(LINT_VENV)/.installed.stamp
.PHONY: lint
lint: $(LINT_STAMP) node_modules
	LINT_VENV=$(LINT_VENV) scripts/lint.sh

$(LINT_STAMP): requirements-lint.txt
	test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/pip install --disable-pip-version-check -q -r requirements-lint.txt
	touch $@
