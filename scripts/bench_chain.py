"""The cost of keeping the local chain durable, as its history grows -> bench/results.json ("chain").

Method
------
One chain started by ``python -m ledger.cli chain up`` on a fresh data folder under ``.tmp/`` and a free
port; ``deploy``, four MEs and one alliance through the CLI. History is built by settling revenue files
of 100,000 events each (``ledger settle``, default batch size), up to each H of ``BENCH_CHAIN_H``
(default 0, 100,000 and 1,000,000 settled events). At each H:

1. **Idle** (``idle_bytes_per_min``): bytes the supervisor and Anvil write to storage (``/proc/PID/io``
   ``write_bytes``) over 30 s with no block mined, scaled to a minute; and whether any file of the store
   changed.
2. **Per block** (``bytes_per_block``): 50 plain transfers, one block each: the journal's growth and the
   supervisor's written bytes (``written_bytes_per_block``), per block. ``settle_bytes_per_block``: the
   mean journal record of a block carrying a settlement batch (the blocks the history was built with).
3. **While persisting** (``p99_block_number_ms``, ``max_block_number_ms``): ``eth_blockNumber`` every
   10 ms while a snapshot is taken (``kill -USR1`` of the supervisor: in a private Anvil, which loads the
   previous snapshot, replays the journal and dumps) and blocks are mined at ~5/s; ``snapshot_s`` is how
   long the snapshot took. ``build_p99_ms``: the same sampler while the history was settled.
4. **Restart** (``restart_s``): a worst case: after that snapshot, blocks are mined until the journal
   holds one block fewer than triggers the next snapshot (``SNAPSHOT_BLOCKS``), the supervisor and Anvil
   are killed together (SIGKILL to the process group: a power loss), and ``ledger chain up`` is timed
   until it returns with the chain restored (the newest block's hash is checked).
5. **Size and memory**: ``store_mb`` (the store on disk: snapshots and journal, allocated blocks),
   ``state_mb`` (Anvil's state, uncompressed JSON), ``anvil_rss_mb`` and ``supervisor_rss_mb``.

Run: ``python scripts/bench_chain.py`` (``make bench`` runs it). ``BENCH_CHAIN_H=0,2000`` for a quick try
only: its figures are not the benchmark.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ledger.chain.node import rpc  # noqa: E402
from ledger.chain.store import Store  # noqa: E402
from ledger.chain.supervisor import SNAPSHOT_BLOCKS  # noqa: E402

RESULTS = ROOT / "bench" / "results.json"
LEVELS = [int(h) for h in os.environ.get("BENCH_CHAIN_H", "0,100000,1000000").split(",")]
CHUNK = 100_000
IDLE_S = int(os.environ.get("BENCH_CHAIN_IDLE_S", 30))
KITCHEN = [("fridge", "dev3"), ("oven", "dev4"), ("recipe-app", "dev5"), ("logistics", "dev6")]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(env: dict, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "ledger.cli", *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ledger {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def node_info(data: Path) -> dict:
    return json.loads((data / "node" / "node.json").read_text())


def written(pid: int) -> int:
    """Bytes the process caused to be written to storage (``write_bytes`` of /proc/PID/io; ``wchar``
    would count the JSON-RPC traffic on sockets too)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """``eth_blockNumber`` latency every 10 ms on a thread, until stopped."""

    def __init__(self, url: str):
        self.url, self.samples, self.failures = url, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            start = time.perf_counter()
            try:
                rpc(self.url, "eth_blockNumber", timeout=10)
                self.samples.append((time.perf_counter() - start) * 1000)
            except Exception:  # noqa: BLE001 - counted: a node that does not answer
                self.failures += 1
            time.sleep(0.01)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        ordered = sorted(self.samples)
        p99 = ordered[int(len(ordered) * 0.99) - 1] if ordered else None
        return {
            "samples": len(ordered),
            "p50_ms": round(statistics.median(ordered), 2) if ordered else None,
            "p99_ms": round(p99, 2) if p99 is not None else None,
            "max_ms": round(ordered[-1], 2) if ordered else None,
            "failures": self.failures,
        }


