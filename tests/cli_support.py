"""Running ``ledger`` as a user would: a subprocess with its own data folder and a free port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


class LedgerCLI:
    def __init__(self, data_dir: Path, port: int):
        self.data_dir = data_dir
        self.port = port
        # APE_FOUNDRY_HOST (set to give `ape test` its own node) would take over the host `ledger` asks for.
        self.env = {**os.environ, "LEDGER_DATA_DIR": str(data_dir), "LEDGER_PORT": str(port),
                    "APE_FOUNDRY_HOST": f"http://127.0.0.1:{port}"}  # fmt: skip

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ledger.cli", *args]

    def run(
        self, *args: str, ok: bool = True, env: dict | None = None, timeout: float = 300, cwd: Path | None = None
    ) -> Result:
        proc = subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=timeout,
            cwd=cwd,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if ok:
            assert result.code == 0, f"ledger {' '.join(args)} -> {result.code}\n{result.text}"
        return result

    def fails(self, *args: str, code: int = 1, contains: str = "", env: dict | None = None) -> str:
        """Run a command that must be refused: exit ``code``, one error line, no traceback."""
        result = self.run(*args, ok=False, env=env)
        assert result.code == code, f"ledger {' '.join(args)} -> {result.code}, wanted {code}\n{result.text}"
        assert "Traceback" not in result.text, result.text
        errors = [line for line in result.err.splitlines() if line.lower().startswith("error:")]
        assert errors, result.text
        assert contains in result.err, f"{contains!r} not in:\n{result.err}"
        return result.err

    def popen(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            self.command(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**self.env, **(env or {})},
        )


class InProcessCLI(LedgerCLI):
    """The same commands through click's test runner, in this process: Ape is imported once, so a
    command costs milliseconds instead of seconds. It connects to the same node as the subprocesses
    and gives Ape's connection back to the test session afterwards."""

    def run(self, *args: str, ok: bool = True, env: dict | None = None, timeout: float = 300) -> Result:
        from click.testing import CliRunner

        from ledger.cli import cli

        extra = {"LEDGER_DATA_DIR": str(self.data_dir), "LEDGER_PORT": str(self.port),
                 "APE_FOUNDRY_HOST": f"http://127.0.0.1:{self.port}", **(env or {})}  # fmt: skip
        outcome = CliRunner(mix_stderr=False).invoke(cli, list(args), env=extra)
        if outcome.exception is not None and not isinstance(outcome.exception, SystemExit):
            raise outcome.exception
        result = Result(outcome.exit_code, outcome.stdout, outcome.stderr)
        if ok:
            assert result.code == 0, f"ledger {' '.join(args)} -> {result.code}\n{result.text}"
        return result


def write_csv(path: Path, rows: list[tuple], header: str = "reference,alliance,amount,period") -> Path:
    path.write_text(header + "\n" + "".join(",".join(str(v) for v in row) + "\n" for row in rows))
    return path


class RpcProxy(BaseHTTPRequestHandler):
    """A JSON-RPC proxy in front of a node, for faults the node itself cannot make. Subclasses set
    ``target`` and override :meth:`answer`: return bytes to answer a request themselves, or None to
    forward it."""

    target = ""

    def answer(self, request) -> bytes | None:
        return None

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        data = self.answer(json.loads(body))
        if data is None:
            forward = urllib.request.Request(self.target, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(forward, timeout=30) as response:
                data = response.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

    @classmethod
    @contextmanager
    def serving(cls, target: str) -> Iterator[str]:
        """Run the proxy in a thread; yields its URL."""
        cls.target = target
        server = ThreadingHTTPServer(("127.0.0.1", 0), cls)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
