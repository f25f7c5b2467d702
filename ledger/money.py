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
from dataclasses import dataclass

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
) -> EventSplit:
    """Split one event exactly as the contract does, given the period's revenue before it."""
    offset = offset_of(seq)
    below, above = tier_parts(period_revenue, amount, target)
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


def split_reversal(
    seq: int,
    amount: int,
    period_revenue: int,
    shares: Sequence[int],
    target: int = 0,
    excess_shares: Sequence[int] = (),
) -> EventSplit:
    """What one reversal debits each party, exactly as the contract does, given the period's revenue
    before it. The debits add up to ``amount``."""
    offset = offset_of(seq)
    below, above = reversal_parts(period_revenue, amount, target)
    zeros = [0] * len(shares)
    base = split(below, shares, offset) if below else zeros
    excess = split(above, excess_shares, offset) if above else zeros
    return EventSplit(seq=seq, base=tuple(base), excess=tuple(excess))


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
