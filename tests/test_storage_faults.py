"""A data folder that cannot be written (read-only, or its disk full), as a user meets it: commands that
only read go on without their caches (the local index, the audit checkpoint) and say so; commands that
must write stop with one line naming the file and the folder, exit 2, no traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
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
