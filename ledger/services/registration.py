"""Registering an ME under the name rules of :mod:`ledger.names` (the contract itself only checks that a
name is 1 to 32 bytes and not taken byte for byte)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ledger.names import check_new

if TYPE_CHECKING:
    from ledger.chain.writer import LedgerWriter


def register_me(
    chain: LedgerWriter, name: str, payout: str, signer: str, parent: int = 0, *, sender
) -> tuple[int, str]:
    """Register ME ``name`` (normalised to NFC) after checking it against every ME on the chain, dissolved
    ones included. Returns its id and the name as registered; raises :class:`ledger.errors.InputError`
    for a name the rules refuse, before anything is sent."""
    name = check_new(name, (me.name for me in chain.mes()), "ME")
    return chain.register_me(name, payout, signer, parent, sender=sender), name
