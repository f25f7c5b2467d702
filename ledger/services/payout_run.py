"""Payout runs: pay many MEs their balances in one go, from any account.

The contract's ``payout(token, meIds)`` sends each listed ME's whole balance to the ME's own payout
address (the address only the ME's signer can change), so whoever sends the run cannot redirect money.
An ME whose payout address reverts, or that the token refuses (a blocklist), is skipped by the contract
with a ``PayoutSkipped`` event and keeps its balance; the rest of the batch is paid.

Here: :func:`plan` reads the selected MEs' balances (batched views) and keeps those at or above the
minimum; :func:`run` sends them in batches of ``batch_size`` through one pipeline (several
transactions in flight), each batch's gas estimated first (an estimate that reverts stops the run
before anything is sent). A batch that fails on-chain (out of gas: a receiver that burns all the gas it
is given) is split in halves and sent again, down to single MEs, so one bad receiver never blocks the
others. The outcome is read back from the run's own ``Withdrawn``/``PayoutSkipped`` logs.

Running a run again is safe: balances are read again, and an ME already paid has nothing left to pay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ledger.chain.transact import NonceTaken
from ledger.errors import InputError, LedgerError

if TYPE_CHECKING:
    from ledger.chain.reader import LedgerReader
    from ledger.chain.writer import LedgerWriter

DEFAULT_BATCH = 100
GAS_MARGIN = 1.25  # on top of eth_estimateGas: a receiver's hook may cost more when state moved


@dataclass(frozen=True)
class Line:
    me_id: int
    name: str
    payout: str
    amount: int  # base units: what the ME would receive now


@dataclass
class Outcome:
    paid: list[tuple[int, str, int]] = field(default_factory=list)  # (me_id, to, amount)
    skipped: list[tuple[int, str, int]] = field(default_factory=list)  # (me_id, payout, amount)
    failed: list[tuple[int, str]] = field(default_factory=list)  # (me_id, why) a single-ME batch that failed
    transactions: int = 0
    gas: int = 0

    @property
    def total_paid(self) -> int:
        return sum(a for _, _, a in self.paid)


def select_mes(
    chain: LedgerReader, *, names: Sequence[str] = (), alliance: str | None = None, from_block: int = 0
) -> list:
    """The MEs a run covers: ``names`` (each must exist), the parties of every version of ``alliance``,
    both (their intersection), or every ME."""
    mes = chain.mes()
    by_name = {m.name: m for m in mes}
    chosen = mes
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise InputError(f"--me: no ME named {', '.join(repr(n) for n in unknown)}")
        chosen = [by_name[n] for n in dict.fromkeys(names)]
    if alliance is not None:
        agreement = chain.agreement(alliance)  # NotFoundError names the alliance
        parties: set[int] = set()
        for log in chain.logs(["AgreementProposed"], from_block=from_block, topic1=[agreement.id]):
            parties.update(log.args["terms"][1])
        chosen = [m for m in chosen if m.id in parties]
    return chosen


def plan(chain: LedgerReader, token: str, mes: Sequence, *, minimum: int = 0) -> list[Line]:
    """Every ME of ``mes`` with a balance of at least ``minimum`` (and above zero) in ``token``."""
    if minimum < 0:
        raise InputError("--min: must not be negative")
    balances = chain.balances_of([m.id for m in mes], token) if mes else []
    return [
        Line(m.id, m.name, m.payout, amount)
        for m, amount in zip(mes, balances, strict=True)
        if amount > 0 and amount >= minimum
    ]


def run(chain: LedgerWriter, sender, token: str, lines: Sequence[Line], *, batch_size: int = DEFAULT_BATCH,
        window: int | None = None, progress=None) -> Outcome:  # fmt: skip
    """Pay ``lines`` in batches of ``batch_size`` through one pipeline from ``sender``."""
    if batch_size < 1:
        raise InputError("--batch-size: must be at least 1")
    outcome = Outcome()
    if not lines:
        return outcome
    ids = [line.me_id for line in lines]
    queue = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    # Estimate every batch first: a revert (an unknown ME, the zero token) stops the run with nothing sent.
    gas = {}
    for batch in queue:
        gas[tuple(batch)] = int(chain.estimate_gas(sender.address, chain.payout_data(token, batch)) * GAS_MARGIN)
    # A Safe (or a file for its owners): one Safe transaction per batch.
    # In sequence: a reverted execTransaction leaves its Safe nonce unused, and the batches signed for the
    # nonces after it would fail too and be taken for failed payouts.
    pipeline = sender.pipeline(chain, 1) if hasattr(sender, "pipeline") else chain.pipeline(sender, window)
    hashes: list[str] = []
    blocks: list[int] = []

    def landed(done_list) -> None:
        for done in done_list:
            batch = done.key
            if done.receipt is not None:
                outcome.transactions += 1
                outcome.gas += done.receipt.gas_used
                hashes.append(done.receipt.tx_hash)
                blocks.append(done.receipt.block)
            if done.ok:
                if progress:
                    progress(len(batch))
                continue
            if done.receipt is None or len(batch) > 1:  # never mined, or out of gas: send again, in halves
                halves = [batch] if done.receipt is None else [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
                queue.extend(h for h in halves if h)
            else:
                outcome.failed.append((batch[0], f"transaction {done.receipt.tx_hash} failed"))

    while queue or pipeline.inflight:
        if not queue:
            landed(pipeline.poll(wait=True))
            continue
        batch = queue.pop(0)
        data = chain.payout_data(token, batch)
        limit = gas.get(tuple(batch))
        if limit is None:  # a half of a failed batch: what it may use is at most what the whole had
            limit = max(2 * chain.estimate_gas(sender.address, data), 200_000)
        try:
            landed(pipeline.submit(batch, chain.address, data, limit))
        except NonceTaken:
            landed(pipeline.drain())
            pipeline.reset_nonce()
            queue.insert(0, batch)
    landed(pipeline.drain())
    if hashes:
        mine = {h.lower() for h in hashes}
        for log in chain.logs(["Withdrawn", "PayoutSkipped"], from_block=min(blocks), to_block=max(blocks)):
            if log.tx.lower() not in mine or log.args["token"].lower() != token.lower():
                continue
            if log.event == "Withdrawn":
                outcome.paid.append((log.args["meId"], log.args["to"], log.args["amount"]))
            else:
                outcome.skipped.append((log.args["meId"], log.args["payout"], log.args["amount"]))
    if outcome.failed and not (outcome.paid or outcome.skipped):
        raise LedgerError(f"the payout run failed: {outcome.failed[0][1]}")
    return outcome
