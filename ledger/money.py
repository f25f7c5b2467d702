"""The ledger's money math in plain Python: amounts, the period tier split and the rounding rule.

This is the same math as ``contracts/libraries/SplitMath.sol``. The contract is the source of truth;
this module is used for previews (:func:`ledger.services.settlement.preview`) and for independent
recomputation, and tests check the two against each other. (The contract sums the same per-event
floors over a run of events and takes the differences once: see ``SplitMath.accumulate``.)

Amounts are ``int`` base units everywhere. Decimal strings that people type and read are converted at
the edges by :func:`parse_amount` and :func:`format_amount`, with integer arithmetic on the digits:
never a float, never a rounding context.

Rounding rule ("rotating systematic rounding"): a part ``a`` of a revenue event is split over a share
table ``s_1..s_n`` (basis points summing to 10,000) as::

    credit_i = floor((o + a * S_i) / 10_000) - floor((o + a * S_(i-1)) / 10_000)
    S_i = s_1 + ... + s_i,   o = (seq * 6_181) mod 10_000

The credits add up to ``a`` exactly; each party gets ``floor(a * s_i / 10_000)`` or one unit more; the
offset ``o`` moves with the event's sequence number so the extra units rotate among the parties in
proportion to their shares (no party gains from many tiny events).

Reversals (:func:`reversal_parts`, :func:`split_reversal`): a reversal of ``x`` booked in a period with
revenue so far ``R`` and target ``T`` un-books the top ``x`` of the period's revenue: the part above the
target, ``min(x, max(0, R - T))``, is debited by the excess table, the rest by the base table, each by
the same rotating rule with the reversal's own sequence number; the period's revenue becomes
``R - min(x, R)``. A debit the party's balance does not cover becomes its debt
(:func:`debit_account`), netted from its next credits (:func:`credit_account`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

BPS = 10_000
ROUNDING_STRIDE = 6_181
MAX_EVENT_AMOUNT = 2**128 - 1
MAX_PERIOD = 2**32 - 1
_PLAIN_DECIMAL = re.compile(r"[0-9.]+")  # ASCII digits and points only (the count of points is checked apart)


class AmountError(ValueError):
    """A decimal amount that cannot be turned into base units exactly."""


def offset_of(seq: int) -> int:
    """The rounding offset of the event with sequence number ``seq``."""
    return (seq * ROUNDING_STRIDE) % BPS


def split(amount: int, shares: Sequence[int], offset: int) -> list[int]:
    """Split ``amount`` over ``shares`` (basis points summing to 10,000) with the rotating rule."""
    credits = []
    running = offset
    previous = 0
    for share in shares:
        running += amount * share
        quotient = running // BPS
        credits.append(quotient - previous)
        previous = quotient
    return credits


def tier_parts(period_revenue: int, amount: int, target: int) -> tuple[int, int]:
    """The part of ``amount`` below the period ``target`` and the part above it.

    ``period_revenue`` is the period's cumulative revenue before this event. Revenue up to and
    including the target is base; with ``target == 0`` the agreement has no tier and all is base.
    """
    if target == 0 or period_revenue + amount <= target:
        return amount, 0
    if period_revenue >= target:
        return 0, amount
    base = target - period_revenue
    return base, amount - base


@dataclass(frozen=True)
class EventSplit:
    """What one revenue event credits each party (in the order of the terms' parties)."""

    seq: int
    base: tuple[int, ...]
    excess: tuple[int, ...]

    @property
    def credits(self) -> tuple[int, ...]:
        return tuple(b + e for b, e in zip(self.base, self.excess, strict=True))


def split_event(
    seq: int,
    amount: int,
    period_revenue: int,
    shares: Sequence[int],
    target: int = 0,
    excess_shares: Sequence[int] = (),
    *,
    reversal: bool = False,
) -> EventSplit:
    """Split one event exactly as the contract does, given the period's revenue before it. ``reversal``:
    what a reversal of ``amount`` debits instead (:func:`split_reversal`)."""
    offset = offset_of(seq)
    below, above = (reversal_parts if reversal else tier_parts)(period_revenue, amount, target)
    zeros = [0] * len(shares)
    base = split(below, shares, offset) if below else zeros
    excess = split(above, excess_shares, offset) if above else zeros
    return EventSplit(seq=seq, base=tuple(base), excess=tuple(excess))


def reversal_parts(period_revenue: int, amount: int, target: int) -> tuple[int, int]:
    """The part of a reversal of ``amount`` debited by the base table and the part debited by the
    excess table, given the period's revenue ``period_revenue`` before it: the reversal takes the top of
    the period's revenue first, so what lies above the target is excess."""
    above = min(amount, max(0, period_revenue - target)) if target else 0
    return amount - above, above


def revenue_after_reversal(period_revenue: int, amount: int) -> int:
    """The period's revenue after a reversal of ``amount`` booked in it (never below zero)."""
    return period_revenue - min(amount, period_revenue)


def split_reversal(*args, **kwargs) -> EventSplit:
    """What one reversal debits each party, exactly as the contract does, given the period's revenue
    before it (the arguments are :func:`split_event`'s). The debits add up to ``amount``."""
    return split_event(*args, reversal=True, **kwargs)


# ---------------------------------------------------------------------------------------------------
# Bands, recoup and nesting (the extended rule)
# ---------------------------------------------------------------------------------------------------
#
# An event of amount ``a`` with offset ``o`` is cut into parts: first the recoup part
# ``min(a, R - recouped)`` (while the agreement's recouped total is below its terms' ``recoup`` R), then
# the rest across the tiers base, band 1, ..., band k by the period's *banded* revenue before the event
# (the period's revenue less what of it went by the recoup table): the part below band 1's target by
# the base table, the part between band j's and band j+1's targets by band j's table, above the last
# target by the last band's table. Every part is split with the same offset ``o`` by the rule above, so
# each part's credits add up to the part and the parts add up to ``a``.
#
# ``terms`` below is a :class:`ledger.terms.Terms` (``shares``, ``bands`` of ``target``/``shares``,
# ``recoup``, ``recoup_shares``, ``nested``); this module does not import it (it imports this one).


def band_parts(amount: int, banded: int, targets: Sequence[int]) -> list[int]:
    """``amount`` cut across the tiers base, band 1, ..., band k, given the period's banded revenue
    ``banded`` before it and the bands' ascending ``targets`` (revenue up to and including a target
    belongs to the tier below it)."""
    low, high = banded, banded + amount
    edges = [0, *targets]
    parts = []
    for j, start in enumerate(edges):
        end = edges[j + 1] if j + 1 < len(edges) else high
        parts.append(max(0, min(high, end) - max(low, start)))
    return parts


def event_parts(amount: int, banded: int, recouped: int, terms) -> list[int]:
    """The parts of an event in the order of ``terms.tier_names``: [recoup,] base, band 1, ..., band k.
    ``banded``: the period's banded revenue before the event; ``recouped``: the agreement's recouped
    total before it."""
    head = []
    if terms.recoup:
        part = min(amount, max(0, terms.recoup - recouped))
        head.append(part)
        amount -= part
    return head + band_parts(amount, banded, [b.target for b in terms.bands])


def reversal_unrecouped(amount: int, banded: int, period_recouped: int) -> int:
    """The part of a reversal that unwinds the period's recouped part (after its banded revenue): it
    lowers the period's and the agreement's recouped totals, whatever the terms in force."""
    return min(max(0, amount - banded), period_recouped)


def reversal_tier_parts(amount: int, banded: int, period_recouped: int, terms) -> list[int]:
    """The parts of a reversal in ``terms.tier_names`` order: it unwinds the period's banded revenue from
    the top (highest band first), then the period's recouped part (by the recoup table, or by the base
    table when the terms have no recoup: an earlier version's); what is left (a reversal above the
    period's revenue) is debited by the base table."""
    from_bands = min(amount, banded)
    parts = band_parts(from_bands, banded - from_bands, [b.target for b in terms.bands])
    rest = amount - from_bands
    head = []
    if terms.recoup:
        part = reversal_unrecouped(amount, banded, period_recouped)
        head.append(part)
        rest -= part
    parts[0] += rest
    return head + parts


@dataclass(frozen=True)
class TierSplit:
    """What one event credits (or a reversal debits) each party, per tier (``terms.tier_names`` order)."""

    seq: int
    parts: tuple[int, ...]
    tiers: tuple[tuple[int, ...], ...]

    @property
    def credits(self) -> tuple[int, ...]:
        return tuple(sum(column) for column in zip(*self.tiers, strict=True))

    @property
    def recouped(self) -> int:
        """The recoup part (0 for terms without a recoup: callers know whether tier 0 is recoup)."""
        return self.parts[0]


def split_parts(seq: int, parts: Sequence[int], tables: Sequence[Sequence[int]], n: int) -> TierSplit:
    offset = offset_of(seq)
    zeros = (0,) * n
    tiers = tuple(
        tuple(split(part, table, offset)) if part else zeros for part, table in zip(parts, tables, strict=True)
    )
    return TierSplit(seq=seq, parts=tuple(parts), tiers=tiers)


@dataclass
class SplitState:
    """One agreement's running state for the split: each period's revenue and recouped part, and the
    agreement's recouped total (across periods and versions)."""

    revenue: dict[int, int] = field(default_factory=dict)
    period_recouped: dict[int, int] = field(default_factory=dict)
    recouped: int = 0

    def banded(self, period: int) -> int:
        return self.revenue.get(period, 0) - self.period_recouped.get(period, 0)

    def settle(self, terms, seq: int, amount: int, period: int) -> TierSplit:
        """Split one revenue event exactly as the contract does, and book it."""
        parts = event_parts(amount, self.banded(period), self.recouped, terms)
        result = split_parts(seq, parts, terms.tier_tables, len(terms.parties))
        if terms.recoup:
            self.recouped += parts[0]
            self.period_recouped[period] = self.period_recouped.get(period, 0) + parts[0]
        self.revenue[period] = self.revenue.get(period, 0) + amount
        return result

    def reverse(self, terms, seq: int, amount: int, period: int) -> TierSplit:
        """Split one reversal exactly as the contract does, and un-book it."""
        recouped_here = self.period_recouped.get(period, 0)
        parts = reversal_tier_parts(amount, self.banded(period), recouped_here, terms)
        result = split_parts(seq, parts, terms.tier_tables, len(terms.parties))
        unrecouped = reversal_unrecouped(amount, self.banded(period), recouped_here)
        if unrecouped:
            self.recouped -= unrecouped
            self.period_recouped[period] = recouped_here - unrecouped
        self.revenue[period] = revenue_after_reversal(self.revenue.get(period, 0), amount)
        return result


@dataclass(frozen=True)
class NestedEvent:
    """What an outer run credited a nested party, booked as one revenue event of the inner alliance."""

    outer: bytes
    run_first_seq: int
    me_id: int
    inner: bytes
    inner_seq: int
    period: int
    amount: int


@dataclass(frozen=True)
class Run:
    """A run of consecutive same-period events of one agreement, with its credits per tier and party."""

    agreement_id: bytes
    period: int
    first_seq: int
    count: int
    tiers: tuple[tuple[int, ...], ...]

    @property
    def credits(self) -> tuple[int, ...]:
        return tuple(sum(column) for column in zip(*self.tiers, strict=True))


@dataclass
class Settled:
    """The outcome of one settlement batch, nested splits included."""

    runs: list[Run] = field(default_factory=list)  # outer and inner runs, in the order they happen
    nested: list[NestedEvent] = field(default_factory=list)
    accounts: dict[int, int] = field(default_factory=dict)  # ME id -> credited to its own account


class NestedBook:
    """The reference of nested settlement: several agreements' terms and states; a batch of an outer
    agreement is split run by run, and at the end of each run every nested party's credit ``c > 0`` (all
    tiers) becomes one revenue event of its inner alliance (same period, the inner's next sequence
    number), split by the inner's terms the same way, recursively. Only parties that are not alliances
    are credited to ME accounts, so the accounts gain exactly the outer batch's total."""

    def __init__(self, terms: dict[bytes, object] | None = None):
        self.terms: dict[bytes, object] = dict(terms or {})
        self.states: dict[bytes, SplitState] = {}
        self.next_seq: dict[bytes, int] = {}

    def state(self, agreement_id: bytes) -> SplitState:
        return self.states.setdefault(agreement_id, SplitState())

    def settle(self, agreement_id: bytes, events: Sequence[tuple[int, int]], out: Settled | None = None) -> Settled:
        """Settle ``events`` (``(amount, period)`` pairs) as one batch of ``agreement_id``."""
        out = out if out is not None else Settled()
        terms = self.terms[agreement_id]
        state = self.state(agreement_id)
        seq = self.next_seq.get(agreement_id, 0)
        k = 0
        while k < len(events):
            period = events[k][1]
            first = seq
            n = len(terms.parties)
            sums = [[0] * n for _ in terms.tier_tables]
            while k < len(events) and events[k][1] == period:
                result = state.settle(terms, seq, events[k][0], period)
                for t, tier in enumerate(result.tiers):
                    for i, credit in enumerate(tier):
                        sums[t][i] += credit
                seq += 1
                k += 1
            self.next_seq[agreement_id] = seq
            run = Run(agreement_id, period, first, seq - first, tuple(tuple(t) for t in sums))
            out.runs.append(run)
            nested = getattr(terms, "nested", ()) or ()
            for i, (me_id, credit) in enumerate(zip(terms.parties, run.credits, strict=True)):
                inner = bytes(nested[i]) if nested else b"\0" * 32
                if inner == b"\0" * 32:
                    out.accounts[me_id] = out.accounts.get(me_id, 0) + credit
                    continue
                if credit == 0:
                    continue
                event = NestedEvent(agreement_id, first, me_id, inner, self.next_seq.get(inner, 0), period, credit)
                self.settle(inner, [(credit, period)], out)
                out.nested.append(event)  # after the inner split (and any deeper one), as NestedSettled is logged
        return out


def credit_account(balance: int, debt: int, credit: int) -> tuple[int, int, int]:
    """A credit to an ME's account: it repays the debt first. Returns (balance, debt, netted)."""
    netted = min(debt, credit)
    return balance + credit - netted, debt - netted, netted


def debit_account(balance: int, debt: int, debit: int) -> tuple[int, int, int]:
    """A debit from an ME's account: from the balance; what it does not cover becomes debt.
    Returns (balance, debt, covered), ``covered`` being what goes back to finance now."""
    covered = min(balance, debit)
    return balance - covered, debt + debit - covered, covered


# ---------------------------------------------------------------------------------------------------
# Decimal edges
# ---------------------------------------------------------------------------------------------------


def parse_amount(text: str, decimals: int) -> int:
    """Turn a decimal string in token units (``"12.50"``) into base units, exactly.

    Refuses floats' habits: exponents, signs, blanks, separators, more fractional digits than the token
    has. Returns an ``int``; raises :class:`AmountError` with a message naming the problem.
    """
    if not isinstance(text, str):
        raise AmountError(f"expected a decimal string, got {type(text).__name__}")
    raw = text.strip()
    if not raw:
        raise AmountError("is empty")
    if raw[0] in "+-":
        raise AmountError(f"{raw!r} has a sign; amounts are positive numbers like 12.50")
    if not _PLAIN_DECIMAL.fullmatch(raw):
        raise AmountError(f"{raw!r} is not a plain decimal number like 12.50")
    if raw.count(".") > 1 or raw == ".":
        raise AmountError(f"{raw!r} is not a plain decimal number like 12.50")
    whole, _, fraction = raw.partition(".")
    if len(whole) > 80:
        raise AmountError(f"{raw[:20]}... has {len(whole)} digits before the point; no token amount is that large")
    if len(fraction) > decimals:
        raise AmountError(f"{raw!r} has {len(fraction)} decimals; the token has {decimals}")
    # Integer arithmetic on the digits: exact at any size (Decimal would round past 28 digits).
    return int(whole or "0") * 10**decimals + int(fraction.ljust(decimals, "0") or "0")


def format_amount(units: int, decimals: int) -> str:
    """Base units as a decimal string with exactly ``decimals`` fractional digits."""
    sign = "-" if units < 0 else ""
    units = abs(units)
    if decimals == 0:
        return f"{sign}{units}"
    whole, fraction = divmod(units, 10**decimals)
    return f"{sign}{whole}.{fraction:0{decimals}d}"


def percent(bps: int) -> str:
    """Basis points as a percentage, exactly: 4000 -> '40%', 1250 -> '12.5%', 10001 -> '100.01%'."""
    whole, rest = divmod(int(bps), 100)
    return f"{whole}%" if rest == 0 else f"{whole}.{rest:02d}".rstrip("0") + "%"


def grouped(amount: str) -> str:
    """'1234567.500000' -> '1,234,567.500000' (digits only regrouped; the value is unchanged)."""
    sign = "-" if amount.startswith("-") else ""
    whole, dot, fraction = amount.lstrip("-").partition(".")
    groups = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    return sign + ",".join([whole, *groups]) + dot + fraction
