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
from typing import TYPE_CHECKING, Any

from ledger.chain.reader import simulate_call
from ledger.chain.rpc import HttpRpc, RpcError
from ledger.errors import ContractRevert, LedgerError

if TYPE_CHECKING:
    from ledger.chain.writer import Signer
    from ledger.config import Settings

# How nodes say a transaction's nonce is already used: Anvil and Hardhat ("nonce too low", ...), and
# py-evm's eth-tester ("Invalid transaction nonce: Expected 6, but got 5"; we never skip nonces, so a
# mismatch means ours was taken).
NONCE_TAKEN = (
    "nonce too low",
    "replacement transaction underpriced",
    "nonce has already been used",
    "invalid transaction nonce",
)


@dataclass(frozen=True)
class TxPolicy:
    timeout: float = 120.0  # seconds to wait for a receipt before giving up
    recheck: float = 3.0  # seconds between checks that a pending transaction is still known
    confirmations: int = 0  # blocks on top of the receipt's block before it counts
    kick: bool = False  # the local dev chain: mine a block when a transaction sits in the pool
    window: int = 8  # settlement transactions in flight at once (Pipeline)
    max_fee: int | None = None  # wei per gas; None: twice the latest base fee plus the tip
    priority_fee: int | None = None  # wei per gas; None: what the node suggests

    @classmethod
    def from_settings(cls, settings: Settings) -> TxPolicy:
        """The policy the settings ask for (``LEDGER_TX_TIMEOUT``, ``LEDGER_CONFIRMATIONS``, ...): on the
        local chain a dropped transaction is noticed within 2 s and a stalled node is mined, elsewhere
        within 15 s and never mined."""
        return cls(
            timeout=settings.tx_timeout,
            recheck=2.0 if settings.is_local else 15.0,
            confirmations=settings.confirmation_depth,
            kick=settings.is_local,
            window=settings.tx_window,
            max_fee=_wei(settings.max_fee_gwei),
            priority_fee=_wei(settings.priority_fee_gwei),
        )


def _wei(gwei) -> int | None:
    """Gwei (a Decimal setting) in wei."""
    return None if gwei is None else int(gwei * 10**9)


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

    @classmethod
    def of(cls, tx_hash: str, receipt: dict, *, logs: bool) -> Receipt:
        """From a JSON-RPC receipt (with its raw logs when ``logs``)."""
        return cls(
            tx_hash=tx_hash,
            block=int(receipt["blockNumber"], 16),
            block_hash=receipt["blockHash"],
            gas_used=int(receipt["gasUsed"], 16),
            logs=tuple(receipt.get("logs", ())) if logs else (),
        )


@dataclass(frozen=True)
class SignedCall:
    """A signed transaction with the attributes :meth:`Transactor.send` reads from Ape's transactions."""

    sender: str
    receiver: str
    data: bytes
    raw: str  # 0x-hex
    tx_hash: str

    def serialize_transaction(self) -> bytes:
        return bytes.fromhex(self.raw[2:])

    @property
    def txn_hash(self) -> bytes:
        return bytes.fromhex(self.tx_hash[2:])


class TransactionStalled(LedgerError):
    """No receipt within the policy's timeout: the run stops; running it again is safe."""


