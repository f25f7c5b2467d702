"""Onboarding from files at the issue's scale -> bench/results.json ("import" section).

Method
------
1. **Node.** ``python -m ledger.cli chain up`` on a fresh data folder under ``.tmp/`` and a free port,
   then ``deploy``; ``chain down`` at the end, whatever happens.
2. **MEs** (``me_import_s``): a CSV of 4,000 MEs (``name,signer,payout,parent``; signers the dev accounts
   dev3..dev19, payout addresses drawn at random and written with their EIP-55 checksum, one in ten with
   a parent from an earlier row), then the wall time of the whole command ``ledger me import FILE`` as
   a subprocess, from process start to exit: the check of every row against the chain and 4,000
   ``registerME`` transactions sent through the pipeline and mined. ``me_reimport_s``: the same file
   again (every row already registered: checked and skipped, nothing sent).
3. **Alliances** (``alliance_import_s``): a JSON-lines file of 500 alliance proposals of 2 to 20 parties
   drawn from the 4,000 MEs (a third with a target and an excess table), then ``ledger alliance import
   FILE`` timed the same way; ``alliance_reimport_s`` the same file again.

Targets (issue 17): at most 60 s each for 4,000 MEs and 500 alliances. Run: ``python
scripts/bench_import.py`` (``make bench`` runs it).
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_audit import cli, free_port, partition  # noqa: E402
from bench_settle import timed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
SEED = 20261217
N_MES = 4_000
N_ALLIANCES = 500
TARGET_S = 60


def write_mes(path: Path, signers: list[str]) -> list[str]:
    from eth_utils import to_checksum_address

    rng = random.Random(SEED)
    names = []
    lines = ["name,signer,payout,parent"]
    for i in range(N_MES):
        name = f"onboard-me-{i:04d}"
        payout = to_checksum_address("0x" + rng.randbytes(20).hex())
        parent = names[rng.randrange(len(names))] if names and i % 10 == 0 else ""
        lines.append(f"{name},{signers[i % len(signers)]},{payout},{parent}")
        names.append(name)
    path.write_text("\n".join(lines) + "\n")
    return names


def write_alliances(path: Path, me_names: list[str]) -> int:
    rng = random.Random(SEED + 1)
    tiered = 0
    with path.open("w") as out:
        for j in range(N_ALLIANCES):
            n = 2 + j % 19
            parties = rng.sample(me_names, n)
            shares = partition(rng, n)
            record = {"name": f"onboard-alliance-{j:03d}"}
            if j % 3 == 0:
                tiered += 1
                excess = partition(rng, n)
                record["target"] = f"{rng.randint(200_000, 2_000_000)}.50"
                record["parties"] = [{"me": p, "share": s, "excess": e}
                                     for p, s, e in zip(parties, shares, excess, strict=True)]  # fmt: skip
            else:
                record["parties"] = [{"me": p, "share": s} for p, s in zip(parties, shares, strict=True)]
            out.write(json.dumps(record) + "\n")
    return tiered


def main() -> int:
    (ROOT / ".tmp").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / ".tmp", prefix="bench-import-") as data:
        port = free_port()
        env = {**os.environ, "LEDGER_DATA_DIR": data, "LEDGER_PORT": str(port)}
        try:
            cli(env, "chain", "up")
            cli(env, "deploy", "--json")
            signers = [_dev_address(i) for i in range(3, 20)]
            mes_file, alliances_file = Path(data) / "mes.csv", Path(data) / "alliances.jsonl"
            names = write_mes(mes_file, signers)
            me_s, _, proc = timed(env, "me", "import", str(mes_file))
            assert f"registered {N_MES} MEs" in proc.stdout, proc.stdout
            print(f"me import: {N_MES:,} MEs in {me_s:.2f} s", flush=True)
            me_again_s, _, proc = timed(env, "me", "import", str(mes_file))
            assert f"{N_MES} were registered already" in proc.stdout, proc.stdout
            print(f"me import again: all {N_MES:,} skipped in {me_again_s:.2f} s", flush=True)
            tiered = write_alliances(alliances_file, names)
            al_s, _, proc = timed(env, "alliance", "import", str(alliances_file))
            assert f"proposed {N_ALLIANCES} alliances" in proc.stdout, proc.stdout
            print(f"alliance import: {N_ALLIANCES} alliances ({tiered} with a target) in {al_s:.2f} s", flush=True)
            al_again_s, _, proc = timed(env, "alliance", "import", str(alliances_file))
            assert f"{N_ALLIANCES} existed already" in proc.stdout, proc.stdout
            print(f"alliance import again: all skipped in {al_again_s:.2f} s", flush=True)
        finally:
            cli(env, "chain", "down", check=False)
    section = {
        "mes": N_MES,
        "me_import_s": round(me_s, 2),
        "me_import_per_s": round(N_MES / me_s),
        "me_reimport_s": round(me_again_s, 2),
        "alliances": N_ALLIANCES,
        "tiered_alliances": tiered,
        "alliance_import_s": round(al_s, 2),
        "alliance_reimport_s": round(al_again_s, 2),
        "target_s": TARGET_S,
        # Other work on the machine slows the node and every figure: the 1-minute load average (2 cores).
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["import"] = section
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(section, indent=2))
    return 0


def _dev_address(i: int) -> str:
    """The address of Anvil's dev account ``dev{i}`` (the standard test mnemonic)."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    mnemonic = "test test test test test test test test test test test junk"
    return Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}").address


if __name__ == "__main__":
    sys.exit(main())
