"""Settlement: plan revenue events into batches (pure), then submit them exactly once.

Exactly-once has two halves. The contract accepts a batch only at its agreement's sequence cursor, so a
retried, re-submitted or concurrent batch can never be applied twice. This module makes sure a
reference is never put into a batch twice: before each submission it knows every reference settled up
to the cursor it submits at (from ``RevenueSettled`` logs). If another operator moves the cursor first,
the batch reverts with ``SettlementOutOfSequence``; the settler re-reads what was settled, drops it from
the remaining work and carries on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from ledger import money
from ledger.errors import ContractRevert, InputError, LedgerError
from ledger.models import (
    Agreement,
    AgreementStatus,
    MEStatus,
    RevenueEvent,
    Terms,
    bytes32_to_text,
    text_to_bytes32,
)

DEFAULT_BATCH_GAS = 12_000_000
MAX_BATCH_EVENTS = 1_000
MAX_CONFLICT_RETRIES = 20
MAX_REORG_ROUNDS = 3
# Reverts another process can cause, after which the run re-reads the chain and carries on.
RETRYABLE = ("SettlementOutOfSequence", "ERC20InsufficientAllowance")


def batch_size_for(parties: int, gas_budget: int = DEFAULT_BATCH_GAS) -> int:
    """Events per batch so a batch stays within ``gas_budget`` (measured cost per event and party)."""
    # Upper bound of the measured cost (bench/results.json: about 1,600 + 120 per party, tiers included).
    per_event = 2_000 + 150 * parties
    return max(1, min(MAX_BATCH_EVENTS, (gas_budget - 200_000) // per_event))


def order_for_settlement(events: Iterable[RevenueEvent]) -> list[RevenueEvent]:
    """Events of one alliance in settlement order: by period, then file order (stable)."""
    return sorted(events, key=lambda e: (e.period, e.row))


class InsufficientFunds(LedgerError):
    def __init__(self, holder: str, token: str, have: int, need: int):
        self.holder, self.token, self.have, self.need = holder, token, have, need
        super().__init__(f"finance account {holder} holds {have} base units of {token}, the run needs {need}")


@dataclass(frozen=True)
class SettledRecord:
    agreement_id: bytes
    amount: int
    period: int
    seq: int


@dataclass(frozen=True)
class Landed:
    """A batch that is in a block (not yet confirmed)."""

    receipt: object  # ledger.chain.transact.Receipt
    events: list[RevenueEvent]
    token: str


@dataclass
class AllianceWork:
    agreement: Agreement
    terms: Terms
    events: list[RevenueEvent]


class Summary(BaseModel):
    """What a settlement run did (filled in as it goes)."""

    model_config = ConfigDict(extra="forbid")

    settled: int = 0
    skipped: int = 0
    batches: int = 0
    gas_used: int = 0
    moved: dict[str, int] = Field(default_factory=dict)  # token -> base units
    retries: int = 0
    reorganised: int = 0  # events whose batch a reorganisation removed, then settled again

    def as_dict(self) -> dict:
        return {
            "events_settled": self.settled,
            "events_skipped_already_settled": self.skipped,
            "batches": self.batches,
            "gas_used": self.gas_used,
            "tokens_moved": {token: str(units) for token, units in self.moved.items()},
            "conflict_retries": self.retries,
            "events_settled_again_after_reorg": self.reorganised,
        }


def find_duplicates(events: Sequence[RevenueEvent]) -> list[str]:
    """A reference may appear once per file."""
    first: dict[str, int] = {}
    problems = []
    for event in events:
        if event.reference in first:
            problems.append(f"row {event.row}: reference {event.reference!r} repeats row {first[event.reference]}")
        else:
            first[event.reference] = event.row
    return problems


def classify(
    events: Sequence[RevenueEvent], settled: dict[str, SettledRecord], agreement_ids: dict[str, bytes]
) -> tuple[list[RevenueEvent], list[RevenueEvent], list[str]]:
    """Split events into (to settle, already settled identically, conflicts with what the chain holds)."""
    todo, skipped, problems = [], [], []
    for event in events:
        record = settled.get(event.reference)
        if record is None:
            todo.append(event)
        elif (record.agreement_id, record.amount, record.period) == (
            agreement_ids[event.alliance],
            event.amount,
            event.period,
        ):
            skipped.append(event)
        else:
            problems.append(
                f"row {event.row}: reference {event.reference!r} was already settled "
                f"(seq {record.seq}) with a different alliance, amount or period"
            )
    return todo, skipped, problems


class Settler:
    """Settles revenue events for one deployment with one finance account."""

    def __init__(
        self,
        chain,
        finance,
        *,
        batch_gas: int = DEFAULT_BATCH_GAS,
        batch_size: int | None = None,
        from_block: int = 0,
    ):
        self.chain = chain
        self.finance = finance
        self.batch_gas = batch_gas
        self.batch_size = batch_size  # fixed events per batch; by default sized from `batch_gas`
        self.from_block = from_block

    # -- reading the chain ------------------------------------------------------------------------

    def settled_references(self, agreement_ids: Iterable[bytes] | None = None) -> dict[str, SettledRecord]:
        """Every reference settled so far (optionally only for some agreements), from the logs."""
        records: dict[str, SettledRecord] = {}
        topic1 = list(agreement_ids) if agreement_ids is not None else None
        for log in self.chain.logs(["RevenueSettled"], from_block=self.from_block, topic1=topic1):
            agreement_id = log.args["agreementId"]
            first = log.args["firstSeq"]
            for k, (ref, entry) in enumerate(zip(log.args["refs"], log.args["entries"], strict=True)):
                records.setdefault(
                    bytes32_to_text(ref),
                    SettledRecord(agreement_id, entry >> 32, entry & 0xFFFFFFFF, first + k),
                )
        return records

    def prepare(self, events: Sequence[RevenueEvent]) -> tuple[list[AllianceWork], list[RevenueEvent]]:
        """Validate every event against the chain. Returns the work to do and the events to skip.

        Raises :class:`InputError` listing every problem (by row) when anything is wrong: nothing is
        sent in that case.
        """
        problems = find_duplicates(events)
        by_alliance: dict[str, list[RevenueEvent]] = defaultdict(list)
        for event in events:
            by_alliance[event.alliance].append(event)
        agreements: dict[str, Agreement] = {}
        for name in sorted(by_alliance):
            try:
                agreements[name] = self.chain.agreement(name)
            except LedgerError as err:
                problems.append(f"{_rows([e.row for e in by_alliance[name]])}: {err}")

        ids = {name: a.id for name, a in agreements.items()}
        # Read after the agreements (and so their cursors): see `_settle_alliance`.
        settled = self.settled_references()
        known = [e for e in events if e.alliance in ids]
        todo, skipped, conflicts = classify(known, settled, ids)
        problems += conflicts
        todo_by_alliance: dict[str, list[RevenueEvent]] = defaultdict(list)
        for event in todo:
            todo_by_alliance[event.alliance].append(event)
        # Only events still to settle need a live alliance; ones settled before are skipped whatever
        # happened to their alliance since.
        terms: dict[str, Terms] = {}
        for name, pending in todo_by_alliance.items():
            agreement, where = agreements[name], _rows([e.row for e in pending])
            if agreement.status != AgreementStatus.ACTIVE:
                problems.append(f"{where}: alliance {name!r} is {agreement.status.name.lower()}, not active")
                continue
            terms[name] = self.chain.terms_of(agreement.id, agreement.active_version)
            for me_id in terms[name].parties:
                me = self.chain.me(me_id)
                if me.status != MEStatus.ACTIVE:
                    problems.append(f"{where}: alliance {name!r} names dissolved ME {me.name!r}; amend it first")
        # A closed period refuses new revenue; events settled into it before are simply skipped.
        closed_rows: dict[tuple[str, int], list[int]] = {}
        for event in todo:
            if event.alliance not in terms:
                continue
            key = (event.alliance, event.period)
            if key not in closed_rows:
                closed_rows[key] = [] if self.chain.period(ids[event.alliance], event.period)[1] else None
            if closed_rows[key] is not None:
                closed_rows[key].append(event.row)
        problems += [
            f"{_rows(rows)}: period {period} of alliance {alliance!r} is closed"
            for (alliance, period), rows in closed_rows.items()
            if rows
        ]
        if problems:
            raise InputError(problems)
        return [
            AllianceWork(agreement, terms[name], order_for_settlement(todo_by_alliance[name]))
            for name, agreement in agreements.items()
            if name in todo_by_alliance
        ], skipped

    # -- submitting ---------------------------------------------------------------------------------

    def run(
        self,
        events: Sequence[RevenueEvent] = (),
        progress: Callable[[int], None] | None = None,
        *,
        prepared: tuple[list[AllianceWork], list[RevenueEvent]] | None = None,
        summary: Summary | None = None,
    ) -> Summary:
        """Settle ``events`` (or the result of :meth:`prepare` on them). ``summary`` is filled in as
        batches land, so a caller that is interrupted still knows what was done."""
        work, skipped = prepared if prepared is not None else self.prepare(events)
        summary = summary if summary is not None else Summary()
        summary.skipped += len(skipped)
        self._fund(work)
        landed: list[Landed] = []
        for item in work:
            self._settle_alliance(item, summary, progress, landed)
        self._confirm(landed, summary)
        return summary

    def _confirm(self, landed: list[Landed], summary: Summary) -> None:
        """With a confirmation depth: wait until the batches are that deep; settle again whatever a
        reorganisation removed (the cursor keeps it exactly-once even if the old batch comes back)."""
        policy = getattr(self.chain, "policy", None)
        transactor = self.chain.transactor if policy is not None and policy.confirmations else None
        for _ in range(MAX_REORG_ROUNDS):
            if transactor is None or not landed:
                return
            lost_hashes = {r.tx_hash for r in transactor.reorganised_out([batch.receipt for batch in landed])}
            if not lost_hashes:
                return
            lost = [batch for batch in landed if batch.receipt.tx_hash in lost_hashes]
            events = [event for batch in lost for event in batch.events]
            summary.settled -= len(events)
            summary.batches -= len(lost)
            summary.reorganised += len(events)
            for batch in lost:
                summary.gas_used -= batch.receipt.gas_used
                summary.moved[batch.token] -= sum(e.amount for e in batch.events)
            work, _ = self.prepare(events)  # what the chain no longer holds (a batch may have come back)
            self._fund(work)
            landed = []
            for item in work:
                self._settle_alliance(item, summary, None, landed)
        raise LedgerError(
            f"settlement batches were reorganised out {MAX_REORG_ROUNDS} times in a row; run the same command "
            f"again later (nothing is settled twice)"
        )

    def check_funds(self, work: list[AllianceWork]) -> dict[str, int]:
        """What ``work`` moves per token; raises :class:`InsufficientFunds` if the finance account holds less."""
        needed: dict[str, int] = defaultdict(int)
        for item in work:
            needed[item.agreement.token] += sum(e.amount for e in item.events)
        for token, amount in needed.items():
            have = self.chain.token_balance(token, self.finance.address)
            if have < amount:
                raise InsufficientFunds(self.finance.address, token, have, amount)
        return needed

    def _fund(self, work: list[AllianceWork]) -> None:
        for token, amount in self.check_funds(work).items():
            self.chain.ensure_allowance(token, self.finance, amount)

    def _settle_alliance(
        self, item: AllianceWork, summary: Summary, progress, landed: list[Landed] | None = None
    ) -> None:
        landed = [] if landed is None else landed
        size = self.batch_size or batch_size_for(len(item.terms.parties), self.batch_gas)
        remaining = list(item.events)
        # The cursor read *before* the settled references were read: every batch settled below it is in
        # that view, so nothing in `remaining` was settled below it. Submitting at this cursor is safe;
        # if the chain moved on since, the contract refuses the batch and we re-read.
        cursor = item.agreement.next_seq
        retries = 0
        while remaining:
            batch = remaining[:size]
            try:
                receipt = self.chain.settle(
                    item.agreement.id,
                    item.agreement.active_version,
                    cursor,
                    item.terms,
                    [text_to_bytes32(e.reference) for e in batch],
                    [e.entry for e in batch],
                    sender=self.finance,
                    confirm=False,  # confirmed together at the end of the run
                )
            except ContractRevert as err:
                if err.name not in RETRYABLE or retries >= MAX_CONFLICT_RETRIES:
                    raise
                retries += 1
                if err.name == "ERC20InsufficientAllowance":
                    # Another run with the same finance account spent the allowance this run approved
                    # (approve sets, it does not add): raise it by what this alliance still needs.
                    summary.retries += 1
                    token = item.agreement.token
                    have = self.chain.allowance(token, self.finance.address)
                    self.chain.ensure_allowance(token, self.finance, have + sum(e.amount for e in remaining))
                    continue
                # Someone else settled this alliance meanwhile: drop what they settled, carry on.
                summary.retries += 1
                cursor = self.chain.agreement(item.agreement.id).next_seq  # first the cursor, then the logs
                settled = self.settled_references([item.agreement.id])
                before = len(remaining)
                remaining = [e for e in remaining if e.reference not in settled]
                summary.skipped += before - len(remaining)
                continue
            cursor += len(batch)
            remaining = remaining[size:]
            summary.settled += len(batch)
            summary.batches += 1
            summary.gas_used += int(receipt.gas_used)
            token = item.agreement.token
            landed.append(Landed(receipt, batch, token))
            summary.moved[token] = summary.moved.get(token, 0) + sum(e.amount for e in batch)
            if progress:
                progress(len(batch))


def preview(chain, work: list[AllianceWork]) -> list[dict]:
    """What each ME would receive from ``work``, per alliance, period and tier, if settled now.

    Exact as long as nobody settles the same alliances first: the rounding offsets follow the cursor
    that :meth:`Settler.prepare` read, and the tiers follow the periods' revenue on chain.
    """
    rows = []
    for item in work:
        agreement, terms = item.agreement, item.terms
        n = len(terms.parties)
        revenue: dict[int, int] = {}
        per_period: dict[int, tuple[list[int], list[int]]] = {}
        for seq, event in enumerate(item.events, start=agreement.next_seq):
            if event.period not in revenue:
                revenue[event.period] = chain.period(agreement.id, event.period)[0]
            split = money.split_event(
                seq, event.amount, revenue[event.period], terms.shares, terms.target, terms.excess_shares
            )
            revenue[event.period] += event.amount
            base, excess = per_period.setdefault(event.period, ([0] * n, [0] * n))
            for i in range(n):
                base[i] += split.base[i]
                excess[i] += split.excess[i]
        for period, (base, excess) in sorted(per_period.items()):
            for i, me_id in enumerate(terms.parties):
                rows.append(
                    {
                        "alliance": agreement.name,
                        "period": period,
                        "me_id": me_id,
                        "base": base[i],
                        "excess": excess[i],
                        "total": base[i] + excess[i],
                    }
                )
    return rows


def _rows(rows: list[int]) -> str:
    if len(rows) == 1:
        return f"row {rows[0]}"
    shown = ", ".join(str(r) for r in rows[:5])
    return f"rows {shown}{' ...' if len(rows) > 5 else ''}"
