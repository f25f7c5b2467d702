"""A plain-Python model of the AllianceLedger contract, for the stateful property test.

The model holds everything the contract holds (MEs, agreements and their versions, periods, balances,
total owed per token) plus what the tokens hold and which revenue reference was credited at which
sequence number. Each operation either applies its effects and returns ``Outcome(None, value)``, or
changes nothing and returns ``Outcome(error)`` with the name of the custom error the contract must
revert with. The checks run in the contract's order, so when several would fail the model names the
same one the contract does.

Splits come from :mod:`ledger.money` (:func:`ledger.money.event_parts` and
:func:`ledger.money.reversal_tier_parts` cut an event into its recoup, base and band parts,
:func:`ledger.money.split_parts` splits each), event by event (the contract accumulates the same per-event
floors over a run of events; the sums are equal). Each period keeps its recouped part and each agreement
its recouped total, as the contract does.

Signatures are modelled by who made them: a list of signer addresses, one per party, each over the
right EIP-712 message (the state machine signs exactly these).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from ledger.models import AgreementStatus, MEStatus, Terms
from ledger.money import (
    MAX_EVENT_AMOUNT,
    credit_account,
    debit_account,
    event_parts,
    revenue_after_reversal,
    reversal_tier_parts,
    reversal_unrecouped,
    split_parts,
)

MAX_NAME_BYTES = 64
MAX_PERIOD_REVENUE = 2**128 - 1
MAX_ACCOUNT = 2**128 - 1  # an ME's balance and its debt are uint128 each (one storage slot)
ZERO_ADDRESS = "0x" + "00" * 20
ZERO_REF = b"\0" * 32
PERIOD_MASK = 0xFFFFFFFF


@dataclass(frozen=True)
class Outcome:
    """``error`` is the custom error the contract must revert with, or None when the call succeeds."""

    error: str | None = None
    value: object = None

    @property
    def ok(self) -> bool:
        return self.error is None


def refused(error: str) -> Outcome:
    return Outcome(error)


@dataclass
class MEState:
    name: str
    payout: str
    signer: str
    parent: int
    status: MEStatus = MEStatus.ACTIVE
    nonce: int = 0


@dataclass
class AgreementState:
    token: str
    status: AgreementStatus = AgreementStatus.PROPOSED
    active_version: int = 0
    latest_version: int = 0
    next_seq: int = 0
    versions: dict[int, Terms] = field(default_factory=dict)
    recouped: int = 0  # revenue split by a recoup table, across all periods and versions

    @property
    def version_in_force(self) -> int:
        """The current version: the active one, or the latest proposal if none ever was. A termination
        names it; its parties' signers may propose new versions."""
        return self.active_version if self.status == AgreementStatus.ACTIVE else self.latest_version


@dataclass
class PeriodState:
    revenue: int = 0
    closed: bool = False
    recouped: int = 0  # the part of the revenue split by the recoup table
    revenue_at_close: int | None = None


@dataclass(frozen=True)
class Credit:
    """Where a revenue reference was credited (exactly once)."""

    agreement_id: bytes
    seq: int
    amount: int
    period: int


@dataclass(frozen=True)
class SettledBatch:
    """One accepted settlement, as its ``RevenueSettled`` log must read."""

    agreement_id: bytes
    version: int
    first_seq: int
    refs: tuple[bytes, ...]
    entries: tuple[int, ...]
    originals: tuple[bytes, ...] = ()  # a reversal batch (``RevenueReversed``) when not empty


