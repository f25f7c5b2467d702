"""The local chain survives any crash (docs/local-chain.md): the supervisor, its journal and snapshots.

Each test runs ``ledger chain up`` on a data folder and port of its own, kills what a crash would kill
(the node, the supervisor, both at once, or the supervisor exactly in the middle of a journal or
snapshot write, through the store's fault hook), starts the chain again and checks that

- every block seen more than 2 seconds before the crash is back, with the same hash;
- the same ``ledger settle`` run again completes with every event settled exactly once, and the audit
  (from the chain alone) is clean.

The quick cases (``make test``): a crash in the middle of a journal write, a corrupt newest snapshot,
the log, idle writes and status, a busy node, the old state file. ``slow`` (``make test-all``): a crash in
the middle of a snapshot write, the supervisor killed alone and with the node, a revert before a crash,
and 50 kills at random moments on a state of at least 50 MB.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import threading
import time

import pytest

from ledger.chain.node import ANVIL, rpc
from ledger.chain.store import Store, read_segment
from ledger.errors import LedgerError

from .cli_support import free_port, write_csv
from .test_cli_e2e import make_alliance
from .test_faults import SMALL_BATCHES, Chain, revenue, wait_for

pytestmark = pytest.mark.anvil_only("the supervisor and its store keep Anvil's chain; Hardhat's node keeps none")

DEV0_KEY = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
MNEMONIC = "test test test test test test test test test test test junk"
LOSS_WINDOW_S = 2.0


class Watcher:
    """Notes every block the node shows, with when it was first seen, until the node stops answering."""

    def __init__(self, url: str):
        self.url = url
        self.seen: dict[int, tuple[str, float]] = {}
        self.last_answer = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                block = rpc(self.url, "eth_getBlockByNumber", ["latest", False], timeout=1.0)
                now = time.time()
                self.seen.setdefault(int(block["number"], 16), (block["hash"], now))
                self.last_answer = now
            except (OSError, LedgerError):
                pass
            time.sleep(0.02)

    def stop(self) -> float:
        """Stop watching; the last moment the node was seen alive (a lower bound on the crash's time)."""
        self._stop.set()
        self._thread.join()
        return self.last_answer

    def assert_kept(self, crashed_at: float) -> int:
        """Every block seen more than 2 s before the crash is on the restored chain, with its hash."""
        old = {n: h for n, (h, t) in self.seen.items() if t < crashed_at - LOSS_WINDOW_S}
        for n, h in sorted(old.items()):
            block = rpc(self.url, "eth_getBlockByNumber", [hex(n), False])
            assert block is not None and block["hash"] == h, f"block {n} seen before the crash was lost"
        return max(old, default=0)


def info(chain: Chain) -> dict:
    return json.loads((chain.sh.data_dir / "node" / "node.json").read_text())


def gone(pid: int) -> bool:
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


@pytest.fixture
def chain(tmp_path):
    node = Chain(tmp_path / "data", free_port()).start()
    try:
        yield node
    finally:
        node.stop()


def settle_killed_then_again(chain: Chain, tmp_path, name: str, kill, *, restart_env: dict | None = None) -> str:
    """Settle 300 events in ~6 batches; ``kill(chain)`` crashes something mid-run (it returns once the
    crash happened); ``ledger chain up`` again; the loss is within 2 s; the same settle completes exactly
    once. Returns what ``chain up`` printed."""
    make_alliance(chain.cli, name)
    rows = revenue(name.upper(), name, 300)
    path = write_csv(tmp_path / f"{name}.csv", rows)
    if restart_env is not None:  # a supervisor with the fault hook armed
        chain.sh.run("chain", "down")
        chain.sh.run("chain", "up", env=restart_env)
    watcher = Watcher(chain.url)
    proc = chain.sh.popen("settle", str(path), env=SMALL_BATCHES)
    try:
        kill(chain)
        _, err = proc.communicate(timeout=180)
        assert proc.returncode in (0, 2) and "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
    crashed_at = watcher.stop()
    assert not chain.call_ok(), "the node still answers after the crash"
    out = chain.sh.run("chain", "up").out
    assert "restored block" in out and "did not stop cleanly" in out, out
    watcher.assert_kept(crashed_at)
    chain.sh.run("settle", str(path), env=SMALL_BATCHES)
    chain.assert_exactly_once(name, rows)
    return out


def _call_ok(self) -> bool:
    try:
        rpc(self.url, "eth_chainId", timeout=1.0)
        return True
    except (OSError, LedgerError):
        return False


Chain.call_ok = _call_ok


def wait_blocks(chain: Chain, count: int) -> None:
    start = chain.height()
    wait_for(lambda: chain.height() >= start + count, what=f"{count} blocks")


# ---------------------------------------------------------------------------------------------------
# Kills exactly during a write, and of each process
# ---------------------------------------------------------------------------------------------------


def test_a_crash_in_the_middle_of_a_journal_write_loses_at_most_two_seconds_and_settles_exactly_once(chain, tmp_path):
    def crash(chain: Chain) -> None:
        supervisor = info(chain)["supervisor"]
        wait_for(lambda: gone(supervisor), timeout=120, what="the supervisor to crash mid-write")

    out = settle_killed_then_again(
        chain, tmp_path, "torn-journal", crash, restart_env={"LEDGER_STORE_FAULT": "journal-write:4"}
    )
    assert "cut short by the crash" in out, out


@pytest.mark.slow
def test_a_crash_in_the_middle_of_a_snapshot_write_keeps_the_previous_snapshot(chain, tmp_path):
    store = Store(chain.sh.data_dir / "node" / "store")

    def crash(chain: Chain) -> None:
        supervisor = info(chain)["supervisor"]
        wait_for(lambda: gone(supervisor), timeout=120, what="the supervisor to crash mid-snapshot")
        partial = list(store.folder.glob("snap-*.gz.tmp"))
        assert partial and partial[0].stat().st_size > 0, "the kill landed in the snapshot's write"

    env = {"LEDGER_STORE_FAULT": "snapshot-write:3", "LEDGER_SNAPSHOT_BLOCKS": "4"}
    out = settle_killed_then_again(chain, tmp_path, "torn-snapshot", crash, restart_env=env)
    assert "half-written, was deleted" in out, out
    assert not list(store.folder.glob("*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("who", ["supervisor", "node-and-supervisor"])
def test_the_supervisor_killed_alone_or_with_the_node_loses_at_most_two_seconds(chain, tmp_path, who):
    def crash(chain: Chain) -> None:
        wait_blocks(chain, 3)
        time.sleep(random.Random(who).random() * 0.3)
        recorded = info(chain)
        if who == "supervisor":
            os.kill(recorded["supervisor"], signal.SIGKILL)
        else:  # a power loss: both at the same instant (one process group)
            os.killpg(os.getpgid(recorded["supervisor"]), signal.SIGKILL)
        wait_for(lambda: gone(recorded["pid"]), timeout=5, what="Anvil to die with its supervisor")

    settle_killed_then_again(chain, tmp_path, f"kill-{who}", crash)


def test_a_corrupt_newest_snapshot_is_skipped_for_the_older_one_with_a_message(tmp_path):
    chain = Chain(tmp_path / "data", free_port())
    chain.sh.env["LEDGER_SNAPSHOT_BLOCKS"] = "3"
    chain.start()
    try:
        store = Store(chain.sh.data_dir / "node" / "store")
        wait_for(lambda: len(store.snapshots()) >= 2, what="two snapshots")
        balances = json.loads(chain.cli.run("balance", "--json").out)
        height = chain.height()
        chain.sh.run("chain", "down")
        newest, older = store.snapshots()[:2]
        data = bytearray(newest.path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        newest.path.write_bytes(bytes(data))
        out = chain.sh.run("chain", "up").out
        assert f"snapshot {newest.name} (block {newest.block}) is damaged" in out, out
        assert f"restored block {height} from snapshot {older.name}" in out, out
        assert json.loads(chain.cli.run("balance", "--json").out) == balances
        assert chain.audit()["result"] == "clean"
    finally:
        chain.stop()


@pytest.mark.slow
def test_a_damaged_older_journal_segment_restores_up_to_the_damage_and_says_which_blocks_are_lost(tmp_path):
    """The journal segment after the snapshot a restore starts from is damaged in its middle, and a later
    segment holds whole blocks: the restore replays up to the damage (not the later blocks on top of the
    gap), says which blocks are lost, and the chain goes on from there."""
    chain = Chain(tmp_path / "data", free_port())
    chain.sh.env["LEDGER_SNAPSHOT_BLOCKS"] = "3"
    chain.start()
    try:
        store = Store(chain.sh.data_dir / "node" / "store")
        make_alliance(chain.cli, "gap")
        wait_for(lambda: len(store.snapshots()) >= 2, what="two snapshots")
        chain.cli.run("token", "mint", "1")  # blocks in the newest segment too
        chain.sh.run("chain", "down")
        snapshots = store.snapshots()
        for newer in snapshots[:-1]:  # every snapshot but the oldest is unusable: the oldest one is used
            newer.path.write_bytes(b"not a snapshot")
        oldest = snapshots[-1]
        segments = [path for seq, path in store.segments() if seq >= oldest.journal_from]
        # The first block after the snapshot, in a segment that is not the last: damage its record.
        damaged, start, lost = next(
            (path, previous_end, record["n"])
            for path in segments[:-1]
            for (record, _), previous_end in zip(
                read_segment(path), [0] + [e for _, e in read_segment(path)][:-1], strict=True
            )
            if record.get("t") == "b" and record["n"] > oldest.block
        )
        data = bytearray(damaged.read_bytes())
        data[start + 12 : start + 20] = b"\xff" * 8
        damaged.write_bytes(bytes(data))
        out = chain.sh.run("chain", "up").out
        assert f"journal blocks {lost} to " in out and f"restored up to block {lost - 1}" in out, out
        assert f"restored block {lost - 1} from snapshot {oldest.name}" in out, out
        assert chain.height() == lost - 1
        chain.cli.run("token", "mint", "1")  # the chain goes on from there
        assert chain.height() == lost
        chain.sh.run("chain", "down")
        again = chain.sh.run("chain", "up").out  # and a second restart keeps the new branch
        assert f"restored block {lost} " in again, again
    finally:
        chain.stop()


# ---------------------------------------------------------------------------------------------------
# What is on disk
# ---------------------------------------------------------------------------------------------------


def test_the_log_holds_no_private_key_or_mnemonic_even_from_an_older_run(tmp_path):
    folder = tmp_path / "data" / "node"
    folder.mkdir(parents=True)
    log = folder / "anvil.log"
    log.write_text(  # what Anvil's banner wrote into the log before
        "Available Accounts\n(0) 0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266 (10000.000000000000000000 ETH)\n"
        f"Private Keys\n==================\n(0) 0x{DEV0_KEY}\n"
        f"Wallet\n==================\nMnemonic:          {MNEMONIC}\nDerivation path:   m/44'/60'/0'/0/\n"
        "Listening on 127.0.0.1:8545\n"
    )
    chain = Chain(tmp_path / "data", free_port()).start()
    try:
        chain.sh.run("chain", "down")
        chain.sh.run("chain", "up")
        text = log.read_text()
        assert "supervisor: restored block" in text and "Listening on 127.0.0.1:8545" in text
        assert DEV0_KEY not in text.lower() and MNEMONIC not in text and "Private Keys" not in text
        for path in (tmp_path / "data").rglob("*"):  # nor any other file the project wrote
            if path.is_file() and not path.name.endswith(".gz"):
                assert DEV0_KEY not in path.read_text(errors="replace").lower(), path
    finally:
        chain.stop()


def test_nothing_is_written_while_no_block_is_mined_and_status_shows_what_is_durable(chain):
    store = Store(chain.sh.data_dir / "node" / "store")
    time.sleep(1.0)  # the last blocks of the set-up reach the disk
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in store.folder.iterdir()}
    time.sleep(1.5)
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in store.folder.iterdir()} == before
    status = json.loads(chain.cli.run("chain", "status", "--json").out)
    assert status["durable_block"] == status["block"] == chain.height()
    assert status["durable_age_s"] >= 1.5 and status["store_bytes"] >= sum(s for s, _ in before.values())
    assert status["supervisor_pid"] == info(chain)["supervisor"] and status["pid"] == info(chain)["pid"]
    text = chain.cli.run("chain", "status").out
    assert f"last durable block: {status['block']} (seen" in text and "snapshots and journal" in text


@pytest.mark.slow
def test_reverted_blocks_are_journalled_so_a_crash_after_a_revert_restores_the_new_branch(chain):
    before = chain.height()
    snapshot = chain.call("evm_snapshot")
    chain.cli.run("token", "mint", "5")
    chain.cli.run("token", "mint", "6")
    time.sleep(0.8)
    assert chain.call("evm_revert", snapshot) is True
    chain.cli.run("token", "mint", "7")
    head = chain.call("eth_getBlockByNumber", "latest", False)
    assert int(head["number"], 16) == before + 1
    time.sleep(1.0)
    os.killpg(os.getpgid(info(chain)["supervisor"]), signal.SIGKILL)
    wait_for(lambda: not chain.call_ok(), what="the node to die")
    out = chain.sh.run("chain", "up").out
    assert f"restored block {before + 1}" in out, out
    assert chain.call("eth_getBlockByNumber", "latest", False)["hash"] == head["hash"]
    assert chain.audit()["result"] == "clean"


def test_a_state_file_of_the_old_scheme_is_adopted_once_as_the_first_snapshot(tmp_path):
    folder = tmp_path / "data" / "node"
    folder.mkdir(parents=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    old = subprocess.Popen(
        [str(ANVIL), "--port", str(port), "--chain-id", "31337", "--accounts", "20", "--quiet",
         "--state", str(folder / "state.json")],
    )  # fmt: skip
    try:
        wait_for(lambda: _answers(url), what="the old-style node")
        accounts = rpc(url, "eth_accounts")
        for _ in range(3):
            rpc(url, "eth_sendTransaction", [{"from": accounts[0], "to": accounts[1], "value": hex(10**18)}])
        # eth_sendTransaction answers with the hash; on a loaded machine the block may come a moment later
        wait_for(lambda: int(rpc(url, "eth_blockNumber"), 16) == 3, what="the third block")
        head = rpc(url, "eth_getBlockByNumber", ["latest", False])
    finally:
        old.send_signal(signal.SIGINT)  # Anvil writes its state file on a clean stop
        old.wait(timeout=30)
    assert json.loads((folder / "state.json").read_text())["best_block_number"] == 3
    chain = Chain(tmp_path / "data", port)
    out = chain.sh.run("chain", "up").out
    try:
        assert "adopted state.json of the old scheme (block 3) as the first snapshot" in out, out
        assert not (folder / "state.json").exists() and list(folder.glob("state.adopted-*.json"))
        adopted = chain.call("eth_getBlockByNumber", "latest", False)
        assert adopted["number"] == head["number"] and adopted["transactions"] == head["transactions"]
        assert int(chain.call("eth_getBalance", accounts[1], "latest"), 16) == 10_003 * 10**18
        chain.sh.run("chain", "down")
        assert "adopted" not in chain.sh.run("chain", "up").out  # once
    finally:
        chain.sh.run("chain", "down", ok=False)


def _answers(url: str) -> bool:
    try:
        rpc(url, "eth_chainId", timeout=1)
        return True
    except (OSError, LedgerError):
        return False


def test_a_node_that_runs_but_does_not_answer_is_called_busy_and_waited_for_never_not_running(chain):
    anvil = info(chain)["pid"]
    os.kill(anvil, signal.SIGSTOP)
    try:
        err = chain.sh.fails("me", "list", code=2, env={"LEDGER_BUSY_WAIT_S": "1"})
        assert "runs but is busy" in err and "not running" not in err, err
        threading.Timer(1.5, os.kill, (anvil, signal.SIGCONT)).start()
        assert "fridge" in chain.sh.run("me", "list").out  # waited, then answered
        os.kill(anvil, signal.SIGSTOP)
        threading.Timer(1.5, os.kill, (anvil, signal.SIGCONT)).start()
        assert "kitchen-platform" in chain.sh.run("me", "list", "--json").out
    finally:
        os.kill(anvil, signal.SIGCONT)


# ---------------------------------------------------------------------------------------------------
# 50 kills at random moments on a large state
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fifty_kills_at_random_moments_on_a_state_of_fifty_megabytes_lose_at_most_two_seconds(tmp_path):
    rng = random.Random(20261206)
    chain = Chain(tmp_path / "data", free_port())
    chain.sh.env["LEDGER_SNAPSHOT_BLOCKS"] = "40"  # snapshots are written often: kills land in them too
    chain.start()
    try:
        make_alliance(chain.cli, "bulk")
        rows = revenue("BULK", "bulk", 100_000)
        chain.sh.run("settle", str(write_csv(tmp_path / "bulk.csv", rows)), timeout=1200)
        dump = chain.call("anvil_dumpState")
        assert len(gzip.decompress(bytes.fromhex(dump[2:]))) >= 50_000_000, "the state is at least 50 MB"
        store = Store(chain.sh.data_dir / "node" / "store")
        for round_ in range(int(os.environ.get("LEDGER_TEST_KILL_ROUNDS", 50))):  # fewer only for a quick try
            name = f"rk{round_}"
            make_alliance(chain.cli, name)
            small = revenue(name.upper(), name, 200)
            path = write_csv(tmp_path / f"{name}.csv", small)
            watcher = Watcher(chain.url)
            proc = chain.sh.popen("settle", str(path), env=SMALL_BATCHES)
            time.sleep(rng.uniform(0.3, 4.0))
            recorded = info(chain)
            victim = rng.choice(["node", "supervisor", "both"])
            if victim == "node":
                os.kill(recorded["pid"], signal.SIGKILL)
            elif victim == "supervisor":
                os.kill(recorded["supervisor"], signal.SIGKILL)
            else:
                os.killpg(os.getpgid(recorded["supervisor"]), signal.SIGKILL)
            wait_for(lambda r=recorded: gone(r["pid"]) and gone(r["supervisor"]), timeout=30, what="the crash")
            crashed_at = watcher.stop()
            proc.communicate(timeout=180)
            out = chain.sh.run("chain", "up", timeout=600).out
            assert "restored block" in out, out
            watcher.assert_kept(crashed_at)
            chain.sh.run("settle", str(path), env=SMALL_BATCHES)
            if round_ % 10 == 9:
                chain.assert_exactly_once(name, small)
            assert store.snapshots(), "the store keeps its snapshots through every crash"
        chain.assert_exactly_once("bulk", rows)
    finally:
        chain.stop()


def test_two_chain_up_at_once_on_one_folder_start_one_node_and_both_succeed(tmp_path):
    cli = Chain(tmp_path / "data", free_port()).sh
    first, second = cli.popen("chain", "up"), cli.popen("chain", "up")
    try:
        outs = [p.communicate(timeout=120) for p in (first, second)]
        assert [first.returncode, second.returncode] == [0, 0], outs
        said = " ".join(out + err for out, err in outs)
        assert said.count("local chain started") == 1, said
        assert "already runs" in said, said
        status = cli.run("chain", "status").out
        assert "running: yes" in status, status
    finally:
        cli.run("chain", "down", ok=False)
