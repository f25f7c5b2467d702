"""The transparency view's data (ledger.services.overview) on the test chain, the batched views, the
SVG charts, the HTML statements and the Flask app (with a fake overview: no chain)."""

from __future__ import annotations

import itertools
import re
from decimal import Decimal

import ape
import pytest

from ledger.models import RevenueEvent
from ledger.money import grouped, percent
from ledger.services.overview import (
    Alliance,
    AuditStatus,
    LiveOverview,
    MEPayouts,
    Overview,
    Party,
    Period,
    SettlementTx,
    Token,
    gather,
    recent_runs,
)
from ledger.services.reports import PayoutLine, payouts
from ledger.services.settlement import Settler
from ledger.web import statements
from ledger.web.api import overview_json
from ledger.web.charts import bar_chart, nice_step

from .helpers import UNIT

NOV, DEC = 202611, 202612
UNIQUE = itertools.count()  # alliance names of their own per test: nothing relies on the chain being reverted


def events(alliance, period, amounts, prefix):
    return [RevenueEvent(reference=f"{prefix}-{i}", alliance=alliance, amount=a, period=period, row=i + 2)
            for i, a in enumerate(amounts)]  # fmt: skip


@pytest.fixture
def history(ledger, funded, make_alliance):
    """One alliance with a target crossed in November (closed) and half reached in December, one without
    a target; three settlement transactions. Returns the ledger and the two alliance names."""
    n = next(UNIQUE)
    kitchen_name, delivery_name = f"ov-kitchen-{n}", f"ov-delivery-{n}"
    make_alliance(kitchen_name, {"fridge": 4000, "oven": 3000, "recipe-app": 1500, "logistics": 1500},
                  target=1_000 * UNIT,
                  excess={"fridge": 3000, "oven": 2500, "recipe-app": 3000, "logistics": 1500})  # fmt: skip
    make_alliance(delivery_name, {"oven": 2000, "logistics": 8000})
    settler = Settler(ledger, funded)
    settler.run(events(kitchen_name, NOV, [700 * UNIT, 500 * UNIT, 3], f"k11-{n}"))  # crosses the target
    ledger.close_period(ledger.agreement_id(kitchen_name), NOV, sender=funded)
    settler.run(events(kitchen_name, DEC, [250 * UNIT, 250 * UNIT], f"k12-{n}"))
    settler.run(events(delivery_name, DEC, [99 * UNIT + 1], f"d12-{n}"))
    return ledger, kitchen_name, delivery_name


def test_gather_shows_alliances_periods_payouts_runs_and_a_clean_audit(history, kitchen):
    ledger, kitchen_name, delivery_name = history
    head = ape.chain.blocks.height
    overview = gather(ledger, from_block=0, to_block=head, audit_rpc=ledger.rpc)
    by_name = {a.name: a for a in overview.alliances}
    kitchen_view, delivery = by_name[kitchen_name], by_name[delivery_name]

    assert kitchen_view.status == "in force" and kitchen_view.active_version == 1
    assert [(p.me, p.share_bps, p.excess_bps) for p in kitchen_view.parties] == [
        ("fridge", 4000, 3000), ("oven", 3000, 2500), ("recipe-app", 1500, 3000), ("logistics", 1500, 1500)
    ]  # fmt: skip
    assert kitchen_view.target == 1_000 * UNIT and kitchen_view.events == 5
    nov, dec = kitchen_view.periods
    assert (nov.period, nov.revenue, nov.closed, nov.progress_bps) == (NOV, 1_200 * UNIT + 3, True, 12_000)
    assert (dec.period, dec.revenue, dec.closed, dec.progress_bps) == (DEC, 500 * UNIT, False, 5_000)
    assert kitchen_view.current is dec
    assert delivery.target == 0 and delivery.periods[0].progress_bps is None
    assert [p.excess_bps for p in delivery.parties] == [None, None]

    # Per ME and period: exactly what `payouts` reports (the credits add up to the revenue).
    lines = payouts(ledger, from_block=0, to_block=head)
    for me in overview.mes:
        mine = [line for line in lines if line.me == me.me]
        assert me.total == sum(line.amount for line in mine)
        assert me.balance == ledger.balance_of(me.me_id, me.token)
        for period, value in me.by_period.items():
            assert value == sum(line.amount for line in mine if line.period == period)
    token = ledger.token.address
    assert overview.totals()[token]["revenue"] == overview.totals()[token]["credited"]  # credits add up exactly
    december = overview.revenue_by_period(token)[DEC]
    assert (december[kitchen_name], december[delivery_name]) == (500 * UNIT, 99 * UNIT + 1)

    # Runs: newest first, with their events and revenue; the block time is read.
    assert [(r.alliances, r.events, r.amounts[token]) for r in overview.runs[:3]] == [
        ([delivery_name], 1, 99 * UNIT + 1), ([kitchen_name], 2, 500 * UNIT), ([kitchen_name], 3, 1_200 * UNIT + 3),
    ]  # fmt: skip
    assert all(r.timestamp for r in overview.runs)
    assert overview.audit.clean and overview.audit.to_block == head

    data = overview_json(overview)
    (row,) = [a for a in data["alliances"] if a["name"] == kitchen_name]
    assert row["periods"][0]["revenue"] == {"amount": "1200.000003", "base_units": str(1_200 * UNIT + 3)}
    assert row["periods"][0]["progress"] == "120%" and row["parties"][0]["share"] == "40%"
    assert kitchen["fridge"] in {m["me_id"] for m in data["mes"]}


