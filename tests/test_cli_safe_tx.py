"""Roles held by a Safe for `me import` and `payout run`, and Safe transactions signed on several
machines (issue 19): `--export FILE`, `ledger safe sign FILE` by each owner in their own data folder,
`ledger safe exec FILE`; every hostile file refused with one line and nothing mined.

One chain for the module: `ledger safe create ops` (2 of 3: dev1, dev13, dev14), then `ledger deploy
--platform ops --finance ops`.
"""

from __future__ import annotations

import json
import shutil
import signal
import time

import pytest
from eth_account import Account

from ledger.chain import safe as safe_lib
from ledger.chain.node import rpc

from .cli_support import InProcessCLI, LedgerCLI, free_port, write_csv

OPS = ("--safe", "ops", "--account", "dev1", "--account", "dev13")
MNEMONIC = "test test test test test test test test test test test junk"  # the local chain's dev accounts
Account.enable_unaudited_hdwallet_features()


def dev_key(index: int):
    return Account.from_mnemonic(MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


@pytest.fixture(scope="module")
def sh(tmp_path_factory):
    ledger = LedgerCLI(tmp_path_factory.mktemp("safe-tx-data"), free_port())
    ledger.run("chain", "up")
    try:
        yield ledger
    finally:
        ledger.run("chain", "down", ok=False)


@pytest.fixture(scope="module")
def cli(sh):
    ledger = InProcessCLI(sh.data_dir, sh.port)
    ledger.run("safe", "create", "ops", "--owner", "dev1", "--owner", "dev13", "--owner", "dev14",
               "--threshold", "2")  # fmt: skip
    ledger.run("deploy", "--platform", "ops", "--finance", "ops")
    return ledger


def owner_machine(cli, tmp_path, name: str) -> InProcessCLI:
    """Another owner's machine: its own data folder, with the deployment record only (no Safe names)."""
    other = InProcessCLI(tmp_path / name, cli.port)
    shutil.copytree(cli.data_dir / "deployments", other.data_dir / "deployments")
    return other


def head(cli) -> int:
    return int(rpc(f"http://127.0.0.1:{cli.port}", "eth_blockNumber"), 16)


def safe_nonce(cli) -> int:
    return json.loads(cli.run("safe", "show", "ops", "--json").out)["nonce"]


def me_rows(prefix: str, n: int, first_signer: int = 0x1000) -> list[tuple]:
    rows = []
    for i in range(n):
        signer = "0x" + f"{first_signer + i:040x}"
        parent = f"{prefix}-{i - 1:03d}" if i % 10 else ""  # chains of parents within the file
        rows.append((f"{prefix}-{i:03d}", signer, "", parent))
    return rows


def me_file(tmp_path, prefix: str, n: int, first_signer: int = 0x1000):
    return write_csv(tmp_path / f"{prefix}.csv", me_rows(prefix, n, first_signer), header="name,signer,payout,parent")


def me_names(cli) -> list[str]:
    return [m["name"] for m in json.loads(cli.run("me", "list", "--json").out)]


def test_a_safe_holding_the_platform_role_imports_mes_one_safe_transaction_per_batch_and_once(cli, tmp_path):
    path = me_file(tmp_path, "team", 60)  # registerMEs takes 50 MEs per transaction: two batches
    nonce = safe_nonce(cli)
    out = cli.run("me", "import", str(path), *OPS).out
    assert "registered 60 MEs; 0 were registered already" in out
    assert safe_nonce(cli) == nonce + 2
    shown = json.loads(cli.run("me", "show", "team-012", "--json").out)
    assert shown["parent_name"] == "team-011"
    again = cli.run("me", "import", str(path), *OPS).out
    assert "registered 0 MEs; 60 were registered already" in again
    assert safe_nonce(cli) == nonce + 2
    assert sorted(n for n in me_names(cli) if n.startswith("team-")) == [f"team-{i:03d}" for i in range(60)]


def test_me_import_through_a_safe_is_refused_before_anything_is_sent(cli, tmp_path):
    cli.run("safe", "create", "no-role", "--owner", "dev1", "--owner", "dev13", "--threshold", "2")
    path = me_file(tmp_path, "refused", 3, 0x2000)
    before = head(cli)
    cli.fails("me", "import", str(path), "--safe", "ops", "--account", "dev1", contains="1 owner account given")
    cli.fails("me", "import", str(path), "--safe", "ops", "--account", "dev1", "--account", "dev7",
              contains="is not an owner of Safe 'ops'")  # fmt: skip
    cli.fails("me", "import", str(path), "--safe", "no-role", "--account", "dev1", "--account", "dev13",
              contains="Safe 'no-role' (0x")  # fmt: skip
    cli.fails("me", "import", str(path), contains="held by the Safe 'ops'")
    cli.fails("me", "import", str(path), "--account", "dev1", contains="does not hold the platform role")
    cli.fails("me", "import", str(path), "--account", "dev1", "--export", str(tmp_path / "x.json"),
              contains="--export writes Safe transactions: give --safe too")  # fmt: skip
    assert head(cli) == before
    assert not (tmp_path / "x.json").exists()


@pytest.fixture(scope="module")
def paid_alliance(cli, tmp_path_factory):
    """Two MEs with balances in an alliance, settled by the Safe holding the finance role."""
    cli.run("me", "register", "fridge", "--signer", "dev3", *OPS)
    cli.run("me", "register", "oven", "--signer", "dev4", *OPS)
    cli.run("alliance", "propose", "deal", "--party", "fridge=4000", "--party", "oven=6000", "--account", "dev3")
    cli.run("alliance", "sign", "deal", "--account", "dev3")
    cli.run("alliance", "sign", "deal", "--account", "dev4")
    cli.run("alliance", "submit", "deal", "--account", "dev3")
    cli.run("token", "mint", "100000", *OPS)
    return "deal"


def settle(cli, tmp_path, tag: str, amount: str = "100.00"):
    rows = [(f"{tag}-{i}", "deal", amount, 202611) for i in range(2)]
    cli.run("settle", str(write_csv(tmp_path / f"{tag}.csv", rows)), *OPS)


def balances(cli) -> dict[str, str]:
    return {m: json.loads(cli.run("me", "show", m, "--json").out)["balances"] for m in ("fridge", "oven")}


def test_a_safe_holding_the_finance_role_runs_a_payout_run_end_to_end(cli, paid_alliance, tmp_path):
    settle(cli, tmp_path, "PAY")
    nonce = safe_nonce(cli)
    out = json.loads(cli.run("payout", "run", "--alliance", "deal", "--batch-size", "1", "--json", *OPS).out)
    paid = {p["me"]: p["amount"] for p in out["paid"]}
    assert paid == {"fridge": "80.000000", "oven": "120.000000"}  # 40% and 60% of 200
    assert out["transactions"] == 2 and safe_nonce(cli) == nonce + 2  # one Safe transaction per batch
    assert all(set(b.values()) == {"0.000000"} for b in balances(cli).values())
    again = cli.run("payout", "run", "--alliance", "deal", *OPS).out
    assert "nothing to pay" in again and safe_nonce(cli) == nonce + 2


def test_owners_in_separate_data_folders_sign_an_exported_import_and_the_last_one_runs_it(cli, tmp_path):
    path = me_file(tmp_path, "remote", 55, 0x3000)
    export = tmp_path / "remote.safe.json"
    out = cli.run("me", "import", str(path), "--safe", "ops", "--account", "dev1", "--export", str(export)).out
    assert "2 Safe transactions" in out and "nothing sent" in out
    cli.fails("me", "import", str(path), "--safe", "ops", "--export", str(export), contains="the file exists")
    assert not [n for n in me_names(cli) if n.startswith("remote-")]
    dev13, dev14 = owner_machine(cli, tmp_path, "dev13-machine"), owner_machine(cli, tmp_path, "dev14-machine")
    before = head(cli)
    dev13.fails("safe", "sign", str(export), "--account", "dev7", contains="is not an owner of Safe")
    cli.fails("safe", "exec", str(export), "--account", "dev0", contains="1 of 2 owner signatures")
    assert head(cli) == before
    review = dev13.run("safe", "review", str(export)).out
    assert "ledger.registerMEs(names=['remote-000'" in review and "1 of 2 signatures" in review
    signed = dev13.run("safe", "sign", str(export), "--account", "dev13", "--exec").out
    assert "signed 2 Safe transactions" in signed and signed.count("ran Safe transaction nonce") == 2
    assert sorted(n for n in me_names(cli) if n.startswith("remote-")) == [f"remote-{i:03d}" for i in range(55)]
    assert "has run already; nothing sent" in dev14.run("safe", "exec", str(export), "--account", "dev14").out
    dev14.fails("safe", "sign", str(export), "--account", "dev14", contains="has run already")


def test_copies_signed_in_parallel_are_merged_and_anyone_runs_them(cli, paid_alliance, tmp_path):
    settle(cli, tmp_path, "PAR", "10.00")
    export = tmp_path / "payout.safe.json"
    cli.run("payout", "run", "--alliance", "deal", "--safe", "ops", "--export", str(export))  # nobody signed yet
    copies = []
    for owner in ("dev13", "dev14"):
        copy = tmp_path / f"{owner}.json"
        shutil.copy(export, copy)
        owner_machine(cli, tmp_path, owner).run("safe", "sign", str(copy), "--account", owner)
        copies.append(str(copy))
    before = head(cli)
    cli.fails("safe", "exec", copies[0], "--account", "dev0", contains="1 of 2 owner signatures")
    assert head(cli) == before
    out = cli.run("safe", "exec", *copies, "--account", "dev0").out  # dev0 owns nothing: it only pays the gas
    assert "ran Safe transaction nonce" in out
    assert all(set(b.values()) == {"0.000000"} for b in balances(cli).values())


# -- hostile files -----------------------------------------------------------------------------------------


@pytest.fixture
def pending(cli, paid_alliance, tmp_path):
    """An exported payout run signed by dev1 (threshold 2): (path, its JSON)."""
    settle(cli, tmp_path, f"HOST{time.monotonic_ns()}", "1.00")
    export = tmp_path / "hostile.safe.json"
    cli.run("payout", "run", "--alliance", "deal", "--batch-size", "2", "--safe", "ops", "--account", "dev1",
            "--account", "dev13", "--export", str(export))  # fmt: skip
    return export, json.loads(export.read_text())


def resign(doc: dict, tx: dict, key=None, *, chain_id=None, safe=None, nonce=None) -> str:
    """A signature of ``tx`` (as the file has it, or for another chain/Safe/nonce) by ``key``."""
    made = safe_lib.SafeTx(to=tx["to"], data=bytes.fromhex(tx["data"][2:]),
                           nonce=tx["nonce"] if nonce is None else nonce)  # fmt: skip
    signable = made.message(chain_id or doc["chain_id"], safe or doc["safe"])
    return "0x" + bytes(Account.sign_message(signable, (key or dev_key(13)).key).signature).hex()


def rehash(doc: dict, tx: dict) -> None:
    made = safe_lib.SafeTx(to=tx["to"], data=bytes.fromhex(tx["data"][2:]), nonce=tx["nonce"])
    tx["safeTxHash"] = "0x" + made.hash(doc["chain_id"], doc["safe"]).hex()


def _other_safe(doc, tx, deployment):
    tx["signatures"][1]["signature"] = resign(doc, tx, safe="0x" + "ab" * 20)


def _other_chain(doc, tx, deployment):
    tx["signatures"][1]["signature"] = resign(doc, tx, chain_id=1)


def _other_nonce(doc, tx, deployment):
    tx["signatures"][1]["signature"] = resign(doc, tx, nonce=tx["nonce"] + 1)


def _tampered_data(doc, tx, deployment):
    tx["data"] = tx["data"][:-1] + ("2" if tx["data"][-1] != "2" else "3")


def _tampered_and_rehashed(doc, tx, deployment):
    _tampered_data(doc, tx, deployment)
    rehash(doc, tx)


def _non_owner(doc, tx, deployment):
    dev7 = dev_key(7)
    tx["signatures"].append({"owner": dev7.address, "signature": resign(doc, tx, dev7)})


def _duplicate_owner(doc, tx, deployment):
    tx["signatures"].append(dict(tx["signatures"][0]))


def _delegatecall(doc, tx, deployment):
    tx["operation"] = 1


def _another_target(doc, tx, deployment):
    tx["to"] = dev_key(7).address
    _owners_sign_again(doc, tx)


def _owners_sign_again(doc, tx):
    rehash(doc, tx)
    tx["signatures"] = [{"owner": dev_key(i).address, "signature": resign(doc, tx, dev_key(i))} for i in (1, 13)]


def _token_approval(doc, tx, deployment):
    tx["to"] = deployment["token"]
    tx["data"] = "0x095ea7b3" + dev_key(7).address[2:].lower().rjust(64, "0") + "f" * 64  # approve(dev7, max)
    _owners_sign_again(doc, tx)


def _unknown_function(doc, tx, deployment):
    tx["data"] = "0xdeadbeef" + tx["data"][10:]
    _owners_sign_again(doc, tx)


def _another_ledger(doc, tx, deployment):
    doc["ledger"] = "0x" + "cd" * 20


HOSTILE = {
    "a signature made for another Safe": (_other_safe, "is not that owner's signature of this Safe transaction"),
    "a signature made for another chain": (_other_chain, "for another Safe, chain, nonce or content"),
    "a signature made for another nonce": (_other_nonce, "is not that owner's signature of this Safe transaction"),
    "a tampered SafeTx": (_tampered_data, "is not the hash of its fields"),
    "a tampered SafeTx with its hash made again": (_tampered_and_rehashed, "is not that owner's signature"),
    "a non-owner's signature": (_non_owner, "but is not an owner of Safe"),
    "a duplicate owner": (_duplicate_owner, "signed twice (a duplicate owner)"),
    "a DELEGATECALL": (_delegatecall, "operation 1 (DELEGATECALL) is refused"),
    "a call of another contract": (_another_target, "not the ledger; refused"),
    "a token approval signed by the owners": (_token_approval, "not the ledger; refused"),
    "a call of no function of the ledger": (_unknown_function, "calls no function of the ledger (0xdeadbeef)"),
    "another ledger": (_another_ledger, "the file is for the ledger at 0x"),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=[c.replace(" ", "-") for c in HOSTILE])
def test_a_hostile_safe_transaction_file_is_refused_with_one_line_and_nothing_is_sent(cli, pending, case):
    path, doc = pending
    change, message = HOSTILE[case]
    tx = doc["transactions"][0]
    assert [s["owner"] for s in tx["signatures"]] == sorted((dev_key(1).address, dev_key(13).address), key=str.lower)
    change(doc, tx, json.loads(next((cli.data_dir / "deployments").glob("*.json")).read_text()))
    path.write_text(json.dumps(doc))
    nonce, before = safe_nonce(cli), head(cli)
    for command in (
        ("safe", "exec", str(path), "--account", "dev0"),
        ("safe", "sign", str(path), "--account", "dev14"),
    ):
        err = cli.fails(*command, contains=message)
        assert len(err.strip().splitlines()) == 1, err
    assert head(cli) == before and safe_nonce(cli) == nonce
    assert json.loads(path.read_text()) == doc  # sign wrote nothing


def test_an_untouched_file_runs_after_the_hostile_copies_were_refused(cli, pending):
    path, _ = pending
    nonce = safe_nonce(cli)
    assert "ran Safe transaction nonce" in cli.run("safe", "exec", str(path), "--account", "dev0").out
    assert safe_nonce(cli) == nonce + 1


def test_a_file_whose_nonce_another_safe_transaction_took_is_void(cli, paid_alliance, tmp_path):
    export = tmp_path / "void.safe.json"
    cli.run("me", "register", "void-me", "--signer", "dev8", "--safe", "ops", "--account", "dev1", "--export",
            str(export))  # fmt: skip
    cli.run("me", "register", "other-me", "--signer", "dev9", *OPS)  # takes the Safe nonce the file was for
    before = head(cli)
    cli.fails("safe", "exec", str(export), "--account", "dev0", contains="can no longer run")
    owner_machine(cli, tmp_path, "late").fails("safe", "sign", str(export), "--account", "dev14",
                                               contains="can no longer run")  # fmt: skip
    assert head(cli) == before


def test_an_exported_import_is_refused_when_mes_were_registered_since(cli, tmp_path):
    path = me_file(tmp_path, "late", 3, 0x4000)
    export = tmp_path / "late.safe.json"
    cli.run("me", "import", str(path), "--safe", "ops", "--account", "dev1", "--account", "dev13",
            "--export", str(export))  # fmt: skip
    # A second platform account (dev2, granted by the admin) registers an ME: the Safe's nonce is free, but
    # the ME ids the file gave its rows' parents now belong to other MEs.
    ledger = json.loads((next((cli.data_dir / "deployments").glob("*.json"))).read_text())["ledger"]
    role = "0x" + safe_lib.keccak(text="PLATFORM_ROLE").hex()
    dev2 = dev_key(2).address
    data = "0x2f2ff15d" + role[2:] + dev2[2:].lower().rjust(64, "0")  # grantRole(bytes32,address)
    rpc(
        f"http://127.0.0.1:{cli.port}",
        "eth_sendTransaction",
        [{"from": dev_key(0).address, "to": ledger, "data": data}],
    )
    cli.run("me", "register", "squatter", "--signer", "dev10", "--account", "dev2")
    nonce, before = safe_nonce(cli), head(cli)
    cli.fails("safe", "exec", str(export), "--account", "dev0", contains="the export expected")
    assert head(cli) == before and safe_nonce(cli) == nonce
    assert not [n for n in me_names(cli) if n.startswith("late-")]


def test_a_period_close_exported_by_one_owner_is_sent_by_another_on_their_machine(cli, paid_alliance, tmp_path):
    cli.run("settle", str(write_csv(tmp_path / "dec.csv", [("DEC-1", "deal", "5.00", 202612)])), *OPS)
    export = tmp_path / "close.safe.json"
    nonce, before = safe_nonce(cli), head(cli)
    out = cli.run(
        "period", "close", "deal", "202612", "--safe", "ops", "--account", "dev13", "--export", str(export)
    ).out
    assert "1 Safe transaction" in out and "nothing sent" in out
    assert (safe_nonce(cli), head(cli)) == (nonce, before)  # nothing was sent
    cli.fails("period", "close", "deal", "202612", "--safe", "ops", "--export", str(tmp_path / "y.json"),
              "--account", "dev7", contains="is not an owner of Safe 'ops'")  # fmt: skip
    dev14 = owner_machine(cli, tmp_path, "dev14-close")
    assert "ledger.closePeriod(" in dev14.run("safe", "review", str(export)).out
    assert "ran Safe transaction" in dev14.run("safe", "sign", str(export), "--account", "dev14", "--exec").out
    cli.fails("period", "close", "deal", "202612", *OPS, contains="is already closed")


def test_an_me_update_and_a_dissolution_exported_are_sent_from_another_owners_machine(cli, tmp_path):
    cli.run("me", "register", "kiosk", "--signer", "dev11", *OPS)
    update, dissolve = tmp_path / "update.safe.json", tmp_path / "dissolve.safe.json"
    cli.run("me", "update", "kiosk", "--payout", "dev12", "--consent-by", "dev11", "--safe", "ops",
            "--account", "dev1", "--export", str(update))  # fmt: skip
    dev14 = owner_machine(cli, tmp_path, "dev14-me")
    dev14.run("safe", "sign", str(update), "--account", "dev14", "--exec")
    assert json.loads(cli.run("me", "show", "kiosk", "--json").out)["payout"] == dev_key(12).address
    cli.run("me", "dissolve", "kiosk", "--safe", "ops", "--export", str(dissolve))
    assert json.loads(cli.run("me", "show", "kiosk", "--json").out)["status"] == "active"
    dev14.run("safe", "sign", str(dissolve), "--account", "dev14")
    owner_machine(cli, tmp_path, "dev13-me").run("safe", "sign", str(dissolve), "--account", "dev13", "--exec")
    assert json.loads(cli.run("me", "show", "kiosk", "--json").out)["status"] == "dissolved"


# -- killed and run again ------------------------------------------------------------------------------------


def wait_for_blocks(cli, proc, start: int, count: int) -> None:
    deadline = time.monotonic() + 120
    while head(cli) < start + count and proc.poll() is None:
        assert time.monotonic() < deadline, "no batch landed"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_safe_import_killed_mid_way_registers_each_me_once_when_run_again(cli, sh, tmp_path):
    path = me_file(tmp_path, "killed", 400, 0x5000)  # 8 Safe transactions of 50 MEs
    start = head(cli)
    proc = sh.popen("me", "import", str(path), *OPS, env={"LEDGER_TX_WINDOW": "1"})
    wait_for_blocks(cli, proc, start, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    landed = len([n for n in me_names(cli) if n.startswith("killed-")])
    assert 0 < landed < 400, landed  # the killed run registered some batches, not all
    out = sh.run("me", "import", str(path), *OPS).out
    assert f"registered {400 - landed} MEs; {landed} were registered already" in out
    names = [n for n in me_names(cli) if n.startswith("killed-")]
    assert sorted(names) == [f"killed-{i:03d}" for i in range(400)]


@pytest.mark.slow
def test_safe_exec_killed_mid_way_runs_only_the_rest_when_run_again(cli, sh, tmp_path):
    path = me_file(tmp_path, "exec-killed", 400, 0x6000)
    export = tmp_path / "exec-killed.safe.json"
    cli.run("me", "import", str(path), *OPS, "--export", str(export))
    start = head(cli)
    proc = sh.popen("safe", "exec", str(export), "--account", "dev0")
    wait_for_blocks(cli, proc, start, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    landed = len([n for n in me_names(cli) if n.startswith("exec-killed-")])
    assert 0 < landed < 400 and landed % 50 == 0, landed
    out = sh.run("safe", "exec", str(export), "--account", "dev0").out
    assert f"{landed // 50} of 8 Safe transactions ran already" in out
    assert out.count("ran Safe transaction nonce") == 8 - landed // 50
    names = [n for n in me_names(cli) if n.startswith("exec-killed-")]
    assert sorted(names) == [f"exec-killed-{i:03d}" for i in range(400)]
