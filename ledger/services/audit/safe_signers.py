"""The audit's check of contract signers: Safes, rebuilt from their own events and verified offline.

A contract signer's signature cannot be recovered to an address. The ledger accepted it because the
signer's ``isValidSignature`` said yes *when the transaction ran*. Asking the node again
(``eth_call`` at the activation's block) needs the node's state at that block, which a pruned node (the
local chain runs Anvil with ``--prune-history``) and most public RPC endpoints no longer have. So the
audit does not call the Safe: it rebuilds each Safe's owners and threshold at the exact log position of
the activation from the Safe's own events (``SafeSetup``, ``AddedOwner``, ``RemovedOwner``,
``ChangedThreshold``) and verifies each owner's signature of the Safe's ``SafeMessage`` over the
ledger's digest offline, as Safe 1.4.1's ``checkNSignatures`` does (:func:`ledger.chain.safe.verify`).

Limits (each reported, never silently passed):

* Only Safes (a contract with a ``SafeSetup`` event) are verified; another contract signer (an
  ERC-1271 wallet of another kind, an EIP-7702 delegated account whose key did not sign) is counted as
  *unverifiable*, not as a finding.
* The Safe's message scheme is the one of ``CompatibilityFallbackHandler``. A Safe whose fallback
  handler was changed (``ChangedFallbackHandler``) before the signature is counted unverifiable.
* Owner changes are read from events: a Safe transaction with ``DELEGATECALL`` can rewrite the Safe's
  storage without them. Signatures of type ``v = 0`` (an owner that is itself a contract), ``v = 1``
  (a hash approved on chain) and ``eth_sign`` (``v > 30``) are not verified offline: unverifiable.

Like the rest of the audit, the Safe's event signatures are written out here, not read from artifacts.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils import to_checksum_address

from ledger.chain import safe as safe_lib
from ledger.chain.reader import LogReader

SAFE_EVENTS = [
    {"type": "event", "name": "SafeSetup", "anonymous": False, "inputs": [
        {"name": "initiator", "type": "address", "indexed": True},
        {"name": "owners", "type": "address[]", "indexed": False},
        {"name": "threshold", "type": "uint256", "indexed": False},
        {"name": "initializer", "type": "address", "indexed": False},
        {"name": "fallbackHandler", "type": "address", "indexed": False}]},
    {"type": "event", "name": "AddedOwner", "anonymous": False,
     "inputs": [{"name": "owner", "type": "address", "indexed": True}]},
    {"type": "event", "name": "RemovedOwner", "anonymous": False,
     "inputs": [{"name": "owner", "type": "address", "indexed": True}]},
    {"type": "event", "name": "ChangedThreshold", "anonymous": False,
     "inputs": [{"name": "threshold", "type": "uint256", "indexed": False}]},
    {"type": "event", "name": "ChangedFallbackHandler", "anonymous": False,
     "inputs": [{"name": "handler", "type": "address", "indexed": True}]},
]  # fmt: skip

VERIFIED, UNVERIFIABLE = "verified", "unverifiable"


@dataclass(frozen=True)
class Verdict:
    outcome: str  # VERIFIED, UNVERIFIABLE, or a finding's reason (the signature is invalid)
    reason: str = ""

    @property
    def invalid(self) -> bool:
        return self.outcome not in (VERIFIED, UNVERIFIABLE)


class SafeSigners:
    """Per audit run: which signers are contracts, and each Safe's history of owners and threshold."""

    def __init__(self, rpc, chain_id: int, to_block: int):
        self.rpc = rpc
        self.chain_id = chain_id
        self.to_block = to_block
        self._code: dict[str, bool] = {}
        self._history: dict[str, list] = {}

    def is_contract(self, address: str) -> bool:
        if address not in self._code:
            self._code[address] = self.rpc.has_code(address)
        return self._code[address]

    def _events(self, safe: str) -> list:
        if safe not in self._history:
            reader = LogReader(self.rpc.request, safe, SAFE_EVENTS)
            names = [e["name"] for e in SAFE_EVENTS]
            self._history[safe] = list(reader.read(names, 0, self.to_block))
        return self._history[safe]

    def state_at(self, safe: str, block: int, index: int):
        """(owners, threshold, why unverifiable) of ``safe`` just before log ``index`` of ``block``."""
        owners: list[str] = []
        threshold = 0
        set_up = False
        for log in self._events(safe):
            if (log.block, log.index) >= (block, index):
                break
            a = log.args
            if log.event == "SafeSetup":
                owners, threshold, set_up = [to_checksum_address(o) for o in a["owners"]], int(a["threshold"]), True
            elif log.event == "AddedOwner":
                owners.append(to_checksum_address(a["owner"]))
            elif log.event == "RemovedOwner":
                owners = [o for o in owners if o.lower() != a["owner"].lower()]
            elif log.event == "ChangedThreshold":
                threshold = int(a["threshold"])
            elif log.event == "ChangedFallbackHandler":
                return owners, threshold, "its fallback handler was changed (message scheme not checked offline)"
        if not set_up:
            return owners, threshold, "a contract signer that is not a Safe (no SafeSetup event)"
        return owners, threshold, ""

    def check(self, signer: str, digest: bytes, signature: bytes, block: int, index: int) -> Verdict:
        """The Safe ``signer``'s signature of ``digest``, as of log ``index`` of ``block``."""
        owners, threshold, why = self.state_at(signer, block, index)
        if why:
            return Verdict(UNVERIFIABLE, why)
        problem = safe_lib.verify(safe_lib.message(self.chain_id, signer, digest), bytes(signature), owners, threshold)
        if problem is None:
            return Verdict(VERIFIED)
        if "not checked offline" in problem:
            return Verdict(UNVERIFIABLE, problem)
        return Verdict("invalid", f"{problem} (owners then: {', '.join(owners)}; threshold {threshold})")