def transfers(url: str, count: int, pause: float = 0.0) -> None:
    accounts = rpc(url, "eth_accounts")
    for i in range(count):
        rpc(
            url, "eth_sendTransaction", [{"from": accounts[10 + i % 10], "to": accounts[0], "value": "0x1"}], timeout=60
        )
        if pause:
            time.sleep(pause)


def journal_bytes(store: Store) -> int:
    return sum(path.stat().st_size for _, path in store.segments())


def settle_record_bytes(store: Store) -> int | None:
    """Mean size of the journal records of blocks that carry a settlement batch (over 1 M gas), in the
    segments still kept (a snapshot drops older ones, so growth of the folder would undercount)."""
    from ledger.chain.store import encode, read_segment

    sizes = [
        len(encode(record))
        for _, path in store.segments()
        for record, _end in read_segment(path)
        if record.get("t") == "b" and record.get("gu", 0) > 1_000_000
    ]
    return round(sum(sizes) / len(sizes)) if sizes else None


def settle_chunk(env: dict, tmp: Path, index: int, count: int) -> None:
    path = tmp / f"revenue-{index}.csv"
    with open(path, "w") as out:
        out.write("reference,alliance,amount,period\n")
        for i in range(count):
            out.write(f"B{index}-{i},bench,{i % 997 + 1}.{i % 100:02d},202611\n")
    cli(env, "settle", str(path), "--json")
    path.unlink()


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def wait_quiet(store: Store, sup: int) -> None:
    """Until the last blocks, and any snapshot they called for, are on disk: no private node running (the
    supervisor's only child is the node) and no file of the store changed for 5 s."""
    quiet_since, last = time.monotonic(), None
    while time.monotonic() - quiet_since < 5:
        now = {p.name: p.stat().st_mtime_ns for p in store.folder.iterdir()}
        if now != last or len(children(sup)) > 1:
            quiet_since, last = time.monotonic(), now
        time.sleep(0.5)


def measure(env: dict, data: Path, url: str, store: Store, height: int, build: dict) -> dict:
    info = node_info(data)
    sup, anvil = info["supervisor"], info["pid"]
    wait_quiet(store, sup)
    files_before = {p.name: p.stat().st_mtime_ns for p in store.folder.iterdir()}
    w0 = written(sup) + written(anvil)
    time.sleep(IDLE_S)
    idle = (written(sup) + written(anvil) - w0) * 60 / IDLE_S
    idle_files_changed = {p.name: p.stat().st_mtime_ns for p in store.folder.iterdir()} != files_before

    j0, w0 = journal_bytes(store), written(sup)
    transfers(url, 50)
    time.sleep(1.5)
    per_block = (journal_bytes(store) - j0) / 50
    per_block_written = (written(sup) - w0) / 50

    seq = store.snapshots()[0].seq
    sampler = Sampler(url)
    started = time.monotonic()
    os.kill(sup, signal.SIGUSR1)
    accounts = rpc(url, "eth_accounts")
    while not store.snapshots() or store.snapshots()[0].seq == seq:
        rpc(url, "eth_sendTransaction", [{"from": accounts[11], "to": accounts[0], "value": "0x1"}])
        time.sleep(0.2)
        if time.monotonic() - started > 1800:
            raise RuntimeError("no snapshot within 30 min")
    snapshot_s = time.monotonic() - started
    time.sleep(1)
    latency = sampler.stop()

    newest = store.snapshots()[0]
    head = int(rpc(url, "eth_blockNumber"), 16)
    transfers(url, max(0, SNAPSHOT_BLOCKS - 1 - (head - newest.block)))
    time.sleep(1.5)
    expected = rpc(url, "eth_getBlockByNumber", ["latest", False])
    journal_blocks = int(expected["number"], 16) - newest.block
    state_mb = len(gzip.decompress(bytes.fromhex(rpc(url, "anvil_dumpState", timeout=600)[2:]))) / 1e6
    anvil_rss, sup_rss = rss_mb(anvil), rss_mb(sup)
    os.killpg(os.getpgid(sup), signal.SIGKILL)
    while subprocess.run(["kill", "-0", str(anvil)], capture_output=True).returncode == 0 and not _zombie(anvil):
        time.sleep(0.05)
    start = time.perf_counter()
    out = cli(env, "chain", "up")
    restart_s = time.perf_counter() - start
    restored = rpc(url, "eth_getBlockByNumber", ["latest", False])
    assert restored["hash"] == expected["hash"], (restored, expected, out)
    return {
        "settled_events": height,
        "blocks": int(expected["number"], 16),
        "idle_bytes_per_min": round(idle),
        "idle_store_files_changed": idle_files_changed,
        "bytes_per_block": round(per_block),
        "written_bytes_per_block": round(per_block_written),
        "settle_bytes_per_block": build.get("bytes_per_block"),
        "build_p99_ms": build.get("p99_ms"),
        "p99_block_number_ms": latency["p99_ms"],
        "p50_block_number_ms": latency["p50_ms"],
        "max_block_number_ms": latency["max_ms"],
        "unanswered_samples": latency["failures"],
        "snapshot_s": round(snapshot_s, 2),
        "restart_s": round(restart_s, 2),
        "restart_journal_blocks": journal_blocks,
        "store_mb": round(store.bytes_on_disk() / 1e6, 2),
        "state_mb": round(state_mb, 1),
        "anvil_rss_mb": round(anvil_rss, 1),
        "supervisor_rss_mb": round(sup_rss, 1),
    }


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True


