"""The catalogue of bad input, end to end through the ``ledger`` command on a chain of its own.

Every class of bad input gets its own test (or its own parametrized id): a revenue file given to
``ledger settle`` or a mistaken ``ledger`` command. Each must be refused with one ``error:`` line per
problem that names the row (the line of the file; the header is row 1) or the field / option, the
documented exit code (1: refused, bad input; 2: usage, chain unreachable), no traceback, and no state
change: the chain's head (block number and hash) does not move, so no transaction was sent, and the
ledger's local files (deployment record, signature store) are untouched; the last test checks that the
alliances, their settled events, the balances and the MEs are as the setup left them. Hypothesis then
generates malformed files mixing valid rows with corrupted ones.

Commands run through the console entry point in this process (``ConsoleCLI``); one test runs the real
process. The bugs this file found are fixed; each kept its test.

The parser itself is covered case by case in ``test_revenue_file.py``; the 1 GB file (streaming) is
tested elsewhere.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.chain.node import rpc
from ledger.terms import TERMS_ABI_TYPE

from .cli_support import InProcessCLI, LedgerCLI, Result, free_port

pytestmark = pytest.mark.http_node("runs `ledger` as subprocesses against a chain started by `ledger chain up`")

KITCHEN = [("fridge", "dev3"), ("oven", "dev4"), ("recipe-app", "dev5"), ("logistics", "dev6")]
HEADER = "reference,alliance,amount,period"
LIVE = "live"  # active, 4 parties; reference OLD-1 settled in 202611; period 202601 closed
SUMMARY = re.compile(r"^error: \d+ problems.*nothing was changed$")


class ConsoleCLI(InProcessCLI):
    """The console entry point (``ledger.cli.main``) in this process: the installed command's one-line
    errors and exit codes, usage mistakes included (click's runner in standalone mode prints those its
    own way), at in-process speed."""

    def run(self, *args: str, ok: bool = True, env: dict | None = None, timeout: float = 300) -> Result:
        from click.testing import CliRunner

        from ledger.cli import main

        extra = {"LEDGER_DATA_DIR": str(self.data_dir), "LEDGER_PORT": str(self.port),
                 "APE_FOUNDRY_HOST": f"http://127.0.0.1:{self.port}", **(env or {})}  # fmt: skip
        with CliRunner(mix_stderr=False).isolation(env=extra) as (out, err):
            code = main(list(args))
            result = Result(code, out.getvalue().decode(), err.getvalue().decode())
        if ok:
            assert result.code == 0, f"ledger {' '.join(args)} -> {result.code}\n{result.text}"
        return result


# -- the chain ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sh(tmp_path_factory):
    """``ledger`` as subprocesses, on a chain of its own started with ``ledger chain up``."""
    ledger = LedgerCLI(tmp_path_factory.mktemp("bad-input-data"), free_port())
    ledger.run("chain", "up")
    try:
        yield ledger
    finally:
        ledger.run("chain", "down", ok=False)


def _alliance(cli: LedgerCLI, name: str, parties: list[tuple[str, str, int]], submit: bool = True) -> None:
    cli.run("alliance", "propose", name, *[a for me, _, bps in parties for a in ("--party", f"{me}={bps}")])
    if submit:
        cli.run("alliance", "sign", name, *[a for _, alias, _ in parties for a in ("--account", alias)])
        cli.run("alliance", "submit", name)


@pytest.fixture(scope="module")
def cli(sh, tmp_path_factory):
    """Deployed, the kitchen MEs registered, finance funded, and one alliance in every state:

    - ``live``: active; reference OLD-1 (5.00, period 202611) settled; period 202601 closed
    - ``pending``: proposed, never active; fridge (dev3) has signed, oven has not
    - ``other-terms``: proposed with other shares, nobody has signed
    - ``ended``: was active, terminated by both parties
    - ``with-dissolved``: active, but its party ``temp`` has since been dissolved
    - ME ``idle`` (signer and payout dev7): in no alliance, owed nothing
    """
    ledger = ConsoleCLI(sh.data_dir, sh.port)
    ledger.run("deploy")
    ledger.run("me", "register", "kitchen-platform", "--signer", "dev1")
    for name, alias in KITCHEN:
        ledger.run("me", "register", name, "--signer", alias, "--parent", "kitchen-platform")
    ledger.run("me", "register", "idle", "--signer", "dev7")
    ledger.run("me", "register", "temp", "--signer", "dev8")
    ledger.run("token", "mint", "1000000")
    shares = (4000, 3000, 1500, 1500)
    _alliance(ledger, LIVE, [(me, alias, bps) for (me, alias), bps in zip(KITCHEN, shares, strict=True)])
    _alliance(ledger, "pending", [("fridge", "dev3", 5000), ("oven", "dev4", 5000)], submit=False)
    ledger.run("alliance", "sign", "pending", "--account", "dev3")
    _alliance(ledger, "other-terms", [("fridge", "dev3", 6000), ("oven", "dev4", 4000)], submit=False)
    _alliance(ledger, "ended", [("fridge", "dev3", 5000), ("oven", "dev4", 5000)])
    ledger.run("alliance", "terminate", "ended", "--account", "dev3", "--account", "dev4")
    _alliance(ledger, "with-dissolved", [("fridge", "dev3", 5000), ("temp", "dev8", 5000)])
    ledger.run("me", "dissolve", "temp")
    old = tmp_path_factory.mktemp("setup") / "old.csv"
    old.write_text(f"{HEADER}\nOLD-1,{LIVE},5.00,202611\n")
    ledger.run("settle", str(old))
    ledger.run("period", "close", LIVE, "202601", "--force")  # no revenue in it: closed on purpose
    ledger.baseline = ledger_state(ledger)
    return ledger


# -- checking a refusal --------------------------------------------------------------------------------


def local_files(cli: LedgerCLI) -> dict[str, str]:
    """The ledger's own files (deployment record, signature store); not the node's state file, nor the
    caches of what the chain holds (the local index and the audit checkpoint, which any command may
    bring up to date)."""
    root = Path(cli.data_dir)
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not {"node", "index", "audit"} & set(p.relative_to(root).parts)
    }


@dataclass(frozen=True)
class Snapshot:
    """The chain's head and the ledger's local files. Anvil mines a block for every transaction and for
    nothing else, so an unchanged head (number and hash) means no transaction was sent: no balance,
    alliance, signature, period or settled event can have changed on chain."""

    block: int
    block_hash: str
    files: dict


def snapshot(cli: LedgerCLI) -> Snapshot:
    head = rpc(f"http://127.0.0.1:{cli.port}", "eth_getBlockByNumber", ["latest", False])
    return Snapshot(int(head["number"], 16), head["hash"], local_files(cli))


def ledger_state(cli: LedgerCLI) -> dict:
    """What the ledger's users see: every alliance (status, versions, events settled) and every balance."""
    return {
        "alliances": json.loads(cli.run("alliance", "list", "--json").out),
        "balance": json.loads(cli.run("balance", "--json").out),
        "me": json.loads(cli.run("me", "list", "--json").out),
    }


