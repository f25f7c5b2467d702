"""Teams from the ``ledger`` command, on a local chain with real Safe 1.4.1 contracts (issue 19):
an ME whose signer is a Safe signs an alliance owner by owner; a Safe holding the platform and finance
roles registers MEs, mints, settles a file exactly once (also after the client is killed mid-run) and
closes a period; the audit is clean and verifies the Safe signatures offline.

One chain for the module: `ledger safe create ops` first, then `ledger deploy --platform ops --finance
ops` (the roles held by a 2-of-3 Safe of dev1, dev13, dev14).
"""

from __future__ import annotations

import json
import signal
import time
from decimal import Decimal

import pytest

from ledger.chain.node import rpc

from .cli_support import InProcessCLI, LedgerCLI, free_port, write_csv

OPS = ("--safe", "ops", "--account", "dev1", "--account", "dev13")
SMALL_BATCHES = {"LEDGER_BATCH_GAS": "400000"}  # ~50 events per batch: many Safe transactions


@pytest.fixture(scope="module")
def sh(tmp_path_factory):
    ledger = LedgerCLI(tmp_path_factory.mktemp("ledger-data"), free_port())
    ledger.run("chain", "up")
    try:
        yield ledger
    finally:
        ledger.run("chain", "down", ok=False)


@pytest.fixture(scope="module")
def cli(sh):
    ledger = InProcessCLI(sh.data_dir, sh.port)
    out = ledger.run("safe", "create", "ops", "--owner", "dev1", "--owner", "dev13", "--owner", "dev14",
                     "--threshold", "2").out  # fmt: skip
    assert "2 of 3 owners" in out
    ledger.run("deploy", "--platform", "ops", "--finance", "ops")
    ledger.run("safe", "create", "fridge-team", "--owner", "dev3", "--owner", "dev4", "--owner", "dev5",
               "--threshold", "2")  # fmt: skip
    ledger.run("me", "register", "fridge", "--signer", "fridge-team", "--payout", "dev3", *OPS)
    ledger.run("me", "register", "oven", "--signer", "dev6", *OPS)
    return ledger


def head(cli) -> int:
    return int(rpc(f"http://127.0.0.1:{cli.port}", "eth_blockNumber"), 16)


def audit(cli) -> dict:
    result = cli.run("audit", "--format", "json", ok=False)
    assert result.code in (0, 1), result.text
    return json.loads(result.out)


def test_safe_show_reads_the_owners_and_threshold(cli):
    out = cli.run("safe", "show", "fridge-team").out
    assert "2 of 3 owners" in out and out.count("owner 0x") == 3


def test_a_role_held_by_a_safe_is_refused_without_enough_owners_and_nothing_is_mined(cli):
    before = head(cli)
    cli.fails("me", "register", "bakery", "--signer", "dev7", "--safe", "ops", "--account", "dev1",
              contains="1 owner account given")  # fmt: skip
    cli.fails("me", "register", "bakery", "--signer", "dev7", "--safe", "ops", "--account", "dev1",
              "--account", "dev7", contains="is not an owner of Safe 'ops'")  # fmt: skip
    cli.fails("me", "register", "bakery", "--signer", "dev7", contains="held by the Safe 'ops'")
    assert head(cli) == before


def test_a_team_signs_an_alliance_owner_by_owner_and_submit_waits_for_the_threshold(cli):
    cli.run("alliance", "propose", "deal", "--party", "fridge=4000", "--party", "oven=6000", "--account", "dev6")
    assert "fridge (as owner of its Safe)" in cli.run("alliance", "sign", "deal", "--account", "dev3").out
    cli.run("alliance", "sign", "deal", "--account", "dev6")
    cli.fails("alliance", "sign", "deal", "--account", "dev12", contains="nor an owner of a Safe")
    before = head(cli)
    cli.fails("alliance", "submit", "deal", "--account", "dev6", contains="1 of 2 owner signatures")
    assert head(cli) == before
    cli.run("alliance", "sign", "deal", "--account", "dev5")
    assert "is in force" in cli.run("alliance", "submit", "deal", "--account", "dev6").out


