"""The independent recomputation of a batch's credits and debits: the terms as logged, the tier parts
of each event or reversal, and the per-party split with the documented rounding rule.

Deliberately independent of ``ledger/money.py``: the split is written out again here, apart from the
settler's math (and from ``SplitMath.sol``), so that a mistake in either is found by the audit instead of
being repeated by it. It shares only the published constants (``BPS``, ``ROUNDING_STRIDE``) and the terms
rules and EIP-712 hash of ``ledger.terms``. Pure functions: no chain, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.money import BPS, ROUNDING_STRIDE
from ledger.terms import NOT_NESTED, terms_problem, terms_struct_hash
from ledger.terms import TERMS_TYPEHASH as TERMS_TYPEHASH  # noqa: F401 - re-exported for the tests


@dataclass
class _Terms:
    """One version's terms as logged, with what the recomputation needs precomputed."""

    token: str
    parties: tuple[int, ...]
    shares: tuple[int, ...]
    target: int = 0  # the first band's target (0: no band)
    excess_shares: tuple[int, ...] = ()  # the first band's table
    problem: str | None = None
    bands: tuple = ()  # ((target, shares), ...): every band, the first included
    recoup: int = 0
    recoup_shares: tuple[int, ...] = ()
    nested: tuple = ()  # bytes32 per party, or empty

    def __post_init__(self) -> None:
        if not self.bands and (self.target or self.excess_shares):  # built as the one band of before
            self.bands = ((self.target, tuple(self.excess_shares)),)

    @classmethod
    def logged(cls, value) -> _Terms:
        token, parties, shares, bands, recoup, recoup_shares, nested = value
        bands = tuple((int(t), tuple(table)) for t, table in bands)
        return cls(
            token, tuple(parties), tuple(shares), bands[0][0] if bands else 0, bands[0][1] if bands else (),
            bands=bands, recoup=int(recoup), recoup_shares=tuple(recoup_shares), nested=tuple(bytes(x) for x in nested),
        )  # fmt: skip

    def as_abi(self) -> tuple:
        return (self.token, list(self.parties), list(self.shares), [(t, list(x)) for t, x in self.bands], self.recoup,
                list(self.recoup_shares), [bytes(x) for x in self.nested])  # fmt: skip

    @property
    def by_tier(self) -> bool:
        """Credited by ``PartiesCreditedByTier`` (two or more bands, or a recoup)."""
        return len(self.bands) >= 2 or self.recoup > 0

    @property
    def tier_names(self) -> tuple[str, ...]:
        if not self.by_tier:
            return ("base", "excess")  # PartiesCredited: base and band 1 (zeros without a band)
        head = ("recoup",) if self.recoup else ()
        if len(self.bands) == 1:
            return (*head, "base", "excess")
        return (*head, "base", *(f"band {j}" for j in range(1, len(self.bands) + 1)))

    @property
    def tier_prefixes(self) -> list[list[int]]:
        """The running sums of each tier's table, in :attr:`tier_names` order."""
        if not self.by_tier:
            return [self.prefix, self.prefix_excess]
        head = [_prefix(self.recoup_shares)] if self.recoup else []
        return [*head, self.prefix, *(_prefix(table) for _, table in self.bands)]

    @property
    def nested_parties(self) -> dict[int, bytes]:
        return {p: bytes(x) for p, x in zip(self.parties, self.nested, strict=False) if bytes(x) != NOT_NESTED}

    def eip712_message(self) -> dict:
        return {
            "token": self.token, "parties": list(self.parties), "shares": list(self.shares),
            "bands": [{"target": t, "shares": list(x)} for t, x in self.bands], "recoup": self.recoup,
            "recoupShares": list(self.recoup_shares), "nested": [bytes(x) for x in self.nested],
        }  # fmt: skip

    @property
    def prefix(self) -> list[int]:
        return _prefix(self.shares)

    @property
    def prefix_excess(self) -> list[int]:
        return _prefix(self.excess_shares) if self.target else self.prefix


def _prefix(shares: tuple[int, ...]) -> list[int]:
    """S_1..S_(n-1): running sums of a share table without the last (which is 10,000)."""
    out, running = [], 0
    for share in shares[:-1]:
        running += share
        out.append(running)
    return out


@dataclass
class _RecomputedRun:
    """The credits one run of same-period events should produce (recomputed here)."""

    agreement_id: bytes
    period: int
    version: int
    first_seq: int
    count: int
    base: list[int]
    excess: list[int]
    debit: bool = False  # a run of reversals (PartiesDebited) rather than of revenue
    tiers: list[list[int]] | None = None  # per tier (the terms' tier_names order), per party

    def logged_tiers(self) -> list[list[int]]:
        return self.tiers if self.tiers is not None else [self.base, self.excess]


def terms_hash(terms: _Terms) -> bytes:
    """The EIP-712 struct hash of a ``Terms`` (``hashTerms`` in the contract), computed here."""
    return terms_struct_hash(terms.as_abi())


def validate_terms(terms: _Terms) -> str | None:
    """Why these terms could never have been valid, or None (the rules of ``ledger.terms``)."""
    return terms_problem(
        terms.token, terms.parties, terms.shares, terms.bands, terms.recoup, terms.recoup_shares, terms.nested
    )


def _event_parts(amount: int, banded: int, recouped: int, terms: _Terms) -> list[int]:
    """An event cut into tier parts (``terms.tier_names`` order), written out apart from ``ledger.money``."""
    parts = []
    if terms.recoup:
        part = min(amount, terms.recoup - recouped) if recouped < terms.recoup else 0
        parts.append(part)
        amount -= part
    low, high = banded, banded + amount
    edges = [0, *(t for t, _ in terms.bands)]
    for j, start in enumerate(edges):
        end = edges[j + 1] if j + 1 < len(edges) else high
        parts.append(max(0, min(high, end) - max(low, start)))
    if not terms.by_tier and not terms.bands:
        parts.append(0)  # PartiesCredited always carries an excess vector
    return parts