def rows_named(line: str) -> set[int]:
    """The row numbers a message names: ``row 7: ...`` or ``rows 2, 5, 9: ...``."""
    found = set()
    for match in re.finditer(r"\brows? (\d+(?:, \d+)*)", line):
        found |= {int(n) for n in match.group(1).split(", ")}
    return found


def refused(cli: LedgerCLI, *args: str, code: int = 1, expect=()) -> list[str]:
    """Run a command that must be refused and change nothing.

    ``expect``: one entry per problem, each a tuple of strings that one and the same error line must
    all contain (e.g. ``("row 3", "amount")``), in any order. Returns the problem lines.
    """
    before = snapshot(cli)
    result = cli.run(*args, ok=False)
    after = snapshot(cli)
    shown = f"ledger {' '.join(args)} -> {result.code}\n{result.text}"
    assert result.code == code, shown
    assert "Traceback" not in result.text, shown
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert lines and all(line.startswith("error: ") for line in lines), shown
    problems = [line for line in lines if not SUMMARY.match(line)]
    assert len(problems) == len(expect), f"{len(expect)} problem line(s) expected\n{shown}"
    unmatched = list(problems)
    for parts in expect:
        hit = next((line for line in unmatched if all(p.lower() in line.lower() for p in parts)), None)
        assert hit is not None, f"no error line contains all of {parts}\n{shown}"
        unmatched.remove(hit)
    assert len(problems) == 1 or any(SUMMARY.match(line) for line in lines), shown
    assert after == before, f"state changed\nbefore {before}\nafter  {after}\n{shown}"
    return problems


def csv_file(folder: Path, name: str, *rows: str, header: str = HEADER) -> Path:
    path = folder / name
    path.write_text("".join(line + "\n" for line in (header, *rows)))
    return path


# -- revenue files: one test per class ---------------------------------------------------------------

A, P = LIVE, 202611  # a valid alliance and period for the rows that are not the point of a case

