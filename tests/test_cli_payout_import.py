"""`ledger me import`, `ledger alliance import` and `ledger payout run` end to end, against a real Anvil
started by `ledger chain up` (its own data folder and port), commands run in process."""

from __future__ import annotations

import json

import pytest
from eth_account import Account

from .cli_support import InProcessCLI, LedgerCLI, free_port, write_csv

Account.enable_unaudited_hdwallet_features()
MNEMONIC = "test test test test test test test test test test test junk"


def dev(i: int) -> str:
    """The checksummed address of Anvil's dev account ``dev{i}``."""
    return Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").address


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    sh = LedgerCLI(tmp_path_factory.mktemp("ledger-data"), free_port())
    sh.run("chain", "up")
    try:
        ledger = InProcessCLI(sh.data_dir, sh.port)
        ledger.run("deploy", "--json")
        ledger.run("token", "mint", "10000000")
        yield ledger
    finally:
        sh.run("chain", "down", ok=False)


def mes(cli) -> dict[str, dict]:
    return {m["name"]: m for m in json.loads(cli.run("me", "list", "--json").out)}


def test_me_import_registers_every_row_in_order_and_a_rerun_skips_them(cli, tmp_path):
    file = tmp_path / "mes.csv"
    file.write_text(
        "name,signer,payout,parent\n"
        f"hub,{dev(3)},,\n"
        f"washer,{dev(4)},{dev(8)},hub\n"
        f"dryer,{dev(5).lower()},{dev(9)},washer\n"
    )
    out = cli.run("me", "import", str(file)).out
    assert "registered 3 MEs; 0 were registered already" in out
    found = mes(cli)
    assert (found["hub"]["signer"], found["hub"]["payout"], found["hub"]["parent"]) == (dev(3), dev(3), 0)
    assert (found["washer"]["payout"], found["washer"]["parent"]) == (dev(8), found["hub"]["id"])
    assert (found["dryer"]["signer"], found["dryer"]["parent"]) == (dev(5), found["washer"]["id"])
    again = cli.run("me", "import", str(file)).out
    assert "registered 0 MEs; 3 were registered already (skipped)" in again
    assert len(mes(cli)) == len(found)
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text(json.dumps({"name": "iron", "signer": dev(6), "payout": dev(10), "parent": "hub"}) + "\n")
    assert "dry run: 1 ME would be registered" in cli.run("me", "import", str(jsonl), "--dry-run").out
    assert "iron" not in mes(cli)
    assert "registered 1 ME;" in cli.run("me", "import", str(jsonl)).out


def test_me_import_lists_every_bad_row_and_registers_nothing(cli, tmp_path):
    cli.run("me", "register", "kettle", "--signer", "dev7")
    before = len(mes(cli))
    bad_checksum = dev(3)[:2] + "".join(c.swapcase() if c.isalpha() else c for c in dev(3)[2:])
    file = write_csv(tmp_path / "bad.csv", [
        ("ok-one", dev(3), "", ""),
        ("", dev(3), "", ""),
        ("bad-sum", bad_checksum, "", ""),
        ("no-signer", "", "", ""),
        ("ok-one", dev(4), "", ""),
        ("orphan", dev(4), "", "nobody"),
        ("x" * 65, dev(4), "", ""),
        ("kettle", dev(8), "", ""),
        ("zero", "0x" + "00" * 20, "", ""),
    ], header="name,signer,payout,parent")  # fmt: skip
    err = cli.fails("me", "import", str(file), contains="row 3: name is missing")
    for expected in ("row 4: signer", "checksum", "row 5: signer is missing", "row 6: ME 'ok-one' is already in row 2",
                     "row 7: parent 'nobody'", "row 8: name:", "row 9: ME 'kettle' is registered",
                     "row 10: signer is the zero address"):  # fmt: skip
        assert expected in err, (expected, err)
    assert "row 2" not in err.replace("in row 2", "")
    assert len(mes(cli)) == before


