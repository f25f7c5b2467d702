"""The local chain: a node the project starts itself. Anvil by default, with its state in a file; Hardhat's
node with ``LEDGER_NODE=hardhat`` (in memory only).

Ape's foundry provider can start Anvil but passes none of the flags a long-lived ledger needs, so
``ledger chain up`` starts it here and every other command connects to it (``manage_process: false``):

- ``--state FILE --state-interval 1``: the chain is loaded from the file and written back every second
  and on a clean stop (SIGINT), so a crash of the node loses at most about one second of blocks.
- ``--prune-history``: Anvil keeps no past states on disk (otherwise ~0.3 MB per block piles up under
  ``~/.foundry/anvil/tmp`` for ever). Blocks, receipts and logs are still in the state file.

Hardhat's node (``node_modules/.bin/hardhat node``, configured by ``scripts/hardhat/hardhat.config.js``:
chain id 31337, the same test mnemonic, so dev0 ... dev19 are the same accounts) has no state file: its
chain lives in the process and is gone when the node stops. It is the second node the tests run on.

The folder ``<data_dir>/node/`` holds ``state.json`` (Anvil), ``anvil.log`` or ``hardhat.log`` and
``node.json`` (pid, kind, address, start time). Nothing here imports Ape: status and start/stop answer
quickly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

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
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class NodeStatus:
    running: bool
    url: str
    pid: int | None = None
    block: int | None = None
    chain_id: int | None = None
    state_file: Path | None = None
    state_bytes: int = 0
    note: str = ""
    node: str = "anvil"  # anvil | hardhat

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
        self.state_file = self.folder / "state.json"
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

    def _recorded_pid(self) -> int | None:
        try:
            return int(self._recorded()["pid"])
        except (KeyError, ValueError, TypeError):
            return None

    @staticmethod
    def _is_node(pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return b"anvil" in cmdline or b"hardhat" in cmdline

    def running_pid(self) -> int | None:
        """The pid of the node this data folder started, if that process still lives."""
        pid = self._recorded_pid()
        return pid if pid is not None and self._is_node(pid) else None

    def answers(self) -> bool:
        try:
            rpc(self.url, "eth_chainId", timeout=1.0)
            return True
        except (OSError, ValueError, LedgerError):
            return False

    def status(self) -> NodeStatus:
        pid = self.running_pid()
        kind = self.kind
        persistent = kind == "anvil"
        size = self.state_file.stat().st_size if persistent and self.state_file.exists() else 0
        state = self.state_file if persistent and self.state_file.exists() else None
        if pid is None:
            note = ""
            if self._recorded_pid() is not None and self._recorded().get("node", "anvil") == "anvil":
                note = "the last run ended without `ledger chain down`; its state file keeps all but the last second"
            elif self._recorded_pid() is not None:
                note = "the last run ended without `ledger chain down`; a Hardhat chain is not kept"
            return NodeStatus(False, self.url, state_file=state, state_bytes=size, note=note, node=kind)
        try:
            block = int(rpc(self.url, "eth_blockNumber"), 16)
            chain_id = int(rpc(self.url, "eth_chainId"), 16)
        except (OSError, ValueError, LedgerError):
            return NodeStatus(True, self.url, pid, state_file=state, state_bytes=size, note="not answering", node=kind)
        return NodeStatus(True, self.url, pid, block, chain_id, state, size, node=kind)

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
            str(ANVIL),
            "--host", self.settings.host,
            "--port", str(self.settings.port),
            "--chain-id", str(LOCAL_CHAIN_ID),
            "--accounts", str(self.settings.dev_accounts),
            "--state", str(self.state_file),
            "--state-interval", "1",
            "--prune-history",
        ]  # fmt: skip

    def start(self, *, reset: bool = False) -> tuple[NodeStatus, bool]:
        """Start the node in the background. Returns ``(status, started)``; ``started`` is False when
        it was already running."""
        pid = self.running_pid()
        if pid is not None:
            return self.status(), False
        binary = HARDHAT if self.kind == "hardhat" else ANVIL
        if not binary.exists():
            raise ChainUnavailable(f"{self.name} is not installed at {binary}; run `make deps` first")
        if self._port_taken():
            raise LedgerError(
                f"port {self.settings.port} on {self.settings.host} is taken by another program; stop it or "
                f"choose another port with --port or LEDGER_PORT"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        if reset and self.persistent and self.state_file.exists():
            kept = self.state_file.with_name(f"state.{time.strftime('%Y%m%dT%H%M%S')}.json")
            os.replace(self.state_file, kept)
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

    def _start_failure(self, code: int) -> str:
        lines = [line for line in self.log_file.read_text(errors="replace").splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if line.startswith("error")), lines[-1] if lines else "")
        if self.persistent and "state" in reason.lower():
            return (
                f"Anvil cannot load {self.state_file} ({reason.strip()[:160]}); "
                f"run `ledger chain up --reset` to keep it aside and start a new chain"
            )
        return f"{self.name} exited with code {code}: {reason.strip()[:200]} (log: {self.log_file})"

    def _write_info(self, pid: int) -> None:
        info = {"pid": pid, "node": self.kind, "url": self.url, "started": time.time(), "command": self.command()}
        tmp = self.info_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, self.info_file)

    def stop(self) -> bool:
        """Stop the node cleanly (SIGINT: Anvil writes its state, then exits; Hardhat's chain is gone).
        False if not running."""
        pid = self.running_pid()
        if pid is None:
            self.info_file.unlink(missing_ok=True)
            return False
        for sig, wait in ((signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            if self._wait_gone(pid, wait):
                break
        self.info_file.unlink(missing_ok=True)
        return True

    def _wait_gone(self, pid: int, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self._is_node(pid) or _is_zombie(pid):
                return True
            time.sleep(0.05)
        return False


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