def test_recent_runs_read_back_only_as_far_as_needed(history):
    ledger, kitchen_name, delivery_name = history
    ape.chain.mine(600)  # settlement far below the head: the first windows are empty
    head = ape.chain.blocks.height
    token_of = {ledger.agreement_id(n): ledger.token.address for n in (kitchen_name, delivery_name)}
    pages = ledger.log_reader.pages
    latest = recent_runs(ledger, token_of, from_block=0, to_block=head, limit=1)
    few = ledger.log_reader.pages - pages
    assert [r.alliances for r in latest] == [[delivery_name]]
    pages = ledger.log_reader.pages
    every = recent_runs(ledger, token_of, from_block=0, to_block=head, limit=100)
    mine = [r for r in every if set(r.alliances) <= {kitchen_name, delivery_name}]
    assert len(mine) == 3 and ledger.log_reader.pages - pages >= few
    assert few <= 3  # windows of 256, 512, ... blocks: the last settlement is found in a few pages


def test_views_are_read_in_one_batched_round_trip(history, kitchen):
    ledger, *_ = history
    views = ledger.batch_views()
    calls = [(ledger.address, "balanceOf", [me_id, ledger.token.address]) for me_id in kitchen.values()] * 10
    before = views.rpc.calls
    values = views.call(calls)
    assert views.rpc.calls - before == 1
    assert values[:4] == [ledger.balance_of(me_id, ledger.token.address) for me_id in kitchen.values()]
    decimals, symbol = views.call(
        [(ledger.token.address, "erc20.decimals", []), (ledger.token.address, "erc20.symbol", [])]
    )
    assert (decimals, symbol) == (6, "ATD")


def test_live_overview_reads_again_only_when_the_chain_moved(history, funded):
    ledger, _, delivery_name = history
    live = LiveOverview(ledger, ledger.rpc, from_block=0, audit=False, recent=1000)
    first = live()
    assert live() is first and live.reads == 1
    Settler(ledger, funded).run(events(delivery_name, DEC, [5], f"{delivery_name}-late"))
    second = live()
    assert live.reads == 2 and second is not first
    assert sum(r.events for r in second.runs) == sum(r.events for r in first.runs) + 1


# -- no chain below -------------------------------------------------------------------------------


def test_percent_and_grouping_are_exact():
    assert [percent(b) for b in (10_000, 4_000, 1_250, 5, 12_001)] == ["100%", "40%", "12.5%", "0.05%", "120.01%"]
    assert grouped("1234567.500000") == "1,234,567.500000" and grouped("999") == "999"
    assert grouped("-1000.5") == "-1,000.5"


def test_nice_steps_and_charts_use_integers_and_escape_names():
    assert [nice_step(v) for v in (0, 4, 9, 40_000, 52_050_020_000)] == [1, 1, 5, 10_000, 20_000_000_000]
    svg = str(bar_chart(["202611", "202612"], [("<b>me</b>", [3, 1]), ("x", [0, 2])], label=str))
    assert "<b>me</b>" not in svg and "&lt;b&gt;me&lt;/b&gt;" in svg
    numbers = re.findall(r' (?:x|y|x1|x2|y1|y2|width|height)="([^"]+)"', svg)
    assert numbers and all(n.lstrip("-").isdigit() for n in numbers)  # whole pixels, no floats


