"""End-to-end settlement at scale -> bench/results.json ("settle" section, and the top-level
``settle_events_per_s``, ``settle_peak_rss_mb`` and ``payouts_s`` the issue names).

Method
------
1. **Node.** ``python -m ledger.cli chain up`` on a fresh data folder under ``.tmp/`` and a free port
   (never the user's chain on 8547 or the tests' on 8545), then ``deploy`` (ledger + 6-decimal test
   token). ``chain down`` at the end, whatever happens.
2. **Set-up** (not timed as settlement): in process through the package, with a fixed seed: 4,000 MEs
   registered through the transaction pipeline (signers and payout addresses are the dev accounts
   dev3..dev19), 300 alliances of 2 to 20 parties drawn from all 4,000 (every size occurs), one in three
   with a per-period target and an excess table; the file names the first 100, the other 200 are idle.
   The finance account is minted enough tokens for the file.
3. **The file.** 100,000 revenue events over periods 202610 and 202611, alliance volumes weighted at
   random (20 to 1,800 events each), amounts 1.00 to 5,000.00, rows shuffled so alliances interleave as
   in a real month's export; written as CSV (about 4.6 MB).
4. **Settle** (``settle_s``): wall time of the whole command ``python -m ledger.cli settle FILE --json`` as
   a subprocess, from process start to its summary: interpreter and imports, the streamed check of
   every row, reading the chain, every batch sent, mined and checked. ``settle_events_per_s`` = events /
   ``settle_s``. ``settle_peak_rss_mb``: the child's peak resident set (``ru_maxrss`` of the waited-for
   child, from ``os.wait4``).
5. **Payouts** (``payouts_s``): wall time of ``python -m ledger.cli payouts --format json`` over that
   history (every ``PartiesCredited`` log, in bounded pages), median of 3 runs; its totals must equal
   what was settled.
6. **Again** (``resettle_s``): the same file settled again: nothing new, every event skipped.
7. **The organisation's size** (each the whole command, median of 3): ``me_list_s`` (``ledger me list
   --json``: 4,000 MEs), ``balance_s`` (``ledger balance --json``: every ME's balance and the
   conservation check) and ``audit_s`` (``ledger audit --format json`` over the whole history, which
   must be clean).

Run: ``python scripts/bench_settle.py`` (``make bench`` runs it). ``BENCH_SETTLE_EVENTS=N`` for a quick try
only: its figures are not the benchmark.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_audit import SIGNER_ACCOUNTS, cli, free_port, partition, party_signatures  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"

SEED = 20261123
EVENTS = int(os.environ.get("BENCH_SETTLE_EVENTS", 100_000))
N_MES = 4_000  # the organisation of the issue: registered in a pipeline, every one a potential party
N_ALLIANCES = 300  # "several hundred"; the file names the first 100, the rest are idle
FILE_ALLIANCES = 100
PERIODS = (202610, 202611)
DECIMALS = 6
PAYOUT_RUNS = 3


def set_up(env: dict) -> tuple[list[tuple[str, int]], int]:
    """MEs and alliances; returns [(alliance name, parties)] and the number with a target."""
    from ledger.chain.connect import account, connected
    from ledger.chain.deployment import DeploymentStore
    from ledger.chain.open import open_deployment
    from ledger.chain.writer import contract_errors
    from ledger.config import Settings
    from ledger.models import Terms

    rng = random.Random(SEED)
    settings = Settings.from_env(env)
    with connected(settings):
        from ape.logging import LogLevel, logger

        logger.set_level(LogLevel.ERROR)
        chain, record = open_deployment(DeploymentStore(settings.deployments_dir))
        platform, finance = account("dev1", settings), account("dev2", settings)
        accounts = {alias: account(alias, settings) for alias in SIGNER_ACCOUNTS}
        signer_of = {}
        first_id = chain.me_count() + 1
        pipeline = chain.pipeline(platform)
        done = []
        for i in range(N_MES):
            alias = SIGNER_ACCOUNTS[i % len(SIGNER_ACCOUNTS)]
            address = accounts[alias].address
            data = chain.abi["registerME"].encode(f"scale-me-{i:04d}", address, address, first_id if i else 0)
            done += pipeline.submit(i, chain.address, data, 400_000)
            signer_of[first_id + i] = alias
        done += pipeline.drain()
        assert len(done) == N_MES and all(d.ok for d in done), "an ME registration failed"
        assert chain.me_count() == first_id + N_MES - 1
        me_ids = sorted(signer_of)
        alliances, tiered = [], 0
        for j in range(N_ALLIANCES):
            n = 2 + j % 19
            parties = rng.sample(me_ids, n)
            shares = dict(zip(parties, partition(rng, n), strict=True))
            target, excess = 0, {}
            if j % 3 == 0:
                target = rng.randint(200_000, 2_000_000) * 10**DECIMALS
                excess = dict(zip(parties, partition(rng, n), strict=True))
                tiered += j < FILE_ALLIANCES
            terms = Terms.build(record.token, shares, target, excess)
            name = f"scale-alliance-{j:03d}"
            aid = chain.agreement_id(name)
            message = chain.approval_message(aid, 1, terms)
            chain.create(aid, terms, party_signatures(message, terms.parties, signer_of, accounts), sender=platform)
            alliances.append((name, n))
        alliances = alliances[:FILE_ALLIANCES]
        with contract_errors():
            chain.token.mint(finance.address, 10**30, sender=finance)
    return alliances, tiered


def write_file(path: Path, alliances: list[tuple[str, int]]) -> tuple[int, dict[str, int]]:
    """The CSV; returns the total in base units and the events per alliance."""
    rng = random.Random(SEED + 1)
    weights = [rng.uniform(0.2, 1.8) for _ in alliances]
    counts = [max(1, int(EVENTS * w / sum(weights))) for w in weights]
    counts[0] += EVENTS - sum(counts)
    rows, total = [], 0
    for (name, _), count in zip(alliances, counts, strict=True):
        for k in range(count):
            cents = rng.randint(100, 500_000)
            total += cents * 10 ** (DECIMALS - 2)
            rows.append(f"INV-{name[-3:]}-{k:06d},{name},{Decimal(cents) / 100},{PERIODS[k * len(PERIODS) // count]}")
    rng.shuffle(rows)
    path.write_text("reference,alliance,amount,period\n" + "\n".join(rows) + "\n")
    return total, dict(zip((a for a, _ in alliances), counts, strict=True))


def timed(env: dict, *args: str) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall seconds, peak RSS (MB) and the result of ``ledger ARGS`` as a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = proc.communicate(timeout=1800)
    wall = time.perf_counter() - start
    # Popen reaped the child; its rusage is folded into RUSAGE_CHILDREN (max over all children so far).
    import resource

    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    done = subprocess.CompletedProcess(args, proc.returncode, out, err)
    if proc.returncode != 0:
        raise RuntimeError(f"ledger {' '.join(args)} -> {proc.returncode}\n{out[-3000:]}\n{err[-3000:]}")
    return wall, rss_mb, done


def main() -> int:
    (ROOT / ".tmp").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ROOT / ".tmp", prefix="bench-settle-") as data:
        port = free_port()
        env = {**os.environ, "LEDGER_DATA_DIR": data, "LEDGER_PORT": str(port)}
        try:
            cli(env, "chain", "up")
            cli(env, "deploy", "--json")
            start = time.perf_counter()
            alliances, tiered = set_up(env)
            setup_s = time.perf_counter() - start
            file = Path(data) / "revenue.csv"
            total, counts = write_file(file, alliances)
            print(f"set-up: {N_MES} MEs, {len(alliances)} alliances ({tiered} with a target) in {setup_s:.1f} s; "
                  f"file {file.stat().st_size / 1e6:.1f} MB, {EVENTS:,} events", flush=True)  # fmt: skip
            # The set-up's own peak RSS is folded into RUSAGE_CHILDREN only for children; this process
            # is the parent, so the figure below is the settle child's (the only child so far, bar cli()).
            settle_s, rss_mb, proc = timed(env, "settle", str(file), "--json")
            summary = json.loads(proc.stdout)
            assert summary["events_settled"] == EVENTS, summary
            moved = sum(int(t["base_units"]) for t in summary["tokens_moved"].values())
            assert moved == total, (moved, total)
            print(
                f"settle: {EVENTS:,} events in {settle_s:.2f} s = {EVENTS / settle_s:,.0f} events/s, "
                f"{summary['batches']} batches, {summary['gas_used']:,} gas, peak RSS {rss_mb:.0f} MB",
                flush=True,
            )

            walls = []
            for _ in range(PAYOUT_RUNS):
                wall, _, proc = timed(env, "payouts", "--format", "json")
                walls.append(wall)
            lines = json.loads(proc.stdout)["payouts"]
            paid = sum(int(line["amount_base_units"]) for line in lines)
            assert paid == total, (paid, total)
            payouts_s = statistics.median(walls)
            print(f"payouts: {len(lines):,} lines in {payouts_s:.2f} s (median of {PAYOUT_RUNS})", flush=True)

            resettle_s, _, proc = timed(env, "settle", str(file), "--json")
            again = json.loads(proc.stdout)
            assert again["events_settled"] == 0 and again["events_skipped_already_settled"] == EVENTS, again
            print(f"settle again: nothing new, {EVENTS:,} skipped in {resettle_s:.2f} s", flush=True)

            sizes = {}
            for key, args in (("me_list_s", ("me", "list", "--json")), ("balance_s", ("balance", "--json")),
                              ("audit_s", ("audit", "--format", "json"))):  # fmt: skip
                walls = []
                for _ in range(PAYOUT_RUNS):
                    wall, _, proc = timed(env, *args)
                    walls.append(wall)
                sizes[key] = round(statistics.median(walls), 2)
                if key == "me_list_s":
                    assert len(json.loads(proc.stdout)) >= N_MES
                if key == "audit_s":
                    assert json.loads(proc.stdout)["result"] == "clean"
            print(
                f"with {N_MES:,} MEs and {N_ALLIANCES} alliances: me list {sizes['me_list_s']} s, balance "
                f"{sizes['balance_s']} s, audit {sizes['audit_s']} s (medians of {PAYOUT_RUNS})",
                flush=True,
            )
        finally:
            cli(env, "chain", "down", check=False)

    section = {
        "events": EVENTS,
        "alliances": len(alliances),
        "tiered_alliances": tiered,
        "mes": N_MES,
        "alliances_registered": N_ALLIANCES,
        "batches": summary["batches"],
        "gas_used": summary["gas_used"],
        "gas_per_event": round(summary["gas_used"] / EVENTS, 1),
        "settle_s": round(settle_s, 2),
        "settle_events_per_s": round(EVENTS / settle_s),
        "settle_peak_rss_mb": round(rss_mb),
        "payouts_s": round(payouts_s, 2),
        "payout_lines": len(lines),
        "resettle_s": round(resettle_s, 2),
        **sizes,
        "setup_s": round(setup_s, 1),
    }
    if EVENTS != 100_000:
        print("BENCH_SETTLE_EVENTS is set: results.json not written")
        return 0
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["settle"] = section
    for key in ("settle_events_per_s", "settle_peak_rss_mb", "payouts_s"):
        results[key] = section[key]
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(section, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
