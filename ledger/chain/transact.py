"""Sending a transaction so that it lands once, or the caller is told clearly that it did not.

Ape's own send waits a fixed time for a receipt, and does not wait at all when the node mines on an
interval; neither notices a transaction the node accepted and then dropped. Settlement cannot live with
that, so its transactions go through :class:`Transactor`:

1. **Simulate** with ``eth_call`` first: a revert is decoded into the contract's custom error and
   nothing is sent.
2. **Send** the signed transaction. If its nonce was taken meanwhile (another process with the same
   account, or our own earlier attempt that did land), check whether ours landed; otherwise build it
   again with a fresh nonce. That is safe for settlement: the contract's sequence cursor refuses a batch
   that was already applied.
3. **Wait** for the receipt, polling. Every ``recheck`` seconds without one, ask the node whether it
   still knows the transaction: if not (dropped), send the same signed bytes again, which can land at
   most once (same nonce); on the local dev chain, mine a block if it sits in the pool (Anvil's automine
   has been seen to stall under bursts). After ``timeout`` seconds give up with :class:`TransactionStalled`.
4. **Confirm**: with a confirmation depth, wait until the receipt's block is that deep, then check the
   receipt is still there in the same block; a transaction reorganised out is sent again (same bytes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ledger.chain.rpc import HttpRpc, RpcError
from ledger.errors import ContractRevert, LedgerError

NONCE_TAKEN = ("nonce too low", "replacement transaction underpriced", "nonce has already been used")


@dataclass(frozen=True)
class TxPolicy:
    timeout: float = 120.0  # seconds to wait for a receipt before giving up
    recheck: float = 3.0  # seconds between checks that a pending transaction is still known
    confirmations: int = 0  # blocks on top of the receipt's block before it counts
    kick: bool = False  # the local dev chain: mine a block when a transaction sits in the pool


@dataclass(frozen=True)
class Receipt:
    tx_hash: str
    block: int
    block_hash: str
    gas_used: int
    logs: tuple = ()  # the receipt's raw logs (JSON-RPC dicts)

    @property
    def block_number(self) -> int:  # the name Ape's receipts use
        return self.block


class TransactionStalled(LedgerError):
    """No receipt within the policy's timeout: the run stops; running it again is safe."""


