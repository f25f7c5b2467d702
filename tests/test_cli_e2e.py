"""The ``ledger`` command end to end against a real Anvil started by ``ledger chain up``.

The module shares one chain (its own data folder and a free port, so it never touches a user's chain
or the node of the Ape test session); each test uses its own alliance names. Most commands run in
process through click's test runner (``cli``); what only a real process shows (exit codes of the
console entry point, a kill -9, the node stopped and started, the demo) runs as subprocesses (``sh``).
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal

import pytest

from ledger.chain.node import rpc

from .cli_support import InProcessCLI, LedgerCLI, RpcProxy, free_port, write_csv

pytestmark = pytest.mark.http_node("runs `ledger chain up` and the CLI as subprocesses")

KITCHEN = [("fridge", "dev3"), ("oven", "dev4"), ("recipe-app", "dev5"), ("logistics", "dev6")]


@pytest.fixture(scope="module")
def sh(tmp_path_factory):
    """``ledger`` as subprocesses, on a chain of its own started with ``ledger chain up``."""
    ledger = LedgerCLI(tmp_path_factory.mktemp("ledger-data"), free_port())
    ledger.run("chain", "up")
    try:
        ledger.fails("me", "list", code=2, contains="deploy")
        yield ledger
    finally:
        ledger.run("chain", "down", ok=False)


@pytest.fixture(scope="module")
def cli(sh):
    """``ledger`` in process, on the same chain, deployed, with the kitchen MEs and funded finance."""
    ledger = InProcessCLI(sh.data_dir, sh.port)
    record = json.loads(ledger.run("deploy", "--json").out)
    assert record["reused"] is False and record["token"]
    ledger.run("me", "register", "kitchen-platform", "--signer", "dev1")
    for name, alias in KITCHEN:
        ledger.run("me", "register", name, "--signer", alias, "--parent", "kitchen-platform")
    ledger.run("token", "mint", "10000000")
    return ledger


def make_alliance(cli: LedgerCLI, name: str, *extra: str) -> None:
    cli.run("alliance", "propose", name, "--party", "fridge=4000", "--party", "oven=3000",
            "--party", "recipe-app=1500", "--party", "logistics=1500", *extra)  # fmt: skip
    cli.run("alliance", "sign", name, *[arg for _, alias in KITCHEN for arg in ("--account", alias)])
    cli.run("alliance", "submit", name)


def payouts(cli: LedgerCLI, *args: str) -> dict:
    return json.loads(cli.run("payouts", "--format", "json", *args).out)


def show(cli: LedgerCLI, name: str) -> dict:
    return json.loads(cli.run("alliance", "show", name, "--json").out)


def test_every_step_of_an_alliance_from_proposal_to_withdrawal(cli, tmp_path):
    out = cli.run("alliance", "propose", "kitchen", "--party", "fridge=4000", "--party", "oven=3000",
                  "--party", "recipe-app=1500", "--party", "logistics=1500", "--target", "1000",
                  "--excess", "fridge=2500", "--excess", "oven=2500", "--excess", "recipe-app=4000",
                  "--excess", "logistics=1000").out  # fmt: skip
    assert "proposed version 1 of alliance 'kitchen'" in out
    cli.fails("alliance", "submit", "kitchen", contains="waiting for fridge, oven, recipe-app, logistics")
    cli.run("alliance", "sign", "kitchen", "--account", "dev3")
    signed = {p["me"]: p["signed"] for p in show(cli, "kitchen")["versions"][0]["parties"]}
    assert signed == {"fridge": True, "oven": False, "recipe-app": False, "logistics": False}
    out = cli.run("alliance", "sign", "kitchen", "--account", "dev4", "--account", "dev5", "--account", "dev6").out
    assert "all 4 parties have signed version 1" in out
    assert "version 1 is in force" in cli.run("alliance", "submit", "kitchen").out
    assert "kitchen" in cli.run("alliance", "list").out

    # A CSV with a BOM and CRLF line ends; 600 + 500 crosses the 1000 target inside the second event.
    path = tmp_path / "nov.csv"
    path.write_bytes(
        b"\xef\xbb\xbfreference,alliance,amount,period\r\n"
        b"K-1,kitchen,600.00,202611\r\nK-2,kitchen,500.000001,202611\r\nK-3,kitchen,0.000003,202611\r\n"
    )
    preview = json.loads(cli.run("settle", str(path), "--dry-run", "--json").out)
    assert sum(Decimal(c["total"]) for c in preview["credits"]) == Decimal("1100.000004")
    assert show(cli, "kitchen")["events_settled"] == 0  # the dry run changed nothing
    summary = json.loads(cli.run("settle", str(path), "--json").out)
    assert summary["events_settled"] == 3 and summary["events_skipped_already_settled"] == 0
    assert [v["amount"] for v in summary["tokens_moved"].values()] == ["1100.000004"]
    again = cli.run("settle", str(path))
    assert "nothing new to settle: all 3 events" in again.out

    report = payouts(cli, "--alliance", "kitchen")
    by_tier = {(p["me"], p["tier"]): Decimal(p["amount"]) for p in report["payouts"]}
    assert sum(by_tier.values()) == Decimal("1100.000004")
    assert by_tier[("fridge", "base")] == Decimal("400")  # 40% of the 1000 up to the target
    assert sum(v for (_, tier), v in by_tier.items() if tier == "excess") == Decimal("100.000004")
    # The statement finance hands out: one line per alliance, period, ME and tier.
    statement = tmp_path / "statement.csv"
    cli.run("payouts", "--alliance", "kitchen", "--format", "csv", "-o", str(statement))
    lines = statement.read_text().splitlines()
    assert lines[0] == "alliance,period,me_id,me,tier,token,symbol,amount,amount_base_units"
    assert sum(int(line.split(",")[-1]) for line in lines[1:]) == 1_100_000_004

    assert "closed period 202611 of 'kitchen'" in cli.run("period", "close", "kitchen", "202611").out
    late = write_csv(tmp_path / "late.csv", [("K-4", "kitchen", "1", 202611)])
    cli.fails("settle", str(late), contains="row 2: period 202611 of alliance 'kitchen' is closed")
    assert "nothing new to settle" in cli.run("settle", str(path)).out  # settled rows stay skipped

    before = json.loads(cli.run("me", "show", "recipe-app", "--json").out)["balances"]
    assert "withdrew" in cli.run("withdraw", "recipe-app", "--account", "dev5").out
    cli.fails("withdraw", "recipe-app", "--account", "dev5", contains="has nothing to withdraw")
    after = json.loads(cli.run("me", "show", "recipe-app", "--json").out)["balances"]
    assert any(Decimal(v) > 0 for v in before.values()) and all(Decimal(v) == 0 for v in after.values())
    balance = json.loads(cli.run("balance", "--json").out)
    assert all(check["ok"] for check in balance["checks"])


def test_amendment_needs_every_new_party_and_termination_every_party(cli, tmp_path):
    make_alliance(cli, "amend-me")
    cli.run("alliance", "amend", "amend-me", "--party", "fridge=6000", "--party", "oven=4000")
    cli.run("alliance", "sign", "amend-me", "--account", "dev3")
    assert show(cli, "amend-me")["active_version"] == 1  # version 1 stays in force until all have signed
    cli.run("alliance", "sign", "amend-me", "--account", "dev4")
    cli.run("alliance", "submit", "amend-me")
    assert show(cli, "amend-me")["active_version"] == 2

    out = cli.run("alliance", "terminate", "amend-me", "--account", "dev3").out
    assert "1 of 2 parties agree to end it; waiting for oven" in out
    assert "is terminated" in cli.run("alliance", "terminate", "amend-me", "--account", "dev4").out
    cli.fails("alliance", "amend", "amend-me", "--party", "fridge=10000", contains="is terminated")
    events = write_csv(tmp_path / "t.csv", [("T-1", "amend-me", "1", 202611)])
    cli.fails("settle", str(events), contains="row 2: alliance 'amend-me' is terminated, not active")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("me", "register", "x", "--signer", "dev99"), 1, "no dev account 'dev99'"),
        (("me", "register", "x", "--signer", "nobody"), 1, "no account 'nobody'"),
        (("me", "register", "fridge", "--signer", "dev9"), 1, "an ME named fridge already exists"),
        (("me", "register", "x", "--signer", "dev9", "--parent", "ghost"), 1, "no ME named 'ghost'"),
        (("me", "register", "x", "--signer", "dev9", "--account", "dev11"), 1, "(dev11) lacks the platform role"),
        (("me", "show", "ghost"), 1, "no ME named 'ghost'"),
        (("alliance", "propose", "p", "--party", "fridge=5000", "--party", "oven=4000"), 1, "sum to 9000 basis points"),
        (("alliance", "propose", "p", "--party", "fridge=5000", "--party", "fridge=5000"), 1, "is given twice"),
        (("alliance", "propose", "p", "--party", "fridge=abc", "--party", "oven=5000"), 1, "whole basis points"),
        (("alliance", "propose", "p", "--party", "fridge"), 1, "expected ME=BPS"),
        (
            ("alliance", "propose", "p", *[a for i in range(65) for a in ("--party", f"m{i}=1")]),
            1,
            "at most 64 parties, got 65",
        ),
        (
            ("alliance", "propose", "p", "--party", "fridge=5000", "--party", "oven=5000", "--target", "10"),
            1,
            "--target needs --excess",
        ),
        (
            (
                "alliance",
                "propose",
                "p",
                "--party",
                "fridge=5000",
                "--party",
                "oven=5000",
                "--target",
                "1.0000001",
                "--excess",
                "fridge=10000",
            ),
            1,
            "--target '1.0000001' has 7 decimals",
        ),
        (("alliance", "show", "ghost"), 1, "no alliance named 'ghost'"),
        (("alliance", "sign", "ghost", "--account", "dev3"), 1, "no alliance named 'ghost'"),
        (("withdraw", "oven", "--account", "dev3"), 1, "only the payout address of 'oven'"),
        (("withdraw", "oven"), 2, "give --account"),
        (("period", "close", "ghost", "202611"), 1, "no alliance named 'ghost'"),
        (("period", "close", "ghost", "0"), 2, "PERIOD"),
        (("payouts", "--me", "ghost"), 1, "no ME named 'ghost'"),
        (("--port", "1", "me", "list"), 2, "not running"),
        (("--network", "ethereum:nowhere", "me", "list"), 2, "nowhere"),
        (("--network", "ethereum:local:foundry", "me", "list", "--account", "x"), 2, "no such option"),
    ],
)
def test_a_mistake_gets_one_line_and_the_documented_exit_code(cli, args, code, message):
    err = cli.fails(*args, code=code)
    assert message.lower() in err.lower(), err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("me", "show", "ghost"), 1, "error: no ME named 'ghost'"),
        (("--port", "1", "me", "list"), 2, "error: the local chain is not running"),
        (("settle", "/nonexistent.csv"), 2, "does not exist"),
        (("nonsense",), 2, "No such command"),
    ],
)
def test_the_console_command_exits_with_the_documented_code_and_no_traceback(cli, sh, args, code, message):
    err = sh.fails(*args, code=code)
    assert message in err and len(err.strip().splitlines()) <= 2, err


def test_a_signature_from_a_key_that_is_not_the_partys_is_refused(cli):
    cli.run("alliance", "propose", "wrong-key", "--party", "fridge=5000", "--party", "oven=5000")
    cli.fails("alliance", "sign", "wrong-key", "--account", "dev5", contains="is not the registered signer")
    # A signature made by another key cannot be imported for a party either.
    cli.fails("alliance", "import-signature", "wrong-key", "0x" + "11" * 65, contains="not a valid ECDSA signature")
    from eth_account import Account
    from eth_account.messages import encode_defunct

    other = Account.from_key(b"\x07" * 32).sign_message(encode_defunct(text="not an approval")).signature.hex()
    cli.fails("alliance", "import-signature", "wrong-key", other, contains="not the signer of any party")
    assert show(cli, "wrong-key")["status"] == "proposed"


def test_a_bad_file_lists_every_problem_by_row_and_settles_nothing(cli, tmp_path):
    make_alliance(cli, "strict")
    path = write_csv(tmp_path / "bad.csv", [
        ("S-1", "strict", "10.00", 202611),
        ("S-2", "strict", "-1", 202611),
        ("S-3", "nowhere", "1", 202611),
        ("S-4", "strict", "1e5", 202611),
        ("S-1", "strict", "3", 202611),
        ("S-6", "strict", "0", 202611),
        ("S-7", "strict", "5", "x"),
    ])  # fmt: skip
    err = cli.fails("settle", str(path))
    for expected in ("row 3: amount '-1' has a sign", "row 4: no alliance named 'nowhere'", "row 5: amount '1e5'",
                     "row 6: reference 'S-1' repeats row 2", "row 7: amount '0' is zero", "row 8: period 'x'",
                     "6 problems; nothing was changed"):  # fmt: skip
        assert expected in err, err
    assert all(line.startswith("error: bad.csv: row") for line in err.splitlines()[:-1])
    assert show(cli, "strict")["events_settled"] == 0
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    cli.fails("settle", str(empty), contains="the file is empty")
    cli.fails("settle", str(tmp_path / "missing.csv"), code=2, contains="does not exist")


class PacedSends(RpcProxy):
    """Forwards everything, each transaction sent 0.25 s late: a run of 24 batches then takes seconds, so a
    kill after the first blocks lands half way however loaded the machine is (without it, a fast node and a
    starved test process let the whole run finish before the kill)."""

    def answer(self, request):
        calls = request if isinstance(request, list) else [request]
        if any(isinstance(c, dict) and c.get("method") == "eth_sendRawTransaction" for c in calls):
            time.sleep(0.25)
        return None


SMALL_BATCHES = {"LEDGER_BATCH_GAS": "400000"}  # ~50 events per batch: many transactions


def settle_interrupted(cli: LedgerCLI, sh: LedgerCLI, path, sig: int) -> tuple[int, str, str]:
    """``ledger settle PATH`` in a process, its sends paced, sent ``sig`` once the approval and three
    batches are mined. Returns its exit code, stdout and stderr."""
    url = f"http://127.0.0.1:{cli.port}"
    start = int(rpc(url, "eth_blockNumber"), 16)
    with PacedSends.serving(url) as proxy:
        proc = sh.popen("settle", str(path), env={**SMALL_BATCHES, "LEDGER_PORT": proxy.rsplit(":", 1)[1]})
        deadline = time.monotonic() + 120
        while int(rpc(url, "eth_blockNumber"), 16) < start + 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def test_a_settlement_killed_half_way_completes_when_run_again_without_paying_twice(cli, sh, tmp_path):
    make_alliance(cli, "killed")
    rows = [(f"KL-{i}", "killed", f"{i}.{i % 100:02d}", 202611) for i in range(1, 1201)]
    path = write_csv(tmp_path / "big.csv", rows)
    expected = sum(Decimal(r[2]) for r in rows)
    settle_interrupted(cli, sh, path, signal.SIGKILL)
    part = show(cli, "killed")["events_settled"]
    assert 0 < part < len(rows), part
    summary = json.loads(cli.run("settle", str(path), "--json", env=SMALL_BATCHES).out)
    assert summary["events_settled"] + summary["events_skipped_already_settled"] == len(rows)
    assert summary["events_skipped_already_settled"] == part
    assert show(cli, "killed")["events_settled"] == len(rows)
    total = sum(Decimal(p["amount"]) for p in payouts(cli, "--alliance", "killed")["payouts"])
    assert total == expected
    # The audit, from the chain alone: every event once, every credit as recomputed, nothing lost.
    report = json.loads(cli.run("audit", "--format", "json").out)
    assert report["result"] == "clean" and report["checked"]["events"] >= len(rows)


def test_ctrl_c_during_a_settlement_says_how_far_it_got_and_the_re_run_completes(cli, sh, tmp_path):
    """Ape replaces Python's SIGINT handler with ``sys.exit(130)`` when imported: Ctrl-C stopped the run
    without a word. A real process, SIGINT mid-run: it says how many events landed, exits 130, and the
    same command run again settles the rest."""
    make_alliance(cli, "ctrl-c")
    rows = [(f"CC-{i}", "ctrl-c", f"{i}.{i % 100:02d}", 202611) for i in range(1, 1201)]
    path = write_csv(tmp_path / "ctrl-c.csv", rows)
    code, out, err = settle_interrupted(cli, sh, path, signal.SIGINT)
    assert code == 130, out + err
    found = re.search(r"interrupted after (\d+) of 1200 events in (\d+) batch(es)?; nothing is paid twice", err)
    assert found, err
    assert "Traceback" not in err, err
    told = int(found.group(1))
    assert 0 < told < len(rows), err
    summary = json.loads(cli.run("settle", str(path), "--json", env=SMALL_BATCHES).out)
    # Batches in flight when Ctrl-C came may still have landed: they are skipped, never paid twice.
    assert summary["events_skipped_already_settled"] >= told
    assert summary["events_settled"] + summary["events_skipped_already_settled"] == len(rows)
    assert show(cli, "ctrl-c")["events_settled"] == len(rows)


def test_dev10_to_dev19_work_the_same_from_any_folder(cli, sh, tmp_path):
    """Ape read ``test.number_of_accounts`` from the current folder's ape-config.yaml (10 without one):
    ``dev15`` failed with ``IndexError`` outside the project."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = sh.run("me", "register", "from-elsewhere", "--signer", "dev15", cwd=elsewhere)
    assert "0xcd3B766CCDd6AE721141F452C550Ca635964ce71" in result.out, result.text  # dev15 of the test mnemonic


