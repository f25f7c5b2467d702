"""The local index (``ledger.index``) against the chain: after settlements, a reorganisation
(``anvil_rollback``), a kill -9 of the client in the middle of an update, a deleted, corrupted or
edited index file. After each: settle stays exactly-once, reports equal a full re-read of the chain
(``LEDGER_INDEX=0``), and ``ledger audit`` is clean. (Two concurrent settlement runs sharing one index:
``tests/test_faults.py``.)"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import pytest

from ledger.chain.codec import compiled_abi
from ledger.chain.reader import LedgerReader
from ledger.index import LedgerIndex, index_path
from ledger.models import bytes32_to_text, text_to_bytes32

from .cli_support import RpcProxy, free_port, write_csv
from .test_cli_e2e import make_alliance
from .test_faults import SMALL_BATCHES, Chain, revenue, wait_for

FULL_READ = {"LEDGER_INDEX": "0"}


@pytest.fixture
def chain(tmp_path):
    node = Chain(tmp_path / "data", free_port()).start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def chain_with_history(tmp_path):
    node = Chain(tmp_path / "data", free_port()).start(keep_history=True)
    try:
        yield node
    finally:
        node.stop()


def record(chain: Chain) -> dict:
    return json.loads((chain.sh.data_dir / "deployments" / "31337.json").read_text())


def open_index(chain: Chain) -> LedgerIndex:
    rec = record(chain)
    path = index_path(chain.sh.data_dir, 31337, rec["ledger"])
    return LedgerIndex(path, chain_id=31337, ledger=rec["ledger"], from_block=rec["block"],
                       abi=compiled_abi("AllianceLedger"))  # fmt: skip


def chain_references(chain: Chain, to_block: int | None = None) -> dict:
    """Every settled reference, read from every log of the chain (the settler's way without an index)."""
    rec = record(chain)
    reader = LedgerReader.over_rpc(rec["ledger"], chain.url)
    settled = {}
    for log in reader.logs(["RevenueSettled"], from_block=rec["block"], to_block=to_block):
        for k, (ref, entry) in enumerate(zip(log.args["refs"], log.args["entries"], strict=True)):
            settled.setdefault(bytes(ref), (log.args["agreementId"], entry >> 32, entry & 0xFFFFFFFF,
                                            log.args["firstSeq"] + k))  # fmt: skip
    return settled


def index_references(index: LedgerIndex, refs) -> dict:
    return {ref: (s.agreement_id, s.amount, s.period, s.seq) for ref, s in index.settled(refs).items()}


def assert_reports_equal_a_full_re_read(chain: Chain) -> None:
    for command in (("payouts", "--format", "json"), ("balance", "--json"), ("me", "list", "--json")):
        indexed = chain.cli.run(*command).out
        full = chain.cli.run(*command, env=FULL_READ).out
        assert json.loads(indexed) == json.loads(full), command


def assert_index_matches_chain(chain: Chain) -> None:
    index = open_index(chain)
    try:
        tip = index.tip_block
        expected = chain_references(chain, to_block=tip)
        everything = chain_references(chain)
        assert index_references(index, everything) == expected
    finally:
        index.close()


def test_the_index_holds_what_the_chain_holds_and_reports_equal_a_full_re_read(chain, tmp_path):
    make_alliance(chain.cli, "indexed")
    first, second = revenue("IX", "indexed", 150), revenue("IY", "indexed", 120, period=202612)
    chain.cli.run("settle", str(write_csv(tmp_path / "a.csv", first)), env=SMALL_BATCHES)
    status = json.loads(chain.cli.run("index", "status", "--json").out)
    assert status["references"] == 150 and status["block"] == chain.height()
    chain.cli.run("settle", str(write_csv(tmp_path / "b.csv", second)), env=SMALL_BATCHES)
    chain.cli.run("period", "close", "indexed", "202611")
    chain.cli.run("withdraw", "fridge", "--account", "dev3")
    assert_index_matches_chain(chain)
    assert_reports_equal_a_full_re_read(chain)
    # The file settled again: nothing new, every event found in the index.
    again = json.loads(chain.cli.run("settle", str(write_csv(tmp_path / "c.csv", first + second)), "--json").out)
    assert again["events_settled"] == 0 and again["events_skipped_already_settled"] == 270
    # A reference settled before with another amount is refused by row, from the index.
    changed = [(first[0][0], "indexed", "999.00", 202611)]
    err = chain.cli.fails("settle", str(write_csv(tmp_path / "d.csv", changed)), contains="already settled")
    assert "row 2" in err
    status = json.loads(chain.cli.run("index", "status", "--json").out)
    assert status["references"] == 270 and status["last_update"]["logs"] == 0
    rebuilt = json.loads(chain.cli.run("index", "rebuild", "--json").out)
    assert rebuilt["references"] == 270 and rebuilt["block"] == status["block"] == chain.height()
    assert_index_matches_chain(chain)
    chain.assert_exactly_once("indexed", first + second)


@pytest.mark.anvil_only("anvil_rollback: Hardhat's node cannot drop blocks from the head of its chain")
def test_a_rollback_rewinds_the_index_and_settling_again_is_exactly_once(chain_with_history, tmp_path):
    chain = chain_with_history
    make_alliance(chain.cli, "rolled")
    rows = revenue("RB", "rolled", 200)
    path = write_csv(tmp_path / "rb.csv", rows)
    chain.cli.run("settle", str(path), env=SMALL_BATCHES)  # batches of 76, 76 and 48 events
    assert json.loads(chain.cli.run("index", "status", "--json").out)["references"] == 200
    chain.call("anvil_rollback", 2)
    status = json.loads(chain.cli.run("index", "status", "--json").out)
    assert status["references"] == 76 and status["last_update"]["rewound_to"] is not None
    assert_index_matches_chain(chain)
    assert_reports_equal_a_full_re_read(chain)
    summary = json.loads(chain.cli.run("settle", str(path), "--json", env=SMALL_BATCHES).out)
    assert summary["events_settled"] == 124 and summary["events_skipped_already_settled"] == 76
    assert_index_matches_chain(chain)
    chain.assert_exactly_once("rolled", rows)


class SlowLogs(RpcProxy):
    """Every eth_getLogs takes a tenth of a second longer: an index update lasts long enough to be killed."""

    def answer(self, request):
        if isinstance(request, dict) and request.get("method") == "eth_getLogs":
            time.sleep(0.1)
        return None


def test_a_client_killed_mid_update_leaves_the_last_committed_state(chain, tmp_path):
    make_alliance(chain.cli, "killed")
    rows = revenue("KL", "killed", 600)
    path = write_csv(tmp_path / "kl.csv", rows)
    chain.cli.run("settle", str(path), env={**SMALL_BATCHES, "LEDGER_INDEX": "0"})  # no index yet
    index = open_index(chain)
    file = index.path
    assert not file.exists()
    with SlowLogs.serving(chain.url) as proxy:
        port = proxy.rsplit(":", 1)[1]
        proc = chain.sh.popen("index", "status", env={"LEDGER_PORT": port, "LEDGER_INDEX_PAGE_BLOCKS": "1"})

        def progressed() -> bool:
            if not file.exists():
                return False
            try:
                with sqlite3.connect(file, timeout=5) as conn:
                    return conn.execute("SELECT count(*) FROM synced").fetchone()[0] >= 5
            except sqlite3.Error:
                return False

        wait_for(progressed, what="an index update under way")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    try:
        tip = index.tip_block
        assert tip < chain.height()  # killed before the end
        assert_index_matches_chain(chain)  # exactly the blocks up to its tip, nothing half-written
    finally:
        index.close()
    assert_reports_equal_a_full_re_read(chain)
    again = json.loads(chain.cli.run("settle", str(path), "--json").out)
    assert again["events_settled"] == 0 and again["events_skipped_already_settled"] == 600
    chain.assert_exactly_once("killed", rows)


def test_a_deleted_corrupted_or_edited_index_is_rebuilt_never_trusted(chain, tmp_path):
    # Whole commands: each finds the file as the damage left it, as the next run on a machine would.
    make_alliance(chain.cli, "damaged")
    rows = revenue("DM", "damaged", 300)
    path = write_csv(tmp_path / "dm.csv", rows[:200])
    chain.sh.run("settle", str(path), env=SMALL_BATCHES)
    file = open_index(chain).path
    assert file.exists()

    # Deleted: built again from the chain.
    file.unlink()
    again = json.loads(chain.sh.run("settle", str(path), "--json").out)
    assert again["events_settled"] == 0 and again["events_skipped_already_settled"] == 200

    # Not a database any more: set aside with a notice, rebuilt.
    file.write_bytes(b"this is not an index" * 100)
    result = chain.sh.run("payouts", "--format", "json")
    assert "set aside" in result.err
    assert json.loads(result.out) == json.loads(chain.cli.run("payouts", "--format", "json", env=FULL_READ).out)
    assert any(p.name.startswith(file.name + ".damaged-") for p in file.parent.iterdir())

    # Rows deleted with a valid SQLite file: the settler's check against the contract's cursor finds it.
    with sqlite3.connect(file) as conn:
        conn.execute("DELETE FROM batches WHERE id = (SELECT max(id) FROM batches)")
    result = chain.sh.run("settle", str(write_csv(tmp_path / "dm2.csv", rows)), "--json")
    assert "rebuilding" in result.err
    summary = json.loads(result.out)
    assert summary["events_settled"] == 100 and summary["events_skipped_already_settled"] == 200

    # One reference row deleted, its batch left whole (the cursor count still agrees): the rows each batch
    # kept find it, so the reference is not settled a second time.
    with sqlite3.connect(file) as conn:
        conn.execute("DELETE FROM refs WHERE id = (SELECT min(id) FROM refs)")
    result = chain.sh.run("settle", str(write_csv(tmp_path / "dm2.csv", rows)), "--json")
    assert "rebuilding" in result.err
    summary = json.loads(result.out)
    assert summary["events_settled"] == 0 and summary["events_skipped_already_settled"] == 300

    # Pages overwritten in the middle: rebuilt, or refused with one line naming the way out; never
    # settled twice.
    chain.cli.run("index", "status")
    data = bytearray(file.read_bytes())
    for offset in range(4096, len(data), 4096):
        data[offset + 100 : offset + 400] = os.urandom(300)
    file.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        (file.parent / (file.name + suffix)).unlink(missing_ok=True)
    result = chain.sh.run("settle", str(write_csv(tmp_path / "dm3.csv", rows)), "--json", ok=False)
    assert "Traceback" not in result.text
    if result.code != 0:
        assert "ledger index rebuild" in result.err, result.err
        chain.sh.run("index", "rebuild")
        result = chain.sh.run("settle", str(write_csv(tmp_path / "dm3.csv", rows)), "--json")
    assert json.loads(result.out)["events_settled"] == 0
    assert_reports_equal_a_full_re_read(chain)
    chain.assert_exactly_once("damaged", rows)


def test_a_file_with_reversals_settled_again_skips_every_reversal_with_the_index_and_without(chain, tmp_path):
    make_alliance(chain.cli, "returns")
    header = "reference,alliance,amount,period,reverses"
    sales = [(f"RS-{i}", "returns", "10.00", 202611, "") for i in range(1, 6)]
    reversals = [(f"RR-{i}", "returns", "4.00", 202612, f"RS-{i}") for i in range(1, 6)]
    reversals.append(("RR-6", "returns", "6.00", 202612, "RS-1"))  # RS-1 reversed in full: 4 + 6
    whole = write_csv(tmp_path / "whole.csv", sales + reversals, header)
    first = json.loads(chain.cli.run("settle", str(whole), "--json", env=SMALL_BATCHES).out)
    assert first["events_settled"] == 11 and first["reversals_settled"] == 6
    cursor = json.loads(chain.cli.run("alliance", "show", "returns", "--json").out)
    height = chain.height()
    only_reversals = write_csv(tmp_path / "reversals.csv", reversals, header)
    for env in ({}, FULL_READ):  # the index on (the default), then every log read again
        for path, count in ((whole, 11), (only_reversals, 6)):
            again = json.loads(chain.cli.run("settle", str(path), "--json", env={**SMALL_BATCHES, **env}).out)
            assert again["events_settled"] == again["reversals_settled"] == 0, (env, path.name)
            assert again["events_skipped_already_settled"] == count
        # Reversed beyond the original, counting what the chain already reversed: refused by row.
        more = write_csv(tmp_path / "more.csv", [("RR-7", "returns", "0.01", 202612, "RS-1")], header)
        err = chain.cli.fails("settle", str(more), env=env, contains="would total")
        assert "row 2: reversals of 'RS-1' would total" in err
    assert chain.height() == height  # nothing was sent
    assert json.loads(chain.cli.run("alliance", "show", "returns", "--json").out) == cursor
    index = open_index(chain)
    try:
        found = index.settled(text_to_bytes32(ref) for ref, *_ in reversals)
        assert {bytes32_to_text(s.reverses) for s in found.values()} == {f"RS-{i}" for i in range(1, 6)}
        assert index.reversed_totals([text_to_bytes32("RS-1"), text_to_bytes32("RS-2")]) == {
            text_to_bytes32("RS-1"): 10 * 10**6, text_to_bytes32("RS-2"): 4 * 10**6,
        }  # fmt: skip
    finally:
        index.close()
    assert_reports_equal_a_full_re_read(chain)  # reversal lines and debts, from the index and from the logs
    assert chain.audit()["findings"] == []
