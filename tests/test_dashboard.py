"""``ledger dashboard`` in a real browser, and ``ledger payouts --format html``, against the demo.

The module runs ``ledger demo`` on a chain of its own (a free port, its own data folder), then settles a
second, smaller month so the charts have two periods and the target is half reached. The dashboard runs
as a subprocess; Playwright drives Debian's Chromium (``/usr/bin/chromium``, installed by ``make
browser``; Playwright never downloads a browser here). Without Chromium the browser test is skipped
locally and fails in CI (``CI=true``): a browser test that silently skips in CI would prove nothing.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
import urllib.request
from collections import defaultdict
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ledger.chain.node import rpc
from ledger.cli.demo import MES, PERIOD, TARGET_PER_EVENT

from .cli_support import InProcessCLI, LedgerCLI, free_port, write_csv

pytestmark = pytest.mark.http_node(
    "runs `ledger demo` on a node started by `ledger chain up`, and the dashboard server"
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
SCREENSHOT = Path(__file__).parent / "artifacts" / "dashboard.png"
EVENTS = 400
TARGET = Decimal(EVENTS * TARGET_PER_EVENT)  # the demo's monthly target: 100 per generated event
DECEMBER = 202612
DECEMBER_ROWS = [
    ("SK-202612-1", "smart-kitchen", "12000.50", DECEMBER),
    ("SK-202612-2", "smart-kitchen", "9000", DECEMBER),
]
DECEMBER_REVENUE = Decimal("21000.50")


def browser_or_skip():
    """Chromium and Playwright, or a skip with the reason (a failure in CI)."""
    problem = None
    if not Path(CHROMIUM).exists():
        problem = f"Chromium is not installed at {CHROMIUM} (`make browser` installs Debian's chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "playwright is not installed (pip install -e '.[dev]')"
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem}: the browser test must run in CI")
        pytest.skip(problem)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The smart-kitchen demo (400 events in 202611) and 2 events in 202612, on a chain of its own."""
    sh = LedgerCLI(tmp_path_factory.mktemp("dashboard-demo"), free_port())
    try:
        sh.run("demo", "--events", str(EVENTS))
        cli = InProcessCLI(sh.data_dir, sh.port)
        yield sh, cli
    finally:
        sh.run("chain", "down", ok=False)


def settle_december(cli, tmp_path) -> None:
    cli.run("token", "mint", "100000")
    cli.run("settle", str(write_csv(tmp_path / "dec.csv", DECEMBER_ROWS)))


@pytest.fixture(scope="module")
def dashboard(demo):
    """``ledger dashboard`` as a subprocess; yields its URL."""
    sh, _ = demo
    port = free_port()
    proc = sh.popen("dashboard", "--port", str(port), "--refresh", "0")
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "api/overview", timeout=30) as response:
                    assert response.status == 200
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise AssertionError(f"the dashboard did not start:\n{proc.communicate()[1]}") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def amount(text: str) -> Decimal:
    """'19,615.006000 ATD' -> Decimal('19615.006000')."""
    return Decimal(re.sub(r"[^0-9.]", "", text))


def test_the_dashboard_shows_the_chain_as_it_is_and_never_sends(demo, dashboard, tmp_path):
    browser_or_skip()
    from playwright.sync_api import sync_playwright

    sh, cli = demo
    node = f"http://127.0.0.1:{sh.port}"
    requested: list[str] = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        try:
            page = context.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(dashboard)
            # Before December: one settlement run, period 202611 above its target.
            assert page.locator("#runs tbody tr").count() == 1
            current = page.locator('[data-alliance="smart-kitchen"] .current')
            assert current.get_attribute("data-period") == str(PERIOD)

            block = int(rpc(node, "eth_blockNumber"), 16)
            settle_december(cli, tmp_path)
            assert int(rpc(node, "eth_blockNumber"), 16) > block
            page.reload()  # every load reads the chain again
            block = int(rpc(node, "eth_blockNumber"), 16)
            report = json.loads(cli.run("payouts", "--format", "json").out)

            # The audit: clean, up to the head.
            audit = page.locator("#audit")
            assert audit.get_attribute("data-result") == "clean"
            assert "clean" in audit.inner_text()
            assert int(audit.get_attribute("data-to-block")) == block

            # The alliance: status, parties and shares (the demo's terms), both tiers.
            card = page.locator('[data-alliance="smart-kitchen"]')
            assert "in force" in card.locator("[data-status]").inner_text()
            rows = card.locator("table.parties tbody tr")
            shown = [[c.strip() for c in rows.nth(i).locator("td").all_inner_texts()] for i in range(rows.count())]
            expected = [[name, f"{share // 100}%", f"{excess // 100}%"] for name, _, share, excess in MES]
            assert shown == expected
            assert amount(card.locator("[data-target-text]").inner_text()) == TARGET

            # Period revenue against the target: December is the current period, 52.5% of 40,000.
            current = card.locator(".current")
            assert current.get_attribute("data-period") == str(DECEMBER)
            assert amount(current.locator("[data-revenue-text]").inner_text()) == DECEMBER_REVENUE
            assert current.locator("[data-progress]").inner_text() == "52.5%"
            assert page.locator(".progress > div").first.get_attribute("style") == "width: 52.5%"
            by_period = defaultdict(Decimal)
            for line in report["payouts"]:
                by_period[line["period"]] += Decimal(line["amount"])
            for period, revenue in by_period.items():
                cell = card.locator(f'table.periods tr[data-period="{period}"] td').nth(1)
                assert amount(cell.inner_text()) == revenue
            assert by_period[DECEMBER] == DECEMBER_REVENUE and by_period[PERIOD] > TARGET

            # Every ME's total equals `ledger payouts --format json`, and so does each period's cell.
            totals = {t["me"]: Decimal(t["amount"]) for t in report["totals_by_me"]}
            assert set(totals) == {name for name, *_ in MES}
            for me, total in totals.items():
                row = page.locator(f'#payouts tr[data-me="{me}"]')
                assert amount(row.locator("td.total").inner_text()) == total
                per_period = defaultdict(Decimal)
                for line in report["payouts"]:
                    if line["me"] == me:
                        per_period[line["period"]] += Decimal(line["amount"])
                for period, value in per_period.items():
                    assert amount(row.locator(f'td[data-period="{period}"]').inner_text()) == value
            grand = sum(Decimal(t["amount"]) for t in report["totals"].values())
            assert amount(page.locator("#revenue-total").inner_text()) == grand

            # Recent runs, newest first: December's 2 events, then the demo's 400.
            runs = page.locator("#runs tbody tr")
            assert [runs.nth(i).get_attribute("data-events") for i in range(runs.count())] == ["2", str(EVENTS)]
            assert amount(runs.nth(0).locator("td").nth(5).inner_text()) == DECEMBER_REVENUE
            assert page.locator("#revenue-chart svg rect").count() >= 2  # a bar per period
            assert page.locator("#payout-chart svg rect title").count() == 8  # 4 MEs x 2 periods

            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            context.close()
    # Read-only and offline: nothing but the dashboard was fetched, and no block was mined by the loads.
    assert requested and all(url.startswith(dashboard) for url in requested), requested
    assert int(rpc(node, "eth_blockNumber"), 16) == block


