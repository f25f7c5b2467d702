"""Helpers shared by the tests (fixtures live in conftest.py)."""

from __future__ import annotations

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


def sign_all(ledger, accounts, agreement_id: bytes, version: int, terms: Terms) -> list[bytes]:
    """Every account's EIP-712 approval of ``version`` of ``terms``, in the order given."""
    message = ledger.approval_message(agreement_id, version, terms)
    return [eip712.sign(a, message) for a in accounts]
