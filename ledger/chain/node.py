"""The local chain: a node the project starts itself. Anvil by default, kept durable by a supervisor
process; Hardhat's node with ``LEDGER_NODE=hardhat`` (in memory only).

Ape's foundry provider can start Anvil but passes none of the flags a long-lived ledger needs, so
``ledger chain up`` starts it here and every other command connects to it (``manage_process: false``).

On Anvil, ``ledger chain up`` starts the supervisor (:mod:`ledger.chain.supervisor`) in the background;
it starts Anvil as its child (``--prune-history --order fifo --quiet``: no past states on disk, blocks
rebuilt exactly on replay, no banner with the dev keys in the log), restores the chain from the store
under ``<data_dir>/node/store/`` (:mod:`ledger.chain.store`: snapshots and a journal of every block), and
journals each new block within about half a second. docs/local-chain.md has the design and guarantees.

Hardhat's node (``node_modules/.bin/hardhat node``, configured by ``scripts/hardhat/hardhat.config.js``:
chain id 31337, the same test mnemonic, so dev0 ... dev19 are the same accounts) keeps nothing: its
chain lives in the process and is gone when the node stops. It is the second node the tests run on.

The folder ``<data_dir>/node/`` holds ``store/`` (Anvil), ``anvil.log`` or ``hardhat.log`` and
``node.json`` (pids, kind, address, start time; on Anvil the supervisor's state and what it restored).
Nothing here imports Ape: status and start/stop answer quickly.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ledger.chain.store import Store
from ledger.config import PROJECT_ROOT, Settings
from ledger.errors import ChainUnavailable, LedgerError

ANVIL = PROJECT_ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
HARDHAT = PROJECT_ROOT / "node_modules" / ".bin" / "hardhat"
HARDHAT_CONFIG = PROJECT_ROOT / "scripts" / "hardhat" / "hardhat.config.js"
# Hardhat asks no questions and fetches no banner when its output is not a terminal; these make sure.
HARDHAT_ENV = {"HARDHAT_DISABLE_TELEMETRY_PROMPT": "true", "HARDHAT_HIDE_SOLIDITY_SURVEY_MESSAGE": "true"}
NODE_NAMES = {"anvil": "Anvil", "hardhat": "Hardhat"}
LOCAL_CHAIN_ID = 31337
START_TIMEOUT_S = 60.0  # Hardhat's node takes 3-10 s to start on a busy 2-core machine
RESTORE_TIMEOUT_S = 1800.0  # the supervisor restores the chain before it says "ready"
STOP_TIMEOUT_S = 15.0
FULL_DISK_BYTES = 1 << 20  # less free space than this under the data folder is called a full disk
BUSY_WAIT_S = 30.0  # how long a command waits for a node that runs but does not answer (LEDGER_BUSY_WAIT_S)
# Lines of Anvil's start-up banner that hold secrets (older logs, written before --quiet).
SECRET_MARKERS = ("Private Keys", "Mnemonic:", "Derivation path", "Wallet")


@dataclass(frozen=True)
class NodeStatus:
    running: bool
    url: str
    pid: int | None = None
    block: int | None = None
    chain_id: int | None = None
    store: Path | None = None
    store_bytes: int = 0
    note: str = ""
    node: str = "anvil"  # anvil | hardhat
    supervisor_pid: int | None = None
    durable_block: int | None = None  # the newest block on disk (journal or snapshot)
    durable_at: float | None = None  # when it was seen (wall clock)
    restored: dict | None = None  # what the supervisor restored at start

    @property
    def persistent(self) -> bool:
        return self.node == "anvil"


def rpc(url: str, method: str, params: list | None = None, timeout: float = 2.0):
    """One JSON-RPC call (no web3 import). Raises :class:`ledger.errors.ChainUnavailable` when nobody
    answers and :class:`ledger.chain.rpc.RpcError` when the node refuses (both LedgerErrors)."""
    from ledger.chain.rpc import HttpRpc

    return HttpRpc(url, timeout=timeout).request(method, params)


def dev_rpc(url: str, method: str, params: list | None = None, timeout: float = 2.0):
    """Like :func:`rpc`, for a development-node method named as on Anvil (``anvil_mine``,
    ``anvil_setStorageAt``, ``anvil_dropTransaction``, ``txpool_content``, ...): sent under the name the
    node at ``url`` uses (see :meth:`ledger.chain.rpc.HttpRpc.dev_request`)."""
    from ledger.chain.rpc import HttpRpc

    return HttpRpc(url, timeout=timeout).dev_request(method, params)


class LocalNode:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.folder = settings.node_dir
        self.legacy_state = self.folder / "state.json"  # the old scheme's file, adopted once
        self.store = Store(self.folder / "store")
        self.info_file = self.folder / "node.json"
        self.url = settings.node_url

    @property
    def kind(self) -> str:
        """The node this folder runs: the one recorded while it runs, else the configured one."""
        return self._recorded().get("node", "anvil") if self.running_pid() else self.settings.node

    @property
    def name(self) -> str:
        return NODE_NAMES[self.kind]

    @property
    def persistent(self) -> bool:
        return self.kind == "anvil"

    @property
    def log_file(self) -> Path:
        return self.folder / f"{self.kind}.log"

    # -- reading ------------------------------------------------------------------------------------

    def _recorded(self) -> dict:
        try:
            info = json.loads(self.info_file.read_text())
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def _recorded_pid(self, key: str = "pid") -> int | None:
        try:
            return int(self._recorded()[key])
        except (KeyError, ValueError, TypeError):
            return None

    @staticmethod
    def _cmdline(pid: int) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return b""

    @classmethod
    def _is_node(cls, pid: int) -> bool:
        cmdline = cls._cmdline(pid)
        return (b"anvil" in cmdline or b"hardhat" in cmdline) and not _is_zombie(pid)

    @classmethod
    def _is_supervisor(cls, pid: int) -> bool:
        return b"ledger.chain.supervisor" in cls._cmdline(pid) and not _is_zombie(pid)

    def running_pid(self) -> int | None:
        """The pid of the node this data folder started, if that process still lives."""
        pid = self._recorded_pid()
        return pid if pid is not None and self._is_node(pid) else None

    def supervisor_pid(self) -> int | None:
        pid = self._recorded_pid("supervisor")
        return pid if pid is not None and self._is_supervisor(pid) else None

    def answers(self, timeout: float = 1.0) -> bool:
        try:
            rpc(self.url, "eth_chainId", timeout=timeout)
            return True
        except (OSError, ValueError, LedgerError):
            return False

    def alive_here(self) -> bool:
        """Whether this folder's node (or its supervisor) runs and serves this address."""
        if self._recorded().get("url") not in (None, self.url):
            return False
        return self.running_pid() is not None or self.supervisor_pid() is not None

    def disk_note(self) -> str:
        """Words for a full disk under the data folder (the supervisor stops the node when it cannot write
        the store), or ""."""
        try:
            free = shutil.disk_usage(self.folder if self.folder.exists() else self.settings.data_dir).free
        except OSError:
            return ""
        if free >= FULL_DISK_BYTES:
            return ""
        return f"the disk holding {self.folder} is full ({free:,} bytes free): free space, then `ledger chain up`"

    def wait_until_answering(self) -> None:
        """Called when the node did not answer: a node that runs but is busy (restoring, or slow under
        load) is waited for, up to ``BUSY_WAIT_S``, and never reported as not running."""
        if not self.alive_here():
            full = self.disk_note()
            raise ChainUnavailable(
                f"the local chain is not running at {self.url}; " + (full or "start it with `ledger chain up`")
            )
        patience = float(os.environ.get("LEDGER_BUSY_WAIT_S", BUSY_WAIT_S))
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            if self.answers(timeout=min(5.0, patience)):
                return
            if not self.alive_here():
                raise ChainUnavailable(f"the local chain at {self.url} stopped; start it again with `ledger chain up`")
            time.sleep(0.2)
        what = "is being restored" if self._recorded().get("state") == "restoring" else "is busy"
        pid = self.running_pid() or self.supervisor_pid()
        raise ChainUnavailable(
            f"the local chain (pid {pid}) runs but {what}: it has not answered at {self.url} for "
            f"{patience:.0f} s; try again in a moment (`ledger chain status`)"
        )

    def durable(self) -> tuple[int | None, float | None]:
        """The newest block on disk and when it was seen: the journal's last record, else the newest
        snapshot."""
        record = self.store.last_block()
        if record is not None:
            return int(record["n"]), record.get("w")
        snapshots = self.store.snapshots()
        if snapshots:
            return snapshots[0].block, snapshots[0].created
        return None, None

    def status(self) -> NodeStatus:
        pid = self.running_pid()
        kind = self.kind
        persistent = kind == "anvil"
        info = self._recorded()
        store = self.store.folder if persistent and self.store.exists() else None
        extra: dict = {"node": kind, "store": store}
        if persistent:
            durable_block, durable_at = self.durable()
            extra.update(
                store_bytes=self.store.bytes_on_disk(),
                durable_block=durable_block,
                durable_at=durable_at,
                supervisor_pid=self.supervisor_pid(),
                restored=info.get("restored") if pid else None,
            )
        if pid is None:
            note = ""
            if info.get("state") == "failed" and info.get("error"):
                note = f"the last run stopped: {info['error']}"
            elif self.supervisor_pid() is not None and info.get("state") == "restoring":
                note = "the supervisor is restoring the chain; wait for `ledger chain up` to finish"
            elif self._recorded_pid() is not None and info.get("node", "anvil") == "anvil":
                note = "the last run ended without `ledger chain down`; `ledger chain up` restores it from the store"
            elif self._recorded_pid() is not None:
                note = "the last run ended without `ledger chain down`; a Hardhat chain is not kept"
            full = self.disk_note()
            return NodeStatus(False, self.url, note=f"{note}; {full}" if note and full else note or full, **extra)
        try:
            block = int(rpc(self.url, "eth_blockNumber", timeout=5.0), 16)
            chain_id = int(rpc(self.url, "eth_chainId", timeout=5.0), 16)
        except (OSError, ValueError, LedgerError):
            return NodeStatus(True, self.url, pid, note="running but busy: not answering", **extra)
        return NodeStatus(True, self.url, pid, block, chain_id, **extra)

    # -- starting and stopping ----------------------------------------------------------------------

    def _port_taken(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((self.settings.host, self.settings.port)) == 0

    def command(self) -> list[str]:
        if self.kind == "hardhat":
            return [
                str(HARDHAT),
                "--config", str(HARDHAT_CONFIG),
                "node",
                "--hostname", self.settings.host,
                "--port", str(self.settings.port),
            ]  # fmt: skip
        return [
            sys.executable, "-m", "ledger.chain.supervisor",
            "--folder", str(self.folder),
            "--anvil", str(ANVIL),
            "--host", self.settings.host,
            "--port", str(self.settings.port),
            "--accounts", str(self.settings.dev_accounts),
            "--chain-id", str(LOCAL_CHAIN_ID),
        ]  # fmt: skip

    def start(self, *, reset: bool = False) -> tuple[NodeStatus, bool]:
        """Start the node in the background. Returns ``(status, started)``; ``started`` is False when
        it was already running. On Anvil, ``status.restored`` says what was restored. Two `chain up` on
        one data folder take turns (a lock file in the node folder): the second finds the first's node
        running instead of racing it for the port and ``node.json``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "start.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
            return self._start(reset=reset)

    def _start(self, *, reset: bool) -> tuple[NodeStatus, bool]:
        deadline = time.monotonic() + RESTORE_TIMEOUT_S
        while self.supervisor_pid() is not None and time.monotonic() < deadline:
            # A supervisor still restoring (another `chain up`), or finishing after its node died.
            if self.running_pid() is not None and self._recorded().get("state") == "ready":
                break
            time.sleep(0.1)
        pid = self.running_pid()
        if pid is not None and self._recorded().get("state", "ready") == "ready":
            return self.status(), False
        binary = HARDHAT if self.kind == "hardhat" else ANVIL
        if not binary.exists():
            raise ChainUnavailable(f"{self.name} is not installed at {binary}; run `make deps` first")
        if self.supervisor_pid() is not None:
            raise LedgerError(
                f"the local chain's supervisor (pid {self.supervisor_pid()}) is still starting or stopping; "
                f"wait a moment, then run `ledger chain status`"
            )
        if self._port_taken():
            raise LedgerError(
                f"port {self.settings.port} on {self.settings.host} is taken by another program; stop it or "
                f"choose another port with --port or LEDGER_PORT"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        if reset and self.persistent:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            if self.legacy_state.exists():
                os.replace(self.legacy_state, self.legacy_state.with_name(f"state.{stamp}.json"))
            if self.store.folder.exists():
                os.replace(self.store.folder, self.store.folder.with_name(f"store.{stamp}"))
        scrub_log(self.log_file)
        with open(self.log_file, "ab") as log:
            log.write(f"\n--- ledger chain up {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
            log.flush()
            process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the command that started it, and its Ctrl-C
                cwd=self.folder,
                env={**os.environ, **HARDHAT_ENV, "LEDGER_DEV_ACCOUNTS": str(self.settings.dev_accounts)},
            )
        if self.kind == "anvil":
            return self._wait_supervisor(process), True
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                raise LedgerError(self._start_failure(code))
            if self.answers():
                self._write_info(process.pid)
                return self.status(), True
            time.sleep(0.1)
        process.kill()
        raise ChainUnavailable(f"{self.name} did not answer within {START_TIMEOUT_S:.0f} s; see {self.log_file}")

    def _wait_supervisor(self, process: subprocess.Popen) -> NodeStatus:
        deadline = time.monotonic() + RESTORE_TIMEOUT_S
        while time.monotonic() < deadline:
            info = self._recorded()
            mine = info.get("supervisor") == process.pid
            code = process.poll()
            if code is not None:
                if mine and info.get("error"):
                    raise LedgerError(str(info["error"]))
                raise LedgerError(self._start_failure(code))
            if mine and info.get("state") == "ready":
                return self.status()
            time.sleep(0.1)
        process.kill()
        raise ChainUnavailable(f"the local chain did not start within {RESTORE_TIMEOUT_S:.0f} s; see {self.log_file}")

    def _start_failure(self, code: int) -> str:
        try:
            lines = [line for line in self.log_file.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            lines = []
        reason = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "")
        who = "the local chain's supervisor" if self.kind == "anvil" else self.name
        if code < 0:  # a signal, not the process's own exit: the log's last line is not the reason
            name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
            return (f"{who} was killed ({name}) before the chain was ready; run `ledger chain up` again "
                    f"(log: {self.log_file})")  # fmt: skip
        full = self.disk_note()
        return f"{who} exited with code {code}: {full or reason.strip()[:200]} (log: {self.log_file})"

    def _write_info(self, pid: int) -> None:
        info = {"pid": pid, "node": self.kind, "url": self.url, "started": time.time(), "command": self.command()}
        tmp = self.info_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, self.info_file)

    def stop(self) -> bool:
        """Stop the node. On Anvil the supervisor is asked to stop (its journal is current, so it only
        syncs and stops Anvil); Hardhat's chain is gone. False if not running."""
        supervisor = self.supervisor_pid()
        pid = self.running_pid()
        if pid is None and supervisor is None:
            self.info_file.unlink(missing_ok=True)
            return False
        if supervisor is not None:
            self._signal_until_gone(supervisor, ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)))
        if pid is not None and self._is_node(pid):
            self._signal_until_gone(
                pid, ((signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0))
            )
        self.info_file.unlink(missing_ok=True)
        return True

    def _signal_until_gone(self, pid: int, steps) -> None:
        for sig, wait in steps:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            if self._wait_gone(pid, wait):
                return

    def _wait_gone(self, pid: int, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not (self._is_node(pid) or self._is_supervisor(pid)) or _is_zombie(pid):
                return True
            time.sleep(0.05)
        return False


def scrub_log(path: Path) -> None:
    """Drop the key and mnemonic lines of Anvil's banner from a log written before the banner was
    silenced: the project keeps no key in any file it writes."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return
    lines = text.splitlines(keepends=True)
    kept = [line for line in lines if not _secret(line)]
    if len(kept) != len(lines):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)


def _secret(line: str) -> bool:
    return any(marker in line for marker in SECRET_MARKERS) or bool(re.search(r"\b0x[0-9a-fA-F]{64}\b", line))


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