class Transactor:
    def __init__(self, rpc: HttpRpc, policy: TxPolicy):
        self.rpc = rpc
        self.policy = policy
        self.resent = 0  # dropped transactions sent again
        self.rebuilt = 0  # transactions built again after their nonce was taken
        self.kicks = 0  # blocks mined to unstick the local node

    def send(
        self, build: Callable[[], Any], *, confirm: bool = True, sign: Callable[[Any], Any] | None = None
    ) -> Receipt:
        """Send the transaction ``build()`` returns (an Ape ``TransactionAPI``); its receipt, once
        confirmed (``confirm=False``: once included; the caller confirms with :meth:`reorganised_out`).

        ``sign``: signs the built transaction, called only after the simulation passed, so a refusal
        never asks anyone (a keystore prompt, a hardware wallet) to sign. Without it ``build`` signs."""
        for _ in range(6):
            tx = build()
            call = {"from": tx.sender, "to": tx.receiver, "data": "0x" + bytes(tx.data).hex()}
            self.simulate(call)
            if sign is not None:
                tx = sign(tx)
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
                self.simulate(call)  # the state changed between simulation and mining: say why
                raise ContractRevert("Reverted", {}, f"transaction {tx_hash} reverted")
            if confirm and self.policy.confirmations:
                receipt = self._confirm(raw, tx_hash, receipt)
            return Receipt.of(tx_hash, receipt, logs=True)
        raise LedgerError("the account's transactions keep being replaced by others; is another process using it?")

    # -- steps --------------------------------------------------------------------------------------

    def simulate(self, call: dict) -> None:
        """Run ``call`` with ``eth_call``: a revert raises :class:`ContractRevert` and nothing is sent."""
        simulate_call(self.rpc, call)

    def _submit(self, raw: str, tx_hash: str) -> bool:
        """Send; False when the nonce was taken by another transaction (build again)."""
        return self.sent(raw) or self._receipt(tx_hash) is not None  # ours landed already: wait for it

    def sent(self, raw: str) -> bool:
        """Send signed bytes: True when the node has them (also when it knew them already, or mined them
        reverted), False when their nonce is used by another transaction; any other refusal raises."""
        try:
            self.rpc.request("eth_sendRawTransaction", [raw])
            return True
        except RpcError as err:
            text = str(err).lower()
            if "already known" in text or "known transaction" in text or mined_reverted(err):
                return True
            if any(marker in text for marker in NONCE_TAKEN):
                return False
            raise

    def _receipt(self, tx_hash: str) -> dict | None:
        return self.rpc.request("eth_getTransactionReceipt", [tx_hash])

    def _wait(self, raw: str, tx_hash: str) -> dict | None:
        stalled = (f"transaction {tx_hash} was not mined within {self.policy.timeout:g} s at {self.rpc.url}; "
                   f"run the same command again (nothing is settled twice)")  # fmt: skip
        mined, _ = self.watch([InFlight(None, 0, raw, tx_hash, 0)], wait=True, pause=0.005, most=0.1,
                              stalled=lambda _: stalled)  # fmt: skip
        return mined[0][1] if mined else None  # None: our nonce went to another transaction

    def watch(
        self, flights: list[InFlight], *, wait: bool, pause: float, most: float,
        stalled: Callable[[list[InFlight]], str],
    ) -> tuple[list[tuple[InFlight, dict]], list[InFlight]]:  # fmt: skip
        """The one waiting loop of the single and the pipelined paths: of ``flights`` (sent, not yet
        mined), the mined ones with their receipts, and the lost ones (never mined: their nonce went to
        another transaction). With ``wait``, polls (sleeping ``pause`` seconds, doubling up to ``most``)
        until one is mined or lost. Every ``recheck`` seconds a transaction the node no longer knows is
        sent again (the same signed bytes: lands at most once), and on the local dev chain a block is
        mined when transactions sit in its pool (Anvil's automine can stall under bursts); after
        ``timeout`` seconds without progress, :class:`TransactionStalled` says ``stalled(flights)``."""
        start = time.monotonic()
        next_check = start + self.policy.recheck
        while True:
            receipts = self.rpc.batch([("eth_getTransactionReceipt", [f.tx_hash]) for f in flights])
            mined = [(f, r) for f, r in zip(flights, receipts, strict=True) if r is not None and r.get("blockNumber")]
            if mined or not wait or not flights:
                return mined, []
            now = time.monotonic()
            if now - start > self.policy.timeout:
                raise TransactionStalled(stalled(flights))
            if now >= next_check:
                next_check = now + self.policy.recheck
                known = self.rpc.batch([("eth_getTransactionByHash", [f.tx_hash]) for f in flights])
                lost = []
                for flight, tx in zip(flights, known, strict=True):
                    if tx is None:  # dropped by the node
                        self.resent += 1
                        if not self._submit(flight.raw, flight.tx_hash):
                            lost.append(flight)
                if lost:
                    return [], lost
                if self.policy.kick and any(tx is not None for tx in known):
                    self.kicks += 1
                    self.rpc.request("evm_mine", [])
            time.sleep(pause)
            pause = min(pause * 2, most)

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


def mined_reverted(err: RpcError) -> bool:
    """Hardhat's automine answers ``eth_sendRawTransaction`` with an error when the transaction reverts,
    although it was mined (status 0; the hash is in the error's data). Anvil answers with the hash."""
    data = err.data if isinstance(err.data, dict) else {}
    return bool(data.get("txHash")) or "vm exception while processing transaction" in str(err).lower()


# -- many transactions at once ----------------------------------------------------------------------


class NonceTaken(LedgerError):
    """The node refused a pipelined transaction because its nonce was used by another one (another
    process with the same account): nothing of it was sent."""


@dataclass
class InFlight:
    key: Any
    nonce: int
    raw: str
    tx_hash: str
    gas: int


@dataclass(frozen=True)
class Done:
    key: Any
    receipt: Receipt | None  # None: never mined (its nonce went to another transaction)
    ok: bool  # status 1
    gas_limit: int


