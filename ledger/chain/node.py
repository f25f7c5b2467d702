"""The persistent local chain: an Anvil process the project starts itself, with its state in a file.

Ape's foundry provider can start Anvil but passes none of the flags a long-lived ledger needs, so
``ledger chain up`` starts it here and every other command connects to it (``manage_process: false``):

- ``--state FILE --state-interval 1``: the chain is loaded from the file and written back every second
  and on a clean stop (SIGINT), so a crash of the node loses at most about one second of blocks.
- ``--prune-history``: Anvil keeps no past states on disk (otherwise ~0.3 MB per block piles up under
  ``~/.foundry/anvil/tmp`` for ever). Blocks, receipts and logs are still in the state file.

The folder ``<data_dir>/node/`` holds ``state.json``, ``anvil.log`` and ``node.json`` (pid, address,
start time). Nothing here imports Ape: status and start/stop answer quickly.
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
LOCAL_CHAIN_ID = 31337
START_TIMEOUT_S = 30.0
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


def rpc(url: str, method: str, params: list | None = None, timeout: float = 2.0):
    """One JSON-RPC call (no web3 import). Raises :class:`ledger.errors.ChainUnavailable` when nobody
    answers and :class:`ledger.chain.rpc.RpcError` when the node refuses (both LedgerErrors)."""
    from ledger.chain.rpc import HttpRpc

    return HttpRpc(url, timeout=timeout).request(method, params)


class LocalNode:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.folder = settings.node_dir
        self.state_file = self.folder / "state.json"
        self.log_file = self.folder / "anvil.log"
        self.info_file = self.folder / "node.json"
        self.url = settings.node_url

    # -- reading ------------------------------------------------------------------------------------

    def _recorded_pid(self) -> int | None:
        try:
            return int(json.loads(self.info_file.read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @staticmethod
    def _is_anvil(pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return b"anvil" in cmdline

    def running_pid(self) -> int | None:
        """The pid of the node this data folder started, if that process still lives."""
        pid = self._recorded_pid()
        return pid if pid is not None and self._is_anvil(pid) else None

    def answers(self) -> bool:
        try:
            rpc(self.url, "eth_chainId", timeout=1.0)
            return True
        except (OSError, ValueError, LedgerError):
            return False

    def status(self) -> NodeStatus:
        pid = self.running_pid()
        size = self.state_file.stat().st_size if self.state_file.exists() else 0
        state = self.state_file if self.state_file.exists() else None
        if pid is None:
            note = ""
            if self._recorded_pid() is not None:
                note = "the last run ended without `ledger chain down`; its state file keeps all but the last second"
            return NodeStatus(False, self.url, state_file=state, state_bytes=size, note=note)
        try:
            block = int(rpc(self.url, "eth_blockNumber"), 16)
            chain_id = int(rpc(self.url, "eth_chainId"), 16)
        except (OSError, ValueError, LedgerError):
            return NodeStatus(True, self.url, pid, state_file=state, state_bytes=size, note="not answering")
        return NodeStatus(True, self.url, pid, block, chain_id, state, size)

    # -- starting and stopping ----------------------------------------------------------------------

    def _port_taken(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((self.settings.host, self.settings.port)) == 0

    def command(self) -> list[str]:
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
        if not ANVIL.exists():
            raise ChainUnavailable(f"Anvil is not installed at {ANVIL}; run `make deps` first")
        if self._port_taken():
            raise LedgerError(
                f"port {self.settings.port} on {self.settings.host} is taken by another program; stop it or "
                f"choose another port with --port or LEDGER_PORT"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        if reset and self.state_file.exists():
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
        raise ChainUnavailable(f"Anvil did not answer within {START_TIMEOUT_S:.0f} s; see {self.log_file}")

    def _start_failure(self, code: int) -> str:
        lines = [line for line in self.log_file.read_text(errors="replace").splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if line.startswith("error")), lines[-1] if lines else "")
        if "state" in reason.lower():
            return (
                f"Anvil cannot load {self.state_file} ({reason.strip()[:160]}); "
                f"run `ledger chain up --reset` to keep it aside and start a new chain"
            )
        return f"Anvil exited with code {code}: {reason.strip()[:200]} (log: {self.log_file})"

    def _write_info(self, pid: int) -> None:
        info = {"pid": pid, "url": self.url, "started": time.time(), "command": self.command()}
        tmp = self.info_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, self.info_file)

    def stop(self) -> bool:
        """Stop the node cleanly (SIGINT: Anvil writes its state, then exits). False if not running."""
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
            if not self._is_anvil(pid) or _is_zombie(pid):
                return True
            time.sleep(0.05)
        return False


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
