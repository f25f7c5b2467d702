"""Settlement: plan revenue events into batches (pure), then submit them exactly once.

Exactly-once has two halves. The contract accepts a batch only at its agreement's sequence cursor, so a
retried, re-submitted or concurrent batch can never be applied twice. This module makes sure a
reference is never put into a batch twice: before each submission it knows every reference settled up
to the cursor it submits at (revenue and reversals: ``RevenueSettled`` and ``RevenueReversed`` logs, or
the local index, which holds both). If another operator moves the cursor first, the batch reverts with
``SettlementOutOfSequence``; the settler re-reads what was settled, drops it from the remaining work and
carries on.

Batches are pipelined (:meth:`Settler._send`): several are in flight at once from the finance account,
each alliance's next batch sent at the cursor its previous one leaves. The cursor keeps that safe: a
batch can only apply right after the one before it, so a failure stops its alliance at that point and
is handled as above; events are read one alliance at a time from the event source (a file's spool).

Reversals (rows with ``reverses``) take the same cursor through ``settleReversals``: an alliance's
events in settlement order are cut into batches that hold one kind only, sent in sequence order. The
contract does not store which event a reversal reverses, so :meth:`Settler.prepare` checks every link
before anything is sent: the original was settled (or comes earlier in this run) for the same alliance,
is not itself a reversal, and the reversals of it never add up to more than its amount.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from ledger import money
from ledger.chain.transact import NonceTaken
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
from ledger.revenue_file import problem_row

DEFAULT_BATCH_GAS = 12_000_000
MAX_BATCH_EVENTS = 1_000
MAX_CONFLICT_RETRIES = 20
MAX_REORG_ROUNDS = 3
# Reverts another process can cause, after which the run re-reads the chain and carries on.
RETRYABLE = ("SettlementOutOfSequence", "ERC20InsufficientAllowance")


def event_gas_model(parties: int) -> int:
    """An upper bound of what one settled event costs, by parties (bench/results.json measures about
    1,840 + 116 per party for classic terms; bands, a recoup or a nested party stay below it)."""
    return 2_000 + 150 * parties


def batch_size_for(parties: int, gas_budget: int = DEFAULT_BATCH_GAS) -> int:
    """Events per batch so a batch stays within ``gas_budget`` (the cost model per event and party)."""
    return max(1, min(MAX_BATCH_EVENTS, (gas_budget - 200_000) // event_gas_model(parties)))


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
    reverses: str | None = None  # a reversal: the reference of the event it reverses


@dataclass(frozen=True)
class Landed:
    """A batch that is in a block (not yet confirmed)."""

    receipt: object  # ledger.chain.transact.Receipt
    events: list[RevenueEvent]
    token: str


class InMemoryEvents:
    """Events held in memory, grouped by alliance (file order kept): the event source of callers that
    already have a list. ``ledger settle`` uses a :class:`ledger.revenue_file.SpooledEvents` instead."""

    def __init__(self, events: Iterable[RevenueEvent]):
        self._by_alliance: dict[str, list[RevenueEvent]] = defaultdict(list)
        for event in events:
            self._by_alliance[event.alliance].append(event)

    def alliances(self) -> list[str]:
        return sorted(self._by_alliance)

    def events(self, alliance: str) -> list[RevenueEvent]:
        return list(self._by_alliance.get(alliance, ()))

    def rows(self, alliance: str) -> Iterator[tuple[int, int, int, str]]:
        """(row, amount, period, reference) of the alliance's events, in file order."""
        return ((e.row, e.amount, e.period, e.reference) for e in self._by_alliance.get(alliance, ()))

    def records(self, alliance: str) -> Iterator[tuple[int, int, int, str, str | None]]:
        """(row, amount, period, reference, reverses) of the alliance's events, in file order."""
        return ((e.row, e.amount, e.period, e.reference, e.reverses) for e in self._by_alliance.get(alliance, ()))