class LedgerModel:
    def __init__(self, *, ledger: str, finance: str, holdings: dict[tuple[str, str], int]):
        self.ledger = ledger
        self.finance = finance
        self.mes: dict[int, MEState] = {}
        self.names: dict[str, int] = {}
        self.agreements: dict[bytes, AgreementState] = {}
        self.periods: dict[tuple[bytes, int], PeriodState] = {}
        self.balances: dict[tuple[int, str], int] = defaultdict(int)  # (ME id, token) -> owed
        self.total_owed: dict[str, int] = defaultdict(int)
        self.debts: dict[tuple[int, str], int] = defaultdict(int)  # (ME id, token) -> owed to finance
        self.total_debt: dict[str, int] = defaultdict(int)
        self.reversed: dict[bytes, int] = defaultdict(int)  # original reference -> reversed so far
        self.holdings: dict[tuple[str, str], int] = defaultdict(int, holdings)  # (holder, token) -> tokens
        self.credited: dict[bytes, Credit] = {}  # reference -> where it was credited
        self.batches: list[SettledBatch] = []

    # -- helpers ------------------------------------------------------------------------------------

    def me_status(self, me_id: int) -> MEStatus:
        me = self.mes.get(me_id)
        return me.status if me else MEStatus.NONE

    def agreement_status(self, agreement_id: bytes) -> AgreementStatus:
        agreement = self.agreements.get(agreement_id)
        return agreement.status if agreement else AgreementStatus.NONE

    def period(self, agreement_id: bytes, period: int) -> PeriodState:
        return self.periods.get((agreement_id, period), PeriodState())

    def signer_of(self, me_id: int) -> str:
        me = self.mes.get(me_id)
        return me.signer if me else ZERO_ADDRESS

    def payout_of(self, me_id: int) -> str:
        me = self.mes.get(me_id)
        return me.payout if me else ZERO_ADDRESS

    # -- ME registry --------------------------------------------------------------------------------

    def register(self, name: str, payout: str, signer: str, parent: int = 0) -> Outcome:
        if not 0 < len(name.encode()) <= MAX_NAME_BYTES:
            return refused("MENameInvalid")
        if name in self.names:
            return refused("MENameTaken")
        if payout == ZERO_ADDRESS or signer == ZERO_ADDRESS:
            return refused("LedgerZeroAddress")
        if parent != 0 and self.me_status(parent) == MEStatus.NONE:
            return refused("MEUnknown")
        me_id = len(self.mes) + 1
        self.mes[me_id] = MEState(name=name, payout=payout, signer=signer, parent=parent)
        self.names[name] = me_id
        return Outcome(None, me_id)

    def update(self, me_id: int, payout: str, signer: str, consent_by: str, consent_nonce: int) -> Outcome:
        """``consent_by`` signed ``MEUpdate(me_id, payout, signer, consent_nonce)``."""
        me = self.mes.get(me_id)
        if me is None:
            return refused("MEUnknown")
        if payout == ZERO_ADDRESS or signer == ZERO_ADDRESS:
            return refused("LedgerZeroAddress")
        if consent_by != me.signer or consent_nonce != me.nonce:
            return refused("MEConsentInvalid")
        me.payout, me.signer, me.nonce = payout, signer, me.nonce + 1
        return Outcome()

    def dissolve(self, me_id: int) -> Outcome:
        status = self.me_status(me_id)
        if status == MEStatus.NONE:
            return refused("MEUnknown")
        if status != MEStatus.ACTIVE:
            return refused("MENotActive")
        self.mes[me_id].status = MEStatus.DISSOLVED
        return Outcome()

    # -- agreements ---------------------------------------------------------------------------------

    def _validate_terms(self, terms: Terms) -> str | None:
        # Terms (the pydantic model) already guarantees counts, table lengths, sums and order.
        if terms.token == ZERO_ADDRESS:
            return "LedgerZeroAddress"
        for me_id in terms.parties:
            status = self.me_status(me_id)
            if status == MEStatus.NONE:
                return "MEUnknown"
            if status != MEStatus.ACTIVE:
                return "MENotActive"
        return None

    def _propose_checks(self, agreement_id: bytes, terms: Terms) -> str | None:
        if agreement_id == b"\0" * 32:
            return "AgreementIdInvalid"
        status = self.agreement_status(agreement_id)
        if status == AgreementStatus.TERMINATED:
            return "AgreementTerminated"
        error = self._validate_terms(terms)
        if error:
            return error
        if status != AgreementStatus.NONE and terms.token != self.agreements[agreement_id].token:
            return "AgreementTokenChanged"
        return None

    def _record_version(self, agreement_id: bytes, terms: Terms) -> int:
        agreement = self.agreements.get(agreement_id)
        if agreement is None:
            agreement = self.agreements[agreement_id] = AgreementState(token=terms.token)
        agreement.latest_version += 1
        agreement.versions[agreement.latest_version] = terms
        return agreement.latest_version

    def _is_party_signer(self, parties: tuple[int, ...], account: str) -> bool:
        return account != ZERO_ADDRESS and any(self.signer_of(p) == account for p in parties)

    def propose(
        self, agreement_id: bytes, terms: Terms, *, sender: str, platform: bool, current: Terms | None = None
    ) -> Outcome:
        """``current``: the terms the proposer shows as those of the current version (None: empty terms).
        Without the platform role, a new agreement is proposed by a signer of one of its parties, a new
        version of an existing one by a signer of a party of its current version."""
        if not platform:
            status = self.agreement_status(agreement_id)
            if status == AgreementStatus.NONE:
                if not self._is_party_signer(terms.parties, sender):
                    return refused("AgreementProposerNotParty")
            elif status == AgreementStatus.TERMINATED:
                return refused("AgreementTerminated")
            else:
                agreement = self.agreements[agreement_id]
                if agreement.versions[agreement.version_in_force] != current:
                    return refused("AgreementTermsMismatch")
                if not self._is_party_signer(current.parties, sender):
                    return refused("AgreementProposerNotCurrentParty")
        error = self._propose_checks(agreement_id, terms)
        if error:
            return refused(error)
        return Outcome(None, self._record_version(agreement_id, terms))

    def _signature_error(self, parties: tuple[int, ...], signed_by: list[str], *, require_active: bool) -> str | None:
        if len(signed_by) != len(parties):
            return "AgreementSignatureCount"
        for me_id, by in zip(parties, signed_by, strict=True):
            if require_active and self.me_status(me_id) != MEStatus.ACTIVE:
                return "AgreementPartyDissolved"
            if by != self.signer_of(me_id):
                return "AgreementSignatureInvalid"
        return None

    def activate(self, agreement_id: bytes, version: int, terms: Terms, signed_by: list[str]) -> Outcome:
        """``signed_by[i]`` signed the ``Approval(agreement_id, version, terms)`` for ``terms.parties[i]``."""
        status = self.agreement_status(agreement_id)
        if status == AgreementStatus.NONE:
            return refused("AgreementUnknown")
        if status == AgreementStatus.TERMINATED:
            return refused("AgreementTerminated")
        agreement = self.agreements[agreement_id]
        # Any version newer than the one in force can be activated; activating it supersedes older ones.
        if version == 0 or version > agreement.latest_version:
            return refused("AgreementVersionUnknown")
        if version == agreement.active_version:
            return refused("AgreementVersionAlreadyActive")
        if version < agreement.active_version:
            return refused("AgreementVersionSuperseded")
        if agreement.versions.get(version) != terms:
            return refused("AgreementTermsMismatch")
        error = self._signature_error(terms.parties, signed_by, require_active=True)
        if error:
            return refused(error)
        agreement.status = AgreementStatus.ACTIVE
        agreement.active_version = version
        return Outcome()

    def create(self, agreement_id: bytes, terms: Terms, signed_by: list[str]) -> Outcome:
        if self.agreement_status(agreement_id) != AgreementStatus.NONE:
            return refused("AgreementExists")
        error = self._propose_checks(agreement_id, terms) or self._signature_error(
            terms.parties, signed_by, require_active=True
        )
        if error:
            return refused(error)
        self._record_version(agreement_id, terms)
        agreement = self.agreements[agreement_id]
        agreement.status = AgreementStatus.ACTIVE
        agreement.active_version = 1
        return Outcome()

    def terminate(self, agreement_id: bytes, terms: Terms, signed_version: int, signed_by: list[str]) -> Outcome:
        """``signed_by[i]`` signed ``Termination(agreement_id, signed_version)`` for ``terms.parties[i]``."""
        status = self.agreement_status(agreement_id)
        if status == AgreementStatus.NONE:
            return refused("AgreementUnknown")
        if status == AgreementStatus.TERMINATED:
            return refused("AgreementTerminated")
        agreement = self.agreements[agreement_id]
        version = agreement.version_in_force
        if agreement.versions.get(version) != terms:
            return refused("AgreementTermsMismatch")
        if signed_version != version:  # a signature over another digest recovers to someone else
            signed_by = [ZERO_ADDRESS] * len(signed_by)
        error = self._signature_error(terms.parties, signed_by, require_active=False)
        if error:
            return refused(error)
        agreement.status = AgreementStatus.TERMINATED
        return Outcome()

    # -- settlement ---------------------------------------------------------------------------------

    def client_refusal(self, refs: list[bytes]) -> str | None:
        """Why the settlement client would not send a batch with these references, or None.

        The contract guarantees exactly-once per sequence number only: a batch naming a reference settled
        before, sent at the current cursor, would credit it twice. So the client never sends a batch with
        a settled reference, or with one reference twice.
        """
        if len(set(refs)) != len(refs):
            return "repeated reference"
        if any(r in self.credited for r in refs):
            return "settled reference"
        return None

    def _batch_refused(
        self, agreement_id: bytes, version: int, first_seq: int, terms: Terms, refs: list[bytes], entries: list[int]
    ) -> Outcome | None:
        """The refusal a batch of revenue or of reversals meets before its own checks (in the contract's
        order), or None."""
        status = self.agreement_status(agreement_id)
        if status != AgreementStatus.ACTIVE:
            return refused("AgreementNotActive")
        agreement = self.agreements[agreement_id]
        if version != agreement.active_version:
            return refused("AgreementVersionNotActive")
        if agreement.versions.get(version) != terms:
            return refused("AgreementTermsMismatch")
        if not entries or len(refs) != len(entries):
            return refused("SettlementBatchInvalid")
        if first_seq != agreement.next_seq:
            return refused("SettlementOutOfSequence")
        if any(ref == ZERO_REF for ref in refs):
            return refused("RevenueReferenceEmpty")
        if any(self.me_status(p) != MEStatus.ACTIVE for p in terms.parties):
            return refused("AgreementPartyDissolved")
        return None

    def settle(
        self, agreement_id: bytes, version: int, first_seq: int, terms: Terms, refs: list[bytes], entries: list[int]
    ) -> Outcome:
        """Returns the batch total on success."""
        refusal = self._batch_refused(agreement_id, version, first_seq, terms, refs, entries)
        if refusal is not None:
            return refusal
        agreement = self.agreements[agreement_id]

        # Runs of consecutive events in the same period, as the contract books them (each run credits
        # the parties before the next run is looked at).
        revenue: dict[int, int] = {}
        recouped_in: dict[int, int] = {}
        recouped = agreement.recouped
        credits = [0] * len(terms.parties)
        accounts = [[self.balances[(p, terms.token)], self.debts[(p, terms.token)]] for p in terms.parties]
        total = 0
        pull = 0  # what finance pays in: the total less the debts it repays
        k = 0
        while k < len(entries):
            run_credits = [0] * len(terms.parties)
            period = entries[k] & PERIOD_MASK
            if period == 0:
                return refused("PeriodInvalid")
            if self.period(agreement_id, period).closed:
                return refused("PeriodAlreadyClosed")
            running = revenue.get(period, self.period(agreement_id, period).revenue)
            in_period = recouped_in.get(period, self.period(agreement_id, period).recouped)
            while k < len(entries) and entries[k] & PERIOD_MASK == period:
                amount = entries[k] >> 32
                if amount == 0 or amount > MAX_EVENT_AMOUNT:
                    return refused("RevenueAmountInvalid")
                parts = event_parts(amount, running - in_period, recouped, terms)
                split = split_parts(first_seq + k, parts, terms.tier_tables, len(terms.parties))
                if terms.recoup:
                    recouped += parts[0]
                    in_period += parts[0]
                assert sum(split.credits) == amount, "a split must add up to the event's amount"
                credits = [c + s for c, s in zip(credits, split.credits, strict=True)]
                run_credits = [c + s for c, s in zip(run_credits, split.credits, strict=True)]
                running += amount
                total += amount
                pull += amount
                k += 1
            if running > MAX_PERIOD_REVENUE:
                return refused("RevenueAmountInvalid")
            recouped_in[period] = in_period
            for account, credit in zip(accounts, run_credits, strict=True):
                if credit:
                    account[0], account[1], netted = credit_account(account[0], account[1], credit)
                    pull -= netted
                    if account[0] > MAX_ACCOUNT:
                        return refused("AccountOverflow")
            revenue[period] = running
        if self.holdings[(self.finance, terms.token)] < pull:
            return refused("ERC20InsufficientBalance")

        # Effects.
        for k, (ref, entry) in enumerate(zip(refs, entries, strict=True)):
            assert ref not in self.credited, "the model itself would credit a reference twice"
            self.credited[ref] = Credit(agreement_id, first_seq + k, entry >> 32, entry & PERIOD_MASK)
        agreement.next_seq = first_seq + len(entries)
        agreement.recouped = recouped
        for period, running in revenue.items():
            state = self.periods.setdefault((agreement_id, period), PeriodState())
            state.revenue, state.recouped = running, recouped_in[period]
        netted_total = 0
        for me_id, credit in zip(terms.parties, credits, strict=True):
            key = (me_id, terms.token)
            self.balances[key], self.debts[key], netted = credit_account(self.balances[key], self.debts[key], credit)
            netted_total += netted
        paid_in = total - netted_total
        self.total_owed[terms.token] += paid_in
        self.total_debt[terms.token] -= netted_total
        self.holdings[(self.finance, terms.token)] -= paid_in
        self.holdings[(self.ledger, terms.token)] += paid_in
        self.batches.append(SettledBatch(agreement_id, version, first_seq, tuple(refs), tuple(entries)))
        return Outcome(None, paid_in)

    def reversal_refusal(self, agreement_id: bytes, refs: list[bytes], entries: list[int], originals: list[bytes]):
        """Why the settlement client would not send these reversals (the link checks the contract leaves
        to it), or None."""
        if self.client_refusal(refs):
            return self.client_refusal(refs)
        pending: dict[bytes, int] = defaultdict(int)
        for entry, original in zip(entries, originals, strict=True):
            credit = self.credited.get(original)
            if credit is None or original in self.reversed_refs:
                return "original never settled"
            if credit.agreement_id != agreement_id:
                return "original of another alliance"
            pending[original] += entry >> 32
            if self.reversed[original] + pending[original] > credit.amount:
                return "beyond the original amount"
        return None

    @property
    def reversed_refs(self) -> set[bytes]:
        return {ref for batch in self.batches if batch.originals for ref in batch.refs}

    def reverse(
        self,
        agreement_id: bytes,
        version: int,
        first_seq: int,
        terms: Terms,
        refs: list[bytes],
        entries: list[int],
        originals: list[bytes],
    ) -> Outcome:
        """``settleReversals``. Returns the tokens sent back to finance on success."""
        refusal = self._batch_refused(agreement_id, version, first_seq, terms, refs, entries)
        if refusal is not None:
            return refusal
        agreement = self.agreements[agreement_id]
        if len(originals) != len(refs):
            return refused("ReversalBatchInvalid")
        if any(ref == ZERO_REF for ref in originals):
            return refused("ReversalOriginalEmpty")
        revenue: dict[int, int] = {}
        recouped_in: dict[int, int] = {}
        recouped = agreement.recouped
        debits = [0] * len(terms.parties)
        accounts = [[self.balances[(p, terms.token)], self.debts[(p, terms.token)]] for p in terms.parties]
        k = 0
        while k < len(entries):
            run_debits = [0] * len(terms.parties)
            period = entries[k] & PERIOD_MASK
            if period == 0:
                return refused("PeriodInvalid")
            if self.period(agreement_id, period).closed:
                return refused("PeriodAlreadyClosed")
            running = revenue.get(period, self.period(agreement_id, period).revenue)
            in_period = recouped_in.get(period, self.period(agreement_id, period).recouped)
            while k < len(entries) and entries[k] & PERIOD_MASK == period:
                amount = entries[k] >> 32
                if amount == 0 or amount > MAX_EVENT_AMOUNT:
                    return refused("RevenueAmountInvalid")
                parts = reversal_tier_parts(amount, running - in_period, in_period, terms)
                split = split_parts(first_seq + k, parts, terms.tier_tables, len(terms.parties))
                unrecouped = reversal_unrecouped(amount, running - in_period, in_period)
                recouped -= unrecouped
                in_period -= unrecouped
                assert sum(split.credits) == amount, "the debits must add up to the reversal's amount"
                debits = [d + s for d, s in zip(debits, split.credits, strict=True)]
                run_debits = [d + s for d, s in zip(run_debits, split.credits, strict=True)]
                running = revenue_after_reversal(running, amount)
                k += 1
            revenue[period] = running
            recouped_in[period] = in_period
            for account, debit in zip(accounts, run_debits, strict=True):
                if debit:
                    account[0], account[1], _ = debit_account(account[0], account[1], debit)
                    if account[1] > MAX_ACCOUNT:
                        return refused("AccountOverflow")

        # Effects.
        for k, (ref, entry, original) in enumerate(zip(refs, entries, originals, strict=True)):
            assert ref not in self.credited, "the model itself would settle a reference twice"
            self.credited[ref] = Credit(agreement_id, first_seq + k, entry >> 32, entry & PERIOD_MASK)
            self.reversed[original] += entry >> 32
        agreement.next_seq = first_seq + len(entries)
        agreement.recouped = recouped
        for period, running in revenue.items():
            state = self.periods.setdefault((agreement_id, period), PeriodState())
            state.revenue, state.recouped = running, recouped_in[period]
        returned = 0
        for me_id, debit in zip(terms.parties, debits, strict=True):
            key = (me_id, terms.token)
            before = self.debts[key]
            self.balances[key], self.debts[key], covered = debit_account(self.balances[key], before, debit)
            returned += covered
            self.total_debt[terms.token] += self.debts[key] - before
        self.total_owed[terms.token] -= returned
        self.holdings[(self.ledger, terms.token)] -= returned
        self.holdings[(self.finance, terms.token)] += returned
        self.batches.append(
            SettledBatch(agreement_id, version, first_seq, tuple(refs), tuple(entries), tuple(originals))
        )
        return Outcome(None, returned)

    def close_period(self, agreement_id: bytes, period: int) -> Outcome:
        if self.agreement_status(agreement_id) == AgreementStatus.NONE:
            return refused("AgreementUnknown")
        state = self.periods.setdefault((agreement_id, period), PeriodState())
        if state.closed:
            return refused("PeriodAlreadyClosed")
        state.closed = True
        state.revenue_at_close = state.revenue
        return Outcome()

    def withdraw(self, me_id: int, token: str, *, sender: str) -> Outcome:
        """Returns the amount paid to the ME's payout address."""
        payout = self.payout_of(me_id)
        if sender != payout:
            return refused("WithdrawCallerNotPayout")
        amount = self.balances[(me_id, token)]
        if amount == 0:
            return refused("NothingToWithdraw")
        self.balances[(me_id, token)] = 0
        self.total_owed[token] -= amount
        self.holdings[(self.ledger, token)] -= amount
        self.holdings[(payout, token)] += amount
        return Outcome(None, amount)

    def payout(self, token: str, me_ids: list[int]) -> Outcome:
        """A payout run (any caller): every listed ME's whole balance to its payout address, once even if
        listed twice. The machine's payout addresses are plain accounts, so no transfer is refused here
        (refusals are tested in tests/test_payout_run.py). Returns the total paid."""
        if not me_ids:
            return refused("PayoutBatchEmpty")
        if any(me_id not in self.mes for me_id in me_ids):
            return refused("MEUnknown")
        paid = 0
        for me_id in me_ids:
            amount = self.balances[(me_id, token)]
            if amount == 0:
                continue
            payout = self.payout_of(me_id)
            self.balances[(me_id, token)] = 0
            self.total_owed[token] -= amount
            self.holdings[(self.ledger, token)] -= amount
            self.holdings[(payout, token)] += amount
            paid += amount
        return Outcome(None, paid)

    # -- the model's own invariants -----------------------------------------------------------------

    def check(self, tokens: list[str]) -> None:
        """Conservation and exactly-once inside the model (the machine compares the chain with it)."""
        for token in tokens:
            owed = sum(v for (_, t), v in self.balances.items() if t == token)
            assert self.total_owed[token] == owed == self.holdings[(self.ledger, token)]
            assert self.total_debt[token] == sum(v for (_, t), v in self.debts.items() if t == token)
            for key, debt in self.debts.items():
                assert not (debt and self.balances[key]), "an ME with both a balance and a debt"
        for original, amount in self.reversed.items():
            assert amount <= self.credited[original].amount, "reversed beyond the original"
        settled = [ref for batch in self.batches for ref in batch.refs]
        assert len(settled) == len(set(settled)) == len(self.credited)
        for agreement_id, agreement in self.agreements.items():
            seqs = sorted(c.seq for c in self.credited.values() if c.agreement_id == agreement_id)
            assert seqs == list(range(agreement.next_seq)), "sequence numbers are gapless and used once"
        for state in self.periods.values():
            if state.closed:
                assert state.revenue == state.revenue_at_close, "a closed period took revenue"
