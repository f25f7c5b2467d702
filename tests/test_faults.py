"""Faults, with real processes: a node that drops or never mines a transaction, interval mining, a node
that swallows transactions, a reorganisation, two settlement processes at once, and kill -9 of the node
or of the client at random points. After each, the same command run again finishes, and the audit (from
the chain alone) finds every revenue event credited exactly once and every token accounted for.

The quick cases run in ``make test``; interval mining and the repeated kill -9 runs (20 each) are ``slow``
(``make test-all``).
"""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import pytest

from ledger.chain.node import ANVIL, dev_rpc, rpc
from ledger.errors import LedgerError

from .cli_support import InProcessCLI, LedgerCLI, RpcProxy, free_port, write_csv
from .test_cli_e2e import KITCHEN, make_alliance, payouts, show

pytestmark = pytest.mark.http_node(
    "starts, stalls, slows, kills and restarts nodes over HTTP (`ledger chain up`, evm_setAutomine, a proxy)"
)

SMALL_BATCHES = {"LEDGER_BATCH_GAS": "400000"}  # ~50 events per batch: many transactions


class Chain:
    """One ``ledger chain up`` node with the kitchen MEs and a funded finance account."""

    # A data folder holding that set-up, made once per test session by a whole `ledger chain up`,
    # `deploy`, `me register` and `token mint`, then `chain down`: each later chain starts from a copy of it
    # with `ledger chain up` (a restart from its snapshot and journal), as a folder a user stopped.
    _template: Path | None = None

    def __init__(self, data_dir, port: int):
        self.sh = LedgerCLI(data_dir, port)
        self.cli = InProcessCLI(data_dir, port)
        self.url = f"http://127.0.0.1:{port}"
        self.plain: subprocess.Popen | None = None

    def start(self, *, keep_history: bool = False) -> Chain:
        if keep_history:
            # Anvil can only roll back with its past states, which `ledger chain up` prunes.
            self.plain = subprocess.Popen(
                [str(ANVIL), "--port", str(self.sh.port), "--chain-id", "31337", "--accounts", "20"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            wait_for(lambda: _answers(self.url), what="anvil")
        elif self.sh.data_dir.exists() or self.sh.env != LedgerCLI(self.sh.data_dir, self.sh.port).env:
            self.sh.run("chain", "up")  # a folder the test prepared, or settings of its own: from nothing
        else:
            shutil.copytree(Chain.template(), self.sh.data_dir)
            self.sh.run("chain", "up")
            return self
        self.set_up()
        return self

    @classmethod
    def template(cls) -> Path:
        if cls._template is None:
            folder = Path(tempfile.mkdtemp(prefix="chain-template-"))
            atexit.register(shutil.rmtree, folder, True)
            first = Chain(folder / "data", free_port())
            first.sh.run("chain", "up")
            first.set_up()
            first.stop()
            cls._template = first.sh.data_dir
        return cls._template

    def set_up(self) -> None:
        self.cli.run("deploy")
        self.cli.run("me", "register", "kitchen-platform", "--signer", "dev1")
        for name, alias in KITCHEN:
            self.cli.run("me", "register", name, "--signer", alias, "--parent", "kitchen-platform")
        self.cli.run("token", "mint", "100000000")

    def call(self, method: str, *params):
        return dev_rpc(self.url, method, list(params), timeout=30)  # anvil_* names, sent as this node names them

    def height(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def node_pid(self) -> int:
        return json.loads((self.sh.data_dir / "node" / "node.json").read_text())["pid"]

    def audit(self) -> dict:
        result = self.cli.run("audit", "--format", "json", ok=False)
        assert result.code in (0, 1), result.text
        return json.loads(result.out)

    def assert_exactly_once(self, alliance: str, rows: list[tuple]) -> None:
        """Every row settled once: the alliance's count, the payouts' total, and a clean audit."""
        assert show(self.cli, alliance)["events_settled"] == len(rows)
        total = sum(Decimal(p["amount"]) for p in payouts(self.cli, "--alliance", alliance)["payouts"])
        assert total == sum(Decimal(r[2]) for r in rows)
        report = self.audit()
        assert report["result"] == "clean", report["findings"]

    def stop(self) -> None:
        if self.plain is not None:
            self.plain.kill()
            self.plain.wait()
        else:
            self.sh.run("chain", "down", ok=False)


def _answers(url: str) -> bool:
    try:
        rpc(url, "eth_chainId", timeout=1)
        return True
    except (OSError, LedgerError):
        return False


@pytest.fixture
def chain(tmp_path):
    node = Chain(tmp_path / "data", free_port()).start()
    try:
        yield node
    finally:
        node.stop()


def revenue(prefix: str, alliance: str, count: int, period: int = 202611) -> list[tuple]:
    return [(f"{prefix}-{i}", alliance, f"{i % 97 + 1}.{i % 100:02d}", period) for i in range(1, count + 1)]


def wait_for(predicate, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def pending_hashes(chain: Chain) -> list[str]:
    content = chain.call("txpool_content")
    return [tx["hash"] for by_nonce in content.get("pending", {}).values() for tx in by_nonce.values()]


# ---------------------------------------------------------------------------------------------------
# Transactions that are never mined
# ---------------------------------------------------------------------------------------------------


def test_a_transaction_the_node_drops_is_noticed_and_sent_again(chain, tmp_path):
    make_alliance(chain.cli, "dropped")
    rows = revenue("DR", "dropped", 200)
    path = write_csv(tmp_path / "dropped.csv", rows)
    chain.call("evm_setAutomine", False)
    proc = chain.sh.popen("settle", str(path), env={**SMALL_BATCHES, "LEDGER_TX_TIMEOUT": "60"})
    try:
        # The first transaction (the allowance) reaches the pool: the node "loses" it.
        (first,) = wait_for(lambda: pending_hashes(chain), what="a pending transaction")
        chain.call("anvil_dropTransaction", first)
        assert chain.call("eth_getTransactionByHash", first) is None
        chain.call("evm_setAutomine", True)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, out + err
    assert "settled 200 events" in out
    assert chain.call("eth_getTransactionReceipt", first) is not None  # the same transaction, sent again
    chain.assert_exactly_once("dropped", rows)


def test_a_node_whose_mining_stalls_is_nudged_and_the_run_finishes(chain, tmp_path):
    make_alliance(chain.cli, "stalled")
    rows = revenue("ST", "stalled", 150)
    path = write_csv(tmp_path / "stalled.csv", rows)
    chain.call("evm_setAutomine", False)  # transactions sit in the pool, as in Anvil's automine stall
    try:
        start = time.monotonic()
        summary = json.loads(chain.cli.run("settle", str(path), "--json", env=SMALL_BATCHES).out)
        elapsed = time.monotonic() - start
    finally:
        chain.call("evm_setAutomine", True)
    assert summary["events_settled"] == 150 and summary["batches"] == 2  # 76 events per batch
    assert elapsed < 60  # each stalled transaction is noticed within the recheck interval (2 s locally)
    chain.assert_exactly_once("stalled", rows)


@pytest.mark.slow  # the quick suite keeps the stalled-mining case above, which the same wait loop serves
def test_interval_mining_instead_of_automine(chain, tmp_path):
    make_alliance(chain.cli, "interval")
    rows = revenue("IV", "interval", 120)
    chain.call("evm_setIntervalMining", 1)
    try:
        summary = json.loads(
            chain.cli.run("settle", str(write_csv(tmp_path / "iv.csv", rows)), "--json", env=SMALL_BATCHES).out
        )
    finally:
        chain.call("evm_setIntervalMining", 0)
        chain.call("evm_setAutomine", True)
    assert summary["events_settled"] == 120 and summary["batches"] == 2
    chain.assert_exactly_once("interval", rows)


class SwallowingProxy(RpcProxy):
    """While ``swallow`` is set, answers ``eth_sendRawTransaction`` with a made-up hash and sends nothing
    on: a node that says yes and never mines."""

    swallow = True

    def answer(self, request):
        if isinstance(request, dict) and request["method"] == "eth_sendRawTransaction" and self.swallow:
            return json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "0x" + "ab" * 32}).encode()
        return None


def test_a_node_that_accepts_transactions_and_never_mines_them_stops_the_run_clearly(chain, tmp_path):
    make_alliance(chain.cli, "swallowed")
    chain.cli.run("token", "balance", "dev2")
    rows = revenue("SW", "swallowed", 100)
    path = write_csv(tmp_path / "sw.csv", rows)
    SwallowingProxy.swallow = True
    with SwallowingProxy.serving(chain.url) as proxy:
        through_proxy = {**SMALL_BATCHES, "LEDGER_PORT": proxy.rsplit(":", 1)[1], "LEDGER_TX_TIMEOUT": "4"}
        before = chain.height()
        err = chain.sh.fails("settle", str(path), env=through_proxy, contains="was not mined within 4 s")
        assert "run the same command again" in err
        assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
        assert chain.height() == before  # nothing reached the chain
        SwallowingProxy.swallow = False  # the node recovers: the same command finishes
        summary = json.loads(chain.sh.run("settle", str(path), "--json", env=through_proxy).out)
    assert summary["events_settled"] == 100
    chain.assert_exactly_once("swallowed", rows)


class SlowProxy(RpcProxy):
    """Forwards everything, each answer 60 ms late: a node far away or under load."""

    def answer(self, request):
        time.sleep(0.06)
        return None


def test_a_node_that_answers_slowly_still_settles_everything(chain, tmp_path):
    make_alliance(chain.cli, "slow")
    rows = revenue("SL", "slow", 120)
    with SlowProxy.serving(chain.url) as proxy:
        env = {**SMALL_BATCHES, "LEDGER_PORT": proxy.rsplit(":", 1)[1]}
        summary = json.loads(chain.sh.run("settle", str(write_csv(tmp_path / "sl.csv", rows)), "--json", env=env).out)
    assert summary["events_settled"] == 120
    chain.assert_exactly_once("slow", rows)


# ---------------------------------------------------------------------------------------------------
# Reorganisations and confirmations
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def chain_with_history(tmp_path):
    node = Chain(tmp_path / "data", free_port()).start(keep_history=True)
    try:
        yield node
    finally:
        node.stop()


@pytest.mark.anvil_only("anvil_rollback: Hardhat's node cannot drop blocks from the head of its chain")
def test_a_reorganisation_removing_settled_batches_is_repaired_by_running_again(chain_with_history, tmp_path):
    chain = chain_with_history
    make_alliance(chain.cli, "reorged")
    rows = revenue("RO", "reorged", 200)
    path = write_csv(tmp_path / "ro.csv", rows)
    chain.cli.run("settle", str(path), env=SMALL_BATCHES)
    settled = show(chain.cli, "reorged")["events_settled"]
    assert settled == 200
    chain.call("anvil_rollback", 2)  # the last two batches leave the canonical chain
    left = show(chain.cli, "reorged")["events_settled"]
    assert left == 76  # batches of 76, 76 and 48 events: only the first is still canonical
    # Reports only ever show what the canonical chain holds.
    total = sum(Decimal(p["amount"]) for p in payouts(chain.cli, "--alliance", "reorged")["payouts"])
    assert total == sum(Decimal(r[2]) for r in rows[:left])
    assert chain.audit()["result"] == "clean"
    summary = json.loads(chain.cli.run("settle", str(path), "--json", env=SMALL_BATCHES).out)
    assert summary["events_settled"] == 200 - left and summary["events_skipped_already_settled"] == left
    chain.assert_exactly_once("reorged", rows)


def test_with_a_confirmation_depth_reports_leave_out_blocks_that_are_not_final(chain, tmp_path):
    make_alliance(chain.cli, "deep")
    first, second = revenue("DP", "deep", 50), revenue("DQ", "deep", 50)
    chain.cli.run("settle", str(write_csv(tmp_path / "a.csv", first)))
    deep = {"LEDGER_CONFIRMATIONS": "3"}
    # Settling with a depth waits until its batches are 3 blocks deep (the dev chain mines them).
    summary = json.loads(chain.cli.run("settle", str(write_csv(tmp_path / "b.csv", second)), "--json", env=deep).out)
    assert summary["events_settled"] == 50
    assert chain.audit()["result"] == "clean"
    chain.cli.run("settle", str(write_csv(tmp_path / "c.csv", revenue("DR", "deep", 10))))  # depth 0: at the head
    report = json.loads(chain.cli.run("payouts", "--alliance", "deep", "--format", "json", env=deep).out)
    total = sum(Decimal(p["amount"]) for p in report["payouts"])
    assert total == sum(Decimal(r[2]) for r in first + second)  # the newest batch is not final yet
    chain.call("anvil_mine", "0x3")
    report = json.loads(chain.cli.run("payouts", "--alliance", "deep", "--format", "json", env=deep).out)
    assert sum(Decimal(p["amount"]) for p in report["payouts"]) == total + sum(
        Decimal(r[2]) for r in revenue("DR", "deep", 10)
    )


# ---------------------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------------------


def test_two_settlement_processes_on_overlapping_files_settle_each_event_once(chain, tmp_path):
    make_alliance(chain.cli, "shared")
    rows = revenue("SH", "shared", 600)
    a = write_csv(tmp_path / "a.csv", rows[:400])
    b = write_csv(tmp_path / "b.csv", rows[200:])
    procs = [chain.sh.popen("settle", str(path), "--json", env=SMALL_BATCHES) for path in (a, b)]
    results = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, out + err
    summaries = [json.loads(out) for out, _ in results]
    # Between them every event was settled once; each says what it skipped as the other's.
    assert sum(s["events_settled"] for s in summaries) == 600
    for summary, size in zip(summaries, (400, 400), strict=True):
        assert summary["events_settled"] + summary["events_skipped_already_settled"] == size
    chain.assert_exactly_once("shared", rows)


# ---------------------------------------------------------------------------------------------------
# kill -9
# ---------------------------------------------------------------------------------------------------


def kill_mid_run(chain: Chain, tmp_path, seed: int, *, node: bool) -> None:
    """Settle 600 events in ~12 batches; after a random number of blocks kill -9 the node (then start it
    again from its state file) or the client; run the same command again: exactly once."""
    rng = random.Random(seed)
    name = f"{'node' if node else 'client'}-kill-{seed}"
    make_alliance(chain.cli, name)
    rows = revenue(f"{'NK' if node else 'CK'}{seed}", name, 600)
    path = write_csv(tmp_path / f"{name}.csv", rows)
    start = chain.height()
    blocks = rng.randint(1 if node else 0, 11)
    proc = chain.sh.popen("settle", str(path), env=SMALL_BATCHES)
    wait_for(lambda: chain.height() >= start + blocks or proc.poll() is not None, what="blocks")
    time.sleep(rng.random() * (0.3 if node else 0.2))
    if node:
        os.kill(chain.node_pid(), signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:  # it noticed the node went away: one line, the documented exit code
            assert proc.returncode == 2 and "Traceback" not in err, err
        chain.sh.run("chain", "up")
    else:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    chain.sh.run("settle", str(path), env=SMALL_BATCHES)
    chain.assert_exactly_once(name, rows)


@pytest.mark.anvil_only("restarts the node from its state file; Hardhat's node keeps none")
def test_the_node_killed_mid_run_and_restarted(chain, tmp_path):
    kill_mid_run(chain, tmp_path, 7, node=True)


def test_the_client_killed_mid_run(chain, tmp_path):
    kill_mid_run(chain, tmp_path, 7, node=False)


@pytest.mark.slow
@pytest.mark.anvil_only("restarts the node from its state file; Hardhat's node keeps none")
@pytest.mark.parametrize("seed", range(20))
def test_the_node_killed_at_random_points(chain, tmp_path, seed):
    kill_mid_run(chain, tmp_path, seed, node=True)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20))
def test_the_client_killed_at_random_points(chain, tmp_path, seed):
    kill_mid_run(chain, tmp_path, seed, node=False)
