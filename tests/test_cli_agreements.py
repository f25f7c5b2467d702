"""Agreements and ME owners through the ``ledger`` command, as users on two machines would type it:
who may propose a version and which versions can be put in force, what a signer is shown before signing,
signatures carried between machines, ME updates with the current signer's consent, typed addresses, and
closing a period (issue 13, items 1, 2, 5, 13 and 14).

One chain for the module (its own data folder and port); each test uses its own alliance and ME names.
"""

from __future__ import annotations

import json
import shutil

import pytest

from ledger.chain.node import rpc

from .cli_support import InProcessCLI, LedgerCLI, free_port, write_csv

KITCHEN = [("fridge", "dev3"), ("oven", "dev4"), ("recipe-app", "dev5"), ("logistics", "dev6")]
BAD_CHECKSUM = "0x90F79bf6EB2c4f870365E785982E1f101E93b907"  # dev3's address with one letter's case flipped


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
    """The platform's and finance's machine: deployed, the kitchen MEs registered, finance funded."""
    ledger = InProcessCLI(sh.data_dir, sh.port)
    ledger.run("deploy")
    for name, alias in KITCHEN:
        ledger.run("me", "register", name, "--signer", alias)
    ledger.run("token", "mint", "10000000")
    return ledger


@pytest.fixture
def other_machine(cli, tmp_path):
    """A second machine on the same chain: its own data folder (so its own signature store), with the
    deployment record copied over as an operator would."""
    shutil.copytree(cli.data_dir / "deployments", tmp_path / "deployments")
    return InProcessCLI(tmp_path, cli.port)


def head(cli) -> int:
    return int(rpc(f"http://127.0.0.1:{cli.port}", "eth_blockNumber"), 16)


