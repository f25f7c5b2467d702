"""Payout statements as self-contained HTML: one per ME and period, for finance to send as they are.

Each statement has the ME, the period, a line per alliance and tier with its exact amount, the total,
and an inline SVG chart of the ME's payouts per period (the statement's period highlighted). No
external assets: styles are inline, there is no script, and it prints one statement per page.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from jinja2 import Environment, PackageLoader, select_autoescape

from ledger.money import format_amount, grouped
from ledger.names import shown
from ledger.terms import tier_label  # noqa: E402 - the tier words have one owner
from ledger.web import html_name
from ledger.web.charts import axis_label, bar_chart

SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass
class StatementLine:
    alliance: str
    tier: str
    token: str
    amount: int


@dataclass
class Statement:
    me: str
    me_id: int
    period: int
    lines: list[StatementLine]
    history: dict[str, dict[int, int]] = field(default_factory=dict)  # token -> period -> credited

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for line in self.lines:
            out[line.token] = out.get(line.token, 0) + line.amount
        return out

    def filename(self) -> str:
        """``statement-202611-fridge.html`` (``me<id>`` for a name that is not plain ASCII)."""
        name = self.me if SAFE_NAME.match(self.me) and self.me not in (".", "..") else f"me{self.me_id}"
        return f"statement-{self.period}-{name}.html"


def build(lines: Iterable, *, period: int | None = None) -> list[Statement]:
    """Statements per (ME, period) from :class:`ledger.services.reports.PayoutLine` objects, with each
    ME's history up to the statement's period for the chart. ``period``: only that period's statements
    (the history still comes from every line given)."""
    by_key: dict[tuple[int, int], Statement] = {}
    history: dict[int, dict[str, dict[int, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for line in lines:
        history[line.me_id][line.token][line.period] += line.amount
        if period is not None and line.period != period:
            continue
        statement = by_key.get((line.me_id, line.period))
        if statement is None:
            statement = by_key[(line.me_id, line.period)] = Statement(line.me, line.me_id, line.period, [])
        statement.lines.append(StatementLine(line.alliance, line.tier, line.token, line.amount))
    statements = sorted(by_key.values(), key=lambda s: (s.me.lower(), s.me_id, s.period))
    for s in statements:
        s.lines.sort(key=lambda item: (item.alliance, item.tier))
        s.history = {token: {p: v for p, v in sorted(per.items()) if p <= s.period}
                     for token, per in history[s.me_id].items() if s.totals().get(token)}  # fmt: skip
    return statements


@dataclass
class Context:
    """Where the figures come from, printed on every statement."""

    chain_id: int
    ledger: str
    block: int
    tokens: dict[str, tuple[str, int]]  # address -> (symbol, decimals)
    generated: datetime = field(default_factory=lambda: datetime.now(UTC))


def render(statements: list[Statement], context: Context, *, title: str | None = None) -> str:
    """One HTML document: a section (a printed page) per statement."""
    env = Environment(loader=PackageLoader("ledger.web", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["name"] = html_name
    env.filters["shown"] = shown

    def money(amount: int, token: str) -> str:
        return grouped(format_amount(amount, context.tokens.get(token, ("", 0))[1]))

    def symbol(token: str) -> str:
        return shown(context.tokens.get(token, (token[:10], 0))[0])

    def chart(statement: Statement, token: str):
        per = statement.history.get(token, {})
        if not per:
            return None
        periods = list(per)
        return bar_chart(
            [str(p) for p in periods], [("", list(per.values()))],
            label=axis_label(context.tokens.get(token, ("", 0))[1]),
            highlight=periods.index(statement.period) if statement.period in per else None,
            title=f"{shown(statement.me)}: payouts per period ({symbol(token)})", width=640, height=220,
        )  # fmt: skip

    if title is None:
        title = (f"Payout statement: {shown(statements[0].me)}, period {statements[0].period}" if len(statements) == 1
                 else f"Payout statements ({len(statements)})")  # fmt: skip
    return env.get_template("statement.html").render(
        statements=statements, c=context, title=title, money=money, symbol=symbol, chart=chart,
        tier=tier_label, generated=context.generated.strftime("%Y-%m-%d %H:%M UTC"),
    )  # fmt: skip