def _reversal_parts(amount: int, banded: int, period_recouped: int, terms: _Terms) -> list[int]:
    """A reversal cut into tier parts: the banded revenue from the top, then the recouped part, the rest
    (beyond the period's revenue) by the base table."""
    edges = [0, *(t for t, _ in terms.bands)]
    band_parts = [0] * len(edges)
    left, top = amount, banded
    for j in range(len(edges) - 1, -1, -1):
        take = min(left, max(0, top - edges[j]))
        band_parts[j] += take
        left -= take
        top -= take
    head = []
    if terms.recoup:  # else the recouped part (an earlier version's recoup) goes by the base table
        take = min(left, period_recouped)
        head.append(take)
        left -= take
    band_parts[0] += left
    if not terms.by_tier and not terms.bands:
        band_parts.append(0)
    return head + band_parts


def recompute_runs(
    agreement_id: bytes,
    version: int,
    terms: _Terms,
    first_seq: int,
    entries: list[int],
    revenue_of,
    recouped_of=None,
    recouped: int = 0,
    *,
    reversal: bool = False,
) -> tuple[list[_RecomputedRun], dict[int, int]]:
    """Split a batch's events with the documented rule, run by run of consecutive same-period events.

    ``revenue_of(period)`` is the period's revenue before the batch, ``recouped_of(period)`` its recouped
    part, ``recouped`` the agreement's recouped total. Per event the rule is
    ``credit_i = floor((o + a*S_i)/B) - floor((o + a*S_(i-1))/B)`` for each tier part ``a``; a run's
    credits are the sums of its events' credits. Returns the runs and each period's revenue after them
    (:func:`recompute_batch` also returns the recouped state). ``reversal``: the batch is reversals
    (:func:`recompute_reversal_runs`)."""
    runs, revenue, _, _ = recompute_batch(
        agreement_id, version, terms, first_seq, entries, revenue_of, recouped_of or (lambda _: 0), recouped,
        reversal=reversal,
    )  # fmt: skip
    return runs, revenue


def recompute_reversal_runs(*args, **kwargs) -> tuple[list[_RecomputedRun], dict[int, int]]:
    """Split a batch of reversals with the documented rule, run by run: a reversal of ``x`` unwinds the
    period's banded revenue from the top (a target ``T``'s band first: with one band ``min(x, max(0, R -
    T))`` by the excess table), then the period's recouped part, the rest by the base table (same rounding
    as credits, the reversal's own sequence number); the period's revenue becomes ``R - min(x, R)``.
    Written out here, apart from ``ledger.money``, on purpose. The arguments are :func:`recompute_runs`'s."""
    return recompute_runs(*args, reversal=True, **kwargs)


def recompute_batch(
    agreement_id: bytes, version: int, terms: _Terms, first_seq: int, entries: list[int], revenue_of, recouped_of,
    recouped: int, *, reversal: bool = False,
) -> tuple[list[_RecomputedRun], dict[int, int], dict[int, int], int]:  # fmt: skip
    """The runs of a batch (of revenue, or of reversals), each period's revenue and recouped part after
    it, and the agreement's recouped total after it."""
    runs: list[_RecomputedRun] = []
    revenue: dict[int, int] = {}
    period_recouped: dict[int, int] = {}
    prefixes = terms.tier_prefixes
    n = len(terms.parties)
    k, count = 0, len(entries)
    while k < count:
        period = entries[k] & 0xFFFFFFFF
        rev = revenue[period] if period in revenue else revenue_of(period)
        rec = period_recouped[period] if period in period_recouped else recouped_of(period)
        floors = [[0] * (n - 1) for _ in prefixes]  # per tier: sums over the run of floor((o + a*S_i)/B), i < n
        totals = [0] * len(prefixes)
        start = k
        while k < count and entries[k] & 0xFFFFFFFF == period:
            amount = entries[k] >> 32
            offset = ((first_seq + k) * ROUNDING_STRIDE) % BPS
            if reversal:
                parts = _reversal_parts(amount, rev - rec, rec, terms)
            else:
                parts = _event_parts(amount, rev - rec, recouped, terms)
            for t, part in enumerate(parts):
                if part:
                    totals[t] += part
                    tier_floors = floors[t]
                    for i, s in enumerate(prefixes[t]):
                        tier_floors[i] += (offset + part * s) // BPS
            if reversal:  # the recouped part unwound lowers the recouped totals, whatever the terms
                unwound = min(max(0, amount - (rev - rec)), rec)
                rec -= unwound
                recouped -= unwound
            elif terms.recoup:
                rec += parts[0]
                recouped += parts[0]
            rev = rev - min(amount, rev) if reversal else rev + amount
            k += 1
        revenue[period], period_recouped[period] = rev, rec
        tiers = [_differences(f, total) for f, total in zip(floors, totals, strict=True)]
        base, excess = (tiers[0], tiers[1]) if not terms.by_tier else (tiers[0], tiers[-1])
        runs.append(_RecomputedRun(agreement_id, period, version, first_seq + start, k - start, base, excess,
                                   debit=reversal, tiers=tiers))  # fmt: skip
    return runs, revenue, period_recouped, recouped


def _differences(floors: list[int], total: int) -> list[int]:
    out, previous = [], 0
    for value in [*floors, total]:
        out.append(value - previous)
        previous = value
    return out
