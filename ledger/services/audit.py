"""The audit: rebuild the ledger's whole history from the chain's event logs and check it, in code that
never calls the contract's logic.

Inputs are a JSON-RPC endpoint and the ledger's address, nothing else: not the finance team's files,
not the service's local state, not the project's compiled artifacts (the event signatures are written
out below, and a test checks them against the compiled contract). The history is read with raw
``eth_getLogs`` in bounded block pages and replayed in chain order:

1. **Signatures.** Each ME's signer over time comes from ``MERegistered``/``MEUpdated``; every
   ``AgreementActivated``/``AgreementEnded`` signature is recovered here (EIP-712, ``eth_account``)
   and must be the signer each party had at that block. ME-update consents are recovered from the
   transaction's input. Each version's terms hash is recomputed from the terms in its log. A signer
   that is a Safe is checked offline against its owners and threshold at that log, rebuilt from the
   Safe's own events (:mod:`ledger.services.audit_safes`, which states the limits).
2. **Credits.** Every ``RevenueSettled`` event is split again with the documented rounding rule and the
   period's cumulative revenue as replayed here (tiers), then compared with the ``PartiesCredited``
   runs of the same transaction.
3. **Exactly-once.** References are unique across the whole ledger (two Unicode forms of the same text,
   NFC and NFD, are one reference: the settler compares them so); sequence numbers run without gaps
   or overlaps; nothing is settled into a period after it was closed, and no period closes twice.
4. **Conservation.** Per token: revenue settled == credited, reversed == debited; credited - netted -
   returned - withdrawn == ``totalOwed`` == the sum of the MEs' balances == the tokens the ledger holds;
   incurred - netted == ``totalDebt`` == the sum of the MEs' debts. Per ME: its balance and debt replayed
   from its credits, debits and withdrawals with the netting rule equal the contract's, and never both.
   Contract views are read at the block the log scan ended at.
5. **Statements** (:mod:`ledger.services.statement`) are reconciled against the credits replayed here.
6. **Reversals.** Every ``RevenueReversed`` event is split again with the reversal rule (the top of the
   period's revenue first) and compared with its ``PartiesDebited`` runs; each ``DebtIncurred`` and
   ``DebtNetted`` with the debt rule; and the link the contract does not store: each reversal's
   original was settled before, for the same alliance, is not a reversal, and its reversals never add
   up to more than its amount.

Every disagreement becomes a :class:`Finding` with the transaction, block and values.
"""

from __future__ import annotations

import contextlib
import time
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from ledger.chain import eip712
from ledger.chain.logs import AUDIT_PAGE_WEIGHT, DEFAULT_PAGE_SIZE, Log, LogReader
from ledger.chain.rpc import RpcError
from ledger.errors import ChainUnavailable, LedgerError
from ledger.models import bytes32_to_text
from ledger.money import BPS, MAX_EVENT_AMOUNT, ROUNDING_STRIDE, format_amount
from ledger.terms import NOT_NESTED, credit_run, nested_credit, nested_reference, terms_problem, terms_struct_hash
from ledger.terms import TERMS_TYPEHASH as TERMS_TYPEHASH  # noqa: F401 - re-exported for the tests

# The ledger's events, written out so the audit depends on the chain alone (tests compare them with
# the compiled ABI). Tuple types are spelled as ``(...)``.
EVENT_SIGNATURES = [
    "MERegistered(uint32 indexed meId, string name, address payout, address signer, uint32 parent)",
    "MEUpdated(uint32 indexed meId, address payout, address signer, uint32 nonce)",
    "MEDissolved(uint32 indexed meId)",
    "AgreementProposed(bytes32 indexed agreementId, uint32 indexed version, bytes32 termsHash,"
    " (address,uint32[],uint16[],(uint128,uint16[])[],uint128,uint16[],bytes32[]) terms, address proposer)",
    "AgreementActivated(bytes32 indexed agreementId, uint32 indexed version, bytes[] signatures)",
    "AgreementEnded(bytes32 indexed agreementId, uint32 indexed version, bytes[] signatures)",
    "RevenueSettled(bytes32 indexed agreementId, uint32 indexed version, uint64 firstSeq, bytes32[] refs,"
    " uint256[] entries)",
    "PartiesCredited(bytes32 indexed agreementId, uint32 indexed period, uint32 version, uint64 firstSeq,"
    " uint64 count, uint256[] baseCredits, uint256[] excessCredits)",
    "PartiesCreditedByTier(bytes32 indexed agreementId, uint32 indexed period, uint32 version, uint64 firstSeq,"
    " uint64 count, uint256[] credits)",
    "NestedSettled(bytes32 indexed agreementId, uint64 firstSeq, uint32 indexed meId, bytes32 indexed inner,"
    " uint64 innerSeq, uint256 amount)",
    "RevenueReversed(bytes32 indexed agreementId, uint32 indexed version, uint64 firstSeq, bytes32[] refs,"
    " uint256[] entries, bytes32[] originals)",
    "PartiesDebited(bytes32 indexed agreementId, uint32 indexed period, uint32 version, uint64 firstSeq,"
    " uint64 count, uint256[] baseDebits, uint256[] excessDebits)",
    "PartiesDebitedByTier(bytes32 indexed agreementId, uint32 indexed period, uint32 version, uint64 firstSeq,"
    " uint64 count, uint256[] debits)",
    "DebtIncurred(uint32 indexed meId, address indexed token, uint256 amount)",
    "DebtNetted(uint32 indexed meId, address indexed token, uint256 amount)",
    "PeriodClosed(bytes32 indexed agreementId, uint32 indexed period, uint128 revenue)",
    "Withdrawn(uint32 indexed meId, address indexed token, address to, uint256 amount)",
    "PayoutSkipped(uint32 indexed meId, address indexed token, address payout, uint256 amount)",
    "RoleGranted(bytes32 indexed role, address indexed account, address indexed sender)",
    "RoleRevoked(bytes32 indexed role, address indexed account, address indexed sender)",
]

UPDATE_ME_SELECTOR = keccak(text="updateME(uint32,address,address,bytes)")[:4]
ROLE_NAMES = {
    b"\0" * 32: "admin",
    keccak(text="PLATFORM_ROLE"): "platform",
    keccak(text="FINANCE_ROLE"): "finance",
}

# What each kind of finding means (the README's auditor section lists the same).
FINDING_KINDS = {
    "signature": "an approval, termination or ME-update consent not made by the signer registered at the time",
    "terms": (
        "a version whose terms are invalid or do not match their hash, proposed by someone not entitled to, or "
        "an activation out of order"
    ),
    "credit": "credits that differ from the split recomputed from the terms in force",
    "nested": (
        "a nested party's credit not passed on to its inner alliance as one event with the derived reference and "
        "the same amount, or passed on without such a credit"
    ),
    "debit": "reversal debits that differ from the split recomputed from the terms in force",
    "reversal": (
        "a reversal of a reference never settled, of another alliance's, of a reversal, or beyond the original's amount"
    ),
    "debt": "a debt incurred or netted differently from the rule (balance first; debt repaid from credits first)",
    "duplicate": "a revenue reference credited twice, or a sequence number used twice",
    "closed-period": "revenue settled into a closed period, or a period closed twice or with the wrong revenue",
    "settlement": "revenue settled under a version not in force, a terminated agreement or a dissolved party",
    "withdrawal": "a withdrawal above the ME's balance, or paid to an address that is not its payout address",
    "conservation": "totals that disagree: settled, credited, reversed, debited, withdrawn, owed, held, debts",
    "statement-differs": "a statement line whose amount differs from the chain",
    "statement-missing": "a payout on the chain that the statement lacks",
    "statement-extra": "a statement line with no payout on the chain",
}