@dataclass
class AllianceWork:
    """One alliance's part of a run: what is left to settle, read from the source when it is needed."""

    agreement: Agreement
    terms: Terms
    source: object  # InMemoryEvents | SpooledEvents
    settled: dict  # reference -> SettledRecord of this agreement, as read in prepare
    count: int  # events to settle (reversals included)
    amount: int  # what finance pays in at most: the revenue events' sum, base units (reversals pay back)
    # Agreements with nested parties: (id, active version, terms) of every agreement reachable through them.
    inner: list = field(default_factory=list)

    @property
    def parties_reached(self) -> int:
        """The parties a batch's split touches, inner alliances included (for the gas model)."""
        return len(self.terms.parties) + sum(len(t.parties) for _, _, t in self.inner)

    @property
    def events(self) -> list[RevenueEvent]:
        """The events to settle in settlement order (the ones settled before left out)."""
        return order_for_settlement(
            e for e in self.source.events(self.agreement.name) if e.reference not in self.settled
        )


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
    reversals: int = 0  # of `settled`, how many were reversals
    reversed: dict[str, int] = Field(default_factory=dict)  # token -> base units reversed

    def as_dict(self) -> dict:
        return {
            "events_settled": self.settled,
            "reversals_settled": self.reversals,
            "tokens_reversed": {token: str(units) for token, units in self.reversed.items()},
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
        window: int | None = None,
        index=None,
    ):
        self.index = index  # a ledger.index.LedgerIndex: settled references looked up, not all read
        self.window = window  # transactions in flight at once; None: the chain's policy (LEDGER_TX_WINDOW)
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
        names = ["RevenueSettled", "RevenueReversed"]
        for log in self.chain.logs(names, from_block=self.from_block, topic1=topic1):
            agreement_id = log.args["agreementId"]
            first = log.args["firstSeq"]
            originals = log.args.get("originals") or [None] * len(log.args["refs"])
            for k, (ref, entry, original) in enumerate(zip(log.args["refs"], log.args["entries"], originals,
                                                           strict=True)):  # fmt: skip
                # Keyed in NFC, the form every new reference is settled in: one settled (before that
                # rule) in another form is the same reference, so it is skipped, never settled again.
                records.setdefault(
                    _nfc(bytes32_to_text(ref)),
                    SettledRecord(
                        agreement_id,
                        entry >> 32,
                        entry & 0xFFFFFFFF,
                        first + k,
                        _nfc(bytes32_to_text(original)) if original is not None else None,
                    ),  # fmt: skip
                )
        return records

    def settled_among(self, references: Sequence[str], cursors: dict[bytes, int]) -> dict[str, SettledRecord]:
        """The settled ones among ``references``. ``cursors``: the sequence cursors (``nextSeq``) of the
        agreements concerned, read from the contract *before* this call, so everything they count is
        in the logs read here. With an index, it is first brought up to date (to the head, so at least
        to the cursors' block) and checked against the cursors; only these references are looked up.
        Without one, every reference ever settled is read from the logs."""
        if self.index is None:
            settled = self.settled_references()
            return {ref: settled[ref] for ref in references if ref in settled}
        self.sync_index(cursors)
        return self._look_up(references)

    def _look_up(self, references: Sequence[str]) -> dict[str, SettledRecord]:
        """The settled ones among ``references`` from the index (brought up to date by the caller): revenue
        events and reversals, a reversal with the reference it reverses."""
        found = self.index.settled(text_to_bytes32(ref) for ref in references)
        return {
            bytes32_to_text(ref): SettledRecord(
                s.agreement_id,
                s.amount,
                s.period,
                s.seq,
                _nfc(bytes32_to_text(s.reverses)) if s.reverses is not None else None,
            )
            for ref, s in found.items()
        }

    def _reversed_so_far(self, originals: Sequence[str]) -> dict[str, int]:
        """Original reference -> the total of its reversals settled on chain, from the index."""
        totals = self.index.reversed_totals(text_to_bytes32(ref) for ref in originals)
        return {_nfc(bytes32_to_text(ref)): total for ref, total in totals.items()}

    def sync_index(self, cursors: dict[bytes, int]) -> None:
        """Bring the index up to the head; if it holds fewer settled events of an agreement than the
        contract's cursor counts, it lost rows: rebuild it once, and refuse if that does not help."""
        self.index.sync(self.chain.rpc)
        short = self.index.check_cursors(cursors)
        if not short:
            return
        self.index.notice(
            f"index: it holds fewer settled events of alliance {bytes32_to_text(short[0])!r} than the contract "
            f"counts; rebuilding it from the chain"
        )
        self.index.rebuild(self.chain.rpc)
        short = self.index.check_cursors(cursors)
        if short:
            raise LedgerError(
                f"the local index and the chain disagree on how many events alliance {bytes32_to_text(short[0])!r} "
                f"has settled, even after a rebuild (a reorganisation during the run?); run the same command again"
            )

    def prepare(self, events) -> tuple[list[AllianceWork], int]:
        """Validate every event against the chain. Returns the work to do and how many events were
        settled before (and are skipped). ``events`` is a list of events or an event source
        (:class:`InMemoryEvents`, :class:`ledger.revenue_file.SpooledEvents`): one alliance's events are
        in memory at a time.

        Raises :class:`InputError` listing every problem (by row) when anything is wrong: nothing is
        sent in that case.
        """
        source = events if hasattr(events, "alliances") else InMemoryEvents(events)
        problems: list[str] = []
        if not hasattr(events, "alliances"):  # a file's references were checked for repeats already
            problems += find_duplicates(events)
        names = source.alliances()
        ids: dict[str, bytes] = {}
        for name in names:
            try:
                ids[name] = self.chain.agreement_id(name)
            except LedgerError as err:
                problems.append(f"{_rows([r[0] for r in source.rows(name)])}: {err}")
        agreements: dict[str, Agreement] = {}
        for name, found in zip(ids, self.chain.agreements(list(ids.values())), strict=True):
            if found is None:
                problems.append(f"{_rows([r[0] for r in source.rows(name)])}: no alliance named {name!r}")
            else:
                agreements[name] = found
        ids = {name: a.id for name, a in agreements.items()}
        # Read after the agreements (and so their cursors): see `_send`.
        cursors = {a.id: a.next_seq for a in agreements.values()}
        everything = self.settled_references() if self.index is None else None
        if self.index is not None:
            self.sync_index(cursors)
        settled_of: dict[str, dict[str, SettledRecord]] = {}

        # One alliance at a time: what is left to do, and the rows behind each kind of problem.
        todo: dict[str, tuple[int, int, list[int]]] = {}  # name -> (count, amount, first rows)
        periods: dict[tuple[str, int], list[int]] = {}  # (alliance, period) -> first rows still to settle
        skipped = 0
        # Without an index: every original reference -> the total reversed of it so far, from the logs.
        everything_reversed: dict[str, int] = defaultdict(int)
        for record in (everything or {}).values():
            if record.reverses is not None:
                everything_reversed[record.reverses] += record.amount
        for name in agreements:
            count = amount = 0
            rows: list[int] = []
            file_rows = list(_records(source, name))  # one alliance's rows at a time
            originals = list(dict.fromkeys(r[4] for r in file_rows if r[4] is not None))
            if everything is not None:
                known = {k: everything[k] for k in [r[3] for r in file_rows] + originals if k in everything}
                reversed_on_chain = {o: everything_reversed[o] for o in originals if o in everything_reversed}
            else:
                known = self._look_up([r[3] for r in file_rows] + originals)
                reversed_on_chain = self._reversed_so_far(originals)
            settled = {r[3]: known[r[3]] for r in file_rows if r[3] in known}
            settled_of[name] = settled
            problems += self._check_reversals(name, ids[name], file_rows, known, reversed_on_chain)
            for row, event_amount, period, reference, original in file_rows:
                record = settled.get(reference)
                if record is None:
                    count += 1
                    amount += event_amount if original is None else 0
                    if len(rows) < 6:
                        rows.append(row)
                    where = periods.setdefault((name, period), [])
                    if len(where) < 6:
                        where.append(row)
                elif (record.agreement_id, record.amount, record.period, record.reverses) == (
                    ids[name],
                    event_amount,
                    period,
                    original,
                ):
                    skipped += 1
                else:
                    problems.append(
                        f"row {row}: reference {reference!r} was already settled "
                        f"(seq {record.seq}) with a different alliance, amount, period or reversed reference"
                    )
            if count:
                todo[name] = (count, amount, rows)

        # Only events still to settle need a live alliance; ones settled before are skipped whatever
        # happened to their alliance since.
        live = {}
        for name, (_, _, rows) in todo.items():
            agreement = agreements[name]
            if agreement.status != AgreementStatus.ACTIVE:
                problems.append(f"{_rows(rows)}: alliance {name!r} is {agreement.status.name.lower()}, not active")
            else:
                live[name] = agreement
        terms = self.chain.terms_of_many([(a.id, a.active_version) for a in live.values()], from_block=self.from_block)
        terms = {name: terms[(a.id, a.active_version)] for name, a in live.items()}
        parties = sorted({me_id for t in terms.values() for me_id in t.parties})
        dissolved = {me.id: me.name for me in self.chain.mes_by_id(parties) if me.status != MEStatus.ACTIVE}
        for name, t in terms.items():
            for me_id in t.parties:
                if me_id in dissolved:
                    problems.append(
                        f"{_rows(todo[name][2])}: alliance {name!r} names dissolved ME {dissolved[me_id]!r}; "
                        f"amend it first"
                    )
        inner_of: dict[str, list] = {}
        for name, t in terms.items():
            if not t.nested:
                continue
            inner_of[name] = self.chain.inner_terms(t)
            reached = {aid: (version, it) for aid, version, it in inner_of[name]}
            for inner_id in dict.fromkeys(x for x in _reachable(t, reached)):
                inner_name = bytes32_to_text(inner_id)
                if inner_id not in reached:
                    problems.append(f"{_rows(todo[name][2])}: alliance {name!r} passes credits on to alliance "
                                    f"{inner_name!r}, which has no version in force")  # fmt: skip
                    continue
                for me in self.chain.mes_by_id(list(reached[inner_id][1].parties)):
                    if me.status != MEStatus.ACTIVE:
                        problems.append(f"{_rows(todo[name][2])}: alliance {name!r} passes credits on to alliance "
                                        f"{inner_name!r}, which names dissolved ME {me.name!r}; amend it "
                                        f"first")  # fmt: skip
            reversal_rows = [r[0] for r in _records(source, name) if r[4] is not None and r[3] not in settled_of[name]]
            if reversal_rows:
                problems.append(f"{_rows(reversal_rows[:6])}: alliance {name!r} has nested parties (alliances); "
                                f"reverse in the inner alliance directly")  # fmt: skip
        # A closed period refuses new revenue; events settled into it before are simply skipped.
        keys = [key for key in periods if key[0] in live]
        for (name, period), (_, closed) in zip(
            keys, self.chain.periods([(ids[name], period) for name, period in keys]), strict=True
        ):
            if closed:
                problems.append(f"{_rows(periods[(name, period)])}: period {period} of alliance {name!r} is closed")
        if problems:
            raise InputError(sorted(problems, key=problem_row))
        return [
            AllianceWork(
                agreements[name],
                terms[name],
                source,
                settled_of[name],
                todo[name][0],
                todo[name][1],
                inner_of.get(name, []),
            )
            for name in live
        ], skipped

    @staticmethod
    def _check_reversals(
        name: str, agreement_id: bytes, records: list, settled: dict, reversed_on_chain: dict
    ) -> list[str]:
        """The links the contract cannot check, for one alliance's rows still to settle: each reversal's
        original was settled for this alliance (or is a revenue row of this run that settles before it),
        is not a reversal itself, and its reversals (on chain and here) stay within its amount.
        ``records``: the alliance's (row, amount, period, reference, reverses); ``settled``: the settled
        ones among those references and the originals they name; ``reversed_on_chain``: original ->
        the total already reversed of it on chain."""
        wanted = {original for *_, original in records if original is not None}
        if not wanted:
            return []
        problems = []
        in_file: dict[str, tuple[int, int, int, str | None]] = {}  # original -> (row, amount, period, reverses)
        for row, amount, period, reference, original in records:
            if reference in wanted and reference not in settled:
                in_file[reference] = (row, amount, period, original)
        pending: dict[str, int] = defaultdict(int)
        for row, amount, period, reference, original in records:
            if original is None or reference in settled:
                continue
            record = settled.get(original)
            if record is not None:
                if record.agreement_id != agreement_id:
                    problems.append(f"row {row}: reverses {original!r}, which was settled for another alliance, "
                                    f"not {name!r}")  # fmt: skip
                    continue
                if record.reverses is not None:
                    problems.append(f"row {row}: reverses {original!r}, which is itself a reversal")
                    continue
                original_amount = record.amount
            elif original in in_file:
                o_row, original_amount, o_period, o_reverses = in_file[original]
                if o_reverses is not None:
                    problems.append(f"row {row}: reverses {original!r} (row {o_row}), which is itself a reversal")
                    continue
                if (period, row) < (o_period, o_row):
                    problems.append(f"row {row}: reverses {original!r} (row {o_row}, period {o_period}), which "
                                    f"would be settled after it; book the reversal in period {o_period} or later "
                                    f"or below row {o_row}")  # fmt: skip
                    continue
            else:
                problems.append(f"row {row}: reverses {original!r}, which was never settled for alliance {name!r}")
                continue
            pending[original] += amount
            total = reversed_on_chain.get(original, 0) + pending[original]
            if total > original_amount:
                problems.append(f"row {row}: reversals of {original!r} would total {total} base units, more than "
                                f"its {original_amount}")  # fmt: skip
        return problems

    # -- submitting ---------------------------------------------------------------------------------

    def run(
        self,
        events=(),
        progress: Callable[[int], None] | None = None,
        *,
        prepared: tuple[list[AllianceWork], int] | None = None,
        summary: Summary | None = None,
    ) -> Summary:
        """Settle ``events`` (or the result of :meth:`prepare` on them). ``summary`` is filled in as
        batches land, so a caller that is interrupted still knows what was done."""
        work, skipped = prepared if prepared is not None else self.prepare(events)
        summary = summary if summary is not None else Summary()
        summary.skipped += skipped
        if work:
            self.check_role()
        self._fund(work)
        landed: list[Landed] = []
        self._send(work, summary, progress, landed)
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
                if batch.events[0].reverses is not None:
                    summary.reversals -= len(batch.events)
                    summary.reversed[batch.token] -= sum(e.amount for e in batch.events)
                else:
                    summary.moved[batch.token] -= sum(e.amount for e in batch.events)
            work, _ = self.prepare(events)  # what the chain no longer holds (a batch may have come back)
            self._fund(work)
            landed = []
            self._send(work, summary, None, landed)
        raise LedgerError(
            f"settlement batches were reorganised out {MAX_REORG_ROUNDS} times in a row; run the same command "
            f"again later (nothing is settled twice)"
        )

    def check_role(self) -> None:
        """Refuse before anything is sent (an approval included) when the account cannot settle."""
        self.chain.require_role("FINANCE_ROLE", self.finance.address, "settling")

    def check_funds(self, work: list[AllianceWork]) -> dict[str, int]:
        """What ``work`` moves per token; raises :class:`InsufficientFunds` if the finance account holds less."""
        needed: dict[str, int] = defaultdict(int)
        for item in work:
            needed[item.agreement.token] += item.amount
        for token, amount in needed.items():
            have = self.chain.token_balance(token, self.finance.address)
            if have < amount:
                raise InsufficientFunds(self.finance.address, token, have, amount)
        return needed

    def _fund(self, work: list[AllianceWork]) -> None:
        for token, amount in self.check_funds(work).items():
            self.chain.ensure_allowance(token, self.finance, amount)

    def _send(self, work: list[AllianceWork], summary: Summary, progress, landed: list[Landed]) -> None:
        """Send every alliance's batches through one pipeline (up to ``window`` transactions in flight).

        Within an alliance, batch k+1 is sent before batch k is mined, at the cursor batch k leaves;
        the nonce order makes the node apply them in that order. When a batch reverts, the ones after
        it in that alliance revert too (out of sequence): the first failed batch's reason is the
        alliance's, found by running its call again once nothing of the alliance is in flight.
        Retryable reasons (another run moved the cursor or spent the allowance) re-read the chain and
        settle the rest; any other is reported after every other alliance has been settled, so one
        alliance's failure neither stops nor hides another's.

        The jobs: :class:`_AllianceProgress` plans an alliance's next batch (:func:`_batch_calldata`
        encodes it), :class:`_PipelinedSend` sends and pipelines, :class:`_Tally` records what landed.
        """
        budget = min(self.batch_gas, self._block_gas_limit() // 2)
        if hasattr(self.finance, "pipeline"):  # the finance role held by a Safe: one Safe transaction per batch
            pipeline = self.finance.pipeline(self.chain, self.window)
        else:
            pipeline = self.chain.pipeline(self.finance, self.window)
        keep = bool(getattr(self.chain.policy, "confirmations", 0))  # receipts kept for the reorg check
        tally = _Tally(summary, progress, landed if keep else None)
        _PipelinedSend(self, pipeline, tally, budget).send(work)

    def _block_gas_limit(self) -> int:
        try:
            return self.chain.block_gas_limit()
        except (LedgerError, AttributeError, KeyError):
            return 30_000_000

    def _resync(self, alliance: _AllianceProgress, summary: Summary) -> None:
        """After a refusal: read the cursor, then what is settled, and keep only what is still to do."""
        reason, alliance.resync = alliance.resync, None
        if reason == "ERC20InsufficientAllowance":
            # Another run with the same finance account spent the allowance this run approved (approve
            # sets, it does not add): raise it by what this alliance still needs.
            token = alliance.item.agreement.token
            have = self.chain.allowance(token, self.finance.address)
            outstanding = sum(e.amount for e in alliance.outstanding() if e.reverses is None)
            self.chain.ensure_allowance(token, self.finance, have + outstanding)
        agreement = self.chain.agreement(alliance.agreement_id)  # first the cursor, then the logs
        outstanding = alliance.outstanding()
        settled = self.settled_among([e.reference for e in outstanding], {alliance.agreement_id: agreement.next_seq})
        remaining = [e for e in outstanding if e.reference not in settled]
        summary.skipped += len(outstanding) - len(remaining)
        # What others settled is counted once: it leaves this run's events for good.
        alliance.events = [e for e in alliance.events if e.reference in alliance.ours] + remaining
        alliance.cursor = agreement.next_seq
        alliance.unsent, alliance.pos = remaining, 0
        alliance.simulate = True


class _AllianceProgress:
    """One alliance's progress through :meth:`Settler._send`: what is sent, in flight, landed; which
    batch comes next."""

    def __init__(self, item: AllianceWork):
        self.item = item
        self.agreement_id = item.agreement.id
        self.cursor = item.agreement.next_seq
        self.unsent: list[RevenueEvent] | None = None  # loaded from the source when its turn comes
        self.pos = 0  # unsent[pos:] is still to send
        self.events: list[RevenueEvent] = []
        self.size = 1
        self.ours: set[str] = set()  # references this run landed
        self.inflight = 0
        self.failed: tuple | None = None  # (first_seq, calldata, Done) of the first batch that failed
        self.resync: str | None = None  # why the chain must be read again before the next batch
        self.simulate = True
        self.retries = 0
        self.gas_factor = 1.0
        self.queued = True

    def start(self, size: int) -> None:
        self.size = size
        self.events = self.item.events
        self.unsent, self.pos = self.events, 0

    def outstanding(self) -> list[RevenueEvent]:
        return [e for e in self.events if e.reference not in self.ours]

    def done(self) -> bool:
        """Every event of this round is sent."""
        return self.pos >= len(self.unsent)

    def next_batch(self) -> list[RevenueEvent]:
        """The next batch: up to ``size`` unsent events, of one kind."""
        return _one_kind(self.unsent[self.pos : self.pos + self.size])

    def sent(self, batch: list[RevenueEvent]) -> None:
        """``batch`` is in flight at the cursor: the next one goes after it."""
        self.inflight += 1
        self.cursor += len(batch)
        self.pos += len(batch)

    def landed(self, batch: list[RevenueEvent]) -> None:
        self.ours.update(e.reference for e in batch)

    def failed_at(self, first_seq: int, data, done) -> None:
        """Keep the earliest failed batch: the ones after it failed because it did."""
        if self.failed is None or first_seq < self.failed[0]:
            self.failed = (first_seq, data, done)


def _batch_calldata(chain, alliance: _AllianceProgress, batch: list[RevenueEvent]):
    """The call that settles ``batch`` (revenue, nested revenue or reversals) at the alliance's cursor."""
    refs, entries = [text_to_bytes32(e.reference) for e in batch], [e.entry for e in batch]
    item = alliance.item
    version = item.agreement.active_version
    if batch[0].reverses is None and item.terms.nested:
        return chain.settle_nested_data(
            alliance.agreement_id, version, alliance.cursor, item.terms, refs, entries, item.inner
        )
    if batch[0].reverses is None:
        return chain.settle_data(alliance.agreement_id, version, alliance.cursor, item.terms, refs, entries)
    originals = [text_to_bytes32(e.reverses) for e in batch]
    return chain.reverse_data(alliance.agreement_id, version, alliance.cursor, item.terms, refs, entries, originals)


class _Tally:
    """Records what lands: the summary's counts and sums, the receipts kept for the reorganisation check
    (``landed``, None when none are kept) and the caller's ``progress`` callback."""

    def __init__(self, summary: Summary, progress: Callable[[int], None] | None, landed: list[Landed] | None):
        self.summary = summary
        self.progress = progress
        self.landed = landed

    def batch_landed(self, token: str, batch: list[RevenueEvent], receipt) -> None:
        summary = self.summary
        if batch[0].reverses is not None:
            amount = 0
            summary.reversals += len(batch)
            summary.reversed[token] = summary.reversed.get(token, 0) + sum(e.amount for e in batch)
        else:
            amount = sum(e.amount for e in batch)
        summary.settled += len(batch)
        summary.batches += 1
        summary.gas_used += receipt.gas_used
        summary.moved[token] = summary.moved.get(token, 0) + amount
        if self.landed is not None:
            self.landed.append(Landed(receipt, batch, token))
        if self.progress:
            self.progress(len(batch))

    def retried(self) -> None:
        self.summary.retries += 1


class _PipelinedSend:
    """One pass of :meth:`Settler._send`: the alliances take turns in a queue, each sending its next batch
    into the pipeline; what the pipeline reports done is recorded, a failure resolved once nothing of its
    alliance is in flight."""

    def __init__(self, settler: Settler, pipeline, tally: _Tally, budget: int):
        self.settler = settler
        self.chain = settler.chain
        self.pipeline = pipeline
        self.tally = tally
        self.budget = budget
        self.queue: deque[_AllianceProgress] = deque()
        self.failures: list[ContractRevert] = []

    def send(self, work: list[AllianceWork]) -> None:
        queue = self.queue
        queue.extend(_AllianceProgress(item) for item in work)
        while queue or self.pipeline.inflight:
            if not queue:
                self._collect(self.pipeline.poll(wait=True))
                continue
            alliance = queue[0]
            if alliance.failed is not None:
                # Wait for this alliance's batches in flight before deciding anything about it.
                if len(queue) > 1:
                    queue.rotate(-1)
                else:
                    self._collect(self.pipeline.poll(wait=True))
                continue
            self._next(alliance)
        self._raise_failures()

    def _next(self, alliance: _AllianceProgress) -> None:
        """Send the alliance at the head of the queue its next batch (or take it off the queue)."""
        if alliance.resync:
            self.settler._resync(alliance, self.tally.summary)
        if alliance.unsent is None:
            alliance.start(self.settler.batch_size or batch_size_for(alliance.item.parties_reached, self.budget))
        if alliance.done():
            self.queue.popleft().queued = False
            return
        batch = alliance.next_batch()
        data = _batch_calldata(self.chain, alliance, batch)
        if alliance.simulate and not self._passes_first(alliance, data):
            return
        self._submit(alliance, batch, data)

    def _passes_first(self, alliance: _AllianceProgress, data) -> bool:
        """The alliance's first batch of this round: refuse before sending."""
        alliance.simulate = False
        try:
            self.chain.simulate(self.settler.finance.address, data)
        except ContractRevert as err:
            if err.name in RETRYABLE and alliance.retries < MAX_CONFLICT_RETRIES:
                self._retry(alliance, err.name)
            else:
                self.failures.append(_in_alliance(alliance.item.agreement.name, err))
                self.queue.popleft().queued = False
            return False
        return True

    def _submit(self, alliance: _AllianceProgress, batch: list[RevenueEvent], data) -> None:
        gas = batch_gas_limit(len(batch), alliance.item.parties_reached, alliance.gas_factor)
        try:
            done = self.pipeline.submit((alliance, batch, alliance.cursor, data), self.chain.address, data, gas)
        except NonceTaken:
            # Another process used this account's nonce: let ours land, then re-read everything.
            self._collect(self.pipeline.drain())
            self.pipeline.reset_nonce()
            if alliance.retries >= MAX_CONFLICT_RETRIES:
                raise
            self._retry(alliance, "NonceTaken")
            return
        alliance.sent(batch)
        self._collect(done)

    def _retry(self, alliance: _AllianceProgress, reason: str) -> None:
        """Read the chain again before the alliance's next batch."""
        alliance.retries += 1
        self.tally.retried()
        alliance.resync = reason

    def _collect(self, done_list) -> None:
        """Record the batches the pipeline reports done; resolve an alliance's failure once it has
        nothing in flight."""
        for done in done_list:
            alliance, batch, first_seq, data = done.key
            alliance.inflight -= 1
            if done.ok:
                alliance.landed(batch)
                self.tally.batch_landed(alliance.item.agreement.token, batch, done.receipt)
            else:
                alliance.failed_at(first_seq, data, done)
            if alliance.inflight == 0 and alliance.failed is not None:
                self._resolve(alliance)

    def _resolve(self, alliance: _AllianceProgress) -> None:
        """The alliance's first failed batch: why, and whether to carry on."""
        first_seq, data, done = alliance.failed
        alliance.failed, alliance.unsent, alliance.pos = None, [], 0
        err = self._why(alliance, first_seq, data, done)
        if err.name in RETRYABLE + ("NonceTaken", "OutOfGas", "Reverted") and alliance.retries < MAX_CONFLICT_RETRIES:
            self._retry(alliance, err.name)
            if not alliance.queued:
                alliance.queued = True
                self.queue.append(alliance)
        else:
            self.failures.append(_in_alliance(alliance.item.agreement.name, err))

    def _why(self, alliance: _AllianceProgress, first_seq: int, data, done) -> ContractRevert:
        """Why a batch failed; a batch that ran out of gas is sent with twice the limit next time."""
        if done.receipt is None:  # never mined: its nonce went to another transaction
            return ContractRevert("NonceTaken", {}, "the transaction's nonce was used by another one")
        if done.receipt.gas_used >= done.gas_limit:
            alliance.gas_factor *= 2
            return ContractRevert("OutOfGas", {}, f"batch at seq {first_seq} ran out of gas")
        try:
            self.chain.simulate(self.settler.finance.address, data)
        except ContractRevert as reason:
            return reason
        return ContractRevert("Reverted", {}, f"batch at seq {first_seq} reverted (transaction "
                              f"{done.receipt.tx_hash}); it would pass now")  # fmt: skip

    def _raise_failures(self) -> None:
        failures = self.failures
        if failures:
            if len(failures) == 1:
                raise failures[0]
            raise LedgerError(
                f"{len(failures)} alliances could not be settled (every other one was): "
                + "; ".join(str(err) for err in failures)
            )


def _reachable(terms: Terms, reached: dict) -> Iterator[bytes]:
    """Every inner agreement id reachable from ``terms`` (``reached``: id -> (version, terms) known)."""
    seen: set[bytes] = set()
    stack = list(terms.nested_parties.values())
    while stack:
        inner = stack.pop(0)
        if inner in seen:
            continue
        seen.add(inner)
        yield inner
        if inner in reached:
            stack += list(reached[inner][1].nested_parties.values())


def _one_kind(batch: list[RevenueEvent]) -> list[RevenueEvent]:
    """The leading events of ``batch`` of the first one's kind (revenue, or reversals)."""
    reversal = batch[0].reverses is not None
    for k, event in enumerate(batch):
        if (event.reverses is not None) != reversal:
            return batch[:k]
    return batch


def _nfc(text: str) -> str:
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def _records(source, name: str):
    """(row, amount, period, reference, reverses) of an alliance's events, from any event source."""
    if hasattr(source, "records"):
        return source.records(name)
    return ((row, amount, period, reference, None) for row, amount, period, reference in source.rows(name))


def batch_gas_limit(events: int, parties: int, factor: float = 1.0) -> int:
    """The gas limit a batch is sent with: the cost model with half again on top, plus the first-time
    storage writes a batch can make (a balance per party, a period). Gas not used is not charged."""
    model = events * event_gas_model(parties)
    return int((model * 1.5 + 300_000 + 25_000 * parties) * factor)


def _in_alliance(name: str, err: ContractRevert) -> ContractRevert:
    return ContractRevert(err.name, err.args_, f"alliance {name!r}: {err}")


def preview(chain, work: list[AllianceWork]) -> list[dict]:
    """What each ME would receive from ``work``, per alliance, period and tier, if settled now.

    Exact as long as nobody settles the same alliances first: the rounding offsets follow the cursor
    that :meth:`Settler.prepare` read, the tiers follow the periods' revenue and recouped parts and the
    agreement's recouped total on chain. For an alliance with nested parties, the inner alliances' rows
    are included (``via``: the outer alliance) and the nested party's row says where its credit goes
    (``passed_to``); batches are assumed of the default size (a nested event closes each batch's runs).

    Each row: alliance, period, me_id, ``tiers`` (``{tier: amount}`` in the terms' tier order), base,
    excess (every tier above base, recoup included), reversal (negative), total.
    """
    book = money.NestedBook()
    agreements: dict[bytes, Agreement] = {}
    periods_of: dict[bytes, set[int]] = defaultdict(set)
    for item in work:
        agreements[item.agreement.id] = item.agreement
        book.terms[item.agreement.id] = item.terms
        for inner_id, _, inner_terms in item.inner:
            book.terms[inner_id] = inner_terms
        periods = {e.period for e in item.events}
        periods_of[item.agreement.id] |= periods
        for inner_id, _, _ in item.inner:
            periods_of[inner_id] |= periods
    missing = [aid for aid in periods_of if aid not in agreements]
    for aid, found in zip(missing, chain.agreements(missing) if missing else [], strict=True):
        agreements[aid] = found
    keys = [(aid, p) for aid, ps in periods_of.items() for p in sorted(ps)]
    for (aid, period), (revenue, _, recouped) in zip(keys, chain.period_states(keys) if keys else [], strict=True):
        state = book.state(aid)
        state.revenue[period] = revenue
        state.period_recouped[period] = recouped
    for aid, agreement in agreements.items():
        book.state(aid).recouped = agreement.recouped
        book.next_seq[aid] = agreement.next_seq

    sums: dict[tuple[bytes, int, int], dict] = {}
    order: list[bytes] = []

    def row(aid: bytes, period: int, me_id: int, via: bytes | None) -> dict:
        if aid not in order:
            order.append(aid)
        key = (aid, period, me_id)
        if key not in sums:
            names = book.terms[aid].tier_names
            sums[key] = {"tiers": dict.fromkeys(names, 0), "reversal": 0, "via": via, "passed_to": None}
        return sums[key]

    for item in work:
        aid, terms = item.agreement.id, item.terms
        batch_size = batch_size_for(item.parties_reached)
        events = item.events
        k = 0
        while k < len(events):
            kind = events[k].reverses is None
            chunk = [events[k]]
            while (
                k + len(chunk) < len(events)
                and len(chunk) < batch_size
                and (events[k + len(chunk)].reverses is None) == kind
            ):
                chunk.append(events[k + len(chunk)])
            k += len(chunk)
            if not kind:  # reversals: debits, shown negative
                for event in chunk:
                    seq = book.next_seq[aid]
                    book.next_seq[aid] = seq + 1
                    split = book.state(aid).reverse(terms, seq, event.amount, event.period)
                    for i, me_id in enumerate(terms.parties):
                        row(aid, event.period, me_id, None)["reversal"] -= split.credits[i]
                continue
            settled = book.settle(aid, [(e.amount, e.period) for e in chunk])
            passed = {(e.outer, e.run_first_seq, e.me_id): e.inner for e in settled.nested}
            for run in settled.runs:
                run_terms = book.terms[run.agreement_id]
                via = None if run.agreement_id == aid else aid
                for t, name in enumerate(run_terms.tier_names):
                    for i, me_id in enumerate(run_terms.parties):
                        line = row(run.agreement_id, run.period, me_id, via)
                        line["tiers"][name] += run.tiers[t][i]
                        inner = passed.get((run.agreement_id, run.first_seq, me_id))
                        if inner is not None:
                            line["passed_to"] = bytes32_to_text(inner)
    rows = []
    for aid in order:
        for (key_aid, period, me_id), line in sorted(sums.items(), key=lambda kv: (kv[0][1], kv[0][2])):
            if key_aid != aid:
                continue
            tiers = line["tiers"]
            base = tiers.get("base", 0)
            rows.append({
                "alliance": bytes32_to_text(aid), "period": period, "me_id": me_id, "tiers": tiers,
                "base": base, "excess": sum(tiers.values()) - base, "reversal": line["reversal"],
                "total": sum(tiers.values()) + line["reversal"],
                "via": None if line["via"] is None else bytes32_to_text(line["via"]), "passed_to": line["passed_to"],
            })  # fmt: skip
    return rows


def _rows(rows: list[int]) -> str:
    if len(rows) == 1:
        return f"row {rows[0]}"
    shown = ", ".join(str(r) for r in rows[:5])
    return f"rows {shown}{' ...' if len(rows) > 5 else ''}"