def test_the_dashboard_json_matches_the_payouts(demo, dashboard):
    _, cli = demo
    with urllib.request.urlopen(dashboard + "api/overview", timeout=60) as response:
        data = json.loads(response.read())
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    report = json.loads(cli.run("payouts", "--format", "json").out)
    assert {m["me"]: m["total"]["amount"] for m in data["mes"]} == {
        t["me"]: t["amount"] for t in report["totals_by_me"]
    }
    assert data["audit"]["result"] == "clean"
    (alliance,) = data["alliances"]
    assert [(p["me"], p["share_bps"], p["excess_bps"]) for p in alliance["parties"]] == [
        (name, share, excess) for name, _, share, excess in MES
    ]
    assert Decimal(alliance["target"]["amount"]) == TARGET


def test_a_taken_dashboard_port_is_one_line(demo):
    sh, _ = demo
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        sh.fails("dashboard", "--port", str(taken.getsockname()[1]), contains="is taken by another program")


class Statements(HTMLParser):
    """Statement sections and their amounts, from the HTML `ledger payouts --format html` writes."""

    def __init__(self):
        super().__init__()
        self.sections: list[dict] = []
        self.row: str | None = None
        self.tags: set[str] = set()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "section" and "statement" in a.get("class", ""):
            self.sections.append({"me": a["data-me"], "period": int(a["data-period"]), "lines": 0, "total": 0})
        elif tag == "tr":
            self.row = "total" if "total" in a.get("class", "") else "line" if "line" in a.get("class", "") else None
        elif tag == "td" and "data-base-units" in a and self.row:
            section = self.sections[-1]
            section["lines" if self.row == "line" else "total"] += int(a["data-base-units"])


def parse(text: str) -> Statements:
    parser = Statements()
    parser.feed(text)
    return parser


def test_html_statements_equal_the_json_per_me_and_period(demo, tmp_path):
    _, cli = demo
    settle_december(cli, tmp_path)  # settled once, whichever test comes first
    report = json.loads(cli.run("payouts", "--format", "json").out)
    expected = defaultdict(int)
    for line in report["payouts"]:
        expected[(line["me"], line["period"])] += int(line["amount_base_units"])
    assert len(expected) == 8  # 4 MEs x 2 periods

    everything = tmp_path / "all.html"
    assert "wrote 8 payout statements" in cli.run("payouts", "--format", "html", "-o", str(everything)).out
    doc = parse(everything.read_text())
    assert {(s["me"], s["period"]): s["total"] for s in doc.sections} == dict(expected)
    assert all(s["lines"] == s["total"] for s in doc.sections)
    # Self-contained: no script, no stylesheet or image fetched, nothing linked.
    assert not doc.tags & {"script", "link", "img", "iframe"} and doc.urls == []
    assert "@media print" in everything.read_text() and "<svg" in everything.read_text()

    one = parse(cli.run("payouts", "--format", "html", "--me", "fridge", "--period", str(PERIOD)).out)
    assert [(s["me"], s["period"]) for s in one.sections] == [("fridge", PERIOD)]
    fridge = json.loads(cli.run("payouts", "--format", "json", "--me", "fridge", "--period", str(PERIOD)).out)
    assert one.sections[0]["total"] == int(fridge["totals_by_me"][0]["amount_base_units"])

    folder = tmp_path / "statements"
    cli.run("payouts", "--format", "html", "--period", str(DECEMBER), "--output-dir", str(folder))
    files = sorted(p.name for p in folder.iterdir())
    assert files == sorted(f"statement-{DECEMBER}-{name}.html" for name, *_ in MES)
    for path in folder.iterdir():
        (section,) = parse(path.read_text()).sections
        assert section["total"] == expected[(section["me"], DECEMBER)]
    cli.fails("payouts", "--format", "csv", "--output-dir", str(folder), code=2, contains="--output-dir")