def test_a_safe_with_the_finance_role_settles_a_file_exactly_once_and_closes_the_period(cli, tmp_path):
    cli.run("token", "mint", "1000000", *OPS)
    rows = [(f"QUICK-{i:04d}", "deal", f"{(i % 89) + 1}.10", 202610) for i in range(150)]
    path = write_csv(tmp_path / "quick.csv", rows)
    first = json.loads(cli.run("settle", str(path), "--json", *OPS, env=SMALL_BATCHES).out)
    assert first["events_settled"] == len(rows) and first["batches"] > 1  # one Safe transaction per batch
    again = json.loads(cli.run("settle", str(path), "--json", *OPS).out)
    assert again["events_settled"] == 0 and again["events_skipped_already_settled"] == len(rows)
    assert "closed period 202610" in cli.run("period", "close", "deal", "202610", *OPS).out
    report = audit(cli)
    assert report["result"] == "clean", report["findings"]
    assert report["checked"]["contract_signatures"] >= 1


@pytest.mark.slow
def test_a_safe_with_the_finance_role_settles_exactly_once_also_after_a_killed_run(cli, sh, tmp_path):
    cli.run("token", "mint", "1000000", *OPS)
    rows = [(f"TEAM-{i:04d}", "deal", f"{(i % 97) + 1}.25", 202611) for i in range(600)]
    path = write_csv(tmp_path / "team.csv", rows)
    settled_before = json.loads(cli.run("alliance", "show", "deal", "--json").out)["events_settled"]
    start = head(cli)
    proc = sh.popen("settle", str(path), *OPS, env={**SMALL_BATCHES, "LEDGER_TX_WINDOW": "1"})
    deadline = time.monotonic() + 120
    while head(cli) < start + 3 and proc.poll() is None:  # approvals, then the first Safe batches
        assert time.monotonic() < deadline, "no batch landed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    summary = json.loads(sh.run("settle", str(path), "--json", *OPS, env=SMALL_BATCHES).out)
    assert 0 < summary["events_skipped_already_settled"] < len(rows)  # the killed run settled some, not all
    assert summary["events_settled"] + summary["events_skipped_already_settled"] == len(rows)
    assert summary["batches"] > 1  # one Safe transaction per batch
    again = json.loads(sh.run("settle", str(path), "--json", *OPS).out)
    assert again["events_settled"] == 0 and again["events_skipped_already_settled"] == len(rows)
    shown = json.loads(cli.run("alliance", "show", "deal", "--json").out)
    assert shown["events_settled"] == settled_before + len(rows)
    credited = json.loads(cli.run("payouts", "--alliance", "deal", "--period", "202611", "--format", "json").out)
    assert sum(Decimal(p["amount"]) for p in credited["payouts"]) == sum(Decimal(r[2]) for r in rows)
    assert "closed period 202611" in cli.run("period", "close", "deal", "202611", *OPS).out
    report = audit(cli)
    assert report["result"] == "clean", report["findings"]
    assert report["checked"]["contract_signatures"] >= 1


def test_owner_signatures_travel_between_machines_and_a_safe_consents_to_an_me_update(cli, tmp_path):
    import shutil

    cli.run("alliance", "propose", "deal-2", "--party", "fridge=5000", "--party", "oven=5000", "--account", "dev6")
    other = InProcessCLI(tmp_path / "owner-machine", cli.port)
    shutil.copytree(cli.data_dir / "deployments", other.data_dir / "deployments")
    other.run("alliance", "sign", "deal-2", "--account", "dev4")  # an owner of fridge-team, elsewhere
    exported = tmp_path / "sigs.txt"
    exported.write_text(other.run("alliance", "export-signatures", "deal-2").out)
    out = cli.run("alliance", "import-signature", "deal-2", "--file", str(exported)).out
    assert "fridge (owner" in out
    cli.run("alliance", "sign", "deal-2", "--account", "dev3", "--account", "dev6")
    assert "is in force" in cli.run("alliance", "submit", "deal-2", "--account", "dev6").out
    # the Safe consents to a new payout for fridge: two owners, sent by the Safe holding the platform role
    before = head(cli)
    cli.fails("me", "update", "fridge", "--payout", "dev9", "--consent-by", "dev3", *OPS,
              contains="1 of 2 owner signatures")  # fmt: skip
    assert head(cli) == before
    cli.run("me", "update", "fridge", "--payout", "dev9", "--consent-by", "dev3", "--consent-by", "dev5", *OPS)
    shown = json.loads(cli.run("me", "show", "fridge", "--json").out)
    assert shown["payout"] == "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"  # dev9
    report = audit(cli)
    assert report["result"] == "clean", report["findings"]
    assert report["checked"]["contract_signatures"] >= 3  # two activations and a consent
