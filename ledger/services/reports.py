"""Payout reports, read from the chain's ``PartiesCredited`` and ``PartiesDebited`` logs (never from local
state)."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from ledger.models import Model, bytes32_to_text
from ledger.terms import CREDIT_EVENTS, DEBIT_EVENTS, CreditRun, credit_run, tier_order

if TYPE_CHECKING:
    from ledger.chain.reader import LedgerReader


class PayoutLine(Model):
    """What one ME was credited by one alliance in one period, below or above the target."""

    alliance: str
    period: int
    me_id: int
    me: str
    # "recoup" (paying the investment back), "base" (up to the first target), "excess" (above the one
    # target) or "band N" (from target N, with several), or "reversal" (debited: negative)
    tier: str
    token: str
    amount: int  # base units; negative for a reversal line


def payouts(
    chain,
    *,
    from_block: int = 0,
    to_block: int | None = None,
    me: str | None = None,
    alliance: str | None = None,
    period: int | None = None,
    page_size: int | None = None,
) -> list[PayoutLine]:
    """Credits per (alliance, period, ME, tier), optionally filtered, sorted for reading. ``to_block``
    (default: the head) leaves out blocks that are not yet final: pass head - confirmation depth."""
    topic1 = [chain.agreement_id(alliance)] if alliance else None
    kwargs = {"page_size": page_size} if page_size else {}
    # One pass over the logs, keeping the runs per (agreement, version, period); the parties and tiers of
    # each version are resolved afterwards, all versions at once. Debits (reversals) are summed apart, as
    # one negative "reversal" line per ME. Nested parties are alliances: what they were credited went on
    # to their inner alliance (whose own credit logs give its parties' lines), so they get no line.
    runs: dict[tuple[bytes, int, int], list[CreditRun]] = defaultdict(list)
    names_ = [*CREDIT_EVENTS, *DEBIT_EVENTS]
    for log in chain.logs(names_, from_block=from_block, to_block=to_block, topic1=topic1, **kwargs):
        if period is not None and log.args["period"] != period:
            continue
        run = credit_run(log.event, log.args)
        runs[(run.agreement_id, run.version, run.period)].append(run)
    terms_of = chain.terms_of_many([(aid, version) for aid, version, _ in runs], from_block=from_block)
    totals: dict[tuple[bytes, int, int, str], int] = defaultdict(int)
    for (aid, version, p), items in runs.items():
        terms = terms_of[(aid, version)]
        nested = terms.nested_parties
        for run in items:
            for tier, credits in run.tiers(terms).items():
                for me_id, amount in zip(terms.parties, credits, strict=True):
                    if amount and me_id not in nested:
                        totals[(aid, p, me_id, "reversal" if run.debit else tier)] += -amount if run.debit else amount
    names = {m.id: m.name for m in chain.mes_by_id(sorted({me_id for _, _, me_id, _ in totals}))}
    tokens = {aid: terms.token for (aid, _), terms in terms_of.items()}
    lines = [
        PayoutLine(
            alliance=bytes32_to_text(aid),
            period=p,
            me_id=me_id,
            me=names.get(me_id, str(me_id)),
            tier=tier,
            token=tokens[aid],
            amount=amount,
        )
        for (aid, p, me_id, tier), amount in totals.items()
    ]
    if me is not None:
        lines = [line for line in lines if line.me == me]
    return sorted(lines, key=lambda line: (line.alliance, line.period, line.me_id, tier_order(line.tier)))


class BalanceRow(Model):
    me_id: int
    me: str
    status: str
    token: str
    balance: int
    debt: int = 0  # what the ME owes finance from reversals (netted from its next credits)


class ConservationCheck(Model):
    """For one token: what the ledger holds, what it says it owes, and the sum of the ME balances;
    what the MEs owe finance (``totalDebt``) and the sum of their debts."""

    token: str
    held: int
    owed: int
    sum_of_balances: int
    debt: int = 0
    sum_of_debts: int = 0

    @property
    def ok(self) -> bool:
        return self.held == self.owed == self.sum_of_balances and self.debt == self.sum_of_debts


class BalanceReport(Model):
    model_config = {"frozen": False}

    rows: list[BalanceRow]
    checks: list[ConservationCheck]


def settlement_tokens(chain: LedgerReader, *, from_block: int = 0) -> list[str]:
    """Every token any agreement version names, from the ``AgreementProposed`` logs."""
    tokens: dict[str, None] = {}
    for log in chain.logs(["AgreementProposed"], from_block=from_block):
        tokens.setdefault(log.args["terms"][0], None)
    return list(tokens)


def balances(chain: LedgerReader, *, from_block: int = 0, extra_tokens: list[str] = ()) -> BalanceReport:
    """Every ME's balance in every settlement token, and the conservation check per token."""
    tokens = list(dict.fromkeys([*settlement_tokens(chain, from_block=from_block), *extra_tokens]))
    mes = chain.mes()
    rows = []
    checks = []
    for token in tokens:
        total = total_debts = 0
        ids = [me.id for me in mes]
        debts = chain.views([("debtOf", (me_id, token)) for me_id in ids]) if ids else []
        for me, amount, debt in zip(mes, chain.balances_of(ids, token), debts, strict=True):
            total += amount
            total_debts += debt
            if amount or debt:
                rows.append(
                    BalanceRow(
                        me_id=me.id, me=me.name, status=me.status.name.lower(), token=token, balance=amount, debt=debt
                    )  # fmt: skip
                )
        checks.append(
            ConservationCheck(
                token=token,
                held=chain.token_balance(token, chain.address),
                owed=chain.total_owed(token),
                sum_of_balances=total,
                debt=chain.total_debt(token),
                sum_of_debts=total_debts,
            )
        )
    rows.sort(key=lambda r: (r.me_id, r.token))
    return BalanceReport(rows=rows, checks=checks)
