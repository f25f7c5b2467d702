"""Everyday commands against a growing history -> bench/results.json, section ``history``.

Method
------
1. **Node and set-up.** ``ledger chain up`` on a fresh data folder under ``.tmp/`` and a free port, ``deploy``,
   then in process (fixed seed): 400 MEs and 50 alliances of 2 to 20 parties (one in three with a target).
2. **Levels.** For each history size H (``BENCH_HISTORY_LEVELS``, default ``0,1000000,3000000``) the history is first
   grown to H settled events in this process through the Python layer (``Settler`` with the local index,
   100,000 events a run; not timed), then, each a whole ``python -m ledger.cli`` command as a child process:
   - ``settle_1000_s``: a file of 1,000 new events over 10 alliances (median of 3 files), each followed
     by ``audit_incremental_s`` (``ledger audit`` resumed from the checkpoint left by the audit before it);
   - ``noop_s``: the last of those files again (nothing to send), median of 3;
   - ``settle_peak_rss_mb``: the largest peak RSS of those settle runs (``os.wait4`` of each child);
   - ``payouts_s``: ``ledger payouts --format json``, median of 3 (totals checked against the chain);
   - ``me_register_s``: ``ledger me register``, median of 3;
   - ``audit_full_s``, ``audit_full_events_per_s``, ``audit_full_peak_rss_mb``: ``ledger audit --full``;
   - ``settle_100k_s`` and ``settle_100k_events_per_s``: a file of 100,000 new events, median of 3 files.
3. Peak RSS is the child's own (``ru_maxrss`` from ``os.wait4``).

Run: ``python scripts/bench_history.py`` (``make bench``). ``BENCH_HISTORY_LEVELS=0,300000`` for a smaller run: its
figures are written with the levels they were measured at.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_audit import SIGNER_ACCOUNTS, cli, free_port, partition, party_signatures  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
SEED = 20261206
LEVELS = [int(x) for x in os.environ.get("BENCH_HISTORY_LEVELS", "0,1000000,3000000").split(",")]
N_MES = 400
N_ALLIANCES = 50
DECIMALS = 6
RUNS = 3
GROW_STEP = 100_000


def set_up(env: dict) -> list[str]:
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
        pipeline = chain.pipeline(platform)
        done = []
        for i in range(N_MES):
            alias = SIGNER_ACCOUNTS[i % len(SIGNER_ACCOUNTS)]
            address = accounts[alias].address
            data = chain.abi["registerME"].encode(f"hist-me-{i:04d}", address, address, 1 if i else 0)
            done += pipeline.submit(i, chain.address, data, 400_000)
            signer_of[1 + i] = alias
        done += pipeline.drain()
        assert all(d.ok for d in done)
        names = []
        for j in range(N_ALLIANCES):
            n = 2 + j % 19
            parties = rng.sample(sorted(signer_of), n)
            shares = dict(zip(parties, partition(rng, n), strict=True))
            target, excess = 0, {}
            if j % 3 == 0:
                target = rng.randint(200_000, 2_000_000) * 10**DECIMALS
                excess = dict(zip(parties, partition(rng, n), strict=True))
            terms = Terms.build(record.token, shares, target, excess)
            name = f"hist-alliance-{j:02d}"
            aid = chain.agreement_id(name)
            message = chain.approval_message(aid, 1, terms)
            chain.create(aid, terms, party_signatures(message, terms.parties, signer_of, accounts), sender=platform)
            names.append(name)
        with contract_errors():
            chain.token.mint(finance.address, 10**33, sender=finance)
    return names


class Events:
    """Fresh revenue events: unique references, amounts 1.00 to 5,000.00, period 202612."""

    def __init__(self, alliances: list[str]):
        self.alliances = alliances
        self.rng = random.Random(SEED + 1)
        self.n = 0

    def rows(self, count: int, alliances: int | None = None) -> list[tuple[str, str, str, int]]:
        names = self.alliances[: alliances or len(self.alliances)]
        out = []
        for _ in range(count):
            self.n += 1
            cents = self.rng.randint(100, 500_000)
            out.append((f"H-{self.n:09d}", names[self.n % len(names)], f"{cents // 100}.{cents % 100:02d}", 202612))
        return out

    @staticmethod
    def write(path: Path, rows) -> Path:
        path.write_text("reference,alliance,amount,period\n" + "".join(f"{a},{b},{c},{d}\n" for a, b, c, d in rows))
        return path


def grow(env: dict, events: Events, count: int) -> None:
    """Settle ``count`` events in this process (the Python layer, with the local index)."""
    from ledger.chain.connect import account, connected
    from ledger.chain.deployment import DeploymentStore
    from ledger.chain.open import open_deployment
    from ledger.chain.transact import TxPolicy
    from ledger.config import Settings
    from ledger.index import LedgerIndex, index_path
    from ledger.models import RevenueEvent
    from ledger.services.settlement import Settler

    settings = Settings.from_env(env)
    with connected(settings):
        chain, record = open_deployment(DeploymentStore(settings.deployments_dir))
        chain.policy = TxPolicy.from_settings(settings)
        index = LedgerIndex(index_path(settings.data_dir, record.chain_id, record.ledger), chain_id=record.chain_id,
                            ledger=record.ledger, from_block=record.block, abi=chain.abi_json)  # fmt: skip
        settler = Settler(chain, account("dev2", settings), from_block=record.block, index=index)
        left = count
        while left > 0:
            step = min(GROW_STEP, left)
            rows = events.rows(step)
            evs = [RevenueEvent(row=i + 2, reference=r, alliance=a, amount=int(m.replace(".", "")) * 10**4, period=p)
                   for i, (r, a, m, p) in enumerate(rows)]  # fmt: skip
            summary = settler.run(evs)
            assert summary.settled == step, summary
            left -= step
        index.close()


def timed(env: dict, *args: str) -> tuple[float, float, str]:
    """Wall seconds, the child's own peak RSS (MB) and stdout of ``ledger ARGS``."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "ledger.cli", *args], env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text = out.read()
        if proc.returncode not in (0,):
            raise RuntimeError(f"ledger {' '.join(args)} -> {proc.returncode}\n{text[-2000:]}\n{err.read()[-2000:]}")
    return wall, usage.ru_maxrss / 1024, text


