"""The supervisor of the local chain: the process ``ledger chain up`` leaves running. It owns Anvil (its
child, started without ``--state`` and killed with it) and the chain's durability (docs/local-chain.md).

1. **Restore.** The newest whole snapshot on the journal's chain is loaded (``--load-state``, fed
   through a named pipe; a damaged one is reported and the older one used), then every journalled block
   after it is replayed as it was mined: same timestamp, same base fee, same signed transactions in the
   same order, one ``evm_mine`` each. Anvil reproduces such a block exactly, so replayed blocks' hashes
   are checked against the journal. A first start snapshots the genesis block; a data folder of the
   old scheme (``state.json``) is adopted once as the first snapshot.
2. **Follow.** Every 0.1 s the latest block is read; each new block (header fields and raw signed
   transactions) is appended to the journal, fsync'd within about 0.3 s. A block whose parent is not
   the journal's head (``evm_revert``, ``anvil_rollback``) first appends a truncation back to the common
   ancestor. Nothing is written while no block is mined.
3. **Snapshot.** When the journal since the newest snapshot would make a restart replay too long, a
   second, private Anvil loads that snapshot, replays the journal up to the current head and dumps its
   state, which is written aside, fsync'd and renamed; the node that answers the ledger is never asked to
   dump (it would stop answering for seconds on a large state).

Run by :class:`ledger.chain.node.LocalNode` as ``python -m ledger.chain.supervisor``; it reports through
``node.json`` (pids, state, what was restored) and its log. SIGTERM or SIGINT: the journal is already
current, so it syncs, stops Anvil and exits at once. SIGUSR1: take a snapshot now.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import gzip
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from ledger.chain.store import JournalWriter, Snapshot, Store, View, fsync_dir

POLL_S = 0.1
SYNC_DELAY_S = 0.3  # a block is on disk at most this long after it is seen (plus one poll)
FETCH_MAX = 200  # blocks read per poll while catching up
# A snapshot is taken when the journal since the newest one holds this many blocks or bytes of records:
# about what a restart replays in the time docs/local-chain.md states (the benchmark measures it).
# Replay runs at 80-150 blocks/s on this 2-core machine (busy or not): 500 blocks keep a restart's
# replay under about 6 s; the gas bound does the same for blocks of full settlement batches.
SNAPSHOT_BLOCKS = int(os.environ.get("LEDGER_SNAPSHOT_BLOCKS", 500))
SNAPSHOT_GAS = int(os.environ.get("LEDGER_SNAPSHOT_GAS", 200_000_000))
PR_SET_PDEATHSIG = 1
STORE_ERRNOS = {"ENOSPC", "EDQUOT", "EROFS", "EIO", "EACCES"}  # the store's disk refuses a write


class RestoreError(Exception):
    pass


def _why(err: BaseException) -> str:
    """An error in words: an OSError as its message and file (no "[Errno 28]")."""
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return str(err)


class RpcFailed(Exception):
    def __init__(self, method: str, error):
        self.method, self.error = method, error
        super().__init__(f"{method}: {error.get('message', error) if isinstance(error, dict) else error}")


class Rpc:
    """JSON-RPC over one kept-alive HTTP connection (the replay makes thousands of small calls)."""

    def __init__(self, url: str, timeout: float = 30.0):
        parsed = urlparse(url)
        self.host, self.port, self.timeout = parsed.hostname, parsed.port, timeout
        self._conn: http.client.HTTPConnection | None = None
        self._id = 0

    def _post(self, payload):
        body = json.dumps(payload).encode()
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request("POST", "/", body, {"Content-Type": "application/json"})
                return json.loads(self._conn.getresponse().read())
            except (OSError, http.client.HTTPException, ValueError):
                self.close()
                if attempt:
                    raise
        return None

    def call(self, method: str, params: list | None = None):
        self._id += 1
        reply = self._post({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params or []})
        if "error" in reply:
            raise RpcFailed(method, reply["error"])
        return reply["result"]

    def batch(self, calls: list[tuple[str, list]]) -> list:
        if not calls:
            return []
        replies = self._post([{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)])
        by_id = {r.get("id"): r for r in replies}
        out = []
        for i, (method, _) in enumerate(calls):
            reply = by_id.get(i, {"error": "no reply"})
            if "error" in reply:
                raise RpcFailed(method, reply["error"])
            out.append(reply["result"])
        return out

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None


_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)  # loaded before any fork: nothing to load in the child


def _die_with_parent() -> None:
    """In the child before exec: the kernel kills it when the supervisor dies, however it dies."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def anvil_command(binary: str, host: str, port: int, accounts: int, chain_id: int) -> list[str]:
    return [
        binary,
        "--host", host,
        "--port", str(port),
        "--chain-id", str(chain_id),
        "--accounts", str(accounts),
        "--prune-history",
        "--order", "fifo",  # a block's transactions in the order they came: a replay rebuilds it exactly
        "--quiet",  # no banner: the dev keys and mnemonic are never written to the log
    ]  # fmt: skip