# (id, file name, content, problems: tuples of words one error line must contain)
FILE_CASES = [
    ("empty-file", "empty.csv", b"", [("empty",)]),
    ("blank-lines-only", "blank.csv", b"\n  \r\n\n", [("empty",)]),
    ("header-only", "header.csv", f"{HEADER}\n".encode(), [("no revenue events", "header")]),
    ("missing-column", "missing.csv", f"reference,alliance,amount\nR-1,{A},1\n".encode(), [("row 1", "period")]),
    (
        "extra-column",
        "extra.csv",
        f"{HEADER},currency\nR-1,{A},1,{P},EUR\n".encode(),
        [("row 1", "currency")],
    ),
    (
        "repeated-column",
        "repeated.csv",
        f"{HEADER},amount\nR-1,{A},1,{P},2\n".encode(),
        [("row 1", "amount")],
    ),
    (
        "row-with-missing-or-extra-fields",
        "fields.csv",
        f"{HEADER}\nR-1,{A},1\nR-2,{A},1,{P},x\nR-3,{A},1,{P}\n".encode(),
        [("row 2", "3 fields"), ("row 3", "5 fields")],
    ),
    (
        "unknown-alliance",
        "unknown.csv",
        f"{HEADER}\nR-1,{A},1,{P}\nR-2,nowhere,1,{P}\n".encode(),
        [("row 3", "alliance", "nowhere")],
    ),
    (
        "inactive-alliance",
        "inactive.csv",
        f"{HEADER}\nR-1,{A},1,{P}\nR-2,pending,1,{P}\n".encode(),
        [("row 3", "pending", "not active")],
    ),
    (
        "terminated-alliance",
        "terminated.csv",
        f"{HEADER}\nR-1,ended,1,{P}\nR-2,{A},1,{P}\n".encode(),
        [("row 2", "ended", "terminated")],
    ),
    (
        "alliance-with-a-dissolved-party",
        "dissolved.csv",
        f"{HEADER}\nR-1,with-dissolved,1,{P}\n".encode(),
        [("row 2", "with-dissolved", "temp", "dissolved")],
    ),
    (
        "closed-period",
        "closed.csv",
        f"{HEADER}\nR-1,{A},1,{P}\nR-2,{A},1,202601\n".encode(),
        [("row 3", "period 202601", "closed")],
    ),
    (
        "period-not-a-whole-number",
        "period.csv",
        f"{HEADER}\nR-1,{A},1,2026-11\nR-2,{A},1,0\nR-3,{A},1,4294967296\nR-4,{A},1,\n".encode(),
        [("row 2", "period"), ("row 3", "period"), ("row 4", "period"), ("row 5", "period")],
    ),
    (
        "negative-amount",
        "negative.csv",
        f"{HEADER}\nR-1,{A},-1.00,{P}\nR-2,{A},+1.00,{P}\n".encode(),
        [("row 2", "amount", "sign"), ("row 3", "amount", "sign")],
    ),
    (
        "zero-amount",
        "zero.csv",
        f"{HEADER}\nR-1,{A},0,{P}\nR-2,{A},0.000000,{P}\n".encode(),
        [("row 2", "amount", "zero"), ("row 3", "amount", "zero")],
    ),
    (
        "non-numeric-amount",
        "text.csv",
        f'{HEADER}\nR-1,{A},abc,{P}\nR-2,{A},"1,000.00",{P}\nR-3,{A},12.5.0,{P}\nR-4,{A},,{P}\nR-5,{A},NaN,{P}\n'
        f"R-6,{A},１２,{P}\n".encode(),
        [
            ("row 2", "amount"),
            ("row 3", "amount"),
            ("row 4", "amount"),
            ("row 5", "amount"),
            ("row 6", "amount"),
            ("row 7", "amount"),
        ],
    ),
    (
        "exponent-amount",
        "exponent.csv",
        f"{HEADER}\nR-1,{A},1e5,{P}\nR-2,{A},2.5E-3,{P}\n".encode(),
        [("row 2", "amount", "1e5"), ("row 3", "amount", "2.5E-3")],
    ),
    (
        "more-decimals-than-the-token",
        "decimals.csv",
        f"{HEADER}\nR-1,{A},1.0000001,{P}\nR-2,{A},0.1234567890,{P}\n".encode(),
        [("row 2", "amount", "7 decimals"), ("row 3", "amount", "10 decimals")],
    ),
    (
        "amount-beyond-uint256",
        "huge.csv",
        f"{HEADER}\nR-1,{A},{2**256},{P}\nR-2,{A},{'9' * 100},{P}\nR-3,{A},{2**128},{P}\n".encode(),
        [("row 2", "amount"), ("row 3", "amount"), ("row 4", "amount")],
    ),
    (
        "duplicate-reference-in-the-file",
        "dup.csv",
        f"{HEADER}\nR-1,{A},1,{P}\nR-2,{A},1,{P}\nR-1,{A},1,{P}\n".encode(),
        [("row 4", "R-1", "row 2")],
    ),
    (
        "reference-settled-before-with-other-values",
        "resettle.csv",
        f"{HEADER}\nR-1,{A},1,{P}\nOLD-1,{A},6.00,{P}\n".encode(),
        [("row 3", "OLD-1", "already settled")],
    ),
    (
        "bad-reference",
        "reference.csv",
        f"{HEADER}\n,{A},1,{P}\n{'R' * 33},{A},1,{P}\nR-ü{'x' * 30},{A},1,{P}\n".encode(),
        [("row 2", "reference", "empty"), ("row 3", "reference", "33 bytes"), ("row 4", "reference", "34 bytes")],
    ),
    (
        "non-utf8-bytes",
        "latin1.csv",
        f"{HEADER}\nR-1,{A},1,{P}\n".encode() + f"R-\xe9,{A},1,{P}\n".encode("latin-1"),
        [("row 3", "UTF-8")],
    ),
    (
        "non-utf8-header",
        "utf16.csv",
        f"{HEADER}\nR-1,{A},-1,{P}\n".encode("utf-16"),
        [("row 1", "UTF-16", "save it as UTF-8")],
    ),
    (
        "bom",
        "bom.csv",
        b"\xef\xbb\xbf" + f"{HEADER}\nR-1,{A},1,{P}\nR-2,{A},1.1234567,{P}\n".encode(),
        [("row 3", "amount")],
    ),
    (
        "bom-twice",
        "bom2.csv",
        b"\xef\xbb\xbf\xef\xbb\xbf" + f"{HEADER}\nR-1,{A},1,{P}\n".encode(),
        [("row 1", "reference")],
    ),
    (
        "crlf",
        "crlf.csv",
        f"{HEADER}\r\nR-1,{A},1,{P}\r\n\r\nR-2,{A},-1,{P}\r\nR-3,{A},1,x\r\n".encode(),
        [("row 4", "amount", "'-1'"), ("row 5", "period", "'x'")],
    ),
    (
        "jsonl-wrong-types",
        "types.jsonl",
        "\n".join(
            json.dumps(obj)
            for obj in [
                {"reference": "J-1", "alliance": A, "amount": "1.00", "period": P},
                {"reference": "J-2", "alliance": A, "amount": 1.5, "period": P},
                {"reference": "J-3", "alliance": A, "amount": "1", "period": "x"},
                {"reference": 4, "alliance": A, "amount": "1", "period": P},
                {"reference": "J-5", "alliance": None, "amount": "1", "period": P},
                {"reference": "J-6", "alliance": A, "amount": ["1"], "period": P},
                {"reference": "J-7", "alliance": A, "amount": "1", "period": 202611.5},
                {"reference": "J-8", "alliance": A, "amount": True, "period": P},
                {"reference": "J-9", "alliance": A, "amount": "1", "period": [P]},
                {"reference": "J-10", "alliance": A, "amount": "1e3", "period": P},
            ]
        ).encode(),
        [
            ("row 2", "amount"),
            ("row 3", "period"),
            ("row 4", "reference"),
            ("row 5", "alliance"),
            ("row 6", "amount"),
            ("row 7", "period"),
            ("row 8", "amount"),
            ("row 9", "period"),
            ("row 10", "amount"),
        ],
    ),
    (
        "jsonl-not-objects",
        "shape.jsonl",
        (
            json.dumps({"reference": "J-1", "alliance": A, "amount": "1", "period": P})
            + '\n{"reference": "J-2", "alliance"\n[1, 2]\n'
            + json.dumps({"reference": "J-4", "alliance": A, "amount": "1"})
            + "\n"
            + json.dumps({"reference": "J-5", "alliance": A, "amount": "1", "period": P, "note": "x"})
            + "\n"
        ).encode(),
        [("row 2", "JSON"), ("row 3", "object"), ("row 4", "period"), ("row 5", "note")],
    ),
]


