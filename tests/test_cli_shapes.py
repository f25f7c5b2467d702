"""Bands, recoup first and nested alliances through the ``ledger`` command on the local chain, as a user
types them (issue 18): propose with ``--band``/``--recoup``/``--nested``, what a signer is shown, ``show``,
the ``settle --dry-run`` preview equal to what is then credited, ``payouts`` with a tier per band and
"recoup", the dashboard data, and a clean ``audit``; bad input refused in one line naming the flag.

One chain for the module (its own data folder and port); each test uses its own alliance names.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import defaultdict
from decimal import Decimal

import pytest

from . import test_cli_agreements as agreements
from .cli_support import free_port, write_csv

KITCHEN = agreements.KITCHEN
# The fixtures of test_cli_agreements: a chain of this module's own (module-scoped, so built again here),
# deployed, the kitchen MEs registered, finance funded.
sh = agreements.sh
cli = agreements.cli
head = agreements.head
ALIASES = {name: alias for name, alias in KITCHEN}


def put_in_force(cli, name: str, *args: str, signers=None) -> str:
    """Propose, sign with every party, submit; returns what the first signer was shown."""
    cli.run("alliance", "propose", name, *args)
    shown = cli.run("alliance", "sign", name, "--account", (signers or ["dev3"])[0]).out
    rest = [a for alias in (signers or [alias for _, alias in KITCHEN])[1:] for a in ("--account", alias)]
    if rest:
        cli.run("alliance", "sign", name, *rest)
    cli.run("alliance", "submit", name)
    return shown


def payouts(cli, name: str) -> dict[tuple[str, str], Decimal]:
    """What each ME was credited per tier by alliance ``name`` (all periods)."""
    report = json.loads(cli.run("payouts", "--alliance", name, "--format", "json").out)
    totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for p in report["payouts"]:
        totals[(p["me"], p["tier"])] += Decimal(p["amount"])
    return dict(totals)


def preview(cli, path) -> dict[tuple[str, str, str], Decimal]:
    """What the dry run says each ME will be credited per alliance and tier (all periods)."""
    rows = json.loads(cli.run("settle", str(path), "--dry-run", "--json").out)["credits"]
    totals: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for r in rows:
        for tier, value in r["tiers"].items():
            if Decimal(value):
                totals[(r["alliance"], r["me"], tier)] += Decimal(value)
    return dict(totals)


def test_three_bands_and_a_recoup_from_proposal_to_payouts_and_a_clean_audit(cli, tmp_path):
    shown = put_in_force(
        cli, "bands", "--party", "fridge=4000", "--party", "oven=3000", "--party", "recipe-app=1500",
        "--party", "logistics=1500", "--band", "1000:fridge=2500,oven=2500,recipe-app=4000,logistics=1000",
        "--band", "2000:fridge=1000,oven=1000,recipe-app=4000,logistics=4000",
        "--band", "3000:fridge=0,oven=0,recipe-app=5000,logistics=5000",
        "--recoup", "500", "--recoup-share", "fridge=7000", "--recoup-share", "oven=3000",
    )  # fmt: skip
    assert "bands per period (every period starts from zero): base up to 1000.000000" in shown
    assert "band 3 from 3000.000000" in shown and "recoup first: 500.000000" in shown
    assert "party fridge: 40% base, 25% band 1, 10% band 2, 0% band 3, 70% of the recoup" in shown
    version = json.loads(cli.run("alliance", "show", "bands", "--json").out)["versions"][0]
    assert version["bands"] == ["1000.000000", "2000.000000", "3000.000000"] and version["recoup"] == "500.000000"
    # 400 all to the recoup; 1,900: 100 recoup then 1,800 banded (base 1000, band 1 800); next period from zero.
    path = write_csv(
        tmp_path / "bands.csv",
        [
            ("B-1", "bands", "400", 202611),
            ("B-2", "bands", "1900", 202611),
            ("B-3", "bands", "2500.5", 202611),
            ("B-4", "bands", "1200", 202612),
        ],
    )
    predicted = preview(cli, path)
    table = cli.run("settle", str(path), "--dry-run").out
    assert "recoup (investment paid back)" in table and "band 3 (above target 3)" in table
    cli.run("settle", str(path))
    paid = payouts(cli, "bands")
    assert "band 2 (above target 2)" in cli.run("payouts", "--alliance", "bands").out
    assert {(me, tier): v for (_, me, tier), v in predicted.items()} == paid
    assert sum(paid.values()) == Decimal("6000.5")
    assert paid[("fridge", "recoup")] == Decimal("350") and paid[("oven", "recoup")] == Decimal("150")
    assert {tier for _, tier in paid} == {"recoup", "base", "band 1", "band 2", "band 3"}
    assert paid[("logistics", "band 3")] == Decimal("650.25")  # 202611 banded: 4,300.5 -> 1,300.5 above 3,000
    text = cli.run("alliance", "show", "bands").out
    assert "recoup 500.000000" in text and "(500.000000" in text and "paid back so far)" in text
    report = json.loads(cli.run("audit", "--format", "json").out)
    assert report["result"] == "clean", report["findings"]


def test_a_nested_alliance_passes_its_credit_on_in_the_same_settlement_and_the_audit_agrees(cli, tmp_path):
    put_in_force(cli, "nodes", "--party", "oven=6000", "--party", "logistics=4000", signers=["dev4", "dev6"])
    shown = put_in_force(cli, "platform", "--party", "fridge=5000", "--party", "recipe-app=5000",
                         "--target", "100", "--excess", "fridge=2000", "--excess", "recipe-app=8000",
                         "--nested", "recipe-app=nodes", signers=["dev3", "dev5"])  # fmt: skip
    assert "(an alliance: goes on to alliance 'nodes', split by its own terms)" in shown
    parties = json.loads(cli.run("alliance", "show", "platform", "--json").out)["versions"][0]["parties"]
    assert [p["alliance"] for p in parties] == [None, "nodes"]
    text = cli.run("alliance", "show", "platform").out
    assert "an alliance: goes on to" in text and "nodes" in text
    path = write_csv(tmp_path / "nested.csv", [("P-1", "platform", "80", 202611), ("P-2", "platform", "70", 202611)])
    predicted = preview(cli, path)
    table = cli.run("settle", str(path), "--dry-run").out
    assert "recipe-app -> nodes" in table and "nodes (via platform)" in table
    before = head(cli)
    out = cli.run("settle", str(path)).out
    assert head(cli) == before + 2  # one approval, one settlement transaction (the inner split inside it)
    assert "2" in out
    platform, nodes = payouts(cli, "platform"), payouts(cli, "nodes")
    assert ("recipe-app", "base") not in platform  # an alliance is not paid as an ME
    assert sum(platform.values()) + sum(nodes.values()) == Decimal("150")  # paid in once, all credited
    assert {(me, t): v for (a, me, t), v in predicted.items() if a == "platform" and me != "recipe-app"} == platform
    assert {(me, t): v for (a, me, t), v in predicted.items() if a == "nodes"} == nodes
    report = json.loads(cli.run("audit", "--format", "json").out)
    assert report["result"] == "clean", report["findings"]
    assert report["checked"]["nested_events"] == 1


def test_the_dashboard_shows_every_band_the_recoup_progress_and_which_parties_are_alliances(sh, cli):
    # The alliances "bands" and "platform" come from the tests above (module order).
    port = free_port()
    proc = sh.popen("dashboard", "--port", str(port), "--refresh", "0")
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "api/overview", timeout=60) as response:
                    overview = json.loads(response.read())
                with urllib.request.urlopen(url, timeout=60) as response:
                    page = response.read().decode()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    alliances = {a["name"]: a for a in overview["alliances"]}
    bands = alliances["bands"]
    assert [b["amount"] for b in bands["bands"]] == ["1000.000000", "2000.000000", "3000.000000"]
    assert bands["recoup"]["recouped"]["amount"] == "500.000000" and bands["recoup"]["progress"] == "100%"
    period = next(p for p in bands["periods"] if p["period"] == 202611)
    assert [b["progress"] for b in period["bands"]] == ["430.05%", "215.02%", "143.35%"]  # banded 4,300.5
    assert [p["alliance"] for p in alliances["platform"]["parties"]] == [None, "nodes"]
    assert 'data-band="3"' in page and "investment paid back" in page and 'data-alliance-party="nodes"' in page


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--band", "0:fridge=5000,oven=5000"), "--band 1 '0:fridge=5000,oven=5000': the target must be above 0"),
        (("--band", "100"), "--band 1 '100': expected TARGET:ME=BPS,ME=BPS,..."),
        (
            ("--band", "200:fridge=5000,oven=5000", "--band", "100:fridge=5000,oven=5000"),
            "--band 2: the targets must be above 0 and ascending (100000000 after 200000000)",
        ),
        (("--band", "100:fridge=5000,oven=4000"), "--band 1: shares sum to 9000 basis points"),
        (("--recoup", "10"), "--recoup needs --recoup-share"),
        (("--recoup-share", "fridge=10000"), "--recoup-share needs --recoup"),
        (("--recoup", "-1", "--recoup-share", "fridge=10000"), "--recoup"),
        (("--nested", "fridge=no-such-alliance"), "--nested: no alliance named 'no-such-alliance'"),
        (("--nested", "recipe-app=bands"), "--nested 'recipe-app=bands': ME 'recipe-app' is not a --party"),
        (("--target", "5", "--excess", "fridge=10000", "--band", "9:fridge=10000"), "--target/--excess is one band"),
    ],
)
def test_bad_shape_flags_are_refused_in_one_line_naming_the_flag_and_nothing_is_sent(cli, args, message):
    before = head(cli)
    cli.fails("alliance", "propose", "bad-shape", "--party", "fridge=5000", "--party", "oven=5000", *args,
              contains=message)  # fmt: skip
    assert head(cli) == before