class Pipeline:
    """Transactions from one account with up to ``window`` in flight (sent, not yet mined).

    Nonces are assigned here, in order, so the node mines them in the order they were submitted. A
    transaction that reverts still uses its nonce: the ones after it are unaffected and the caller
    decides what the revert means (:class:`Done` ``ok=False``). Waiting has the same guards as
    :class:`Transactor`: a transaction the node no longer knows is sent again (same bytes), the local
    dev chain is nudged with a block when transactions sit in its pool, and after ``timeout`` seconds
    without progress the run stops with :class:`TransactionStalled`.
    """

    def __init__(self, transactor: Transactor, signer: Signer, chain_id: int, *, window: int | None = None):
        self.rpc = transactor.rpc
        self.transactor = transactor
        self.policy = transactor.policy
        self.signer = signer
        self.chain_id = chain_id
        self.window = max(1, window or self.policy.window)
        self.max_fee, self.priority_fee = self.policy.max_fee, self.policy.priority_fee
        self.inflight: list[InFlight] = []
        self._nonce: int | None = None
        self._fees: dict | None = None
        self._fees_at = 0.0

    def reset_nonce(self) -> None:
        """Read the account's nonce from the node again before the next submission (call when idle)."""
        self._nonce = None

    def _fee_fields(self) -> dict:
        now = time.monotonic()
        if self._fees is None or now - self._fees_at > 30:
            block = self.rpc.request("eth_getBlockByNumber", ["latest", False])
            base = block.get("baseFeePerGas")
            if base is None:  # a chain without EIP-1559 (some permissioned networks)
                price = self.max_fee if self.max_fee is not None else int(self.rpc.request("eth_gasPrice"), 16)
                self._fees = {"gasPrice": price}
            else:
                priority = self.priority_fee
                if priority is None:
                    try:
                        priority = int(self.rpc.request("eth_maxPriorityFeePerGas"), 16)
                    except RpcError:
                        priority = 10**9
                max_fee = self.max_fee if self.max_fee is not None else 2 * int(base, 16) + priority
                self._fees = {"maxFeePerGas": max_fee, "maxPriorityFeePerGas": min(priority, max_fee)}
            self._fees_at = now
        return self._fees

    def submit(self, key: Any, to: str, data: bytes, gas: int) -> list[Done]:
        """Send one transaction; what landed meanwhile. Returns with fewer than ``window`` in flight, so
        the caller hears of a landed batch before it sends the next one (``window=1``: strictly one at a
        time)."""
        done: list[Done] = []
        if self._nonce is None:
            self._nonce = int(self.rpc.request("eth_getTransactionCount", [self.signer.address, "pending"]), 16)
        tx = {"chainId": self.chain_id, "nonce": self._nonce, "to": to, "data": data, "gas": gas, "value": 0,
              **self._fee_fields()}  # fmt: skip
        if "maxFeePerGas" in tx:
            tx["type"] = 2
        raw, tx_hash = self.signer.sign(tx)
        if not self.transactor.sent(raw):
            self._nonce = None
            raise NonceTaken(f"nonce {tx['nonce']} of {self.signer.address} was taken by another transaction")
        self._nonce += 1
        self.inflight.append(InFlight(key, tx["nonce"], raw, tx_hash, gas))
        done += self.poll(wait=False)
        while len(self.inflight) >= self.window:
            done += self.poll(wait=True)
        return done

    def drain(self) -> list[Done]:
        """Wait for every transaction in flight."""
        done: list[Done] = []
        while self.inflight:
            done += self.poll(wait=True)
        return done

    def poll(self, *, wait: bool) -> list[Done]:
        """Receipts of transactions in flight, in nonce order (with ``wait``: at least one)."""
        mined, lost = self.transactor.watch(self.inflight, wait=wait, pause=0.002, most=0.05, stalled=self._stalled)
        if lost:
            self.inflight = [f for f in self.inflight if f not in lost]
            self._nonce = None
            return [Done(f.key, None, False, f.gas) for f in lost]
        landed = {id(f) for f, _ in mined}
        self.inflight = [f for f in self.inflight if id(f) not in landed]
        return [Done(f.key, Receipt.of(f.tx_hash, r, logs=False), int(r["status"], 16) == 1, f.gas) for f, r in mined]

    def _stalled(self, still: list[InFlight]) -> str:
        return (
            f"{len(still)} {'transaction' if len(still) == 1 else 'transactions'} (first {still[0].tx_hash}) "
            f"{'was' if len(still) == 1 else 'were'} not mined within "
            f"{self.policy.timeout:g} s at {self.rpc.url}; run the same command again "
            f"(nothing is settled twice)"
        )
