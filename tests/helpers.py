"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from ledger.chain import eip712
from ledger.errors import ContractRevert
from ledger.models import Terms

KITCHEN = ("fridge", "oven", "recipe-app", "logistics")
DECIMALS = 6
UNIT = 10**DECIMALS


def revert_of(call) -> ContractRevert:
    """Run ``call`` and return the contract revert it must raise."""
    with pytest.raises(ContractRevert) as info:
        call()
    return info.value


@contextmanager
def isolated(chain):
    """Run the block, then put the chain back where it was (Ape's snapshot and restore around it); an
    exception raised in the block, a failed assertion included, propagates.

    Not Ape's ``chain.isolate()``: it swallows every exception raised in its block (``except Exception:
    pass``, eth-ape 0.8.51), so an assertion inside it never fails a test; and after restoring it sets the
    pending block's timestamp back by time travel, which on py-evm (``make test-pyevm``) fails when a
    second or more has passed and leaves eth-tester's pending block with its parent's timestamp: no block
    can be mined after that, and every transaction sent stays in the pending block, using up its gas (see
    docs/verification.md)."""
    snapshot = chain.snapshot()
    try:
        yield
    finally:
        chain.restore(snapshot)


def sign_all(ledger, accounts, agreement_id: bytes, version: int, terms: Terms) -> list[bytes]:
    """Every account's EIP-712 approval of ``version`` of ``terms``, in the order given."""
    message = ledger.approval_message(agreement_id, version, terms)
    return [eip712.sign(a, message) for a in accounts]