def main() -> int:
    tmp_root = ROOT / ".tmp"
    tmp_root.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-chain-", dir=tmp_root))
    data = tmp / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LEDGER_DATA_DIR": str(data), "LEDGER_PORT": str(port)}
    env.pop("APE_FOUNDRY_HOST", None)
    store = Store(data / "node" / "store")
    rows = []
    try:
        cli(env, "chain", "up")
        cli(env, "deploy")
        cli(env, "me", "register", "kitchen-platform", "--signer", "dev1")
        for name, alias in KITCHEN:
            cli(env, "me", "register", name, "--signer", alias, "--parent", "kitchen-platform")
        cli(env, "token", "mint", "100000000000")
        cli(env, "alliance", "propose", "bench", *[a for n, _ in KITCHEN for a in ("--party", f"{n}=2500")])
        cli(env, "alliance", "sign", "bench", *[a for _, alias in KITCHEN for a in ("--account", alias)])
        cli(env, "alliance", "submit", "bench")
        settled, index = 0, 0
        for level in LEVELS:
            build: dict = {}
            if level > settled:
                sampler = Sampler(url)
                while settled < level:
                    count = min(CHUNK, level - settled)
                    t0 = time.perf_counter()
                    settle_chunk(env, tmp, index, count)
                    settled, index = settled + count, index + 1
                    print(f"  settled {settled:,} events ({time.perf_counter() - t0:.1f} s)", flush=True)
                build = {"bytes_per_block": settle_record_bytes(store), **sampler.stop()}
            row = measure(env, data, url, store, level, build)
            print(json.dumps(row), flush=True)
            rows.append(row)
            write_results(rows)  # after each level: a long run stopped early keeps what it measured
    finally:
        subprocess.run([sys.executable, "-m", "ledger.cli", "chain", "down"], env=env, capture_output=True)
    print(f"bench/results.json: chain section written ({len(rows)} levels)")
    return 0


def write_results(rows: list[dict]) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["chain"] = {
        "method": "scripts/bench_chain.py docstring; one chain started by `ledger chain up`, history built by "
        "`ledger settle` of 100,000-event files",
        "snapshot_blocks": SNAPSHOT_BLOCKS,
        "idle_window_s": IDLE_S,
        "levels": rows,
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