def measure(env: dict, data: Path, events: Events, level: int, serial: list[int]) -> dict:
    tmp = data / f"files-{level}"
    tmp.mkdir()
    timed(env, "audit", "--format", "json")  # the checkpoint at the current head
    settle, audits, rss = [], [], []
    last = None
    for i in range(RUNS):
        last = Events.write(tmp / f"k{i}.csv", events.rows(1_000, alliances=10))
        wall, peak, out = timed(env, "settle", str(last), "--json")
        assert json.loads(out)["events_settled"] == 1_000
        settle.append(wall)
        rss.append(peak)
        wall, _, out = timed(env, "audit", "--format", "json")
        report = json.loads(out)
        assert report["result"] == "clean" and report["checkpoint"]["resumed_from_block"] is not None, report
        audits.append(wall)
    noop = []
    for _ in range(RUNS):
        wall, peak, out = timed(env, "settle", str(last), "--json")
        assert json.loads(out)["events_settled"] == 0
        noop.append(wall)
        rss.append(peak)
    payouts = []
    for _ in range(RUNS):
        wall, _, out = timed(env, "payouts", "--format", "json")
        payouts.append(wall)
    register = []
    for _ in range(RUNS):
        serial[0] += 1
        wall, _, _ = timed(env, "me", "register", f"bench-new-{serial[0]}", "--signer", "dev5")
        register.append(wall)
    full_s, full_rss, out = timed(env, "audit", "--full", "--format", "json")
    full = json.loads(out)
    assert full["result"] == "clean", full["findings"][:3]
    audited_events = full["checked"]["events"]
    bigs, big_rss = [], 0.0
    for i in range(RUNS):
        big = Events.write(tmp / f"big{i}.csv", events.rows(100_000))
        wall, peak, out = timed(env, "settle", str(big), "--json")
        assert json.loads(out)["events_settled"] == 100_000
        bigs.append(wall)
        big_rss = max(big_rss, peak)
    big_s = statistics.median(bigs)
    figures = {
        "history_events": level,
        "settle_1000_s": round(statistics.median(settle), 2),
        "noop_s": round(statistics.median(noop), 2),
        "settle_peak_rss_mb": round(max(rss + [big_rss])),
        "audit_incremental_s": round(statistics.median(audits), 2),
        "payouts_s": round(statistics.median(payouts), 2),
        "me_register_s": round(statistics.median(register), 2),
        "audit_full_s": round(full_s, 2),
        "audit_full_events": audited_events,
        "audit_full_events_per_s": round(audited_events / full_s),
        "audit_full_peak_rss_mb": round(full_rss),
        "settle_100k_s": round(big_s, 2),
        "settle_100k_events_per_s": round(100_000 / big_s),
        "settle_100k_peak_rss_mb": round(big_rss),
    }
    print(json.dumps(figures), flush=True)
    return figures


def main() -> int:
    (ROOT / ".tmp").mkdir(exist_ok=True)
    load_at_start = os.getloadavg()[0]  # other work on the machine shows in every absolute figure
    levels = []
    with tempfile.TemporaryDirectory(dir=ROOT / ".tmp", prefix="bench-history-") as data:
        port = free_port()
        env = {**os.environ, "LEDGER_DATA_DIR": data, "LEDGER_PORT": str(port)}
        env.pop("APE_FOUNDRY_HOST", None)
        try:
            cli(env, "chain", "up")
            cli(env, "deploy", "--json")
            made = subprocess.run([sys.executable, __file__, "--set-up"], env=env, check=True, capture_output=True,
                                  text=True)  # fmt: skip
            alliances = json.loads(made.stdout.strip().splitlines()[-1])
            events = Events(alliances)
            serial = [0]
            settled = 0
            for level in LEVELS:
                start = time.perf_counter()
                if level > settled:
                    # In a child: this process stays small, so the children measured below do not inherit
                    # its resident set (Linux carries the peak RSS across fork and exec).
                    subprocess.run([sys.executable, __file__, "--grow", str(level - settled), str(events.n),
                                    ",".join(alliances)], env=env, check=True)  # fmt: skip
                    events.n += level - settled
                    print(f"history grown to {level:,} events in {time.perf_counter() - start:.0f} s", flush=True)
                figures = measure(env, Path(data), events, level, serial)
                levels.append(figures)
                settled = level + RUNS * (1_000 + 100_000)  # what measure() settled on top
        finally:
            cli(env, "chain", "down", check=False)
    machine = (f"{os.cpu_count()} cores; load average {load_at_start:.1f} when the benchmark started, "
               f"{os.getloadavg()[1]:.1f} over its last 5 minutes")  # fmt: skip
    section = {"mes": N_MES, "alliances": N_ALLIANCES, "levels": levels,
               "measured": time.strftime("%Y-%m-%d"), "machine": machine}  # fmt: skip
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["history"] = section
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(section, indent=2))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--set-up"]:
        print(json.dumps(set_up(dict(os.environ))))
        sys.exit(0)
    if sys.argv[1:2] == ["--grow"]:
        grown = Events(sys.argv[4].split(","))
        grown.n = int(sys.argv[3])
        grow(dict(os.environ), grown, int(sys.argv[2]))
        sys.exit(0)
    sys.exit(main())
