"""The transparency view's JSON (``GET /api/overview``): an :class:`~ledger.services.overview.Overview`
as plain data, amounts as exact decimal strings in token units and as base-unit strings."""

from __future__ import annotations

from ledger.money import percent
from ledger.services.overview import Overview


def overview_json(overview: Overview) -> dict:
    """JSON-ready: amounts as exact decimal strings in token units and as base-unit strings."""

    def money(amount: int, token: str) -> dict:
        return {"amount": overview.token(token).units(amount), "base_units": str(amount)}

    return {
        "chain_id": overview.chain_id,
        "ledger": overview.ledger,
        "blocks": {"from": overview.from_block, "to": overview.to_block},
        "timestamp": overview.timestamp,
        "tokens": {a: {"symbol": t.symbol, "decimals": t.decimals} for a, t in overview.tokens.items()},
        "totals": {tok: {k: money(v, tok) for k, v in t.items()} for tok, t in overview.totals().items()},
        "alliances": [
            {
                "name": a.name, "status": a.status, "active_version": a.active_version,
                "latest_version": a.latest_version, "shown_version": a.shown_version, "token": a.token,
                "symbol": overview.token(a.token).symbol,
                "target": money(a.target, a.token) if a.target else None, "events": a.events,
                "bands": [money(t, a.token) for t in a.bands],
                "recoup": None if not a.recoup else {
                    **money(a.recoup, a.token), "recouped": money(a.recouped, a.token),
                    "progress": percent(a.recoup_progress_bps)},
                "parties": [
                    {"me": p.me, "me_id": p.me_id, "share_bps": p.share_bps, "share": percent(p.share_bps),
                     "excess_bps": p.excess_bps,
                     "excess": None if p.excess_bps is None else percent(p.excess_bps),
                     "band_bps": p.band_bps, "recoup_bps": p.recoup_bps, "alliance": p.alliance}
                    for p in a.parties
                ],
                "periods": [
                    {"period": p.period, "revenue": money(p.revenue, a.token), "closed": p.closed,
                     "target": money(p.target, a.token) if p.target else None,
                     "progress": None if p.progress_bps is None else percent(p.progress_bps),
                     "recouped": money(p.recouped, a.token),
                     "bands": [{"target": money(t, a.token), "progress": percent(bps)}
                               for t, bps in p.band_progress]}
                    for p in a.periods
                ],
            }
            for a in overview.alliances
        ],
        "mes": [
            {"me": m.me, "me_id": m.me_id, "status": m.status, "token": m.token,
             "symbol": overview.token(m.token).symbol, "total": money(m.total, m.token),
             "balance": money(m.balance, m.token), "debt": money(m.debt, m.token),
             "by_period": {str(p): money(v, m.token) for p, v in sorted(m.by_period.items())}}
            for m in overview.mes
        ],
        "periods": overview.periods,
        "runs": [
            {"tx": r.tx, "block": r.block, "timestamp": r.timestamp, "alliances": r.alliances, "events": r.events,
             "amounts": [{**money(v, tok), "token": tok, "symbol": overview.token(tok).symbol}
                         for tok, v in r.amounts.items()]}
            for r in overview.runs
        ],
        "audit": None if overview.audit is None else {
            "result": "error" if overview.audit.clean is None else "clean" if overview.audit.clean else "findings",
            "findings": overview.audit.findings, "by_kind": overview.audit.by_kind,
            "blocks": {"from": overview.audit.from_block, "to": overview.audit.to_block},
            "error": overview.audit.error,
        },
    }  # fmt: skip
