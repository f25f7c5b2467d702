"""Payout reports, read from the chain's ``PartiesCredited`` logs (never from local state)."""

from __future__ import annotations

from collections import defaultdict

from ledger.models import Model, bytes32_to_text


class PayoutLine(Model):
    """What one ME was credited by one alliance in one period, below or above the target."""

    alliance: str
    period: int
    me_id: int
    me: str
    tier: str  # "base" (up to the period target) or "excess" (above it)
    token: str
    amount: int  # base units


def payouts(
    chain,
    *,
    from_block: int = 0,
    me: str | None = None,
    alliance: str | None = None,
    period: int | None = None,
    page_size: int | None = None,
) -> list[PayoutLine]:
    """Credits per (alliance, period, ME, tier), optionally filtered, sorted for reading."""
    topic1 = [chain.agreement_id(alliance)] if alliance else None
    kwargs = {"page_size": page_size} if page_size else {}
    totals: dict[tuple[bytes, int, int, str], int] = defaultdict(int)
    terms_cache: dict[tuple[bytes, int], object] = {}
    for log in chain.logs(["PartiesCredited"], from_block=from_block, topic1=topic1, **kwargs):
        args = log.args
        if period is not None and args["period"] != period:
            continue
        key = (args["agreementId"], args["version"])
        if key not in terms_cache:
            terms_cache[key] = chain.terms_of(*key)
        parties = terms_cache[key].parties
        for tier, credits in (("base", args["baseCredits"]), ("excess", args["excessCredits"])):
            for me_id, amount in zip(parties, credits, strict=True):
                if amount:
                    totals[(args["agreementId"], args["period"], me_id, tier)] += amount
    names = {m.id: m.name for m in chain.mes()} if totals else {}
    tokens = {aid: terms.token for (aid, _), terms in terms_cache.items()}
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
    return sorted(lines, key=lambda line: (line.alliance, line.period, line.me_id, line.tier))