def event_abi() -> list[dict]:
    """The JSON ABI of :data:`EVENT_SIGNATURES`, for :class:`ledger.chain.logs.LogReader`."""
    abi = []
    for signature in EVENT_SIGNATURES:
        name, _, rest = signature.partition("(")
        inputs = []
        for param in _split_params(rest[:-1]):
            words = param.split()
            inputs.append({"type": words[0], "name": words[-1], "indexed": "indexed" in words[1:-1]})
        abi.append({"type": "event", "name": name, "inputs": inputs, "anonymous": False})
    return abi


def _split_params(text: str) -> list[str]:
    params, depth, current = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            params.append(current.strip())
            current = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        current += ch
    if current.strip():
        params.append(current.strip())
    return params


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------


@dataclass
class Finding:
    kind: str
    message: str
    block: int | None = None
    tx: str | None = None
    values: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "block": self.block, "tx": self.tx, "values": self.values}


@dataclass
class TokenTotals:
    token: str
    symbol: str = ""
    decimals: int = 0
    settled: int = 0  # revenue in RevenueSettled
    credited: int = 0  # PartiesCredited
    withdrawn: int = 0  # Withdrawn
    reversed: int = 0  # reversals in RevenueReversed
    debited: int = 0  # PartiesDebited
    returned: int = 0  # debits the balances covered (paid back to finance)
    incurred: int = 0  # debits beyond the balances (DebtIncurred, as replayed)
    netted: int = 0  # credits that repaid debts (DebtNetted, as replayed)
    owed: int | None = None  # totalOwed(token) at the audited block
    balances: int | None = None  # sum of balanceOf(me, token) at the audited block
    held: int | None = None  # token.balanceOf(ledger) at the audited block
    debt: int | None = None  # totalDebt(token) at the audited block
    debts: int | None = None  # sum of debtOf(me, token) at the audited block

    def as_dict(self) -> dict:
        def show(v):
            return None if v is None else format_amount(v, self.decimals)

        names = ("settled", "credited", "withdrawn", "reversed", "debited", "returned", "incurred", "netted",
                 "owed", "balances", "held", "debt", "debts")  # fmt: skip
        return {
            "token": self.token,
            "symbol": self.symbol,
            "decimals": self.decimals,
            **{name: show(getattr(self, name)) for name in names},
            "base_units": {name: None if getattr(self, name) is None else str(getattr(self, name)) for name in names},
        }


