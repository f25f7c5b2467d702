"""Shared fixtures: role-named accounts, one deployment per session, Ape's isolation between tests.

Accounts (Ape's test accounts on the managed node): admin, platform, finance, the signers and the
payout addresses of four smart-kitchen MEs, and an attacker with no role.

The node: Anvil (ape-foundry) by default; ``LEDGER_NODE=hardhat`` (``make test-hardhat``) runs the same
tests on Hardhat's node: ape-hardhat starts it for Ape's session, and ``ledger chain up`` starts Hardhat
nodes for the command-line tests. Tests marked ``anvil_only`` are skipped there, with their reason.
``LEDGER_NODE=pyevm`` (``make test-pyevm``) runs them on py-evm, an EVM independent of Anvil's and
Hardhat's (both revm), in process through Ape's ``ethereum:local:test``; the chain layer's JSON-RPC client
then talks to Ape's provider instead of HTTP. Tests marked ``http_node`` (they need a node over HTTP:
``ledger chain up``, the CLI in a subprocess, dev methods py-evm lacks) and ``anvil_only`` are skipped there.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from ledger.chain.writer import LedgerWriter
from ledger.models import Terms

from .helpers import DECIMALS, KITCHEN, UNIT, sign_all

settings.register_profile(
    "default", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.register_profile(
    "fuzz", max_examples=2_000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# The stateful machine's fuzzing run (tests/test_stateful.py -m slow): 10,000 sequences of 30 steps.
settings.register_profile(
    "stateful-fuzz",
    max_examples=10_000,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# The Ape network that runs each kind of node (LEDGER_NODE, as `ledger` reads it).
NETWORKS = {"anvil": "ethereum:local:foundry", "hardhat": "ethereum:local:hardhat", "pyevm": "ethereum:local:test"}


# py-evm is a choice of the tests only (the `ledger` command runs Anvil or Hardhat): read it once, and
# keep it out of the environment the command-line code reads.
_KIND = os.environ.get("LEDGER_NODE", "anvil")
if _KIND == "pyevm":
    del os.environ["LEDGER_NODE"]


def node_kind() -> str:
    return _KIND if _KIND == "pyevm" else os.environ.get("LEDGER_NODE", "anvil")


def pytest_configure(config):
    """One setting picks the node: LEDGER_NODE chooses Ape's network for the session (unless --network
    says otherwise), and an explicit ``--network ethereum:local:hardhat`` sets LEDGER_NODE for the
    command-line tests and the processes they start."""
    kind = node_kind()
    if kind not in NETWORKS:
        raise pytest.UsageError(f"LEDGER_NODE={kind!r}: use one of {', '.join(NETWORKS)}")
    chosen = config.getoption("network", None)
    if chosen is None:
        config.option.network = chosen = NETWORKS[kind]
    elif chosen.endswith(":hardhat"):
        os.environ["LEDGER_NODE"] = "hardhat"
    if chosen.endswith(":hardhat"):
        from ledger.chain import hardhat

        hardhat.install()  # reverts decoded as on Anvil (see ledger.chain.hardhat)


def pytest_collection_modifyitems(config, items):
    kind = node_kind()
    if kind == "anvil":
        return
    for item in items:
        marker = item.get_closest_marker("anvil_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else "needs Anvil"
            item.add_marker(pytest.mark.skip(reason=f"Anvil only ({kind} runs here): {reason}"))
            continue
        marker = item.get_closest_marker("http_node")
        if marker is not None and kind == "pyevm":
            reason = marker.args[0] if marker.args else "needs a node over HTTP"
            item.add_marker(pytest.mark.skip(reason=f"needs a node over HTTP (py-evm runs in process): {reason}"))


@pytest.fixture(autouse=True)
def _pending_block_empty_after_each_test():
    """On py-evm, a transaction that could not be mined (eth-tester applies it to the pending block, then
    mining fails) stays in that block for good: Ape's restore between tests keeps the pending block when
    the head did not move, and every later Ape transaction (sent with the block's whole gas limit) fails
    with "Transaction exceeds gas limit". This names the test that left one, and empties the pending
    block so the tests after it run on a clean chain."""
    yield
    if _KIND != "pyevm":
        return
    import ape

    backend = getattr(ape.chain.provider, "evm_backend", None)
    pending = backend.chain.get_block() if backend is not None else None
    if pending is None or not pending.transactions:
        return
    count, gas = len(pending.transactions), pending.header.gas_used
    backend.revert_to_snapshot(backend.take_snapshot())  # back to the head: a fresh, empty pending block
    pytest.fail(f"py-evm: this test left {count} transaction(s) ({gas:,} gas) unmined in the pending block")


@pytest.fixture(scope="session")
def admin(accounts):
    return accounts[0]


@pytest.fixture(scope="session")
def platform(accounts):
    return accounts[1]


@pytest.fixture(scope="session")
def finance(accounts):
    return accounts[2]


@pytest.fixture(scope="session")
def signers(accounts):
    """Signer accounts of the four kitchen MEs, in KITCHEN order."""
    return [accounts[3], accounts[4], accounts[5], accounts[6]]


@pytest.fixture(scope="session")
def payouts(accounts):
    """Payout accounts of the four kitchen MEs, in KITCHEN order."""
    return [accounts[7], accounts[8], accounts[9], accounts[10]]


@pytest.fixture(scope="session")
def attacker(accounts):
    return accounts[11]


@pytest.fixture(scope="session")
def ledger(admin, platform, finance) -> LedgerWriter:
    return LedgerWriter.deploy(admin=admin, platform=platform, finance=finance, sender=admin, token_decimals=DECIMALS)


@pytest.fixture(scope="session")
def token(ledger):
    return ledger.token.address


@pytest.fixture(scope="session")
def kitchen(ledger, platform, signers, payouts) -> dict[str, int]:
    """The four kitchen MEs registered: name -> ME id (ids 1..4 in KITCHEN order)."""
    return {
        name: ledger.register_me(name, payouts[i].address, signers[i].address, sender=platform)
        for i, name in enumerate(KITCHEN)
    }


@pytest.fixture(scope="session")
def funded(ledger, finance, kitchen):
    """Finance holds plenty of the test token and has approved the ledger for all of it."""
    ledger.token.mint(finance.address, 10**15 * UNIT, sender=finance)
    ledger.token.approve(ledger.address, 2**256 - 1, sender=finance)
    return finance


@pytest.fixture
def make_alliance(ledger, kitchen, signers, finance):
    """Creates and activates an alliance among some kitchen MEs; returns (agreement id, terms)."""

    def make(name: str, shares: dict[str, int], target: int = 0, excess: dict[str, int] | None = None):
        terms = Terms.build(
            ledger.token.address,
            {kitchen[m]: bps for m, bps in shares.items()},
            target,
            {kitchen[m]: bps for m, bps in (excess or {}).items()},
        )
        agreement_id = LedgerWriter.agreement_id(name)
        by_id = {kitchen[m]: signers[KITCHEN.index(m)] for m in shares}
        signatures = sign_all(ledger, [by_id[p] for p in terms.parties], agreement_id, 1, terms)
        ledger.create(agreement_id, terms, signatures, sender=finance)
        return agreement_id, terms

    return make