class Transactor:
    def __init__(self, rpc: HttpRpc, policy: TxPolicy, decode_revert: Callable[[bytes], tuple[str, dict] | None]):
        self.rpc = rpc
        self.policy = policy
        self.decode_revert = decode_revert
        self.resent = 0  # dropped transactions sent again
        self.rebuilt = 0  # transactions built again after their nonce was taken
        self.kicks = 0  # blocks mined to unstick the local node

    def send(self, build: Callable[[], Any], *, confirm: bool = True) -> Receipt:
        """Send the signed transaction ``build()`` returns (an Ape ``TransactionAPI``); its receipt, once
        confirmed (``confirm=False``: once included; the caller confirms with :meth:`reorganised_out`)."""
        for _ in range(6):
            tx = build()
            call = {"from": tx.sender, "to": tx.receiver, "data": "0x" + bytes(tx.data).hex()}
            self._simulate(call)
            raw = "0x" + bytes(tx.serialize_transaction()).hex()
            tx_hash = "0x" + bytes(tx.txn_hash).hex()
            if not self._submit(raw, tx_hash):
                self.rebuilt += 1
                continue
            receipt = self._wait(raw, tx_hash)
            if receipt is None:  # our nonce went to another transaction while we waited
                self.rebuilt += 1
                continue
            if int(receipt["status"], 16) != 1:
                self._simulate(call)  # the state changed between simulation and mining: say why
                raise ContractRevert("Reverted", {}, f"transaction {tx_hash} reverted")
            if confirm and self.policy.confirmations:
                receipt = self._confirm(raw, tx_hash, receipt)
            return Receipt(
                tx_hash=tx_hash,
                block=int(receipt["blockNumber"], 16),
                block_hash=receipt["blockHash"],
                gas_used=int(receipt["gasUsed"], 16),
                logs=tuple(receipt.get("logs", ())),
            )
        raise LedgerError("the account's transactions keep being replaced by others; is another process using it?")

    # -- steps --------------------------------------------------------------------------------------

    def _simulate(self, call: dict) -> None:
        try:
            self.rpc.request("eth_call", [call, "latest"])
        except RpcError as err:
            data = _revert_data(err.data)
            decoded = self.decode_revert(data) if data else None
            if decoded:
                raise ContractRevert(*decoded) from None
            raise ContractRevert("Reverted", {}, f"the contract refused the transaction: {err}") from None

    def _submit(self, raw: str, tx_hash: str) -> bool:
        """Send; False when the nonce was taken by another transaction (build again)."""
        try:
            self.rpc.request("eth_sendRawTransaction", [raw])
            return True
        except RpcError as err:
            text = str(err).lower()
            if "already known" in text or "known transaction" in text:
                return True
            if any(marker in text for marker in NONCE_TAKEN):
                return self._receipt(tx_hash) is not None  # ours landed already: wait for it
            raise

    def _receipt(self, tx_hash: str) -> dict | None:
        return self.rpc.request("eth_getTransactionReceipt", [tx_hash])

    def _wait(self, raw: str, tx_hash: str) -> dict | None:
        start = time.monotonic()
        next_check = start + self.policy.recheck
        pause = 0.005
        while True:
            receipt = self._receipt(tx_hash)
            if receipt is not None and receipt.get("blockNumber"):
                return receipt
            now = time.monotonic()
            if now - start > self.policy.timeout:
                raise TransactionStalled(
                    f"transaction {tx_hash} was not mined within {self.policy.timeout:g} s at {self.rpc.url}; "
                    f"run the same command again (nothing is settled twice)"
                )
            if now >= next_check:
                next_check = now + self.policy.recheck
                if self.rpc.request("eth_getTransactionByHash", [tx_hash]) is None:
                    # Dropped by the node: the same signed bytes again (same nonce: lands at most once).
                    self.resent += 1
                    if not self._submit(raw, tx_hash):
                        return None
                elif self.policy.kick:
                    self.kicks += 1
                    self.rpc.request("evm_mine", [])
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def reorganised_out(self, receipts: list[Receipt]) -> list[Receipt]:
        """Once the newest of ``receipts`` is ``confirmations`` deep, the ones no longer in their block."""
        if not receipts:
            return []
        target = max(r.block for r in receipts) + self.policy.confirmations
        self._reach(target, f"{len(receipts)} settlement transactions")
        lost = []
        for receipt in receipts:
            again = self._receipt(receipt.tx_hash)
            if again is None or again.get("blockHash") != receipt.block_hash:
                lost.append(receipt)
        return lost

    def _reach(self, block: int, what: str) -> None:
        """Wait until the chain's head is at ``block`` (mining empty blocks on the local dev chain)."""
        deadline = time.monotonic() + self.policy.timeout + 15 * self.policy.confirmations
        while (head := int(self.rpc.request("eth_blockNumber"), 16)) < block:
            if time.monotonic() > deadline:
                raise TransactionStalled(f"{what} did not reach {self.policy.confirmations} confirmations")
            if self.policy.kick:  # an automining dev chain makes no blocks by itself
                self.rpc.dev_request("anvil_mine", [hex(block - head)])  # hardhat_mine on Hardhat
            else:
                time.sleep(0.5)

    def _confirm(self, raw: str, tx_hash: str, receipt: dict) -> dict:
        depth = self.policy.confirmations
        while True:
            self._reach(int(receipt["blockNumber"], 16) + depth, f"transaction {tx_hash}")
            again = self._receipt(tx_hash)
            if again is not None and again.get("blockHash") == receipt["blockHash"]:
                return again
            # Reorganised out (or into another block): make sure it is included, then confirm again.
            if again is None:
                self.resent += 1
                if not self._submit(raw, tx_hash) or (again := self._wait(raw, tx_hash)) is None:
                    raise LedgerError(f"transaction {tx_hash} was reorganised out and its nonce reused; run again")
            receipt = again


def _revert_data(data: Any) -> bytes | None:
    if isinstance(data, dict):  # some nodes nest it: {"data": "0x..."}
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x") and len(data) >= 10:
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    return None
