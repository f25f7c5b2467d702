"""The tests' own isolation (``helpers.isolated``), which the hypothesis tests run each example in: a failed
assertion inside it fails the test, and the chain is put back and stays minable on every node, py-evm
included (Ape's ``chain.isolate()`` does neither: see ``helpers.isolated`` and docs/verification.md)."""

from __future__ import annotations

import pytest

from .helpers import isolated


def test_a_failed_assertion_inside_an_isolated_block_fails_the_test_and_the_chain_is_put_back(chain, ledger, funded):
    height = chain.blocks.height
    supply = ledger.token.totalSupply()
    with pytest.raises(AssertionError, match="seen from inside"), isolated(chain):
        ledger.token.mint(funded.address, 7, sender=funded)
        assert ledger.token.totalSupply() == supply + 7
        raise AssertionError("seen from inside")
    assert chain.blocks.height == height
    assert ledger.token.totalSupply() == supply


def test_a_transaction_after_an_isolated_block_is_mined_when_the_clock_moved_on_inside_it(
    chain, ledger, funded, monkeypatch
):
    # py-evm stamps a new block max(now, parent + 1): blocks mined in a burst run ahead of the wall clock, so
    # its clock is moved on here rather than waited for. Ape's chain.isolate() then set the pending block's
    # timestamp back by time travel, which py-evm refused, and left a pending block stamped like its
    # parent: no block could be mined after it (the transaction below stayed in the pending block).
    ledger.token.mint(funded.address, 1, sender=funded)
    head = chain.blocks.head
    with isolated(chain):
        ledger.token.mint(funded.address, 1, sender=funded)
        monkeypatch.setattr("eth._utils.headers.eth_now", lambda: head.timestamp + 60)
    receipt = ledger.token.mint(funded.address, 1, sender=funded)
    assert receipt.block_number == head.number + 1 == chain.blocks.height
