"""A data folder that cannot be written (read-only, or its disk full), as a user meets it: commands that
only read go on without their caches (the local index, the audit checkpoint) and say so; commands that
must write stop with one line naming the file and the folder, exit 2, no traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from contextlib import contextmanager

import pytest

from .cli_support import InProcessCLI, LedgerCLI, free_port

pytestmark = pytest.mark.http_node


@contextmanager
def read_only(folder):
    """``folder`` read-only for this process: a read-only bind mount as root (root ignores modes), else
    mode 0555. Skips when neither is possible here."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot bind-mount here to make a folder read-only for root")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True).returncode:
            pytest.skip("cannot remount a bind mount read-only here")
        yield
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    sh = LedgerCLI(tmp_path_factory.mktemp("ledger-data"), free_port())
    sh.run("chain", "up")
    try:
        ledger = InProcessCLI(sh.data_dir, sh.port)
        ledger.run("deploy")
        ledger.run("me", "register", "ro-one", "--signer", "dev3")
        yield sh
    finally:
        sh.run("chain", "down", ok=False)


def test_reading_commands_work_from_a_read_only_data_folder_and_say_they_skip_its_caches(chain, tmp_path):
    # before: payouts, balance, settle --dry-run and audit (even with --rpc) stopped with
    # "error: OSError: [Errno 30] Read-only file system" because the index and the checkpoint are files
    folder = tmp_path / "auditor"
    folder.mkdir()
    shutil.copytree(chain.data_dir / "deployments", folder / "deployments")
    reader = LedgerCLI(folder, chain.port)
    with read_only(folder):
        for args in (("balance",), ("payouts",), ("audit",), ("audit", "--full")):
            result = reader.run(*args)
            assert "Traceback" not in result.text and "OSError" not in result.text, result.text
        assert "reading the chain's logs directly" in reader.run("balance").err
        audit = reader.run("audit")
        assert "replaying every block without one" in audit.err and "result: clean" in audit.out
        failed = reader.fails("index", "rebuild", code=2, contains="must be writable and have free space")
        assert f"the data folder {folder}" in failed and len(failed.strip().splitlines()) == 1


def test_chain_up_in_a_read_only_data_folder_stops_with_one_line_naming_the_folder(tmp_path):
    folder = tmp_path / "node-data"
    folder.mkdir()
    node = LedgerCLI(folder, free_port())
    with read_only(folder):
        err = node.fails("chain", "up", code=2, contains="cannot write")
    assert "Read-only file system" in err or "Permission denied" in err, err
    assert not (folder / "node").exists()


@contextmanager
def small_disk(folder, size: str = "4m"):
    """A tmpfs of ``size`` mounted on ``folder`` (root only; skips elsewhere)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                           capture_output=True).returncode:  # fmt: skip
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_full_disk_stops_the_local_chain_and_every_command_says_the_disk_is_full(tmp_path):
    # before: the supervisor died with a traceback in anvil.log; commands said only "not running", `chain
    # up` blamed Anvil, and the restart after the disk was freed did not say the last block was lost
    with small_disk(tmp_path / "disk") as disk:
        node = LedgerCLI(disk / "data", free_port())
        node.run("chain", "up")
        try:
            node.run("deploy")
            filler = disk / "filler"
            with open(filler, "wb") as out, pytest.raises(OSError):
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
            # blocks the journal cannot take (sent over JSON-RPC: the CLI could not write its own files); the
            # first few fit in the journal's last, partly used page of the disk
            dev0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
            request = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_sendTransaction",
                                  "params": [{"from": dev0, "to": dev0, "value": "0x1"}]}).encode()  # fmt: skip
            for _ in range(60):
                try:
                    urllib.request.urlopen(
                        urllib.request.Request(
                            f"http://127.0.0.1:{node.port}", request, {"Content-Type": "application/json"}
                        ),
                        timeout=5,
                    )
                except OSError:
                    break  # the node is stopped
                time.sleep(0.1)
            deadline = time.monotonic() + 20
            while "running: yes" in (status := node.run("chain", "status").out) and time.monotonic() < deadline:
                time.sleep(0.3)
            assert "running: no" in status and "is full" in status, status
            node.fails("balance", code=2, contains="is full (")
            node.fails("chain", "up", code=1, contains="the local chain's supervisor exited")
            filler.unlink()
            up = node.run("chain", "up").out
            assert "did not stop cleanly" in up, up
            assert "result: clean" in node.run("audit").out
        finally:
            node.run("chain", "down", ok=False)
