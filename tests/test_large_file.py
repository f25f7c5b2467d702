"""Large settlement files: checked as a stream with bounded memory, refused whole when one row is bad.

The 1 GB file (19.5 million rows) is ``slow``; a 300,000-row file exercises the same path (references
spill to disk past 200,000) in ``make test``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from ledger.chain.node import rpc
from ledger.revenue_file import DuplicateFinder, check_file

from .cli_support import free_port
from .test_faults import Chain, make_alliance

ROW = "INV-2026-11-{:020d},big,{}.{:02d},202611\n"  # about 52 bytes a row


def write_file(path: Path, rows: int, bad: dict[int, str]) -> int:
    """A CSV of ``rows`` events for alliance 'big' (file rows 2..rows+1); ``bad`` replaces file rows."""
    with open(path, "w") as handle:
        handle.write("reference,alliance,amount,period\n")
        chunk = 200_000
        for start in range(0, rows, chunk):
            lines = []
            for i in range(start, min(rows, start + chunk)):
                line_number = i + 2
                lines.append(bad.get(line_number) or ROW.format(i, i % 5000 + 1, i % 100))
            handle.write("".join(lines))
    return path.stat().st_size


def peak_rss_mb(pid: int, done: threading.Event, peak: list[int]) -> None:
    while not done.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    peak[0] = max(peak[0], int(line.split()[1]) // 1024)
        except OSError:
            return
        time.sleep(0.05)


def settle_and_measure(chain: Chain, path: Path) -> tuple[int, str, int]:
    proc = chain.sh.popen("settle", str(path))
    done, peak = threading.Event(), [0]
    watcher = threading.Thread(target=peak_rss_mb, args=(proc.pid, done, peak), daemon=True)
    watcher.start()
    try:
        _, err = proc.communicate(timeout=1800)
    finally:
        done.set()
        watcher.join()
    return proc.returncode, err, peak[0]


BAD = {
    48_211: "INV-BAD-AMOUNT,big,12.5.0,202611\n",
    48_212: "INV-BAD-PERIOD,big,1.00,2026-11\n",
}


def bad_rows(last: int) -> dict[int, str]:
    return {**BAD, last: ROW.format(3, 1, 0)}  # the last row repeats file row 5 (event 3)


def expect_refused(chain: Chain, err: str, code: int, last: int) -> None:
    assert code == 1, err
    assert "Traceback" not in err
    assert "row 48211: amount '12.5.0' is not a plain decimal number" in err
    assert "row 48212: period '2026-11' must be a whole number" in err
    assert f"row {last}: reference 'INV-2026-11-00000000000000000003' repeats row 5" in err
    assert "error: 3 problems; nothing was changed" in err


@pytest.fixture(scope="module")
def big_chain(tmp_path_factory):
    chain = Chain(tmp_path_factory.mktemp("big") / "data", free_port()).start()
    make_alliance(chain.cli, "big")
    try:
        yield chain
    finally:
        chain.stop()


def test_duplicates_are_found_past_the_in_memory_limit(tmp_path):
    path = tmp_path / "dups.csv"
    rows = 300_000
    write_file(path, rows, bad_rows(rows + 1))
    problems, total = check_file(path, lambda alliance: 6, spill_dir=tmp_path)
    assert rows > DuplicateFinder.IN_MEMORY
    assert total == 3 and len(problems) == 3
    assert problems[-1] == f"row {rows + 1}: reference 'INV-2026-11-00000000000000000003' repeats row 5"


@pytest.mark.http_node("settles through `ledger` subprocesses on a chain started by `ledger chain up`")
def test_a_large_file_with_bad_rows_is_refused_whole(big_chain, tmp_path):
    rows = 300_000
    path = tmp_path / "large.csv"
    write_file(path, rows, bad_rows(rows + 1))
    height = int(rpc(big_chain.url, "eth_blockNumber"), 16)
    code, err, _ = settle_and_measure(big_chain, path)
    expect_refused(big_chain, err, code, rows + 1)
    assert int(rpc(big_chain.url, "eth_blockNumber"), 16) == height


@pytest.mark.slow
@pytest.mark.http_node("settles through `ledger` subprocesses on a chain started by `ledger chain up`")
def test_a_1_gb_file_is_checked_as_a_stream_in_bounded_memory(big_chain, tmp_path):
    rows = 19_500_000
    path = tmp_path / "one-gigabyte.csv"
    try:
        size = write_file(path, rows, bad_rows(rows + 1))
        assert size > 10**9
        height = int(rpc(big_chain.url, "eth_blockNumber"), 16)
        code, err, peak = settle_and_measure(big_chain, path)
        expect_refused(big_chain, err, code, rows + 1)
        assert int(rpc(big_chain.url, "eth_blockNumber"), 16) == height
        assert peak < 400, f"peak RSS {peak} MB"  # the file is 1,000+ MB; Python + Ape alone is ~200 MB
        print(f"1 GB file: {size / 1e6:.0f} MB, peak RSS {peak} MB")
    finally:
        if path.exists():
            os.unlink(path)