def start_anvil(command: list[str], log, *, nice: int = 0) -> subprocess.Popen:
    parent = os.getpid()

    def prepare():
        _die_with_parent()
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os._exit(1)
        if nice:
            os.nice(nice)

    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=prepare)  # noqa: PLW1509


def start_loaded(
    command: list[str],
    log,
    rpc: Rpc,
    *,
    data: bytes | None = None,
    path: Path | None = None,
    fifo: Path | None = None,
    nice: int = 0,
) -> subprocess.Popen:
    """Start Anvil with a snapshot loaded (``--load-state``) and wait until it answers. A snapshot's bytes
    (gzipped JSON) reach it through a named pipe, decompressed on the way: no second copy on disk, and no
    JSON-RPC request of hundreds of megabytes (Anvil refuses large request bodies)."""
    feeder = None
    if data is not None:
        assert fifo is not None
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo, 0o600)
        feeder = threading.Thread(target=_feed, args=(fifo, data), daemon=True)
        feeder.start()
        path = fifo
    process = start_anvil([*command, "--load-state", str(path)] if path else command, log, nice=nice)
    try:
        wait_answering(rpc, process, timeout=900)
    except RestoreError:
        if process.poll() is None:
            process.kill()
            process.wait()
        raise
    finally:
        if feeder is not None:
            feeder.join(timeout=5)
            assert fifo is not None
            fifo.unlink(missing_ok=True)
    return process


def _feed(fifo: Path, data: bytes) -> None:
    deadline = time.monotonic() + 60
    fd = None
    while time.monotonic() < deadline:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as err:
            if err.errno not in (errno.ENXIO, errno.ENOENT):
                return
            time.sleep(0.01)
    if fd is None:
        return
    os.set_blocking(fd, True)
    try:
        with os.fdopen(fd, "wb") as out, gzip.GzipFile(fileobj=io.BytesIO(data)) as source:
            shutil.copyfileobj(source, out, 1 << 20)
    except (OSError, EOFError, gzip.BadGzipFile):
        pass  # Anvil stopped reading: it reports why, and the next snapshot is tried


