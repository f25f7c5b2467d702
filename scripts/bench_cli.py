"""Command-line timings -> bench/results.json ("cli" section).

- help_s: `ledger --help` (must answer in under 0.3 s: Ape is imported only by commands that need it)
- command_s: a read-only command against the chain (`ledger me list`): Python start-up, then the MEs
  read in batched JSON-RPC calls (read-only commands do not start Ape on the local chain)
- demo_s: `ledger demo` from nothing (start the chain, deploy, register, sign, settle 3,000 events,
  close the period, payouts) on a fresh data folder and port
Each figure is the median of several runs, wall time of the whole process.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(args: list[str], env: dict, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ledger.cli", *args], env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


def main() -> int:
    with tempfile.TemporaryDirectory(dir=ROOT / ".tmp") as data:
        env = {**os.environ, "LEDGER_DATA_DIR": data, "LEDGER_PORT": str(free_port())}
        try:
            help_s = timed(["--help"], env, 7)
            demo_s = timed(["demo"], env, 1)
            command_s = timed(["me", "list"], env, 5)
        finally:
            subprocess.run([sys.executable, "-m", "ledger.cli", "chain", "down"], env=env, capture_output=True)
    section = {"help_s": help_s, "command_s": command_s, "demo_3000_events_s": demo_s}
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["cli"] = section
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"ledger --help            {help_s:8.3f} s   (target < 0.3 s)")
    print(f"ledger me list           {command_s:8.3f} s   (Python start-up + batched reads; no Ape)")
    print(f"ledger demo (3,000 ev.)  {demo_s:8.3f} s   (from nothing to payouts)")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