@pytest.mark.parametrize(("name", "content", "problems"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_a_bad_revenue_file_is_refused_by_row_and_field_and_settles_nothing(cli, tmp_path, name, content, problems):
    path = tmp_path / name
    path.write_bytes(content)
    lines = refused(cli, "settle", str(path), expect=problems)
    # Problems of data rows name the file too (and so do the header's: see the test below).
    assert all(f"error: {name}: " in line for line in lines if rows_named(line) - {1}), lines


def test_a_reference_settled_before_with_the_same_values_is_skipped_not_an_error(cli, tmp_path):
    """The counterpart of ``reference-settled-before-with-other-values``: a file run again is no error."""
    path = csv_file(tmp_path, "again.csv", f"OLD-1,{LIVE},5.00,202611")
    before = snapshot(cli)
    out = cli.run("settle", str(path)).out
    assert "nothing new to settle" in out
    assert snapshot(cli) == before


def test_empty_rows_a_spreadsheet_exported_are_skipped_and_reported_not_refused(cli, tmp_path):
    path = csv_file(tmp_path, "export.csv", f"G-1,{LIVE},1.00,202611", ",,,", ",,,")
    before = snapshot(cli)
    out = cli.run("settle", str(path), "--dry-run").out
    assert "skipped 2 empty rows of export.csv (rows 3, 4)" in out, out
    assert snapshot(cli) == before


def _send_as_platform(cli: LedgerCLI, signature: str, types: list[str], values: list) -> None:
    """A raw transaction from the platform account, past every check of this CLI (as another client
    could send it): Anvil's and Hardhat's dev accounts are unlocked."""
    from eth_abi import encode
    from eth_utils import keccak

    url = f"http://127.0.0.1:{cli.port}"
    record = json.loads(next((Path(cli.data_dir) / "deployments").glob("*.json")).read_text())
    data = "0x" + (keccak(text=signature)[:4] + encode(types, values)).hex()
    tx = rpc(url, "eth_sendTransaction", [{"from": record["platform"], "to": record["ledger"], "data": data}])
    deadline = time.monotonic() + 30  # automine answers before the receipt can be read, under load
    while (receipt := rpc(url, "eth_getTransactionReceipt", [tx])) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert receipt and receipt["status"] == "0x1", receipt


def test_names_put_on_chain_past_the_rules_are_escaped_on_every_terminal_output(cli):
    """Names registered before the rules, or by a client that calls the contract directly, reach the
    terminal with their ESC and bidi characters escaped: `me list/show`, `alliance list/show`, errors.
    Done from a node snapshot, reverted after, so the ledger stays as the setup left it."""
    url = f"http://127.0.0.1:{cli.port}"
    evil, rlo, alliance = "evil\x1b[2J", "photo\u202egpj.exe", "kit\u202echen"
    snapshot_id = rpc(url, "evm_snapshot")
    try:
        accounts = rpc(url, "eth_accounts")
        for name, account in ((evil, accounts[9]), (rlo, accounts[10])):
            _send_as_platform(cli, "registerME(string,address,address,uint32)", ["string", "address", "address",
                              "uint32"], [name, account, account, 0])  # fmt: skip
        ids = {m["name"]: m["id"] for m in json.loads(cli.run("me", "list", "--json").out)}
        token = json.loads(next((Path(cli.data_dir) / "deployments").glob("*.json")).read_text())["token"]
        terms = (token, [ids[evil], ids[rlo]], [5000, 5000], [], 0, [], [])
        terms_type = TERMS_ABI_TYPE
        no_terms = ("0x" + "00" * 20, [], [], [], 0, [], [])  # the platform passes no current terms
        _send_as_platform(cli, f"proposeAgreement(bytes32,{terms_type},{terms_type})",
                          ["bytes32", terms_type, terms_type],
                          [alliance.encode().ljust(32, b"\0"), terms, no_terms])  # fmt: skip
        outputs = {
            "me list": cli.run("me", "list").out,
            "me show": cli.run("me", "show", evil).out,
            "alliance list": cli.run("alliance", "list").out,
            "alliance show": cli.run("alliance", "show", alliance).out,
            "error": cli.run("alliance", "sign", alliance, "--account", "dev5", ok=False).err,
        }
        for what, text in outputs.items():
            assert "\x1b" not in text and "\u202e" not in text, f"{what}: {text!r}"
        assert "evil\\x1b[2J" in outputs["me list"] and "photo\\u202egpj.exe" in outputs["me list"]
        assert outputs["me show"].startswith("ME evil\\x1b[2J (id ")
        assert "kit\\u202echen" in outputs["alliance list"] and "evil\\x1b[2J" in outputs["alliance list"]
        assert outputs["alliance show"].startswith("alliance kit\\u202echen:")
        assert outputs["error"].startswith("error: ") and "evil\\x1b[2J" in outputs["error"]
    finally:
        assert rpc(url, "evm_revert", [snapshot_id])


def test_a_problem_of_the_header_names_the_file_too(cli, tmp_path):
    cases = {"empty.csv": b"", "header.csv": b"reference,alliance,amount\n", "utf16.csv": HEADER.encode("utf-16")}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        lines = refused(cli, "settle", str(tmp_path / name), expect=[()])
        assert lines[0].startswith(f"error: {name}: "), lines


def test_a_csv_with_cr_only_line_ends_names_the_row(cli, tmp_path):
    path = tmp_path / "cr.csv"
    path.write_bytes(f"{HEADER}\rR-1,{LIVE},1,202611\r".encode())
    refused(cli, "settle", str(path), expect=[("row 1",)])


def test_a_jsonl_file_whose_first_line_is_not_utf8_still_lists_every_problem(cli, tmp_path):
    path = tmp_path / "first.jsonl"
    path.write_bytes(
        b'{"reference": "R-\xff", "alliance": "live", "amount": "1", "period": 202611}\n'
        b'{"reference": "R-2", "alliance": "live", "amount": "-1", "period": 202611}\n'
    )
    refused(cli, "settle", str(path), expect=[("row 1", "UTF-8"), ("row 2", "amount")])


def test_a_reference_that_cannot_be_utf8_names_the_field(cli, tmp_path):
    path = tmp_path / "surrogate.jsonl"
    path.write_text('{"reference": "R-\\ud800", "alliance": "live", "amount": "1", "period": 202611}\n')
    refused(cli, "settle", str(path), expect=[("row 1", "reference")])


# -- the command line: one test per class --------------------------------------------------------------


def _parties(n: int) -> list[str]:
    return [a for i in range(n) for a in ("--party", f"m{i}=1")]


# (id, args, exit code, words the one error line must contain)
CLI_CASES = [
    ("unknown-me-party", ("alliance", "propose", "p", "--party", "ghost=5000", "--party", "fridge=5000"), 1,
     ("--party", "ghost")),
    ("unknown-me-withdraw", ("withdraw", "ghost", "--account", "dev3"), 1, ("ghost",)),
    ("unknown-account-alias", ("alliance", "sign", "pending", "--account", "nobody"), 1, ("nobody",)),
    ("unknown-dev-account", ("alliance", "sign", "pending", "--account", "dev99"), 1, ("dev99",)),
    ("unknown-settle-account", ("settle", "{good}", "--account", "nobody"), 1, ("nobody",)),
    ("shares-not-summing-to-10000", ("alliance", "propose", "p", "--party", "fridge=5000", "--party", "oven=4999"), 1,
     ("--party", "9999", "10000")),
    ("excess-shares-not-summing-to-10000", ("alliance", "propose", "p", "--party", "fridge=5000",
     "--party", "oven=5000", "--target", "100", "--excess", "fridge=5000", "--excess", "oven=5001"), 1,
     ("--excess", "10001")),
    ("share-not-whole-basis-points", ("alliance", "propose", "p", "--party", "fridge=50.5", "--party", "oven=4950"), 1,
     ("--party", "fridge=50.5")),
    ("duplicate-party", ("alliance", "propose", "p", "--party", "fridge=5000", "--party", "fridge=5000"), 1,
     ("--party", "fridge", "twice")),
    ("too-many-parties", ("alliance", "propose", "p", *_parties(65)), 1, ("--party", "64", "65")),
    ("signature-from-a-key-that-is-no-party", ("alliance", "sign", "pending", "--account", "dev5"), 1,
     ("not the registered signer", "pending")),
    ("signature-not-hex", ("alliance", "import-signature", "pending", "0xzz"), 1, ("signature", "hex")),
    ("submit-before-every-party-signed", ("alliance", "submit", "pending"), 1, ("oven",)),
    ("amend-terminated-alliance", ("alliance", "amend", "ended", "--party", "fridge=5000", "--party", "oven=5000"), 1,
     ("ended", "terminated")),
    ("terminate-terminated-alliance", ("alliance", "terminate", "ended", "--account", "dev3"), 1,
     ("ended", "terminated")),
    ("amend-unknown-alliance", ("alliance", "amend", "ghost", "--party", "fridge=5000", "--party", "oven=5000"), 1,
     ("ghost",)),
    ("withdraw-with-nothing-owed", ("withdraw", "idle", "--account", "dev7"), 1, ("idle", "nothing to withdraw")),
    ("withdraw-from-the-wrong-account", ("withdraw", "fridge", "--account", "dev4"), 1, ("fridge", "payout")),
    ("withdraw-without-account", ("withdraw", "fridge"), 2, ("--account",)),
    ("close-a-closed-period", ("period", "close", LIVE, "202601"), 1, ("202601", "closed")),
    ("close-period-zero", ("period", "close", LIVE, "0"), 2, ("PERIOD",)),
    ("target-with-too-many-decimals", ("alliance", "propose", "p", "--party", "fridge=5000", "--party", "oven=5000",
     "--target", "1.0000001", "--excess", "fridge=5000", "--excess", "oven=5000"), 1, ("--target", "decimals")),
    ("settle-more-than-the-finance-account-holds", ("settle", "{big}"), 1, ("(dev2)", "holds", "fund it first")),
    ("settle-from-an-account-without-the-finance-role", ("settle", "{good}", "--account", "dev9"), 1,
     ("(dev9)", "FINANCE_ROLE")),
    ("network-not-reachable-settle", ("--port", "{closed}", "settle", "{good}"), 2, ("not running",)),
    ("network-not-reachable-withdraw", ("--port", "{closed}", "withdraw", "fridge", "--account", "dev3"), 2,
     ("not running",)),
    ("network-unknown", ("--network", "ethereum:nowhere", "alliance", "list"), 2, ("nowhere",)),
    # Names (ledger/names.py): refused before anything is sent, the character named, nothing echoed raw.
    ("me-name-with-escape", ("me", "register", "fri\x1b[2Jdge", "--signer", "dev9"), 1, ("ME name", "U+001B")),
    ("me-name-with-bidi-override", ("me", "register", "gpj.\u202eexe", "--signer", "dev9"), 1, ("U+202E",)),
    ("me-name-with-trailing-space", ("me", "register", "fridge2 ", "--signer", "dev9"), 1, ("space",)),
    ("me-name-differing-in-case", ("me", "register", "Fridge", "--signer", "dev9"), 1, ("looks like", "'fridge'")),
    ("me-name-with-cyrillic-i", ("me", "register", "fr\u0456dge", "--signer", "dev9"), 1, ("looks like", "'fridge'")),
    ("alliance-name-with-trailing-space", ("alliance", "propose", f"{LIVE} ", "--party", "fridge=5000",
     "--party", "oven=5000"), 1, ("alliance name", "space")),
    ("alliance-name-lookalike", ("alliance", "propose", "LIVE", "--party", "fridge=5000", "--party", "oven=5000"), 1,
     ("alliance name", "looks like", f"'{LIVE}'")),
]  # fmt: skip


@pytest.mark.parametrize(("args", "code", "words"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_a_mistaken_command_gets_one_line_naming_the_field_and_changes_nothing(cli, tmp_path, args, code, words):
    good = csv_file(tmp_path, "good.csv", f"G-1,{LIVE},1.00,202611")
    big = csv_file(tmp_path, "big.csv", f"B-1,{LIVE},99000000.00,202611")
    fill = {"{good}": str(good), "{big}": str(big), "{closed}": str(free_port())}
    args = tuple(fill.get(a, a) for a in args)
    refused(cli, *args, code=code, expect=[words])


def test_a_signature_made_over_other_terms_is_refused(cli):
    """fridge's real signature of ``pending`` is no signature of ``other-terms``: it recovers to a key
    that is no party's."""
    lines = cli.run("alliance", "export-signatures", "pending").out.splitlines()
    exported = next(line for line in lines if not line.startswith("#")).split()
    assert exported[0] == "fridge", exported
    refused(cli, "alliance", "import-signature", "other-terms", exported[1], expect=[("signer", "other-terms")])


def test_too_few_parties_names_the_option(cli):
    refused(cli, "alliance", "propose", "p", "--party", "fridge=10000", expect=[("--party", "2", "got 1")])


def test_a_signature_no_key_made_is_called_invalid_not_from_none(cli):
    lines = refused(cli, "alliance", "import-signature", "pending", "0x" + "11" * 65, expect=[("signature",)])
    assert "None" not in lines[0], lines


@pytest.fixture
def rollback(cli):
    """For tests of bugs that change the chain: put it back as it was afterwards."""
    url = f"http://127.0.0.1:{cli.port}"
    snap = rpc(url, "evm_snapshot")
    yield
    assert rpc(url, "evm_revert", [snap]) is True


def test_a_token_that_is_no_erc20_is_refused(cli, rollback):
    args = ("alliance", "propose", "bogus-token", "--party", "fridge=5000", "--party", "oven=5000")
    refused(cli, *args, "--token", "0x" + "12" * 20, expect=[("--token",)])


# Refusals the contract makes: the command must find them before it sends anything (as `settle` does by
# simulating first), or a reverted transaction is mined: the sender pays gas and uses a nonce.
REVERTED = [
    ("me-name-too-long", ("me", "register", "x" * 65, "--signer", "dev9"), ("name", "64 bytes")),
    ("dissolve-a-dissolved-me", ("me", "dissolve", "temp"), ("ME 7 (temp)",)),
    # The test token's mint used to go straight through Ape: its call trace printed, a reverted mint mined.
    ("mint-without-the-minter-role", ("token", "mint", "100", "--account", "dev5"),
     ("(dev5) lacks the test token's minter role (MINTER_ROLE)", "neededRole=MINTER_ROLE")),
    ("register-without-the-platform-role", ("me", "register", "x", "--signer", "dev9", "--account", "dev2"),
     ("(dev2) lacks the platform role (PLATFORM_ROLE)",)),
    ("zero-address-token", ("alliance", "propose", "zero-token", "--party", "fridge=5000", "--party", "oven=5000",
                            "--token", "0x" + "00" * 20), ("--token", "no contract")),
]  # fmt: skip


@pytest.mark.parametrize(("args", "words"), [c[1:] for c in REVERTED], ids=[c[0] for c in REVERTED])
def test_a_refusal_by_the_contract_sends_no_transaction(cli, rollback, args, words):
    refused(cli, *args, expect=[words])


def test_a_deployment_the_constructor_refuses_is_found_by_simulation_and_mines_nothing(cli, tmp_path):
    """A fresh data folder (no deployment recorded) on the same chain: Ape used to send the deployment,
    print its call trace and mine the revert."""
    args = ("--data-dir", str(tmp_path / "fresh"), "deploy", "--admin", "0x" + "00" * 20, "--account", "dev0")
    refused(cli, *args, expect=[("admin must not be the zero address", "LedgerZeroAddress")])


def test_settling_without_the_finance_role_is_refused_before_the_approval_or_the_funds_advice(cli, rollback, tmp_path):
    """dev9 holds tokens but no finance role: it used to mine an ``approve`` first and then refuse (or,
    unfunded, advise "fund it first"); the role is checked before anything is sent, and named."""
    cli.run("token", "mint", "100", "--to", "dev9")
    good = csv_file(tmp_path, "good.csv", f"G-1,{LIVE},1.00,202611")
    [line] = refused(cli, "settle", str(good), "--account", "dev9", expect=[("(dev9)", "finance role (FINANCE_ROLE)")])
    assert "fund" not in line and "0x9409" not in line, line
    [line] = refused(cli, "settle", str(good), "--account", "dev11", expect=[("(dev11)", "FINANCE_ROLE")])
    assert "fund" not in line, line


def test_role_errors_name_the_role_and_the_account_alias_not_hashes():
    from eth_utils import keccak

    from ledger.errors import KNOWN_NAMES, ROLE_NAMES, describe_revert

    for role_hash, name in ROLE_NAMES.items():
        assert role_hash == ("0x" + "00" * 32 if name == "DEFAULT_ADMIN_ROLE" else "0x" + keccak(text=name).hex())
    who = "0x" + "ab" * 20
    KNOWN_NAMES.setdefault(who, "treasury")
    args = {"account": who, "neededRole": keccak(text="FINANCE_ROLE")}
    text = describe_revert("AccessControlUnauthorizedAccount", args)
    assert text.startswith(f"account {who} (treasury) lacks the finance role (FINANCE_ROLE)"), text
    assert "neededRole=FINANCE_ROLE" in text and "0x940d" not in text, text
    named = describe_revert("MENotActive", {"meId": 7}, {"me:7": "temp"})
    assert named.startswith("ME 7 (temp) is not active"), named


def test_the_console_command_exits_2_when_the_chain_is_unreachable(cli, sh, tmp_path):
    """The real process, not click's runner: the documented exit code of the installed command."""
    good = csv_file(tmp_path, "good.csv", f"G-1,{LIVE},1.00,202611")
    before = snapshot(cli)
    result = sh.run("--port", str(free_port()), "settle", str(good), ok=False)
    assert result.code == 2 and "Traceback" not in result.text, result.text
    assert [line for line in result.err.splitlines() if line.strip()][0].startswith("error: "), result.text
    assert len(result.err.strip().splitlines()) == 1, result.text
    assert snapshot(cli) == before


# -- generated files -------------------------------------------------------------------------------

# corruption -> (how the field changes, words the row's error line must contain)
CORRUPTIONS = {
    "sign": ("amount", lambda i: f"-{i}.5", "amount"),
    "plus": ("amount", lambda i: f"+{i}", "amount"),
    "exponent": ("amount", lambda i: f"{i}e3", "amount"),
    "decimals": ("amount", lambda i: f"{i}.{'1' * 7}", "amount"),
    "empty-amount": ("amount", lambda i: "", "amount"),
    "zero": ("amount", lambda i: "0.00", "amount"),
    "huge": ("amount", lambda i: str(2**256 + i), "amount"),
    "text": ("amount", lambda i: "twelve", "amount"),
    "separator": ("amount", lambda i: "1_000", "amount"),
    "wrong-alliance": ("alliance", lambda i: f"ghost-{i}", "alliance"),
    "period": ("period", lambda i: "x", "period"),
    "period-zero": ("period", lambda i: "0", "period"),
    "empty-reference": ("reference", lambda i: "", "reference"),
    "long-reference": ("reference", lambda i: f"R{i}-" + "x" * 32, "reference"),
    "non-utf8": ("reference", lambda i: f"R{i}-\udcff", "UTF-8"),  # \udcff is written as the raw byte 0xff
}

_examples = itertools.count()

row_kinds = st.lists(st.one_of(st.none(), st.sampled_from(sorted(CORRUPTIONS))), min_size=1, max_size=8).filter(
    lambda kinds: any(kinds)
)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    kinds=row_kinds,
    jsonl=st.booleans(),
    blank_lines=st.lists(st.booleans(), min_size=8, max_size=8),
    crlf=st.booleans(),
    bom=st.booleans(),
    dry_run=st.booleans(),
    amounts=st.lists(st.decimals(min_value="0.000001", max_value="99999", places=6), min_size=8, max_size=8),
)
def test_generated_malformed_files_name_every_bad_row_and_send_nothing(
    cli, kinds, jsonl, blank_lines, crlf, bom, dry_run, amounts
):
    example = next(_examples)
    end = b"\r\n" if crlf else b"\n"
    lines: list[bytes] = [] if jsonl else [_encode(HEADER)]
    expected: dict[int, str] = {}  # row -> words its error line must contain
    for i, kind in enumerate(kinds):
        if blank_lines[i]:
            lines.append(b"")
        fields = {"reference": f"H{example}-{i}", "alliance": LIVE, "amount": f"{amounts[i]:f}", "period": "202611"}
        if kind:
            field, value, word = CORRUPTIONS[kind]
            fields[field] = value(i)
            expected[len(lines) + 1] = word
        if jsonl:
            obj = {**fields, "period": int(fields["period"]) if fields["period"].isdigit() else fields["period"]}
            lines.append(_encode(json.dumps(obj, ensure_ascii=False)))
        else:
            lines.append(_encode(",".join(fields[c] for c in HEADER.split(","))))
    content = (b"\xef\xbb\xbf" if bom else b"") + end.join(lines) + end
    with tempfile.TemporaryDirectory(dir=Path(cli.data_dir).parent) as folder:
        path = Path(folder) / ("generated.jsonl" if jsonl else "generated.csv")
        path.write_bytes(content)
        args = ("settle", str(path), *(["--dry-run"] if dry_run else []))
        problems = refused(cli, *args, expect=[(f"row {row}", word) for row, word in expected.items()])
    named = set().union(*(rows_named(line) for line in problems))
    assert named == set(expected), (named, expected, content)


def test_after_every_refusal_the_ledger_is_as_it_was_set_up(cli):
    """Runs last: the alliances (status, versions, events settled), balances and MEs as the fixture left them."""
    assert ledger_state(cli) == cli.baseline