def wait_answering(rpc: Rpc, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RestoreError(f"Anvil exited with code {process.returncode} before it answered")
        try:
            rpc.call("eth_chainId")
            return
        except (OSError, http.client.HTTPException, ValueError, RpcFailed):
            time.sleep(0.05)
    raise RestoreError(f"Anvil did not answer within {timeout:.0f} s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def block_record(block: dict, raws: list[str]) -> dict:
    return {
        "t": "b",
        "n": int(block["number"], 16),
        "h": block["hash"],
        "p": block["parentHash"],
        "ts": int(block["timestamp"], 16),
        "bf": block.get("baseFeePerGas"),
        "gu": int(block["gasUsed"], 16),
        "gl": int(block["gasLimit"], 16),
        "w": round(time.time(), 3),
        "tx": raws,
    }


def next_base_fee(parent: dict) -> int | None:
    """The EIP-1559 base fee of the block after ``parent`` (a journal record), as Anvil computes it."""
    if parent.get("bf") is None or parent.get("gu") is None or not parent.get("gl"):
        return None
    fee, used, target = int(parent["bf"], 16), parent["gu"], parent["gl"] // 2
    if used == target:
        return fee
    if used > target:
        return fee + max(1, fee * (used - target) // target // 8)
    return fee - fee * (target - used) // target // 8


CHECK_EVERY = 256  # blocks between two checks of a replayed block's hash (and always the last one)


def replay(rpc: Rpc, records: list[dict], *, until: int | None = None) -> tuple[int, list[str]]:
    """Mine each journalled block again on ``rpc`` (automine off meanwhile): its signed transactions in
    their order, then ``evm_mine`` at its timestamp, with its base fee where Anvil would not compute the
    same. Every ``CHECK_EVERY`` blocks and at the end the block's hash is compared with the journal's.
    Returns the blocks replayed and what did not replay as recorded."""
    problems: list[str] = []
    count = 0
    previous: dict | None = None
    checked = None  # the last block whose hash matched
    rpc.call("evm_setAutomine", [False])
    try:
        for i, record in enumerate(records):
            if until is not None and record["n"] > until:
                break
            if i == 0:
                rpc.call("anvil_setTime", [record["ts"]])
            fee = next_base_fee(previous) if previous else None
            if record.get("bf") and (fee is None or fee != int(record["bf"], 16)):
                rpc.call("anvil_setNextBlockBaseFeePerGas", [record["bf"]])
            for raw in record["tx"]:
                try:
                    rpc.call("eth_sendRawTransaction", [raw])
                except RpcFailed as err:
                    problems.append(f"a transaction of block {record['n']} was refused on replay ({err})")
            rpc.call("evm_mine", [record["ts"]])
            previous = record
            count += 1
            last = i == len(records) - 1 or (until is not None and records[i + 1]["n"] > until)
            if (count % CHECK_EVERY == 0 or last) and checked is not False:
                block = rpc.call("eth_getBlockByNumber", ["latest", False])
                if int(block["number"], 16) != record["n"]:
                    raise RestoreError(f"replaying block {record['n']} mined block {int(block['number'], 16)}")
                if block["hash"] != record["h"]:
                    checked = False
                    problems.append(
                        f"blocks up to {record['n']} replayed with a different hash: the chain's state was changed "
                        f"outside transactions (anvil_setStorageAt, anvil_setBalance, ...), and such changes "
                        f"cannot be replayed; the blocks hold the same transactions"
                    )
    finally:
        with contextlib.suppress(Exception):
            rpc.call("evm_setAutomine", [True])
    return count, problems


class Supervisor:
    def __init__(self, args: argparse.Namespace):
        self.folder = Path(args.folder)
        self.store = Store(self.folder / "store")
        self.info_file = self.folder / "node.json"
        self.host, self.port = args.host, args.port
        self.url = f"http://{args.host}:{args.port}"
        self.command = anvil_command(args.anvil, args.host, args.port, args.accounts, args.chain_id)
        self.args = args
        self.rpc = Rpc(self.url)
        self.stopping = False
        self.anvil: subprocess.Popen | None = None
        self.writer: JournalWriter | None = None
        self.head: tuple[int, str] = (0, "")
        self.hashes: dict[int, str] = {}  # block -> hash, for the blocks since the oldest kept snapshot
        self.seq_of: dict[int, int] = {}  # block -> journal segment holding it
        self.since_snapshot = (0, 0)  # blocks, gas journalled since the newest snapshot
        self.durable: dict | None = None
        self.job: threading.Thread | None = None
        self.job_result: tuple | None = None
        self.job_stop = threading.Event()
        self.snapshot_requested = False  # SIGUSR1: take a snapshot now (the benchmark, an operator)
        self.log = open(self.folder / "anvil.log", "ab", buffering=0)  # noqa: SIM115

    # -- reporting ----------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} supervisor: {text}\n".encode())

    def write_info(self, state: str, **extra) -> None:
        info = {
            "pid": self.anvil.pid if self.anvil else None,
            "supervisor": os.getpid(),
            "node": "anvil",
            "url": self.url,
            "started": time.time(),
            "state": state,
            "command": self.command,
            **extra,
        }
        tmp = self.info_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, self.info_file)

    # -- life ---------------------------------------------------------------------------------------

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._stop)
        signal.signal(signal.SIGUSR1, self._snapshot_now)
        try:
            self.say(f"starting (pid {os.getpid()})")
            self.write_info("restoring")
            summary = self.restore()
        except (RestoreError, RpcFailed, OSError, http.client.HTTPException) as err:
            self._fail(f"cannot start: {_why(err)}")
            return 1
        self.say(summary["message"])
        self.write_info("ready", restored=summary)
        try:
            code = self.follow()
        except OSError as err:  # the store cannot be written (a full disk): stop rather than mine blocks
            self._fail(f"stopped the node: cannot write the store: {_why(err)}")  # that a crash would lose
            return 4
        self.shutdown(clean=code == 0)
        return code

    def _fail(self, text: str) -> None:
        """Stop Anvil and leave the reason where `ledger chain up` / `chain status` look (each write may
        fail itself on a full disk)."""
        self._kill_anvil()
        with contextlib.suppress(OSError):
            self.say(text)
        with contextlib.suppress(OSError):
            self.write_info("failed", error=text)

    def _stop(self, *_):
        self.stopping = True

    def _snapshot_now(self, *_):
        self.snapshot_requested = True

    def _kill_anvil(self) -> None:
        if self.anvil is not None and self.anvil.poll() is None:
            self.anvil.kill()
            self.anvil.wait()

    def shutdown(self, clean: bool = True) -> None:
        self.job_stop.set()
        if self.writer is not None:
            if clean:
                self.writer.append({"t": "s", "n": self.head[0], "w": round(time.time(), 3)})
            self.writer.close()
        self._kill_anvil()
        if self.job is not None:
            self.job.join(timeout=5)
        self.say(f"stopped; durable up to block {self.head[0]}")

    # -- restore ------------------------------------------------------------------------------------

    def restore(self) -> dict:
        notes: list[str] = []
        for name in self.store.drop_partial_files():
            notes.append(f"{name}, a file the crash left half-written, was deleted (the previous copy is used)")
        snapshots = self.store.snapshots()
        legacy = self.folder / "state.json"
        if not snapshots:
            if self.store.segments():
                raise RestoreError(
                    f"{self.store.folder} has a journal but no snapshot to replay it on; run `ledger chain up "
                    f"--reset` to keep it aside and start a new chain"
                )
            self.writer = JournalWriter(self.store)
            if legacy.exists():
                return self._adopt(legacy)
            self.launch()
            snap = self.live_snapshot()
            summary = self._restored(snap, 0, [])
            summary["message"] = f"a new chain: its genesis block is the first snapshot, {snap.name}"
            return summary
        for snap in snapshots:
            data = self.store.read(snap)
            if data is None:
                notes.append(f"snapshot {snap.name} (block {snap.block}) is damaged (checksum mismatch); skipped")
                continue
            view = self.store.view(snap.journal_from)
            if not view.continues(snap):
                notes.append(f"snapshot {snap.name} (block {snap.block}) is not on the journal's chain; skipped")
                continue
            try:
                self.launch(data=data)
            except RestoreError as err:
                notes.append(f"Anvil cannot load snapshot {snap.name} ({err}); skipped")
                continue
            if view.torn_tail:
                notes.append("the journal's last record was cut short by the crash and is dropped")
            if view.damaged_tail:
                name, offset = view.damaged_tail
                notes.append(
                    f"journal segment {name} is damaged at byte {offset} (whole records follow the bad one: not a "
                    f"crash's torn tail); the blocks recorded after it were not replayed"
                )
            if view.bad_segment:
                notes.append(f"journal segment {view.bad_segment} ends in a damaged record; what follows is used")
            records = view.after(snap.block)
            if view.gap:
                first, last = view.gap
                notes.append(
                    f"journal blocks {first} to {last} cannot be replayed in order (a journal segment is damaged: "
                    f"block {first} is missing or does not follow block {first - 1}); the chain is restored up to "
                    f"block {first - 1} and the blocks after it are lost: re-run the commands since then, nothing "
                    f"is paid twice"
                )
            count, problems = replay(self.rpc, records)
            notes.extend(problems)
            if (not view.stopped_cleanly or view.torn_tail) and not view.damaged_tail and not view.gap:
                # (torn after a clean stop: a later run crashed)
                last_seen = records[-1]["w"] if records else snap.created
                notes.append(
                    f"the previous run did not stop cleanly: blocks mined after "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last_seen))} (the last block on disk) were "
                    f"lost, at most its last 2 seconds; re-run the command that was running: nothing is paid twice"
                )
            self._set_clock(records[-1] if records else None, snap)
            self.writer = JournalWriter(self.store)
            if self.writer.kept_aside is not None:
                notes.append(f"the damaged segment is kept whole as {self.writer.kept_aside.name}")
            top = records[-1]["n"] if records else snap.block
            self.hashes = {n: h for n, h in view.hashes.items() if snap.block <= n <= top}  # not past a gap
            self.hashes[snap.block] = snap.hash
            self.seq_of = dict.fromkeys(self.hashes, self.writer.seq)
            self.since_snapshot = (count, sum(r.get("gu", 0) for r in records))
            return self._restored(snap, count, notes, records[-1] if records else None)
        raise RestoreError(
            f"no snapshot in {self.store.folder} can be used ({'; '.join(notes) or 'none found'}); run `ledger "
            f"chain up --reset` to keep the store aside and start a new chain"
        )

    def _set_clock(self, last: dict | None, snap: Snapshot) -> None:
        """After a replay Anvil's clock stands at the last block's time: set it to now, keeping any time
        the chain had been moved forward (``evm_increaseTime``), never before the last block."""
        ts, seen = (last["ts"], last["w"]) if last else (snap.timestamp, snap.created)
        ahead = ts - seen if ts - seen > 1 else 0
        self.rpc.call("anvil_setTime", [max(int(time.time() + ahead), ts)])

    def _restored(self, snap: Snapshot, count: int, notes: list[str], last: dict | None = None) -> dict:
        latest = self.rpc.call("eth_getBlockByNumber", ["latest", False])
        self.head = (int(latest["number"], 16), latest["hash"])
        self.hashes[self.head[0]] = self.head[1]
        durable_at = last["w"] if last else snap.created
        message = (
            f"restored block {self.head[0]} from snapshot {snap.name} (block {snap.block}) and {count} journal "
            f"block{'s' if count != 1 else ''}"
        )
        return {
            "block": self.head[0],
            "hash": self.head[1],
            "snapshot": snap.name,
            "snapshot_block": snap.block,
            "replayed": count,
            "durable_at": durable_at,
            "notes": notes,
            "message": message + ("; " + "; ".join(notes) if notes else ""),
        }

    def launch(self, *, data: bytes | None = None, path: Path | None = None) -> None:
        """Start Anvil, empty or with a snapshot (bytes) or a state file (path) loaded."""
        fifo = self.folder / f"load-{os.getpid()}.fifo"
        self.anvil = None
        self.anvil = start_loaded(self.command, self.log, self.rpc, data=data, path=path, fifo=fifo)
        self.write_info("restoring")

    def _adopt(self, legacy: Path) -> dict:
        try:
            self.launch(path=legacy)
        except RestoreError as err:
            raise RestoreError(
                f"Anvil cannot load {legacy} ({str(err)[:160]}; see the log); run `ledger chain up --reset` to "
                f"keep it aside and start a new chain"
            ) from None
        snap = self.live_snapshot()
        kept = legacy.with_name(f"state.adopted-{time.strftime('%Y%m%dT%H%M%S')}.json")
        os.replace(legacy, kept)
        fsync_dir(self.folder)
        note = (
            f"adopted {legacy.name} of the old scheme (block {snap.block}) as the first snapshot {snap.name}; "
            f"the file is kept as {kept.name}"
        )
        return self._restored(snap, 0, [note])

    def live_snapshot(self) -> Snapshot:
        """Dump the running node's state (small chains only: at start, and after a revert below every
        snapshot), as a new snapshot that the journal continues from."""
        for _ in range(5):
            block = self.rpc.call("eth_getBlockByNumber", ["latest", False])
            dump = self.rpc.call("anvil_dumpState")
            after = self.rpc.call("eth_getBlockByNumber", ["latest", False])
            if after["hash"] == block["hash"]:
                break
        assert self.writer is not None
        self.writer.sync()
        snap = self.store.write_snapshot(
            bytes.fromhex(dump[2:]), block=int(block["number"], 16), hash=block["hash"],
            timestamp=int(block["timestamp"], 16), journal_from=self.writer.seq,
        )  # fmt: skip
        self.since_snapshot = (0, 0)
        return snap

    # -- follow -------------------------------------------------------------------------------------

    def follow(self) -> int:
        assert self.writer is not None
        while not self.stopping:
            if self.anvil is not None and self.anvil.poll() is not None:
                self.say(f"Anvil exited (code {self.anvil.returncode}); the journal is current")
                self.writer.sync()
                return 3
            try:
                self.poll()
            except (OSError, http.client.HTTPException, ValueError, RpcFailed) as err:
                if isinstance(err, OSError) and errno.errorcode.get(err.errno or 0) in STORE_ERRNOS:
                    raise  # the journal cannot be written: not the node failing to answer
                if self.anvil is not None and self.anvil.poll() is None:
                    self.say(f"the node did not answer ({err.__class__.__name__}); trying again")
                time.sleep(POLL_S)
            if self.writer.unsynced_since is not None and time.monotonic() - self.writer.unsynced_since >= SYNC_DELAY_S:
                self.writer.sync()
            self.manage_snapshots()
            time.sleep(POLL_S)
        with contextlib.suppress(Exception):
            self.poll()  # the last blocks before a clean stop
        return 0

    def poll(self) -> None:
        latest = self.rpc.call("eth_getBlockByNumber", ["latest", False])
        n, h = int(latest["number"], 16), latest["hash"]
        if (n, h) == self.head:
            return
        head_n, head_h = self.head
        if n > head_n:
            blocks = self.fetch(head_n + 1, min(n, head_n + FETCH_MAX))
            if blocks and blocks[0][0]["parentHash"] == head_h:
                self.append(blocks)
                return
        # A revert or a reorganisation: back to the newest block both the journal and the node hold.
        k = min(n, head_n)
        low = min(self.hashes) if self.hashes else 0
        while k >= low:
            block = self.rpc.call("eth_getBlockByNumber", [hex(k), False])
            if block is not None and self.hashes.get(k) == block["hash"]:
                break
            k -= 1
        assert self.writer is not None
        if k < low:
            self.say(f"the chain was replaced below block {low}; taking a snapshot of the node")
            snap = self.live_snapshot()
            self.writer.append({"t": "x", "n": snap.block, "h": snap.hash, "w": time.time()})
            self.writer.sync()
            self.hashes = {snap.block: snap.hash}
            self.head = (snap.block, snap.hash)
            self._drop_snapshots_above(snap.block, keep=snap.seq)
            return
        self.writer.append({"t": "x", "n": k, "w": round(time.time(), 3)})
        self.writer.sync()
        for m in [m for m in self.hashes if m > k]:
            del self.hashes[m]
        self.head = (k, self.hashes[k])
        self.say(f"blocks above {k} were reverted (node at block {n}); journalled")
        if self._drop_snapshots_above(k):
            self.live_snapshot()
            self.say(f"every snapshot was above block {k}: took a new one")

    def _drop_snapshots_above(self, block: int, keep: int | None = None) -> bool:
        """Delete snapshots of blocks that were reverted; True if no snapshot is left."""
        left = 0
        for snap in self.store.snapshots():
            if snap.block > block and snap.seq != keep:
                snap.path.with_suffix(".json").unlink(missing_ok=True)
                snap.path.unlink(missing_ok=True)
            else:
                left += 1
        return left == 0

    def fetch(self, first: int, last: int) -> list[tuple[dict, list[str]]]:
        blocks = self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in range(first, last + 1)])
        out = []
        for block in blocks:
            if block is None:
                break
            out.append(block)
        hashes = [tx for block in out for tx in block["transactions"]]
        raws = iter(self.rpc.batch([("eth_getRawTransactionByHash", [tx]) for tx in hashes]))
        return [(block, [next(raws) for _ in block["transactions"]]) for block in out]

    def append(self, blocks: list[tuple[dict, list[str]]]) -> None:
        assert self.writer is not None
        prev = self.head[1]
        for block, raws in blocks:
            if block["parentHash"] != prev:
                return  # a revert raced with the read: the next poll sorts it out
            if any(raw is None for raw in raws):
                return
            record = block_record(block, raws)
            self.writer.append(record)
            n = record["n"]
            self.hashes[n] = record["h"]
            self.seq_of[n] = self.writer.seq
            self.head = (n, record["h"])
            self.durable = record
            prev = record["h"]
            blocks_since, gas_since = self.since_snapshot
            self.since_snapshot = (blocks_since + 1, gas_since + record["gu"])

    # -- snapshots in a private node ----------------------------------------------------------------

    def manage_snapshots(self) -> None:
        if self.job is not None and not self.job.is_alive():
            self.job.join()
            self.job = None
            result, self.job_result = self.job_result, None
            if isinstance(result, Snapshot):
                assert self.writer is not None
                if self.hashes.get(result.block) != result.hash:  # reverted while it was taken
                    self._drop_snapshots_above(result.block - 1)
                    return
                blocks_since = self.head[0] - result.block
                self.since_snapshot = (max(0, blocks_since), 0)
                self.writer.rotate()
                self.store.prune()
                low = min(s.block for s in self.store.snapshots())
                self.hashes = {n: h for n, h in self.hashes.items() if n >= low}
                self.seq_of = {n: s for n, s in self.seq_of.items() if n >= low}
                self.say(f"snapshot {result.name} of block {result.block} written")
            elif result is not None:
                self.say(f"snapshot not taken: {result}")
            return
        blocks_since, gas_since = self.since_snapshot
        due = blocks_since >= SNAPSHOT_BLOCKS or gas_since >= SNAPSHOT_GAS or self.snapshot_requested
        if self.job is None and due:
            self.snapshot_requested = False
            assert self.writer is not None
            self.writer.sync()
            target = self.head
            journal_from = self.seq_of.get(target[0], self.writer.seq)
            self.since_snapshot = (0, 0)  # counted again from the new snapshot once it is written
            self.job = threading.Thread(target=self._snapshot_job, args=(target, journal_from), daemon=True)
            self.job.start()

    def _snapshot_job(self, target: tuple[int, str], journal_from: int) -> None:
        anvil = None
        try:
            base, data = None, None
            for snap in self.store.snapshots():
                data = self.store.read(snap)
                if data is not None:
                    base = snap
                    break
            if base is None or data is None:
                raise RestoreError("no whole snapshot to start from")
            view: View = self.store.view(base.journal_from)
            records = [r for r in view.after(base.block) if r["n"] <= target[0]]
            port = free_port()
            command = anvil_command(self.args.anvil, "127.0.0.1", port, self.args.accounts, self.args.chain_id)
            rpc = Rpc(f"http://127.0.0.1:{port}", timeout=900)
            fifo = self.folder / f"snapshot-{os.getpid()}.fifo"
            # Niced: the node the ledger talks to comes first for the CPU while a snapshot is taken.
            anvil = start_loaded(command, subprocess.DEVNULL, rpc, data=data, fifo=fifo, nice=10)
            if self.job_stop.is_set():
                return
            replay(rpc, records, until=target[0])
            block = rpc.call("eth_getBlockByNumber", ["latest", False])
            if block["hash"] != target[1]:
                raise RestoreError(f"the private node reached block {int(block['number'], 16)} with another hash")
            dump = rpc.call("anvil_dumpState")
            if self.job_stop.is_set():
                return
            self.job_result = self.store.write_snapshot(
                bytes.fromhex(dump[2:]), block=target[0], hash=target[1],
                timestamp=int(block["timestamp"], 16), journal_from=journal_from,
            )  # fmt: skip
        except Exception as err:  # noqa: BLE001 - reported in the log; the journal still holds everything
            self.job_result = f"{err.__class__.__name__}: {err}"
        finally:
            if anvil is not None:
                anvil.kill()
                anvil.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ledger.chain.supervisor")
    parser.add_argument("--folder", required=True)
    parser.add_argument("--anvil", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--chain-id", type=int, default=31337)
    return Supervisor(parser.parse_args(argv)).run()


if __name__ == "__main__":
    sys.exit(main())