@dataclass
class AuditReport:
    chain_id: int
    ledger: str
    from_block: int
    to_block: int
    counts: dict[str, int] = field(default_factory=dict)
    tokens: list[TokenTotals] = field(default_factory=list)
    roles: dict[str, list[str]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0
    # Credits per (alliance name, period, ME id, tier) and ME names, for statement reconciliation.
    payouts: dict[tuple[str, int, int, str], int] = field(default_factory=dict, repr=False)
    me_names: dict[int, str] = field(default_factory=dict, repr=False)
    alliance_tokens: dict[str, str] = field(default_factory=dict, repr=False)
    resumed_from: int | None = None  # the checkpoint block an incremental audit replayed after
    checkpoint_note: str | None = None  # why no checkpoint was used (none yet, --full, not canonical)

    @property
    def clean(self) -> bool:
        return not self.findings

    def findings_by_kind(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for finding in self.findings:
            totals[finding.kind] = totals.get(finding.kind, 0) + 1
        return totals

    def token(self, address: str) -> TokenTotals | None:
        return next((t for t in self.tokens if t.token == address), None)

    def as_dict(self) -> dict:
        return {
            "result": "clean" if self.clean else "findings",
            "chain_id": self.chain_id,
            "ledger": self.ledger,
            "blocks": {"from": self.from_block, "to": self.to_block},
            "checked": self.counts,
            "tokens": [t.as_dict() for t in self.tokens],
            "roles": self.roles,
            "findings_by_kind": self.findings_by_kind(),
            "findings": [f.as_dict() for f in self.findings],
            "seconds": round(self.seconds, 3),
            "checkpoint": {"resumed_from_block": self.resumed_from, "note": self.checkpoint_note},
        }


# ---------------------------------------------------------------------------------------------------
# Replay state
# ---------------------------------------------------------------------------------------------------


@dataclass
class _ME:
    name: str
    signer: str
    payout: str
    active: bool = True
    nonce: int = 0


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
class _Agreement:
    name: str
    token: str
    status: str = "proposed"  # proposed | active | terminated
    active: int = 0
    latest: int = 0
    next_seq: int = 0
    versions: dict[int, _Terms] = field(default_factory=dict)
    recouped: int = 0  # revenue split by a recoup table, all periods and versions (Agreement.recouped)


@dataclass
class _Run:
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
) -> tuple[list[_Run], dict[int, int]]:
    """Split a batch's events with the documented rule, run by run of consecutive same-period events.

    ``revenue_of(period)`` is the period's revenue before the batch, ``recouped_of(period)`` its recouped
    part, ``recouped`` the agreement's recouped total. Per event the rule is
    ``credit_i = floor((o + a*S_i)/B) - floor((o + a*S_(i-1))/B)`` for each tier part ``a``; a run's
    credits are the sums of its events' credits. Returns the runs and each period's revenue after them
    (:func:`recompute_batch` also returns the recouped state)."""
    runs, revenue, _, _ = recompute_batch(
        agreement_id, version, terms, first_seq, entries, revenue_of, recouped_of or (lambda _: 0), recouped
    )
    return runs, revenue


def recompute_reversal_runs(
    agreement_id: bytes,
    version: int,
    terms: _Terms,
    first_seq: int,
    entries: list[int],
    revenue_of,
    recouped_of=None,
    recouped: int = 0,
) -> tuple[list[_Run], dict[int, int]]:
    """Split a batch of reversals with the documented rule, run by run: a reversal of ``x`` unwinds the
    period's banded revenue from the top (a target ``T``'s band first: with one band ``min(x, max(0, R -
    T))`` by the excess table), then the period's recouped part, the rest by the base table (same rounding
    as credits, the reversal's own sequence number); the period's revenue becomes ``R - min(x, R)``.
    Written out here, apart from ``ledger.money``, on purpose."""
    runs, revenue, _, _ = recompute_batch(
        agreement_id, version, terms, first_seq, entries, revenue_of, recouped_of or (lambda _: 0), recouped,
        reversal=True,
    )  # fmt: skip
    return runs, revenue


def recompute_batch(
    agreement_id: bytes, version: int, terms: _Terms, first_seq: int, entries: list[int], revenue_of, recouped_of,
    recouped: int, *, reversal: bool = False,
) -> tuple[list[_Run], dict[int, int], dict[int, int], int]:  # fmt: skip
    """The runs of a batch (of revenue, or of reversals), each period's revenue and recouped part after
    it, and the agreement's recouped total after it."""
    runs: list[_Run] = []
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
        runs.append(_Run(agreement_id, period, version, first_seq + start, k - start, base, excess, debit=reversal,
                         tiers=tiers))  # fmt: skip
    return runs, revenue, period_recouped, recouped


def _differences(floors: list[int], total: int) -> list[int]:
    out, previous = [], 0
    for value in [*floors, total]:
        out.append(value - previous)
        previous = value
    return out


# ---------------------------------------------------------------------------------------------------
# The auditor
# ---------------------------------------------------------------------------------------------------


class Auditor:
    """Reads and replays one ledger's history; :meth:`run` returns the report."""

    def __init__(
        self, rpc, ledger: str, *, from_block: int = 0, page_size: int = DEFAULT_PAGE_SIZE, confirmations: int = 0,
        checkpoint=None, full: bool = False, spill: bool = True,
    ):  # fmt: skip
        # checkpoint: a ledger.services.audit_state.Checkpoint to resume from (unless ``full``) and save to.
        # spill: the references of the duplicate check in a temporary SQLite file (bounded memory).
        self.checkpoint = checkpoint
        self.full = full
        self.spill = spill
        self.resumed_from: int | None = None  # the checkpoint's block, when the audit resumed from one
        self.dropped: str | None = None  # why a checkpoint was not used
        self.consent_findings: list[Finding] = []
        self.rpc = rpc
        self.confirmations = confirmations  # blocks at the head left out (not yet final)
        self.ledger = to_checksum_address(ledger)
        self.from_block = from_block
        self.page_size = page_size
        self.reader = LogReader(rpc.request, self.ledger, event_abi())
        self.findings: list[Finding] = []
        self.mes: dict[int, _ME] = {}
        self.agreements: dict[bytes, _Agreement] = {}
        self.periods: dict[tuple[bytes, int], list] = {}  # (aid, period) -> [revenue, closed block or None]
        self.period_recouped: dict[tuple[bytes, int], int] = {}  # (aid, period) -> the part that went by recoup
        # Within one transaction: batches by (agreement, first seq), nested credits owed and logged.
        self.tx_batches: dict[tuple[bytes, int], tuple[list, list]] = {}
        self.nested_owed: dict[tuple[bytes, int, int], tuple[int, int, bytes, str]] = {}
        self.nested_logged: list[tuple[Log, object]] = []
        self.references = None  # ledger.services.audit_state references: ref -> (aid, seq, tx, block)
        self.tokens: dict[str, TokenTotals] = {}
        self.credited: dict[tuple[int, str], int] = defaultdict(int)  # (me, token) -> credited
        self.withdrawn: dict[tuple[int, str], int] = defaultdict(int)
        self.accounts: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])  # -> [balance, debt]
        self.logged_debt: dict[tuple[str, int, str], int] = defaultdict(int)  # (kind, me, token) -> logged
        self.expected_debt: dict[tuple[str, int, str], int] = defaultdict(int)  # (kind, me, token) -> by the rule
        self.payouts: dict[tuple[str, int, int, str], int] = defaultdict(int)
        self.roles: dict[str, set[str]] = defaultdict(set)
        self.consents: list[tuple[Log, int, str, str, int, str]] = []
        self.pending: list[_Run] = []
        self.pending_tx: str | None = None
        self.pending_block: int | None = None
        self.counts: dict[str, int] = defaultdict(int)
        self.chain_id = 0

    # -- entry point --------------------------------------------------------------------------------

    def run(self) -> AuditReport:
        started = time.perf_counter()
        self.chain_id = int(self.rpc.request("eth_chainId"), 16)
        head = max(0, int(self.rpc.request("eth_blockNumber"), 16) - self.confirmations)
        from ledger.services.audit_safes import SafeSigners

        self.safes = SafeSigners(self.rpc, self.chain_id, head)
        code = self.rpc.request("eth_getCode", [self.ledger, "latest"])
        if code in ("0x", "", None):
            raise ChainUnavailable(f"chain {self.chain_id} has no contract at {self.ledger}")
        if self.from_block > head:
            raise ChainUnavailable(f"--from-block {self.from_block} is past the chain's head ({head})")
        handlers = {
            "MERegistered": self._registered,
            "MEUpdated": self._updated,
            "MEDissolved": self._dissolved,
            "AgreementProposed": self._proposed,
            "AgreementActivated": self._activated,
            "AgreementEnded": self._ended,
            "RevenueSettled": self._settled,
            "PartiesCredited": self._credited,
            "PartiesCreditedByTier": self._credited,
            "NestedSettled": self._nested,
            "RevenueReversed": self._reversed,
            "PartiesDebited": self._debited,
            "PartiesDebitedByTier": self._debited,
            "DebtIncurred": self._debt_logged,
            "DebtNetted": self._debt_logged,
            "PeriodClosed": self._closed,
            "Withdrawn": self._withdrawn,
            "PayoutSkipped": self._payout_skipped,
            "RoleGranted": self._role_granted,
            "RoleRevoked": self._role_revoked,
        }
        names = list(handlers)
        from ledger.services import audit_state

        start, head_hash, saved = self.from_block, None, None
        try:
            if self.checkpoint is not None:
                self.references = self.checkpoint.references
                head_hash = _block_hash(self.rpc, head)
                start = self._resume(head)
            else:
                self.references = audit_state.SpilledReferences() if self.spill else audit_state.MemoryReferences()
            for log in self.reader.read(names, start, head, page_size=self.page_size, weight=AUDIT_PAGE_WEIGHT):
                if log.tx != self.pending_tx:
                    self._flush_pending()
                    self.pending_tx, self.pending_block = log.tx, log.block
                self.counts["logs"] += 1
                handlers[log.event](log)
            self._flush_pending()
            replayed = len(self.findings)
            self._check_consents()
            self.consent_findings += self.findings[replayed:]
            del self.findings[replayed:]
            if self.checkpoint is not None:
                saved = audit_state.json_text(self._state())
            self.findings = self.findings + self.consent_findings
            self._conservation(head)
            if saved is not None and head_hash is not None and _block_hash(self.rpc, head) == head_hash:
                self.checkpoint.save(self._key(), head, head_hash, saved)
        finally:
            if self.checkpoint is None and self.references is not None:
                self.references.close()
        self.counts["log_pages"] = self.reader.pages
        self.counts["log_pages_refused"] = self.reader.refused
        report = AuditReport(
            chain_id=self.chain_id,
            ledger=self.ledger,
            from_block=self.from_block,
            to_block=head,
            counts=dict(self.counts),
            tokens=list(self.tokens.values()),
            roles={role: sorted(holders) for role, holders in sorted(self.roles.items())},
            findings=self.findings,
            payouts=dict(self.payouts),
            me_names={me_id: me.name for me_id, me in self.mes.items()},
            alliance_tokens={a.name: a.token for a in self.agreements.values()},
            resumed_from=self.resumed_from,
            checkpoint_note=self.dropped,
        )
        report.seconds = time.perf_counter() - started
        return report

    # -- the checkpoint ----------------------------------------------------------------------------

    STATE_FIELDS = ("findings", "consent_findings", "mes", "agreements", "periods", "tokens", "credited", "withdrawn",
                    "accounts", "payouts", "roles", "counts", "period_recouped")  # fmt: skip

    def _key(self) -> str:
        return f"{self.chain_id}:{self.ledger.lower()}:{self.from_block}"

    def _state(self) -> dict:
        state = {name: getattr(self, name) for name in self.STATE_FIELDS}
        state["tokens"] = {t: TokenTotals(t, settled=v.settled, credited=v.credited, withdrawn=v.withdrawn,
                                          reversed=v.reversed, debited=v.debited, returned=v.returned,
                                          incurred=v.incurred, netted=v.netted)
                           for t, v in self.tokens.items()}  # fmt: skip
        state["accounts"] = {key: list(value) for key, value in self.accounts.items()}
        return state

    def _resume(self, head: int) -> int:
        """The first block to replay: after the checkpoint's block if it is still canonical (its state
        restored), else the first block (the checkpoint dropped)."""
        from ledger.services.audit_state import as_defaultdict

        stored = None if self.full else self.checkpoint.load()
        if self.full:
            self.dropped = "--full"
        elif stored is None:
            self.dropped = "no checkpoint yet"
        elif stored["key"] != self._key():
            self.dropped, stored = "the checkpoint is of another ledger", None
        elif stored["block"] > head or _block_hash(self.rpc, stored["block"]) != stored["hash"]:
            self.dropped, stored = f"block {stored['block']} of the checkpoint is no longer canonical", None
        if stored is None:
            self.checkpoint.drop()
            return self.from_block
        state = stored["state"]
        for name in ("findings", "consent_findings", "mes", "agreements", "periods", "tokens"):
            setattr(self, name, state[name])
        self.period_recouped = dict(state.get("period_recouped", {}))
        self.credited = as_defaultdict(int, state["credited"])
        self.withdrawn = as_defaultdict(int, state["withdrawn"])
        self.accounts = defaultdict(lambda: [0, 0])
        self.accounts.update({key: list(value) for key, value in state["accounts"].items()})
        self.payouts = as_defaultdict(int, state["payouts"])
        self.roles = as_defaultdict(set, state["roles"])
        self.counts = as_defaultdict(int, state["counts"])
        self.periods = {key: list(value) for key, value in self.periods.items()}
        self.resumed_from = stored["block"]
        return stored["block"] + 1

    def _find(self, kind: str, message: str, log: Log | None = None, **values) -> None:
        self.findings.append(
            Finding(kind, message, log.block if log else None, log.tx if log else None, _jsonable(values))
        )

    def _token(self, address: str) -> TokenTotals:
        if address not in self.tokens:
            self.tokens[address] = TokenTotals(token=address)
        return self.tokens[address]

    # -- MEs and roles ------------------------------------------------------------------------------

    def _registered(self, log: Log) -> None:
        a = log.args
        me_id = a["meId"]
        if me_id in self.mes:  # pragma: no cover - the contract numbers MEs itself
            self._find("terms", f"ME {me_id} registered twice", log)
        self.mes[me_id] = _ME(name=a["name"], signer=a["signer"], payout=a["payout"])
        self.counts["mes"] += 1

    def _updated(self, log: Log) -> None:
        a = log.args
        me = self._me(a["meId"], log)
        if me is None:
            return
        self.consents.append((log, a["meId"], a["payout"], a["signer"], a["nonce"] - 1, me.signer))
        me.signer, me.payout, me.nonce = a["signer"], a["payout"], a["nonce"]
        self.counts["me_updates"] += 1

    def _dissolved(self, log: Log) -> None:
        me = self._me(log.args["meId"], log)
        if me is not None:
            me.active = False
            self.counts["mes_dissolved"] += 1

    def _me(self, me_id: int, log: Log) -> _ME | None:
        me = self.mes.get(me_id)
        if me is None:
            self._find("terms", f"ME {me_id} appears before it was registered", log, me_id=me_id)
        return me

    def _role_granted(self, log: Log) -> None:
        self.roles[ROLE_NAMES.get(log.args["role"], "0x" + log.args["role"].hex())].add(log.args["account"])

    def _role_revoked(self, log: Log) -> None:
        self.roles[ROLE_NAMES.get(log.args["role"], "0x" + log.args["role"].hex())].discard(log.args["account"])

    # -- agreements ---------------------------------------------------------------------------------

    def _proposed(self, log: Log) -> None:
        a = log.args
        aid, version = a["agreementId"], a["version"]
        terms = _Terms.logged(a["terms"])
        token = terms.token
        name = bytes32_to_text(aid)
        agreement = self.agreements.get(aid)
        if agreement is None:
            agreement = self.agreements[aid] = _Agreement(name=name, token=token)
            self.counts["agreements"] += 1
        proposer_problem = self._proposer_problem(agreement, terms, a["proposer"])
        self.counts["versions"] += 1
        self._token(token)
        problem = validate_terms(terms)
        if problem is None and token != agreement.token:
            problem = f"token {token} differs from the agreement's {agreement.token}"
        if problem is None:
            for me_id in terms.parties:
                me = self.mes.get(me_id)
                if me is None or not me.active:
                    problem = f"party ME {me_id} is {'unknown' if me is None else 'dissolved'}"
                    break
        if problem is None and agreement.status == "terminated":
            problem = "proposed after the agreement ended"
        if problem is None and version != agreement.latest + 1:
            problem = f"version {version} follows version {agreement.latest}"
        problem = problem or proposer_problem
        recomputed = terms_hash(terms)
        if recomputed != a["termsHash"]:
            problem = (
                f"logged terms hash {a['termsHash'].hex()} is not the hash of the logged terms ({recomputed.hex()})"
            )
        if problem:
            terms.problem = problem
            self._find("terms", f"alliance {name!r} version {version}: {problem}", log, alliance=name, version=version)
        agreement.versions[version] = terms
        agreement.latest = max(agreement.latest, version)

    def _proposer_problem(self, agreement: _Agreement, terms: _Terms, proposer: str) -> str | None:
        """Who may propose a version of an existing agreement (the contract's rule): the platform, or the
        signer of a party of its current version (the one in force, or the latest proposal while none
        ever was). Version 1 is not checked: ``createAgreement`` (anyone, with every party's signature)
        logs the same ``AgreementProposed`` as ``proposeAgreement``."""
        if not agreement.latest or agreement.status == "terminated":
            return None
        if proposer.lower() in {a.lower() for a in self.roles.get("platform", ())}:
            return None
        current = agreement.active if agreement.status == "active" else agreement.latest
        speakers = agreement.versions[current].parties if current in agreement.versions else ()
        if any(me_id in self.mes and self.mes[me_id].signer.lower() == proposer.lower() for me_id in speakers):
            return None
        return (
            f"proposed by {proposer}, neither the platform nor the signer of a party of version {current}, "
            f"the current one"
        )

    def _proposed_version(self, log: Log, what: str) -> tuple[bytes, int, str, _Agreement | None]:
        """The agreement a log names, or None (reported) when the version it names was never proposed."""
        aid, version = log.args["agreementId"], log.args["version"]
        agreement = self.agreements.get(aid)
        name = bytes32_to_text(aid)
        if agreement is None or version not in agreement.versions:
            self._find("terms", f"alliance {name!r} version {version} {what} but never proposed", log)
            return aid, version, name, None
        return aid, version, name, agreement

    def _activated(self, log: Log) -> None:
        aid, version, name, agreement = self._proposed_version(log, "activated")
        if agreement is None:
            return
        if agreement.status == "terminated":
            self._find("terms", f"alliance {name!r} version {version} activated after the agreement ended", log)
        elif version <= agreement.active:  # only a version newer than the one in force can be activated
            self._find(
                "terms",
                f"alliance {name!r} activated version {version}; version {agreement.active} was already in force",
                log,
            )
        terms = agreement.versions[version]
        message = eip712.approval_message(self.chain_id, self.ledger, aid, version, terms)
        signatures = log.args["signatures"]
        self._check_signatures(log, name, version, "approval", message, terms, signatures, require_active=True)
        agreement.status, agreement.active = "active", version
        self.counts["activations"] += 1

    def _ended(self, log: Log) -> None:
        aid, version, name, agreement = self._proposed_version(log, "ended")
        if agreement is None:
            return
        in_force = agreement.active if agreement.status == "active" else agreement.latest
        if version != in_force:
            self._find("terms", f"alliance {name!r} ended at version {version}; version {in_force} was in force", log)
        message = eip712.termination_message(self.chain_id, self.ledger, aid, version)
        terms = agreement.versions[version]
        signatures = log.args["signatures"]
        self._check_signatures(log, name, version, "termination", message, terms, signatures, require_active=False)
        agreement.status = "terminated"
        self.counts["terminations"] += 1

    def _check_signatures(self, log, name, version, what, message, terms, signatures, *, require_active) -> None:
        if len(signatures) != len(terms.parties):
            self._find(
                "signature",
                f"alliance {name!r} version {version}: {len(signatures)} {what} signatures for "
                f"{len(terms.parties)} parties",
                log,
            )
        for me_id, signature in zip(terms.parties, signatures, strict=False):
            self.counts["signatures"] += 1
            me = self.mes.get(me_id)
            recovered = eip712.recover(message, bytes(signature))
            if me is None:
                self._find("signature", f"alliance {name!r} version {version}: party ME {me_id} is unknown", log)
                continue
            if recovered != me.signer and self._contract_signature(
                log, me.signer, message, bytes(signature), f"alliance {name!r} version {version}: the {what} of "
                f"ME {me.name!r}", alliance=name, version=version, me_id=me_id,
            ):  # fmt: skip
                pass
            elif recovered != me.signer:
                self._find(
                    "signature",
                    f"alliance {name!r} version {version}: the {what} of ME {me.name!r} was signed by "
                    f"{recovered or 'an unreadable signature'}, not by its registered signer {me.signer}",
                    log,
                    alliance=name, version=version, me_id=me_id, recovered=recovered, signer=me.signer,
                )  # fmt: skip
            if require_active and not me.active:
                self._find(
                    "signature", f"alliance {name!r} version {version} approved by dissolved ME {me.name!r}", log
                )

    def _check_consents(self) -> None:
        """Each ME update carried its previous signer's EIP-712 consent (read from the transaction)."""
        if not self.consents:
            return
        txs = self.rpc.batch([("eth_getTransactionByHash", [log.tx]) for log, *_ in self.consents])
        for (log, me_id, payout, signer, nonce, previous), tx in zip(self.consents, txs, strict=True):
            data = _through_safe(bytes.fromhex((tx or {}).get("input", "0x")[2:]), self.ledger)
            if data[:4] != UPDATE_ME_SELECTOR:
                self.counts["consents_unverifiable"] += 1  # sent through another contract (a multisig)
                continue
            args = abi_decode(["uint32", "address", "address", "bytes"], data[4:])
            message = eip712.me_update_message(self.chain_id, self.ledger, me_id, payout, signer, nonce)
            recovered = eip712.recover(message, args[3])
            self.counts["consents"] += 1
            if recovered != previous and self._contract_signature(
                log, previous, message, bytes(args[3]), f"ME {self.mes[me_id].name!r}'s consent to signer {signer}",
                me_id=me_id,
            ):  # fmt: skip
                pass
            elif recovered != previous:
                name = self.mes[me_id].name
                self._find(
                    "signature",
                    f"ME {name!r} changed signer to {signer} with consent signed by {recovered}, not by its "
                    f"signer {previous}",
                    log,
                    me_id=me_id, recovered=recovered, signer=previous,
                )  # fmt: skip

    def _contract_signature(self, log, signer: str, message, signature: bytes, what: str, **values) -> bool:
        """For a signer with code: check its signature (a Safe's, offline) and report; True when handled
        here (verified, unverifiable or a finding), False for a key signer (the caller reports it)."""
        if not self.safes.is_contract(signer):
            return False
        verdict = self.safes.check(signer, eip712.digest(message), signature, log.block, log.index)
        if verdict.outcome == "verified":
            self.counts["contract_signatures"] += 1
        elif verdict.outcome == "unverifiable":
            self.counts["contract_signatures_unverifiable"] += 1
        else:
            self._find(
                "signature", f"{what} is not a valid signature of the Safe {signer} at that block: {verdict.reason}",
                log, signer=signer, **values,
            )  # fmt: skip
        return True

    # -- settlement ---------------------------------------------------------------------------------

    def _settled(self, log: Log, *, reversal: bool = False) -> None:
        """A batch of revenue events (or, with ``reversal``, of reversals: the same cursor and checks)."""
        a = log.args
        aid, version, first_seq = a["agreementId"], a["version"], a["firstSeq"]
        refs, entries = a["refs"], a["entries"]
        count = len(entries)
        self.counts["reversal_batches" if reversal else "batches"] += 1
        self.counts["reversals" if reversal else "events"] += count
        name = bytes32_to_text(aid)
        agreement = self.agreements.get(aid)
        if agreement is None:
            self._find("settlement", f"revenue settled for unknown alliance {name!r}", log, alliance=name)
            return
        token = self._token(agreement.token)
        last = first_seq + count - 1
        if agreement.status != "active" or version != agreement.active:
            state = agreement.status if agreement.status != "active" else f"version {agreement.active} in force"
            self._find(
                "settlement",
                f"alliance {name!r}: events {first_seq}..{last} settled under version {version} ({state})",
                log, alliance=name, version=version,
            )  # fmt: skip
        terms = agreement.versions.get(version)
        if terms is not None:
            dissolved = [self.mes[p].name for p in terms.parties if p in self.mes and not self.mes[p].active]
            if dissolved:
                self._find(
                    "settlement", f"alliance {name!r}: events {first_seq}..{last} credited dissolved {dissolved}", log
                )
        if first_seq != agreement.next_seq:
            what = "reuse" if first_seq < agreement.next_seq else "skip"
            self._find(
                "duplicate",
                f"alliance {name!r}: batch starts at sequence {first_seq}, the next free one was "
                f"{agreement.next_seq} ({what} of sequence numbers)",
                log, alliance=name, first_seq=first_seq, expected=agreement.next_seq,
            )  # fmt: skip
        agreement.next_seq = max(agreement.next_seq, first_seq + count)
        if len(refs) != count:
            self._find("settlement", f"alliance {name!r}: {len(refs)} references for {count} events", log)
        keys = [ref if ref.isascii() else _nfc_key(ref) for ref in refs]  # NFC and NFD are one reference
        # A revenue event's amount goes with its reference: the reversal links (kept on disk, checkpointed).
        amounts = None if reversal else [entries[k] >> 32 if k < count else None for k in range(len(refs))]
        for k, seen in self.references.add(keys, aid, first_seq, log.tx, log.block, amounts):
            ref = refs[k]
            self._find(
                "duplicate",
                f"reference {bytes32_to_text(ref)!r} credited twice: alliance {bytes32_to_text(seen[0])!r} sequence "
                f"{seen[1]} (block {seen[3]}) and alliance {name!r} sequence {first_seq + k}",
                log, reference=bytes32_to_text(ref), first_tx=seen[2], first_block=seen[3],
            )  # fmt: skip
        periods = self.periods
        total = 0
        for k, entry in enumerate(entries):
            amount, period = entry >> 32, entry & 0xFFFFFFFF
            total += amount
            if amount == 0 or amount > MAX_EVENT_AMOUNT or period == 0:
                self._find("settlement", f"alliance {name!r} sequence {first_seq + k}: invalid entry {entry}", log)
        for period in {entry & 0xFFFFFFFF for entry in entries}:
            state = periods.get((aid, period))
            if state is not None and state[1] is not None:
                self._find(
                    "closed-period",
                    f"alliance {name!r}: revenue settled into period {period}, closed at block {state[1]}",
                    log, alliance=name, period=period,
                )  # fmt: skip
        if reversal:
            self._links(log, agreement, name)
            token.reversed += total
        else:
            token.settled += total
        self.tx_batches[(aid, first_seq)] = (list(refs), list(entries))
        if terms is not None and not terms.problem:  # else there are no terms to recompute with (reported)

            def revenue_of(period: int) -> int:
                state = periods.get((aid, period))
                return state[0] if state else 0

            runs, after, recouped_after, agreement.recouped = recompute_batch(
                aid, version, terms, first_seq, entries, revenue_of,
                lambda period: self.period_recouped.get((aid, period), 0), agreement.recouped, reversal=reversal,
            )  # fmt: skip
            self.pending.extend(runs)
            for period, recouped in recouped_after.items():
                self.period_recouped[(aid, period)] = recouped
            if reversal:
                for period, revenue in after.items():
                    periods.setdefault((aid, period), [0, None])[0] = revenue
        if not reversal:
            for entry in entries:
                periods.setdefault((aid, entry & 0xFFFFFFFF), [0, None])[0] += entry >> 32
        elif terms is None or terms.problem:
            for entry in entries:
                state = periods.setdefault((aid, entry & 0xFFFFFFFF), [0, None])
                state[0] -= min(state[0], entry >> 32)

    def _reversed(self, log: Log) -> None:
        self._settled(log, reversal=True)

    def _links(self, log: Log, agreement: _Agreement, name: str) -> None:
        """What the contract does not store: each reversal reverses a revenue event settled before, of the
        same alliance, and the reversals of one event never add up to more than its amount."""
        a = log.args
        aid, first_seq = a["agreementId"], a["firstSeq"]
        for k, (ref, entry, original) in enumerate(zip(a["refs"], a["entries"], a["originals"], strict=False)):
            amount = entry >> 32
            what = f"alliance {name!r} reversal {bytes32_to_text(ref)!r} (sequence {first_seq + k})"
            values = {"reference": bytes32_to_text(ref), "original": bytes32_to_text(original)}
            key = original if original.isascii() else _nfc_key(original)  # as the references are keyed
            link = self.references.link(key)
            if link is None or link[1] is None:
                kind = "never settled" if link is None else "itself a reversal"
                self._find("reversal", f"{what} reverses {bytes32_to_text(original)!r}, {kind}", log, **values)
                continue
            link_aid, original_amount, _ = link
            if link_aid != aid:
                self._find("reversal", f"{what} reverses {bytes32_to_text(original)!r} of alliance "
                           f"{bytes32_to_text(link_aid)!r}", log, **values)  # fmt: skip
            total = self.references.add_reversed(key, amount)
            if total > original_amount:
                self._find("reversal", f"{what}: the reversals of {bytes32_to_text(original)!r} total {total}, "
                           f"more than its {original_amount}", log, reversed=total, amount=original_amount,
                           **values)  # fmt: skip

    def _run_of(self, log: Log, debit: bool):
        """The logged run, its terms and the recomputed run it must equal (None: reported here)."""
        run = credit_run(log.event, log.args)
        what = "debit" if debit else "credit"
        self.counts["debit_runs" if debit else "credit_runs"] += 1
        name = bytes32_to_text(run.agreement_id)
        agreement = self.agreements.get(run.agreement_id)
        terms = agreement.versions.get(run.version) if agreement else None
        if terms is None:
            self._find(what, f"{what}s for alliance {name!r} version {run.version}, which has no terms", log)
            return None
        n = len(terms.parties)
        if run.pair is not None:
            logged = [list(run.pair[0]), list(run.pair[1])]
        else:
            flat = list(run.flat)
            logged = [flat[t * n : (t + 1) * n] for t in range(len(flat) // n)] if n and len(flat) % n == 0 else None
        layout = len(terms.tier_names)
        if logged is None or len(logged) != layout or any(len(v) != n for v in logged) or (
            run.pair is not None
        ) == terms.by_tier:  # fmt: skip
            size = len(run.pair[0]) if run.pair is not None else len(run.flat)
            self._find(what, f"alliance {name!r}: {what}s for {size} parties or tiers, the terms have {n} parties "
                       f"and {layout} tiers ({log.event})", log)  # fmt: skip
            return None
        expected = None
        for i, pending in enumerate(self.pending):
            if (
                pending.agreement_id == run.agreement_id
                and pending.first_seq == run.first_seq
                and pending.debit == debit
            ):
                expected = self.pending.pop(i)
                break
        if expected is None and terms.problem:
            pass  # the version's terms are reported as unusable: its credits cannot be recomputed
        elif expected is None:
            self._find(what, f"alliance {name!r}: {what}s for sequence {run.first_seq}.. that match no "
                       f"{'reversal' if debit else 'settled revenue'}", log, alliance=name,
                       first_seq=run.first_seq)  # fmt: skip
        elif (expected.period, expected.version, expected.count, expected.logged_tiers()) != (
            run.period, run.version, run.count, logged,
        ):  # fmt: skip
            recomputed = expected.logged_tiers()
            differing = [
                f"{self._me_name(p)} {tier} {logged[t][i]} (recomputed {recomputed[t][i]})"
                for t, tier in enumerate(terms.tier_names)
                for i, p in enumerate(terms.parties)
                if t < len(recomputed) and logged[t][i] != recomputed[t][i]
            ]
            verb = "debited" if debit else "credited"
            self._find(
                what,
                f"alliance {name!r} period {run.period}, {'reversals' if debit else 'events'} {run.first_seq}.."
                f"{run.first_seq + run.count - 1}: {verb} {', '.join(differing) or 'a different run'}",
                log, alliance=name, period=run.period, first_seq=run.first_seq, count=run.count,
                **{f"{verb}_base": logged[0 if not terms.recoup else 1], f"{verb}_excess": logged[-1],
                   "recomputed_base": recomputed[0 if not terms.recoup else 1], "recomputed_excess": recomputed[-1],
                   f"{verb}_tiers": logged, "recomputed_tiers": recomputed},
            )  # fmt: skip
        return run, terms, logged, name

    def _credited(self, log: Log) -> None:
        found = self._run_of(log, debit=False)
        if found is None:
            return
        run, terms, logged, name = found
        token = terms.token
        totals = self._token(token)
        credited, payouts = self.credited, self.payouts
        nested = terms.nested_parties
        names = terms.tier_names
        for i, me_id in enumerate(terms.parties):
            total = sum(tier[i] for tier in logged)
            if me_id in nested:  # an alliance: its credit becomes one event of the inner alliance
                if total:
                    self.nested_owed[(run.agreement_id, run.first_seq, me_id)] = (total, run.period, nested[me_id],
                                                                                  token)  # fmt: skip
                continue
            for t, tier in enumerate(names):
                if logged[t][i]:
                    payouts[(name, run.period, me_id, tier)] += logged[t][i]
            totals.credited += total
            if total:
                credited[(me_id, token)] += total
                account = self.accounts[(me_id, token)]
                netted = min(account[1], total)
                account[0] += total - netted
                account[1] -= netted
                totals.netted += netted
                self._check_debt_log("netted", me_id, token, netted, log)

    def _nested(self, log: Log) -> None:
        self.counts["nested_events"] += 1
        self.nested_logged.append((log, nested_credit(log.args)))

    def _check_nested(self) -> None:
        """At the end of a transaction: every nested party's credit was passed on as one event of its inner
        alliance (the derived reference, the same amount and period, the inner's next sequence number), and
        nothing else was; the inner event was not paid in by finance (it is not counted as settled)."""
        owed = dict(self.nested_owed)
        for log, item in self.nested_logged:
            name = bytes32_to_text(item.agreement_id)
            key = (item.agreement_id, item.first_seq, item.me_id)
            what = (f"alliance {name!r} run {item.first_seq}, party {self._me_name(item.me_id)!r} -> alliance "
                    f"{bytes32_to_text(item.inner)!r} event {item.inner_seq}")  # fmt: skip
            expected = owed.pop(key, None)
            batch = self.tx_batches.get((item.inner, item.inner_seq))
            if expected is None:
                self._find("nested", f"{what}: {item.amount} passed on, but the run credited that party nothing", log)
            elif (expected[0], expected[2]) != (item.amount, item.inner):
                self._find("nested", f"{what}: {item.amount} passed on, the run credited {expected[0]} for "
                           f"alliance {bytes32_to_text(expected[2])!r}", log, logged=item.amount,
                           credited=expected[0])  # fmt: skip
            if batch is None or len(batch[1]) != 1:
                self._find("nested", f"{what}: no single revenue event of the inner alliance at that sequence", log)
            else:
                (ref,), (entry,) = batch
                period = expected[1] if expected else entry & 0xFFFFFFFF
                if ref != nested_reference(item.agreement_id, item.first_seq, item.me_id) or entry != (
                    item.amount << 32 | period
                ):  # fmt: skip
                    self._find("nested", f"{what}: the inner event has reference 0x{bytes(ref).hex()} and entry "
                               f"{entry}, not the derived reference and {item.amount} in period {period}",
                               log)  # fmt: skip
                agreement = self.agreements.get(item.inner)
                if agreement is not None:
                    self._token(agreement.token).settled -= item.amount  # paid in once, by the outer batch
        for (aid, first_seq, me_id), (amount, _, inner, _) in owed.items():
            self.findings.append(Finding(
                "nested", f"alliance {bytes32_to_text(aid)!r} run {first_seq} credited party "
                f"{self._me_name(me_id)!r} {amount}, which is an alliance ({bytes32_to_text(inner)!r}), and the "
                f"credit was not passed on", self.pending_block, self.pending_tx, {"amount": amount},
            ))  # fmt: skip
        self.nested_owed.clear()
        self.nested_logged.clear()
        self.tx_batches.clear()

    def _debited(self, log: Log) -> None:
        found = self._run_of(log, debit=True)
        if found is None:
            return
        run, terms, logged, name = found
        token = terms.token
        totals = self._token(token)
        for i, me_id in enumerate(terms.parties):
            debit = sum(tier[i] for tier in logged)
            totals.debited += debit
            if not debit:
                continue
            self.payouts[(name, run.period, me_id, "reversal")] -= debit
            account = self.accounts[(me_id, token)]
            covered = min(account[0], debit)
            account[0] -= covered
            account[1] += debit - covered
            totals.returned += covered
            totals.incurred += debit - covered
            self._check_debt_log("incurred", me_id, token, debit - covered, log)

    def _debt_logged(self, log: Log) -> None:
        kind = "incurred" if log.event == "DebtIncurred" else "netted"
        self.logged_debt[(kind, log.args["meId"], log.args["token"])] += log.args["amount"]

    def _check_debt_log(self, kind: str, me_id: int, token: str, expected: int, log: Log) -> None:
        """What the rule says this run incurs or nets for this ME; compared with the ``DebtIncurred`` /
        ``DebtNetted`` logs of the transaction when it ends (the contract may log them before or after
        the run's credit or debit event)."""
        if expected:
            self.expected_debt[(kind, me_id, token)] += expected

    def _flush_pending(self) -> None:
        self._check_nested()
        for key in list(dict.fromkeys([*self.expected_debt, *self.logged_debt])):
            kind, me_id, token = key
            logged, expected = self.logged_debt.get(key, 0), self.expected_debt.get(key, 0)
            if logged == expected:
                continue
            if expected:
                message = f"ME {self._me_name(me_id)!r}: debt {kind} {logged} base units, the rule gives {expected}"
            else:
                message = f"ME {self._me_name(me_id)!r}: debt {kind} {logged} base units that no run explains"
            self.findings.append(Finding("debt", message, self.pending_block, self.pending_tx,
                                         {"me_id": me_id, "token": token, "logged": logged,
                                          "expected": expected}))  # fmt: skip
        self.logged_debt.clear()
        self.expected_debt.clear()
        for run in self.pending:
            name = bytes32_to_text(run.agreement_id)
            last = run.first_seq + run.count - 1
            self.findings.append(
                Finding(
                    "credit",
                    f"alliance {name!r}: events {run.first_seq}..{last} of period {run.period} were settled but "
                    f"never {'debited' if run.debit else 'credited'}",
                    self.pending_block,
                    self.pending_tx,
                    {"alliance": name, "period": run.period},
                )
            )
        self.pending = []

    def _closed(self, log: Log) -> None:
        a = log.args
        aid, period, revenue = a["agreementId"], a["period"], a["revenue"]
        name = bytes32_to_text(aid)
        state = self.periods.setdefault((aid, period), [0, None])
        if state[1] is not None:
            first = state[1]
            self._find("closed-period", f"alliance {name!r} period {period} closed again (first at block {first})", log)
        if revenue != state[0]:
            self._find(
                "closed-period",
                f"alliance {name!r} period {period} closed with revenue {revenue}; its events sum to {state[0]}",
                log, alliance=name, period=period, logged=revenue, replayed=state[0],
            )  # fmt: skip
        state[1] = log.block
        self.counts["periods_closed"] += 1

    def _withdrawn(self, log: Log) -> None:
        a = log.args
        me_id, token, amount = a["meId"], a["token"], a["amount"]
        self.counts["withdrawals"] += 1
        self._token(token).withdrawn += amount
        me = self._me(me_id, log)
        self.withdrawn[(me_id, token)] += amount
        if me is None:
            return
        account = self.accounts[(me_id, token)]
        account[0] -= amount
        if account[0] < 0:
            self._find(
                "withdrawal",
                f"ME {me.name!r} withdrew {amount} base units of {token}, {-account[0]} more than its balance",
                log, me_id=me_id, amount=amount,
            )  # fmt: skip
        if a["to"] != me.payout:
            self._find("withdrawal", f"ME {me.name!r} was paid to {a['to']}, its payout address is {me.payout}", log)

    def _payout_skipped(self, log: Log) -> None:
        """A payout run could not pay the ME: nothing moved, so the ME must keep exactly its balance, and
        the address that refused must be its payout address in force."""
        a = log.args
        me_id, token, amount = a["meId"], a["token"], a["amount"]
        self.counts["payouts_skipped"] += 1
        me = self._me(me_id, log)
        if me is None:
            return
        balance = self.accounts[(me_id, token)][0]  # credits net of debts and debits, less withdrawals
        if amount != balance or amount == 0:
            self._find(
                "withdrawal",
                f"a payout run skipped ME {me.name!r} with {amount} base units of {token}; its balance is {balance}",
                log, me_id=me_id, logged=amount, replayed=balance,
            )  # fmt: skip
        if a["payout"] != me.payout:
            self._find(
                "withdrawal", f"a payout run tried to pay ME {me.name!r} at {a['payout']}, its payout address is "
                f"{me.payout}", log,
            )  # fmt: skip

    def _me_name(self, me_id: int) -> str:
        me = self.mes.get(me_id)
        return me.name if me else f"ME {me_id}"

    # -- conservation -------------------------------------------------------------------------------

    def _conservation(self, head: int) -> None:
        block = hex(head)
        me_ids = sorted(self.mes)
        tokens = list(self.tokens)
        try:
            (me_count,) = self._calls(block, [(self.ledger, "meCount()", [], [], "uint32")])
        except RpcError as err:
            if head == int(self.rpc.request("eth_blockNumber"), 16):
                raise
            raise ChainUnavailable(
                f"the node keeps no state for block {head} ({err}); audit at the head (LEDGER_CONFIRMATIONS=0) "
                f"or use a node that keeps recent states"
            ) from None
        if me_count != len(self.mes):
            raise ChainUnavailable(
                f"the logs from block {self.from_block} hold {len(self.mes)} of the ledger's {me_count} ME "
                f"registrations: start the audit at the ledger's deployment block (--from-block)"
            )
        calls = []
        for token in tokens:
            calls.append((self.ledger, "totalOwed(address)", ["address"], [token], "uint256"))
            calls.append((token, "balanceOf(address)", ["address"], [self.ledger], "uint256"))
            calls.append((self.ledger, "totalDebt(address)", ["address"], [token], "uint256"))
            calls += [(self.ledger, "balanceOf(uint32,address)", ["uint32", "address"], [m, token], "uint256")
                      for m in me_ids]  # fmt: skip
            calls += [(self.ledger, "debtOf(uint32,address)", ["uint32", "address"], [m, token], "uint256")
                      for m in me_ids]  # fmt: skip
        values = iter(self._calls(block, calls))
        for token in tokens:
            totals = self.tokens[token]
            totals.decimals, totals.symbol = self._token_info(token, block)
            totals.owed, totals.held, totals.debt = next(values), next(values), next(values)
            balances = [next(values) or 0 for _ in me_ids]
            debts = [next(values) or 0 for _ in me_ids]
            totals.balances, totals.debts = sum(balances), sum(debts)
            for me_id, balance, debt in zip(me_ids, balances, debts, strict=True):
                expected, expected_debt = self.accounts.get((me_id, token), (0, 0))
                name = self.mes[me_id].name
                if balance != expected:
                    self._find(
                        "conservation",
                        f"ME {name!r}: the ledger reports a balance of {self._units(balance, totals)}"
                        f" {totals.symbol}; credited - debited - withdrawn (debts netted) is "
                        f"{self._units(expected, totals)}",
                        None, me_id=me_id, token=token, reported=balance, expected=expected,
                    )  # fmt: skip
                if debt != expected_debt:
                    self._find(
                        "conservation",
                        f"ME {name!r}: the ledger reports a debt of {self._units(debt, totals)} {totals.symbol}; "
                        f"the replayed debits and credits give {self._units(expected_debt, totals)}",
                        None, me_id=me_id, token=token, reported=debt, expected=expected_debt,
                    )  # fmt: skip
                if balance and debt:
                    self._find("conservation", f"ME {name!r} has both a balance and a debt in {totals.symbol}",
                               None, me_id=me_id, token=token, balance=balance, debt=debt)  # fmt: skip
            self._token_checks(totals)

    def _token_checks(self, t: TokenTotals) -> None:
        def say(v):
            return f"{self._units(v, t)} {t.symbol}"

        if t.settled != t.credited:
            self._find("conservation", f"{t.symbol}: revenue settled {say(t.settled)}, credited {say(t.credited)}",
                       None, token=t.token, settled=t.settled, credited=t.credited)  # fmt: skip
        if t.reversed != t.debited:
            self._find("conservation", f"{t.symbol}: revenue reversed {say(t.reversed)}, debited {say(t.debited)}",
                       None, token=t.token, reversed=t.reversed, debited=t.debited)  # fmt: skip
        expected = t.credited - t.netted - t.returned - t.withdrawn
        if t.owed != expected:
            self._find("conservation", f"{t.symbol}: the ledger says it owes {say(t.owed)}; credited - netted - "
                       f"returned - withdrawn is {say(expected)}", None, token=t.token, owed=t.owed,
                       expected=expected)  # fmt: skip
        expected_debt = t.incurred - t.netted
        if t.debt != expected_debt or t.debts != t.debt:
            self._find("conservation", f"{t.symbol}: the ledger says its MEs owe {say(t.debt or 0)}; their debts sum "
                       f"to {say(t.debts or 0)}, incurred - netted is {say(expected_debt)}", None, token=t.token,
                       debt=t.debt, debts=t.debts, expected=expected_debt)  # fmt: skip
        if t.balances != t.owed:
            self._find("conservation", f"{t.symbol}: the MEs' balances sum to {say(t.balances)}, the ledger says it "
                       f"owes {say(t.owed)}", None, token=t.token, balances=t.balances, owed=t.owed)  # fmt: skip
        if t.held is None:
            self._find("conservation", f"the token {t.token} does not answer balanceOf(ledger): not an ERC-20",
                       None, token=t.token)  # fmt: skip
        elif t.held != t.owed:
            gap = t.held - t.owed
            what = "missing" if gap < 0 else "held beyond what is owed (sent without settlement)"
            self._find("conservation", f"{t.symbol}: the ledger holds {say(t.held)} and owes {say(t.owed)}: "
                       f"{say(abs(gap))} {what}", None, token=t.token, held=t.held, owed=t.owed)  # fmt: skip

    @staticmethod
    def _units(value: int, totals: TokenTotals) -> str:
        return format_amount(value, totals.decimals)

    def _calls(self, block: str, calls: list[tuple[str, str, list, list, str]]) -> list[Any]:
        requests = [
            ("eth_call", [{"to": to, "data": "0x" + (keccak(text=sig)[:4] + abi_encode(types, args)).hex()}, block])
            for to, sig, types, args, _ in calls
        ]
        results = self.rpc.batch(requests)
        return [_decoded(out, result) for (*_, out), result in zip(calls, results, strict=True)]

    def _token_info(self, token: str, block: str) -> tuple[int, str]:
        """A token's decimals and symbol for display (0 and its address when it lacks them)."""
        decimals, symbol = 0, token[:10]
        with contextlib.suppress(LedgerError, ValueError, OverflowError):
            decimals = self._calls(block, [(token, "decimals()", [], [], "uint8")])[0]
        with contextlib.suppress(LedgerError, ValueError, OverflowError):
            symbol = self._calls(block, [(token, "symbol()", [], [], "string")])[0]
        return decimals, symbol


def _block_hash(rpc, number: int) -> str | None:
    block = rpc.request("eth_getBlockByNumber", [hex(number), False])
    return block.get("hash") if block else None


SAFE_EXEC_SELECTOR = keccak(
    text="execTransaction(address,uint256,bytes,uint8,uint256,uint256,uint256,address,address,bytes)"
)[:4]


def _through_safe(data: bytes, ledger: str) -> bytes:
    """The call a Safe's ``execTransaction`` made to the ledger (the platform role held by a Safe), else
    ``data`` as it is. The Safe call ran: the ledger's log of it is what proves it; this only finds the
    consent's bytes in the transaction's input."""
    if data[:4] != SAFE_EXEC_SELECTOR:
        return data
    try:
        to, _, inner, operation, *_ = abi_decode(
            ["address", "uint256", "bytes", "uint8", "uint256", "uint256", "uint256", "address", "address", "bytes"],
            data[4:],
        )
    except Exception:  # noqa: BLE001 - not a well-formed execTransaction: left as it is
        return data
    return bytes(inner) if operation == 0 and to.lower() == ledger.lower() else data


def _decoded(kind: str, result: str):
    """An ``eth_call`` result, or None when it cannot be what was asked (e.g. no contract answered)."""
    try:
        return abi_decode([kind], bytes.fromhex(result[2:]))[0]
    except Exception:  # noqa: BLE001 - eth-abi raises several kinds for short or malformed data
        return None


def _jsonable(values: dict) -> dict:
    """Values for JSON: integers beyond 2**53 (what JavaScript reads exactly) as strings, bytes as hex."""

    def one(value):
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int):
            return str(value) if abs(value) > 2**53 else value
        if isinstance(value, bytes):
            return "0x" + value.hex()
        if isinstance(value, list | tuple):
            return [one(v) for v in value]
        return value

    return {key: one(value) for key, value in values.items()}


def audit(
    rpc, ledger: str, *, from_block: int = 0, page_size: int = DEFAULT_PAGE_SIZE, confirmations: int = 0
) -> AuditReport:
    """Audit the ledger at ``ledger`` through ``rpc`` (an :class:`ledger.chain.rpc.HttpRpc`), up to the
    block ``confirmations`` below the head."""
    return Auditor(rpc, ledger, from_block=from_block, page_size=page_size, confirmations=confirmations).run()


def _nfc_key(ref: bytes) -> bytes:
    """A non-ASCII reference keyed by its NFC form (bytes that are not UTF-8 as they are)."""
    try:
        text = bytes(ref).rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError:
        return ref
    return unicodedata.normalize("NFC", text).encode("utf-8").ljust(32, b"\0")
