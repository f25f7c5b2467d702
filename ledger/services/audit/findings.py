"""The audit's report: a :class:`Finding` per disagreement, :class:`TokenTotals` per token, the
:class:`AuditReport`, and what each kind of finding means."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledger.money import format_amount

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
