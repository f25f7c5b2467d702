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