@pytest.mark.parametrize("args", [("--help",), ("me", "list"), ("chain", "status"), ("payouts",)])
def test_a_reader_that_closes_the_pipe_early_stops_the_command_quietly(cli, sh, args):
    """``ledger chain up | head -1``: the reader is gone before the output is written. No
    ``BrokenPipeError`` (nor Python's "Exception ignored"), exit 141 as for SIGPIPE."""
    proc = subprocess.Popen(sh.command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=sh.env)
    proc.stdout.close()  # before the command has written anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert err == "", err


def test_python_warnings_stay_out_of_the_output_unless_debug(monkeypatch):
    import contextlib
    import warnings

    from ledger import config
    from ledger.cli import main
    from ledger.errors import ChainUnavailable

    original = config.Settings.from_env.__func__

    def noisy(cls, *args, **kwargs):
        warnings.warn("a library's deprecation", DeprecationWarning, stacklevel=1)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(config.Settings, "from_env", classmethod(noisy))
    for debug, shown in (([], 0), (["--debug"], 1)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")  # as with PYTHONWARNINGS=always, or a library that forces it
            with contextlib.suppress(ChainUnavailable):  # --debug raises it instead of printing it
                main([*debug, "--port", str(free_port()), "balance"])
        assert len([w for w in seen if "a library's deprecation" in str(w.message)]) == shown, debug


@pytest.mark.anvil_only("a chain kept across a restart needs the supervisor's store; Hardhat's node keeps none")
def test_the_chain_stopped_and_started_again_keeps_every_balance(cli, sh):
    before = json.loads(cli.run("balance", "--json").out)
    status = json.loads(cli.run("chain", "status", "--json").out)
    height = status["block"]
    assert f"up to block {height}" in sh.run("chain", "down").out
    assert "not running" in sh.run("chain", "down").out
    stopped = json.loads(cli.run("chain", "status", "--json").out)
    assert stopped["running"] is False and stopped["durable_block"] == height and stopped["store_bytes"] > 0
    cli.fails("balance", code=2, contains="ledger chain up")
    out = sh.run("chain", "up").out
    assert f"restored block {height} from snapshot" in out and "did not stop cleanly" not in out
    assert "already runs" in sh.run("chain", "up").out
    assert json.loads(cli.run("chain", "status", "--json").out)["block"] == height
    assert json.loads(cli.run("balance", "--json").out) == before
    assert "reused the deployment" in cli.run("deploy").out


@pytest.mark.anvil_only("the corrupt state file is Anvil's; Hardhat's node reads none")
def test_a_corrupt_state_file_of_the_old_scheme_and_a_taken_port_get_clear_messages(tmp_path):
    broken = LedgerCLI(tmp_path / "data", free_port())
    state = broken.data_dir / "node" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"block": tru')
    broken.fails("chain", "up", contains="ledger chain up --reset")
    try:
        assert "local chain started" in broken.run("chain", "up", "--reset").out
        assert list(state.parent.glob("state.*.json")), "the corrupt file is kept aside"
    finally:
        broken.run("chain", "down")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = LedgerCLI(tmp_path / "busy", taken.getsockname()[1])
        busy.fails("chain", "up", contains="is taken by another program")


def test_the_demo_runs_from_nothing_and_again_without_settling_twice(tmp_path):
    demo = LedgerCLI(tmp_path / "demo data", free_port())  # a space: the hints must quote it
    try:
        first = demo.run("demo", "--events", "400")
        assert "started the local chain" in first.out
        assert "settled 400 events in 1 batch (" in first.out
        assert "balances add up to" in first.out and ": OK" in first.out
        # The "next" hints carry the data folder and port the demo ran with, shell-quoted: pasted into
        # another shell (no LEDGER_DATA_DIR / LEDGER_PORT there), they reach the demo's chain.
        root = f"ledger --data-dir {shlex.quote(str(demo.data_dir))} --port {demo.port}"
        assert f"  {root} withdraw fridge --account dev3\n" in first.out, first.out
        hint = next(line.strip() for line in first.out.splitlines() if line.strip() == f"{root} balance")
        bare = {k: v for k, v in demo.env.items() if k not in ("LEDGER_DATA_DIR", "LEDGER_PORT")}
        pasted = f"{shlex.quote(sys.executable)} -m ledger.cli{hint[len('ledger') :]}"
        ran = subprocess.run(["bash", "-c", pasted], capture_output=True, text=True, env=bare, timeout=120)
        assert ran.returncode == 0 and ": OK" in ran.stdout, ran.stdout + ran.stderr
        table = payouts(demo, "--alliance", "smart-kitchen")
        second = demo.run("demo", "--events", "400")
        assert "already closed" in second.out and "settled 400" not in second.out
        assert payouts(demo, "--alliance", "smart-kitchen") == table
        assert len({p["me"] for p in table["payouts"]}) == 4
        assert {p["tier"] for p in table["payouts"]} == {"base", "excess"}
        statement = tmp_path / "statement.csv"
        demo.run("payouts", "--format", "csv", "-o", str(statement))
        audit = demo.run("audit", "--statement", str(statement)).out
        assert "result: clean, every check passed" in audit
        assert "400 in 1 batch," in audit and "statement        8 lines, 8 matching" in audit
    finally:
        demo.run("chain", "down")