def test_alliance_import_proposes_version_one_of_each_and_a_rerun_skips_them(cli, tmp_path):
    for name, signer in (("a-one", 11), ("a-two", 12), ("a-three", 13)):
        cli.run("me", "register", name, "--signer", f"dev{signer}")
    jsonl = tmp_path / "alliances.jsonl"
    jsonl.write_text(
        json.dumps({"name": "imp-flat", "parties": [{"me": "a-one", "share": 6000}, {"me": "a-two", "share": 4000}]})
        + "\n\n"
        + json.dumps(
            {
                "name": "imp-tier",
                "target": "1000.50",
                "parties": [
                    {"me": "a-one", "share": 5000, "excess": 2000},
                    {"me": "a-two", "share": "3000", "excess": 3000},
                    {"me": "a-three", "share": 2000, "excess": 5000},
                ],
            }
        )
        + "\n"  # fmt: skip
    )
    out = cli.run("alliance", "import", str(jsonl)).out
    assert "proposed 2 alliances (version 1); 0 existed already" in out
    tier = json.loads(cli.run("alliance", "show", "imp-tier", "--json").out)
    assert tier["versions"][0]["target"] == "1000.500000"
    assert [p["me"] for p in tier["versions"][0]["parties"]] == ["a-one", "a-two", "a-three"]
    assert (
        "proposed 0 alliances (version 1); 2 existed already (skipped)" in cli.run("alliance", "import", str(jsonl)).out
    )
    csv = write_csv(tmp_path / "alliances.csv", [
        ("imp-csv", "a-one", 2500, "", "", ""),
        ("imp-csv", "a-three", 7500, "", "", ""),
    ], header="alliance,party,share,excess,target,token")  # fmt: skip
    assert "proposed 1 alliance " in cli.run("alliance", "import", str(csv)).out
    changed = tmp_path / "changed.jsonl"
    parties = [{"me": "a-one", "share": 5000}, {"me": "a-two", "share": 5000}]
    changed.write_text(json.dumps({"name": "imp-flat", "parties": parties}) + "\n")
    cli.fails("alliance", "import", str(changed), contains="row 1: alliance 'imp-flat' exists with other terms")


def test_alliance_import_lists_every_bad_row_and_proposes_nothing(cli, tmp_path):
    for name, signer in (("b-one", 14), ("b-two", 15)):
        cli.run("me", "register", name, "--signer", f"dev{signer}")
    rows = [
        {"name": "bad-sum", "parties": [{"me": "b-one", "share": 6000}, {"me": "b-two", "share": 3000}]},
        {"name": "bad-me", "parties": [{"me": "b-one", "share": 6000}, {"me": "nobody", "share": 4000}]},
        {"name": "bad-tier", "target": "100",
         "parties": [{"me": "b-one", "share": 6000}, {"me": "b-two", "share": 4000}]},
        {"name": "one-party", "parties": [{"me": "b-one", "share": 10000}]},
        {"name": "x" * 33, "parties": [{"me": "b-one", "share": 5000}, {"me": "b-two", "share": 5000}]},
        {"name": "good", "parties": [{"me": "b-one", "share": 5000}, {"me": "b-two", "share": 5000}]},
        {"name": "good", "parties": [{"me": "b-one", "share": 5000}, {"me": "b-two", "share": 5000}]},
        {"name": "bad-token", "token": "0x1234",
         "parties": [{"me": "b-one", "share": 5000}, {"me": "b-two", "share": 5000}]},
    ]  # fmt: skip
    file = tmp_path / "bad.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    err = cli.fails("alliance", "import", str(file), contains="row 1: shares sum to 9000")
    for expected in ("row 2: party 'nobody' is no registered ME", "row 3: with a target every party needs an excess",
                     "row 4: alliance 'one-party' has 1 party", "row 5: name:",
                     "row 7: alliance 'good' is already in row 6",
                     "row 8: token", "row 9: not a JSON object"):  # fmt: skip
        assert expected in err, (expected, err)
    cli.fails("alliance", "show", "good", code=1)