def parties(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--party", pair)]


def sign_all(cli, name: str, *aliases: str, version: int | None = None) -> str:
    extra = ["--version", str(version)] if version else []
    return cli.run("alliance", "sign", name, *[a for alias in aliases for a in ("--account", alias)], *extra).out


def show(cli, name: str) -> dict:
    return json.loads(cli.run("alliance", "show", name, "--json").out)


# -- item 1: who may propose, which versions can be activated ------------------------------------------


def test_an_outside_signer_cannot_add_a_version_and_a_signed_version_survives_later_proposals(cli):
    cli.run("alliance", "propose", "laundry", *parties("fridge=4000", "oven=3000", "recipe-app=3000"))
    sign_all(cli, "laundry", "dev3", "dev4", "dev5")
    cli.run("alliance", "submit", "laundry")
    # The reproduction: logistics' signer proposes a version naming logistics. Refused before sending.
    before = head(cli)
    err = cli.fails("alliance", "amend", "laundry", *parties("fridge=1000", "oven=1000", "recipe-app=1000",
                                                            "logistics=7000"), "--account", "dev6")  # fmt: skip
    assert "may not propose a new version of 'laundry'" in err and "version 1, the current one" in err
    assert head(cli) == before and show(cli, "laundry")["latest_version"] == 1
    # A party's signer proposes version 2 and every party signs it; then version 3 is proposed.
    cli.run(
        "alliance", "amend", "laundry", *parties("fridge=5000", "oven=2500", "recipe-app=2500"), "--account", "dev4"
    )
    sign_all(cli, "laundry", "dev3", "dev4", "dev5", version=2)
    cli.run("alliance", "amend", "laundry", *parties("fridge=6000", "oven=2000", "recipe-app=2000"))
    # Version 3 waits for signatures: submit puts the newest fully signed version, 2, in force.
    assert "version 2 is in force" in cli.run("alliance", "submit", "laundry").out
    sign_all(cli, "laundry", "dev3", "dev4", "dev5")
    assert "version 3 is in force" in cli.run("alliance", "submit", "laundry").out
    cli.fails("alliance", "submit", "laundry", "--version", "2", contains="older than version 3 in force")
    states = [v["state"] for v in show(cli, "laundry")["versions"]]
    assert states == ["superseded", "superseded", "in force"]


def test_submitting_a_version_jumps_over_older_pending_ones_which_are_then_superseded(cli):
    cli.run("alliance", "propose", "jump", *parties("fridge=5000", "oven=5000"))
    cli.run("alliance", "amend", "jump", *parties("fridge=6000", "oven=4000"))
    sign_all(cli, "jump", "dev3", "dev4", version=1)
    sign_all(cli, "jump", "dev3", "dev4", version=2)
    assert "version 2 is in force" in cli.run("alliance", "submit", "jump").out
    cli.fails("alliance", "sign", "jump", "--account", "dev3", "--version", "1", contains="older than version 2")


# -- item 5: what a signer is shown -----------------------------------------------------------------------


def test_sign_says_in_words_what_is_signed_and_what_changes_from_the_version_in_force(cli):
    cli.run("alliance", "propose", "words", *parties("fridge=4000", "oven=6000"))
    first = sign_all(cli, "words", "dev3", "dev4")
    assert "You are signing the approval of version 1 of alliance 'words'" in first
    assert "party fridge: 40% of all revenue" in first and "target: none" in first
    assert "no version is in force yet" in first
    cli.run("alliance", "submit", "words")
    cli.run("alliance", "amend", "words", *parties("fridge=3000", "oven=6000", "logistics=1000"), "--target", "1000",
            "--excess", "fridge=2000", "--excess", "oven=7000", "--excess", "logistics=1000")  # fmt: skip
    out = sign_all(cli, "words", "dev3")
    token = json.loads(cli.run("alliance", "show", "words", "--json").out)["token"]
    lines = out.splitlines()
    assert lines[0].startswith("You are signing the approval of version 2 of alliance 'words'")
    assert any(line.startswith("  token: ") and token in line for line in lines)
    assert any(line.startswith("  target: 1000.000000 ") and line.endswith(" per period") for line in lines)
    assert "  party fridge: 30% up to the target, 20% above the target" in lines
    assert "  party logistics: 10% up to the target, 10% above the target" in lines
    changes = next(line for line in lines if line.startswith("  changes from version 1 in force: "))
    assert "logistics joins" in changes and "fridge 40% -> 30%" in changes and "target none -> 1000" in changes
    assert "oven" not in changes  # 60% before and after; no excess table before to compare with
    # Signing happens after the summary, and only then.
    assert lines.index("dev3 signed version 2 for fridge") > lines.index(changes)


# -- item 14: the signature round trip between machines ---------------------------------------------------


def test_sign_help_names_only_options_that_exist(cli):
    out = cli.run("alliance", "sign", "--help").out
    assert "--export" not in out and "export-signatures" in out


def test_export_signatures_output_is_imported_in_one_go_on_another_machine(cli, other_machine, tmp_path):
    cli.run("alliance", "propose", "carry", *parties("fridge=2500", "oven=2500", "recipe-app=2500", "logistics=2500"))
    sign_all(cli, "carry", "dev3", "dev4")
    exported = cli.run("alliance", "export-signatures", "carry").out
    assert exported.splitlines()[0] == "# alliance carry version 1" and len(exported.splitlines()) == 3
    sigs = tmp_path / "sigs.txt"
    sigs.write_text(exported)
    out = other_machine.run("alliance", "import-signature", "carry", "--file", str(sigs)).out
    assert "imported the signature of fridge for version 1" in out and "waiting for recipe-app, logistics" in out
    sign_all(other_machine, "carry", "dev5", "dev6")
    assert "version 1 is in force" in other_machine.run("alliance", "submit", "carry").out
    # A line naming the wrong ME is refused with its line number.
    cli.run("alliance", "amend", "carry", *parties("fridge=5000", "oven=5000"))
    sign_all(cli, "carry", "dev3")
    line = cli.run("alliance", "export-signatures", "carry").out.splitlines()[1]
    sigs.write_text(line.replace("fridge", "oven") + "\n")
    other_machine.fails("alliance", "import-signature", "carry", "--file", str(sigs), contains="not of 'oven'")


# -- item 2: typed addresses and ME updates ---------------------------------------------------------------


def test_a_mixed_case_address_with_a_wrong_checksum_is_refused_wherever_an_address_is_typed(cli, sh):
    before = head(cli)
    err = cli.fails("me", "register", "typo-me", "--signer", BAD_CHECKSUM)
    assert "--signer" in err and "checksum" in err and len(err.strip().splitlines()) == 1
    cli.fails("me", "register", "typo-me", "--signer", "dev7", "--payout", BAD_CHECKSUM, contains="--payout")
    cli.fails("token", "balance", BAD_CHECKSUM, contains="HOLDER")
    cli.fails("token", "mint", "1", "--to", BAD_CHECKSUM, contains="--to")
    cli.fails("alliance", "propose", "typo", "--token", BAD_CHECKSUM, *parties("fridge=5000", "oven=5000"),
              contains="--token")  # fmt: skip
    cli.fails("deploy", "--platform", BAD_CHECKSUM, contains="--platform")
    sh.fails("audit", "--ledger", BAD_CHECKSUM, code=2, contains="checksum")
    assert head(cli) == before
    # All lowercase or all uppercase carries no checksum and is taken as typed.
    cli.run("me", "register", "lower-me", "--signer", BAD_CHECKSUM.lower())
    cli.run("me", "register", "upper-me", "--signer", "0x" + BAD_CHECKSUM[2:].upper())


def test_an_me_update_is_consented_by_the_current_signer_on_one_machine_and_sent_by_the_platform(cli, other_machine):
    cli.run("me", "register", "washer", "--signer", "dev7")
    new_payout = "0x" + "ab" * 20
    # The washer's signer, on its own machine, consents; the platform machine sends it.
    out = other_machine.run("me", "consent", "washer", "--payout", new_payout, "--account", "dev7").out
    assert "payout" in out and "0xABaB" in out  # the change in words, checksummed
    consent = next(line.split()[1] for line in out.splitlines() if line.startswith("consent 0x"))
    # Someone else's key cannot consent, and a consent for other values is refused before sending.
    other_machine.fails("me", "consent", "washer", "--payout", new_payout, "--account", "dev8",
                        contains="not the current signer of ME 'washer'")  # fmt: skip
    before = head(cli)
    cli.fails("me", "update", "washer", "--payout", "0x" + "cd" * 20, "--consent", consent,
              contains="the consent is not from the current signer")  # fmt: skip
    cli.fails("me", "update", "washer", "--payout", new_payout, contains="no consent from the current signer")
    assert head(cli) == before
    assert "updated ME 'washer'" in cli.run("me", "update", "washer", "--payout", new_payout, "--consent", consent).out
    shown = json.loads(cli.run("me", "show", "washer", "--json").out)
    assert shown["payout"].lower() == new_payout and shown["nonce"] == 1
    # One operator holding both keys: back to the old payout in one command. The first consent cannot be
    # replayed to switch it again (the nonce moved on).
    cli.run("me", "update", "washer", "--payout", "dev7", "--consent-by", "dev7")
    cli.fails("me", "update", "washer", "--payout", new_payout, "--consent", consent, contains="update number 3")
    # A new signer: the old key no longer consents, nor signs for washer.
    cli.run("me", "update", "washer", "--signer", "dev12", "--consent-by", "dev7")
    cli.fails("me", "update", "washer", "--signer", "dev13", "--consent-by", "dev7", contains="not the current signer")
    cli.run("alliance", "propose", "wash", *parties("fridge=5000", "washer=5000"))
    cli.fails("alliance", "sign", "wash", "--account", "dev7", contains="is not the registered signer")
    sign_all(cli, "wash", "dev3", "dev12")
    cli.run("alliance", "submit", "wash")


# -- item 13: closing a period -----------------------------------------------------------------------------


def test_closing_a_period_without_settled_revenue_needs_force(cli, tmp_path):
    cli.run("alliance", "propose", "periods", *parties("fridge=5000", "oven=5000"))
    sign_all(cli, "periods", "dev3", "dev4")
    cli.run("alliance", "submit", "periods")
    cli.fails("period", "close", "periods", "202611", contains="no revenue has been settled into any period")
    cli.run("settle", str(write_csv(tmp_path / "r.csv", [("P-1", "periods", "10.00", 202611),
                                                         ("P-2", "periods", "5.00", 202609)])))  # fmt: skip
    before = head(cli)
    err = cli.fails("period", "close", "periods", "202701")
    assert "after 202611, the latest period with settled revenue" in err and "--force" in err
    cli.fails("period", "close", "periods", "202610", contains="no revenue was settled into it")
    assert head(cli) == before
    assert "closed period 202611" in cli.run("period", "close", "periods", "202611").out
    assert "closed period 202610" in cli.run("period", "close", "periods", "202610", "--force").out
    # A period holding only a reversal (its revenue stays 0) had activity: it closes without --force.
    cli.run("settle", str(write_csv(tmp_path / "back.csv", [("P-2-BACK", "periods", "5.00", 202612, "P-2")],
                                    header="reference,alliance,amount,period,reverses")))  # fmt: skip
    assert "closed period 202612" in cli.run("period", "close", "periods", "202612").out
