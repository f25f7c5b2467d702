"""An agreement's terms: the one Python owner of their shape, limits and validation rules.

The contract's ``Terms`` struct (``IAllianceLedger.sol``) holds, per agreement version:

- ``parties``: ascending ME ids, :data:`MIN_PARTIES` to :data:`MAX_PARTIES` of them;
- ``shares``: the base table (basis points summing to :data:`BPS`);
- ``bands``: 0 to :data:`MAX_BANDS` target bands, targets above 0 and strictly ascending, each with its
  own table: a period's banded revenue from a band's target up to the next band's target (or without
  limit) is split by that band's table, below the first target by the base table. Every period starts
  from zero. One band is the old ``target`` + ``excessShares``;
- ``recoup`` (0: none) and ``recoupShares``: revenue goes by the recoup table until the agreement's
  recouped total, across all periods, reaches ``recoup``; from then on the bands apply;
- ``nested``: empty, or one entry per party: zero for a party credited itself, else the id of the
  agreement (the inner alliance) whose own terms split what that party is credited, at settlement, to a
  depth of at most :data:`MAX_NESTING_DEPTH` levels below the outer agreement.

The rules here mirror the contract's checks (the contract stays the source of truth); the CLI, the
services and the audit all import them from here. This module also decodes terms from
``AgreementProposed`` logs and the three credit events (``PartiesCredited``, ``PartiesCreditedByTier``
and ``NestedSettled``) into one normalized record every reader uses (:func:`credit_run`,
:func:`nested_credit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import keccak
from pydantic import BaseModel, ConfigDict, model_validator

from ledger.money import BPS, MAX_EVENT_AMOUNT

MIN_PARTIES = 2
MAX_PARTIES = 64
MAX_BANDS = 4
MAX_NESTING_DEPTH = 2  # levels below the outer agreement
MAX_TARGET = MAX_EVENT_AMOUNT  # uint128
MAX_RECOUP = 2**120 - 1  # uint120: Period.recouped shares a slot with the period's revenue
NOT_NESTED = b"\0" * 32

BAND_TYPE = "Band(uint128 target,uint16[] shares)"
TERMS_TYPE = (
    "Terms(address token,uint32[] parties,uint16[] shares,Band[] bands,uint128 recoup,uint16[] recoupShares,"
    "bytes32[] nested)"
)
TERMS_TYPEHASH = keccak(text=TERMS_TYPE + BAND_TYPE)
BAND_TYPEHASH = keccak(text=BAND_TYPE)
# The ABI type of the struct (for logs, calldata and hashing).
TERMS_ABI_TYPE = "(address,uint32[],uint16[],(uint128,uint16[])[],uint128,uint16[],bytes32[])"

# EIP-712 member lists (for eth_account's encode_typed_data).
EIP712_TYPES = {
    "Terms": [
        {"name": "token", "type": "address"},
        {"name": "parties", "type": "uint32[]"},
        {"name": "shares", "type": "uint16[]"},
        {"name": "bands", "type": "Band[]"},
        {"name": "recoup", "type": "uint128"},
        {"name": "recoupShares", "type": "uint16[]"},
        {"name": "nested", "type": "bytes32[]"},
    ],
    "Band": [
        {"name": "target", "type": "uint128"},
        {"name": "shares", "type": "uint16[]"},
    ],
}


def _table_problem(what: str, table: Sequence[int], n: int) -> str | None:
    if len(table) != n:
        return f"{what} has {len(table)} entries for {n} parties"
    if any(not 0 <= s <= BPS for s in table) or sum(table) != BPS:
        return f"{what} sums to {sum(table)} basis points; it must sum to {BPS}"
    return None


def terms_problem(
    token: str,
    parties: Sequence[int],
    shares: Sequence[int],
    bands: Sequence[tuple[int, Sequence[int]]] = (),
    recoup: int = 0,
    recoup_shares: Sequence[int] = (),
    nested: Sequence[bytes] = (),
    *,
    agreement_id: bytes | None = None,
) -> str | None:
    """Why these terms are invalid (the contract's rules, one line naming the field), or None."""
    if not token or int(token, 16) == 0:
        return "token: the zero address"
    n = len(parties)
    if not MIN_PARTIES <= n <= MAX_PARTIES:
        return f"parties: an alliance needs {MIN_PARTIES} to {MAX_PARTIES} parties, got {n}"
    if any(b <= a for a, b in zip(parties, parties[1:], strict=False)):
        return "parties: not in strictly ascending ME id order (or a party appears twice)"
    if problem := _table_problem("shares", shares, n):
        return problem
    if len(bands) > MAX_BANDS:
        return f"bands: at most {MAX_BANDS} bands, got {len(bands)}"
    previous = 0
    for j, (target, table) in enumerate(bands, start=1):
        if not 0 < target <= MAX_TARGET:
            return f"band {j}: the target must be above 0 and at most {MAX_TARGET}"
        if target <= previous:
            return f"band {j}: targets must be strictly ascending ({target} after {previous})"
        previous = target
        if problem := _table_problem(f"band {j} shares", table, n):
            return problem
    if not 0 <= recoup <= MAX_RECOUP:
        return f"recoup: at most {MAX_RECOUP} base units"
    if recoup == 0 and recoup_shares:
        return "recoup shares: given without a recoup amount"
    if recoup and (problem := _table_problem("recoup shares", recoup_shares, n)):
        return problem
    if nested:
        if len(nested) != n:
            return f"nested: {len(nested)} entries for {n} parties"
        if agreement_id is not None and any(bytes(x) == bytes(agreement_id) for x in nested):
            return "nested: an alliance cannot be its own party"
    return None


class Band(BaseModel):
    """A period target and the table that splits the banded revenue from it up to the next band."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: int
    shares: tuple[int, ...]


class Terms(BaseModel):
    """One agreement version's terms, as the contract commits to them (parties ascending).

    ``Terms(..., target=T, excess_shares=X)`` still builds the one-band terms of before."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: str
    parties: tuple[int, ...]
    shares: tuple[int, ...]
    bands: tuple[Band, ...] = ()
    recoup: int = 0
    recoup_shares: tuple[int, ...] = ()
    nested: tuple[bytes, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _one_band(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("target" in data or "excess_shares" in data):
            data = dict(data)
            target, excess = data.pop("target", 0), tuple(data.pop("excess_shares", ()))
            if target or excess:
                if data.get("bands"):
                    raise ValueError("give either target and excess_shares or bands, not both")
                data["bands"] = (Band(target=target, shares=excess),)
        return data

    @model_validator(mode="after")
    def _check(self) -> Terms:
        problem = terms_problem(
            self.token, self.parties, self.shares, [(b.target, b.shares) for b in self.bands], self.recoup,
            self.recoup_shares, self.nested,
        )  # fmt: skip
        if problem:
            raise ValueError(problem)
        return self

    # -- the one-band view of before ------------------------------------------------------------------

    @property
    def target(self) -> int:
        """The first band's target (0 without bands): the old single period target."""
        return self.bands[0].target if self.bands else 0

    @property
    def excess_shares(self) -> tuple[int, ...]:
        """The first band's table (empty without bands)."""
        return self.bands[0].shares if self.bands else ()

    # -- shape ----------------------------------------------------------------------------------------

    @property
    def by_tier(self) -> bool:
        """Whether settlement logs ``PartiesCreditedByTier`` (two or more bands, or a recoup) rather than
        ``PartiesCredited``."""
        return len(self.bands) >= 2 or self.recoup > 0

    @property
    def tier_names(self) -> tuple[str, ...]:
        """The tiers in the contract's order: ``recoup`` (with a recoup), ``base``, then a tier per band
        (``excess`` for the one band of the old shape, ``band 1`` ... with several)."""
        head = ("recoup",) if self.recoup else ()
        if len(self.bands) == 1:
            return (*head, "base", "excess")
        return (*head, "base", *(f"band {j}" for j in range(1, len(self.bands) + 1)))

    @property
    def tier_tables(self) -> tuple[tuple[int, ...], ...]:
        """The share table of each tier, in :attr:`tier_names` order."""
        head = (self.recoup_shares,) if self.recoup else ()
        return (*head, self.shares, *(b.shares for b in self.bands))

    @property
    def nested_parties(self) -> dict[int, bytes]:
        """``{me_id: inner agreement id}`` for the parties that are alliances."""
        return {p: bytes(x) for p, x in zip(self.parties, self.nested, strict=False) if bytes(x) != NOT_NESTED}

    # -- building -------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        token: str,
        shares: dict[int, int],
        target: int = 0,
        excess: dict[int, int] | None = None,
        *,
        bands: Sequence[tuple[int, dict[int, int]]] = (),
        recoup: int = 0,
        recoup_shares: dict[int, int] | None = None,
        nested: dict[int, bytes] | None = None,
    ) -> Terms:
        """Terms from ``{me_id: bps}`` tables in any order (sorted here, as the contract requires).
        ``target``/``excess`` is one band; ``bands`` lists ``(target, table)`` pairs."""
        parties = tuple(sorted(shares))
        all_bands = [(target, excess or {})] if target or excess else []
        all_bands += list(bands)
        for j, (_, table) in enumerate(all_bands, start=1):
            unknown = set(table) - set(shares)
            if unknown:
                raise ValueError(f"band {j} shares name MEs that are not parties: {sorted(unknown)}")
        recoup_shares = recoup_shares or {}
        nested = nested or {}
        for what, table in (("recoup shares", recoup_shares), ("nested", nested)):
            unknown = set(table) - set(shares)
            if unknown:
                raise ValueError(f"{what} name MEs that are not parties: {sorted(unknown)}")
        return cls(
            token=token,
            parties=parties,
            shares=tuple(shares[p] for p in parties),
            bands=tuple(Band(target=t, shares=tuple(table.get(p, 0) for p in parties)) for t, table in all_bands),
            recoup=recoup,
            recoup_shares=tuple(recoup_shares.get(p, 0) for p in parties) if recoup else (),
            nested=tuple(nested.get(p, NOT_NESTED) for p in parties) if nested else (),
        )

    # -- encodings ------------------------------------------------------------------------------------

    def as_tuple(self) -> tuple:
        """The ABI tuple for the contract's ``Terms`` struct."""
        return (
            self.token,
            list(self.parties),
            list(self.shares),
            [(b.target, list(b.shares)) for b in self.bands],
            self.recoup,
            list(self.recoup_shares),
            [bytes(x) for x in self.nested],
        )

    def eip712_message(self) -> dict:
        """The ``Terms`` member of the typed data every party signs (each band, the recoup, the nesting)."""
        return {
            "token": self.token,
            "parties": list(self.parties),
            "shares": list(self.shares),
            "bands": [{"target": b.target, "shares": list(b.shares)} for b in self.bands],
            "recoup": self.recoup,
            "recoupShares": list(self.recoup_shares),
            "nested": [bytes(x) for x in self.nested],
        }

    def struct_hash(self) -> bytes:
        """The EIP-712 struct hash (``hashTerms`` in the contract)."""
        return terms_struct_hash(self.as_tuple())

    @classmethod
    def from_abi(cls, value: Sequence) -> Terms:
        """Terms from the ABI-decoded struct (an ``AgreementProposed`` log's ``terms``, a view's result)."""
        if isinstance(value, dict):
            value = [value[k] for k in ("token", "parties", "shares", "bands", "recoup", "recoupShares", "nested")]
        token, parties, shares, bands, recoup, recoup_shares, nested = value
        return cls(
            token=token,
            parties=tuple(parties),
            shares=tuple(shares),
            bands=tuple(
                Band(target=b["target"], shares=tuple(b["shares"])) if isinstance(b, dict)
                else Band(target=b[0], shares=tuple(b[1]))
                for b in bands
            ),
            recoup=recoup,
            recoup_shares=tuple(recoup_shares),
            nested=tuple(bytes(x) for x in nested),
        )  # fmt: skip


def _packed(values: Sequence[int]) -> bytes:
    return keccak(b"".join(int(v).to_bytes(32, "big") for v in values))


def terms_struct_hash(value: Sequence) -> bytes:
    """The EIP-712 struct hash of an ABI ``Terms`` tuple, computed from its values (used by the audit on
    the terms it reads from logs, valid or not)."""
    token, parties, shares, bands, recoup, recoup_shares, nested = value
    band_hashes = b"".join(
        keccak(abi_encode(["bytes32", "uint128", "bytes32"], [BAND_TYPEHASH, int(t), _packed(s)])) for t, s in bands
    )
    return keccak(
        abi_encode(
            ["bytes32", "address", "bytes32", "bytes32", "bytes32", "uint128", "bytes32", "bytes32"],
            [
                TERMS_TYPEHASH, token, _packed(parties), _packed(shares), keccak(band_hashes), int(recoup),
                _packed(recoup_shares), keccak(b"".join(bytes(x) for x in nested)),
            ],
        )
    )  # fmt: skip


def nested_reference(outer_id: bytes, run_first_seq: int, me_id: int) -> bytes:
    """The derived reference of the revenue event an inner alliance receives for what the outer run
    starting at ``run_first_seq`` credited party ``me_id``: ``keccak256(abi.encode(outer, firstSeq, me))``."""
    return keccak(abi_encode(["bytes32", "uint64", "uint32"], [bytes(outer_id), run_first_seq, me_id]))


# ---------------------------------------------------------------------------------------------------
# The credit events, normalized
# ---------------------------------------------------------------------------------------------------

CREDIT_EVENTS = ("PartiesCredited", "PartiesCreditedByTier")
DEBIT_EVENTS = ("PartiesDebited", "PartiesDebitedByTier")


@dataclass(frozen=True)
class CreditRun:
    """One run's credits (or debits) as logged, whichever event carried them.

    ``PartiesCredited`` carries two vectors (base, excess); ``PartiesCreditedByTier`` one flat vector of
    ``tiers x parties``. :meth:`tiers` gives both as ``{tier name: per-party amounts}`` for the terms of
    the run's version."""

    agreement_id: bytes
    period: int
    version: int
    first_seq: int
    count: int
    debit: bool
    pair: tuple[tuple[int, ...], tuple[int, ...]] | None = None  # (base, excess) of the plain events
    flat: tuple[int, ...] | None = None  # credits[t * n + i] of the by-tier events

    def tiers(self, terms: Terms) -> dict[str, tuple[int, ...]]:
        n = len(terms.parties)
        names = terms.tier_names
        if self.pair is not None:
            base, excess = self.pair
            out = {"base": base}
            if len(names) > 1 and names[-1] != "base":
                out[names[-1]] = excess
            elif any(excess):
                out["excess"] = excess  # excess credits under terms without a band: shown, never lost
            return out
        flat = self.flat or ()
        if len(flat) != n * len(names):
            raise ValueError(f"{len(flat)} tier credits for {len(names)} tiers of {n} parties")
        return {name: tuple(flat[t * n : (t + 1) * n]) for t, name in enumerate(names)}

    def totals(self, n: int | None = None) -> tuple[int, ...]:
        """What each party got over all tiers (``n``: the party count, needed for by-tier events)."""
        if self.pair is not None:
            return tuple(b + x for b, x in zip(*self.pair, strict=True))
        flat = self.flat or ()
        if not n:
            raise ValueError("the party count is needed to total a by-tier run")
        return tuple(sum(flat[i::n]) for i in range(n))

    @property
    def amount(self) -> int:
        """The run's total (all parties, all tiers)."""
        return sum(self.flat) if self.flat is not None else sum(self.pair[0]) + sum(self.pair[1])


def credit_run(event: str, args: dict) -> CreditRun:
    """The normalized run of a ``PartiesCredited``/``PartiesCreditedByTier`` (or debited) log."""
    debit = event in DEBIT_EVENTS
    common = {
        "agreement_id": bytes(args["agreementId"]),
        "period": int(args["period"]),
        "version": int(args["version"]),
        "first_seq": int(args["firstSeq"]),
        "count": int(args["count"]),
        "debit": debit,
    }
    if event.endswith("ByTier"):
        flat = args["debits"] if debit and "debits" in args else args["credits"]
        return CreditRun(**common, flat=tuple(int(v) for v in flat))
    base = args["baseDebits"] if debit else args["baseCredits"]
    excess = args["excessDebits"] if debit else args["excessCredits"]
    return CreditRun(**common, pair=(tuple(int(v) for v in base), tuple(int(v) for v in excess)))


@dataclass(frozen=True)
class NestedCredit:
    """A ``NestedSettled`` log: what an outer run credited nested party ``me_id`` became revenue event
    ``inner_seq`` of the inner alliance ``inner``."""

    agreement_id: bytes
    first_seq: int
    me_id: int
    inner: bytes
    inner_seq: int
    amount: int

    @property
    def reference(self) -> bytes:
        return nested_reference(self.agreement_id, self.first_seq, self.me_id)


def nested_credit(args: dict) -> NestedCredit:
    return NestedCredit(
        agreement_id=bytes(args["agreementId"]),
        first_seq=int(args["firstSeq"]),
        me_id=int(args["meId"]),
        inner=bytes(args["inner"]),
        inner_seq=int(args["innerSeq"]),
        amount=int(args["amount"]),
    )


# How tiers read in reports and statements (the names are what the payouts carry).
TIER_LABELS = {
    "recoup": "recoup (investment paid back)",
    "base": "up to target",
    "excess": "above target",
    "reversal": "reversal (debited)",
}


def tier_label(tier: str) -> str:
    """The words for a tier: ``band 2`` reads "band 2 (above target 2)"."""
    if tier in TIER_LABELS:
        return TIER_LABELS[tier]
    if tier.startswith("band "):
        return f"{tier} (above target {tier[5:]})"
    return tier


def tier_order(tier: str) -> tuple:
    """Sort key of tier names: recoup, base, excess / band 1, band 2, ..., reversal."""
    rank = {"recoup": 0, "base": 1, "excess": 2, "reversal": 9}
    if tier.startswith("band "):
        return (2, int(tier[5:]))
    return (rank.get(tier, 8), 0)