def overview_fixture() -> Overview:
    token = "0x" + "ab" * 20
    alliance = Alliance("smart-kitchen", "in force", 1, 1, 1, token, 40_000 * UNIT,
                        [Party(2, "fridge", 4000, 3000), Party(3, "<oven>", 6000, 7000)], 3,
                        [Period(NOV, 52_050_020_000, True, 40_000 * UNIT), Period(DEC, 21_000_500_000, False,
                                                                                    40_000 * UNIT)])  # fmt: skip
    mes = [MEPayouts(2, "fridge", "active", token, {NOV: 19_615_006_000, DEC: 1}, 19_615_006_001, 5),
           MEPayouts(3, "<oven>", "dissolved", token, {NOV: 7}, 7, 0)]  # fmt: skip
    runs = [SettlementTx("0x" + "12" * 32, 9, 0, ["smart-kitchen"], 2, {token: 21_000_500_000}, 1_795_000_000)]
    return Overview(31337, "0x" + "cd" * 20, 1, 10, 1_795_000_000, {token: Token(token, "ATD", 6)}, [alliance],
                    mes, [NOV, DEC], runs, AuditStatus(False, 2, {"credit": 2}, 1, 10))  # fmt: skip


def test_the_page_renders_exact_amounts_escaped_names_and_no_outside_resources():
    from ledger.web.app import create_app

    client = create_app(overview_fixture, refresh=0).test_client()
    page = client.get("/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert "19,615.006001" in html and "52.5%" in html and "130.12%" in html
    assert "&lt;oven&gt;" in html and "<oven>" not in html
    assert 'data-result="findings"' in html and "credit 2" in html
    assert not re.search(r"<(script|link|img)\b", html) and "http-equiv" not in html
    assert client.post("/").status_code == 405  # read-only: no route accepts a write
    data = client.get("/api/overview").get_json()
    assert data["mes"][0]["total"] == {"amount": "19615.006001", "base_units": "19615006001"}
    assert Decimal(data["alliances"][0]["periods"][1]["revenue"]["amount"]) == Decimal("21000.5")


def test_a_chain_that_does_not_answer_is_a_503_page_not_a_crash():
    from ledger.errors import ChainUnavailable
    from ledger.web.app import create_app

    def down():
        raise ChainUnavailable("no JSON-RPC node answers at http://127.0.0.1:1")

    client = create_app(down).test_client()
    page = client.get("/")
    assert page.status_code == 503 and "no JSON-RPC node answers" in page.get_data(as_text=True)
    assert client.get("/api/overview").status_code == 503


def test_statements_group_per_me_and_period_with_history_up_to_the_period():
    token = "0x" + "ab" * 20
    rows = [("k", NOV, 2, "fridge", "base", 10), ("k", NOV, 2, "fridge", "excess", 5),
            ("d", DEC, 2, "fridge", "base", 7), ("k", DEC, 9, "ö/../x", "base", 1)]  # fmt: skip
    lines = [
        PayoutLine(alliance=a, period=p, me_id=m, me=n, tier=t, token=token, amount=v) for a, p, m, n, t, v in rows
    ]
    built = statements.build(lines)
    assert [(s.me, s.period, s.totals()[token]) for s in built] == [("fridge", NOV, 15), ("fridge", DEC, 7),
                                                                     ("ö/../x", DEC, 1)]  # fmt: skip
    assert built[1].history == {token: {NOV: 15, DEC: 7}} and built[0].history == {token: {NOV: 15}}
    assert [s.filename() for s in built] == ["statement-202611-fridge.html", "statement-202612-fridge.html",
                                             "statement-202612-me9.html"]  # fmt: skip
    only = statements.build(lines, period=DEC)
    assert [(s.me, s.period) for s in only] == [("fridge", DEC), ("ö/../x", DEC)]
    html = statements.render(only, statements.Context(31337, "0x" + "cd" * 20, 10, {token: ("ATD", 6)}))
    assert html.count('class="statement"') == 2 and "0.000007" in html and "<svg" in html
