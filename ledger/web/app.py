"""The transparency view: a read-only Flask app over :mod:`ledger.services.overview`.

``create_app(load)`` takes a function that returns a fresh :class:`~ledger.services.overview.Overview`
(the CLI's reads the chain on every call, reusing the last read while the final block is the same). The
app has GET routes only, holds no keys and sends nothing; its pages load nothing from elsewhere (a
Content-Security-Policy forbids it: styles and charts are inline, there is no script).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from flask import Flask, Response, jsonify, render_template

from ledger.money import BPS, grouped, percent
from ledger.names import shown
from ledger.services.overview import Overview
from ledger.web import html_name
from ledger.web.api import overview_json
from ledger.web.charts import axis_label, bar_chart

PERIOD_COLUMNS = 6  # the ME table shows the latest periods; the JSON has every one
TOP_MES = 8  # the payout chart draws the MEs paid most, the rest as one "others" series
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def create_app(load: Callable[[], Overview], *, refresh: int = 30) -> Flask:
    app = Flask(__name__)
    app.json.sort_keys = False
    app.jinja_env.filters["name"] = html_name
    app.jinja_env.filters["shown"] = shown

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/")
    def index():
        try:
            overview = load()
        except Exception as err:  # noqa: BLE001 - the page says what is wrong; the server keeps running
            return render_template("unavailable.html", error=_one_line(err), refresh=refresh or 10), 503
        return render_template("dashboard.html", o=overview, v=DashboardView(overview), refresh=refresh)

    @app.get("/api/overview")
    def api():
        try:
            overview = load()
        except Exception as err:  # noqa: BLE001
            return jsonify({"error": _one_line(err)}), 503
        return jsonify(overview_json(overview))

    return app


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())[:300] or err.__class__.__name__


def utc(timestamp: int | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class DashboardView:
    """What the template needs beyond the overview: formatted amounts and the charts."""

    def __init__(self, overview: Overview):
        self.o = overview
        self.percent = percent
        self.utc = utc

    def money(self, amount: int, token: str) -> str:
        return grouped(self.o.token(token).units(amount))

    def symbol(self, token: str) -> str:
        return shown(self.o.token(token).symbol)

    @property
    def period_columns(self) -> list[int]:
        return self.o.periods[-PERIOD_COLUMNS:]

    @property
    def any_debt(self) -> bool:
        """Whether any ME owes finance from reversals (the debt column is shown then)."""
        return any(m.debt for m in self.o.mes)

    @property
    def tokens(self) -> list[str]:
        return list(self.o.totals())

    def bar_width(self, progress_bps: int | None) -> str:
        """CSS width of a progress bar, capped at 100% (exact, from basis points)."""
        return percent(min(progress_bps or 0, BPS))

    def revenue_chart(self, token: str):
        periods = self.o.periods
        by_period = self.o.revenue_by_period(token)
        names = sorted({name for values in by_period.values() for name in values})
        series = [(name, [by_period.get(p, {}).get(name, 0) for p in periods]) for name in names]
        if not periods or not series:
            return None
        return bar_chart([str(p) for p in periods], series, stacked=True,
                         label=axis_label(self.o.token(token).decimals),
                         title=f"Revenue per period ({self.symbol(token)}), by alliance")  # fmt: skip

    def payout_chart(self, token: str):
        periods = self.o.periods
        mes = [m for m in self.o.mes if m.token == token]  # sorted by total, largest first
        if not periods or not mes:
            return None
        series = [(m.me, [m.by_period.get(p, 0) for p in periods]) for m in mes[:TOP_MES]]
        rest = mes[TOP_MES:]
        if rest:
            series.append((f"{len(rest)} others", [sum(m.by_period.get(p, 0) for m in rest) for p in periods]))
        return bar_chart([str(p) for p in periods], series, label=axis_label(self.o.token(token).decimals),
                         title=f"Payouts per ME and period ({self.symbol(token)})")  # fmt: skip