def test_a_payout_run_pays_each_selected_me_at_its_payout_address_and_a_rerun_pays_nothing(cli, tmp_path):
    file = write_csv(tmp_path / "mes.csv", [
        ("p-one", dev(16), dev(17), ""),
        ("p-two", dev(18), dev(19), ""),
        ("p-three", dev(13), "", ""),
    ], header="name,signer,payout,parent")  # fmt: skip
    cli.run("me", "import", str(file))
    cli.run(
        "alliance", "propose", "pay-run", "--party", "p-one=5000", "--party", "p-two=3000", "--party", "p-three=2000"
    )
    cli.run("alliance", "sign", "pay-run", "--account", "dev16", "--account", "dev18", "--account", "dev13")
    cli.run("alliance", "submit", "pay-run")
    revenue = write_csv(
        tmp_path / "rev.csv", [("PR-1", "pay-run", "100.00", 202611), ("PR-2", "pay-run", "0.01", 202611)]
    )
    cli.run("settle", str(revenue))
    plan = json.loads(cli.run("payout", "run", "--alliance", "pay-run", "--dry-run", "--json").out)
    assert {m["me"]: (m["payout"], m["amount"]) for m in plan["mes"]} == {
        "p-one": (dev(17), "50.005000"), "p-two": (dev(19), "30.003000"), "p-three": (dev(13), "20.002000"),
    }  # fmt: skip
    assert plan["total"] == "100.010000"
    # --min leaves out the smaller balances; --me narrows to named MEs.
    big = json.loads(cli.run("payout", "run", "--alliance", "pay-run", "--min", "40", "--dry-run", "--json").out)
    assert [m["me"] for m in big["mes"]] == ["p-one"]
    out = cli.run("payout", "run", "--alliance", "pay-run", "--me", "p-two", "--account", "dev0").out
    assert "paid 1 ME 30.003000" in out
    out = cli.run("payout", "run", "--alliance", "pay-run", "--batch-size", "1").out
    assert "paid 2 MEs 70.007000" in out and "skipped 0" in out
    for name in ("p-one", "p-two", "p-three"):
        balances = json.loads(cli.run("me", "show", name, "--json").out)["balances"]
        assert all(float(v) == 0 for v in balances.values()), (name, balances)
    assert "nothing to pay" in cli.run("payout", "run", "--alliance", "pay-run").out
    assert "result: clean" in cli.run("audit").out
    cli.fails("payout", "run", "--me", "nobody", contains="--me: no ME named 'nobody'")


def test_hostile_import_files_are_refused_by_row_with_no_traceback_and_nothing_sent(cli, tmp_path):
    """A JSON integer too long to convert (it raised AttributeError), a header with no rows (it passed as
    0 MEs), a party field the file misspelt, a boolean share, and a token that is no ERC-20 (the import
    proposed alliances no revenue could ever be settled into, where `alliance propose --token` refuses)."""
    for name, signer in (("h-one", 16), ("h-two", 17)):
        cli.run("me", "register", name, "--signer", f"dev{signer}")
    count = len(mes(cli))
    huge = tmp_path / "huge.jsonl"
    huge.write_text('{"name": ' + "1" * 5000 + f', "signer": "{dev(3)}"}}\n')
    cli.fails("me", "import", str(huge), contains="row 1: not a JSON object (Exceeds the limit")
    cli.fails("alliance", "import", str(huge), contains="row 1: not a JSON object (Exceeds the limit")
    header = tmp_path / "header.csv"
    header.write_text("name,signer,payout,parent\n\n")
    cli.fails("me", "import", str(header), contains="the file has no rows after the header")
    assert len(mes(cli)) == count
    parties = [{"me": "h-one", "share": 5000}, {"me": "h-two", "share": 5000}]
    rows = [
        {"name": "h-typo", "parties": [{"me": "h-one", "share": 5000, "exces": 1}, parties[1]]},
        {"name": "h-bool", "parties": [{"me": "h-one", "share": True}, parties[1]]},
        {"name": "h-eoa", "token": dev(7), "parties": parties},
        {"name": "h-ledger", "token": cli.run("chain", "status", "--json").out and
         json.loads(cli.run("chain", "status", "--json").out)["deployments"][0]["ledger"], "parties": parties},
    ]  # fmt: skip
    file = tmp_path / "hostile.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    err = cli.fails("alliance", "import", str(file), contains="row 1: party 'h-one': unknown field exces")
    for expected in ("row 2: share of 'h-one' True must be whole basis points",
                     f"row 3: token {dev(7)}: no contract at this address", "row 4: token 0x",
                     "not an ERC-20", "4 problems; nothing was changed"):  # fmt: skip
        assert expected in err, (expected, err)
    for name in ("h-typo", "h-bool", "h-eoa", "h-ledger"):
        cli.fails("alliance", "show", name, code=1)
