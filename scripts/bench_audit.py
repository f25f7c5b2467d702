"""`ledger audit` throughput on a 100,000-event history -> bench/results.json ("audit" section, and the
top-level "audit_events_per_s" the issue names).

Method
------
1. **Node.** ``python -m ledger.cli chain up`` on a fresh data folder under ``.tmp/`` and a free port
   (never the user's chain on 8547 or the tests' on 8545); ``chain down`` at the end, whatever happens.
   ``python -m ledger.cli deploy`` deploys the ledger and its test token (6 decimals).
2. **History** (``history_build_s``: wall time from ``deploy`` to the last withdrawal). Built in
   process through the package (Ape connected to the node: ``LedgerWriter``, ``Settler``), with a fixed
   seed, so every run builds the same history:

   - 40 MEs; their signers and payout addresses are the dev accounts dev3..dev19 (several MEs share one);
   - 50 alliances of 2 to 20 parties (every size from 2 to 20 occurs), random share tables; one in three
     has a per-period target (40-120 % of the alliance's expected monthly revenue) and an excess table,
     so most of their periods cross the target part-way (the count is printed), the others stay below;
     45 are created with ``createAgreement`` (proposal and every party's EIP-712 signature in one
     transaction), 5 by ``proposeAgreement`` then ``activateAgreement``;
   - 100,000 revenue events (amounts 1.00 to 5,000.00 tokens, alliance volumes weighted at random) over
     periods 202609, 202610 and 202611, settled by ``Settler`` in batches of up to 1,000 events;
   - between the two settlement rounds: period 202609 closed for every alliance and 202610 for ten, three
     withdrawals, one ME's signer changed (``updateME`` with its old signer's consent) and one alliance
     amended to a version 2 signed by that new signer (202611's revenue of that alliance settles under
     version 2); at the end one more withdrawal through the CLI (``ledger withdraw NAME --account devN``).
3. **Audit** (``audit_wall_s``): wall time of the whole command ``python -m ledger.cli audit --format json``
   as a subprocess (process start to exit: interpreter and imports, every ``eth_getLogs`` page, decoding,
   replay and every check, the conservation ``eth_call`` batch, JSON output), median of 3 runs. It must
   exit 0 (clean). ``audit_events_per_s`` = revenue events / ``audit_wall_s``. ``audit_service_s`` is the
   audit's own figure (JSON "seconds": ``ledger.services.audit.audit`` alone, without process start-up),
   median of the same 3 runs; ``logs`` and ``log_pages`` are its JSON "checked" counts.
4. **Decoding, raw vs generic.** The same ``RevenueSettled`` and ``PartiesCredited`` logs (every block from
   the deployment to the head), fetched and decoded in this process by two paths (and Ape's, for
   reference); the rate is revenue events (entries in the ``RevenueSettled`` logs) per second of fetch +
   decode:

   - raw (``decode_raw_events_per_s``): ``ledger.chain.reader.LogReader`` over ``ledger.chain.rpc.HttpRpc``,
     i.e. one raw ``eth_getLogs`` per page decoded with eth-abi, the audit's path; median of 3 runs;
   - generic (``decode_generic_events_per_s``): web3.py's per-event objects,
     ``contract.events.RevenueSettled().get_logs(from_block=, to_block=)`` and the same for
     ``PartiesCredited`` (web3's result formatters, ``AttributeDict`` events); median of 3 runs, all
     100,000 events;
   - Ape's per-event objects (``decode_ape_events_per_s``, for reference): ``contract.RevenueSettled.range``
     and ``contract.PartiesCredited.range`` (``ContractLog`` models, Ape connected to the bench node);
     median of 3 runs, all 100,000 events (a few seconds each, so no subset is needed).

   ``decode_generic_over_raw`` = raw rate / generic rate (how many times slower the generic path is).

Run: ``python scripts/bench_audit.py`` (``make bench`` runs it after the other benchmarks; about 2 min).
``BENCH_AUDIT_EVENTS=N`` builds a smaller history, for trying the script only: its figures are not the benchmark.
"""

from __future__ import annotations

import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"

SEED = 20261122
EVENTS = int(os.environ.get("BENCH_AUDIT_EVENTS", 100_000))  # a smaller history for a quick try only
N_MES = 40
N_ALLIANCES = 50
SIGNER_ACCOUNTS = [f"dev{i}" for i in range(3, 20)]  # dev0 admin, dev1 platform, dev2 finance
PERIODS = (202609, 202610, 202611)
DECIMALS = 6
AUDIT_RUNS = 3
DECODE_RUNS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args], env=env, capture_output=True, text=True, timeout=900
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"ledger {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def partition(rng: random.Random, n: int, total: int = 10_000) -> list[int]:
    """``n`` positive basis-point shares summing to ``total``."""
    cuts = sorted(rng.sample(range(1, total), n - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


def party_signatures(message, parties, signer_of: dict[int, str], accounts: dict) -> list[bytes]:
    """Each party's EIP-712 signature of ``message``, by its signer's alias (one signature per signer)."""
    from ledger.chain import eip712

    made: dict[str, bytes] = {}
    for me_id in parties:
        alias = signer_of[me_id]
        if alias not in made:
            made[alias] = eip712.sign(accounts[alias], message)
    return [made[signer_of[me_id]] for me_id in parties]


# ---------------------------------------------------------------------------------------------------
# History
# ---------------------------------------------------------------------------------------------------


def build_history(env: dict) -> dict:
    """Register, agree, settle, close, amend and withdraw on the node of ``env`` (see the docstring)."""
    from ledger.chain.connect import account, connected
    from ledger.chain.deployment import DeploymentStore
    from ledger.chain.open import open_deployment
    from ledger.chain.writer import contract_errors
    from ledger.config import Settings
    from ledger.models import RevenueEvent, Terms
    from ledger.services.settlement import Settler

    rng = random.Random(SEED)
    settings = Settings.from_env(env)
    with connected(settings):
        from ape.logging import LogLevel, logger

        logger.set_level(LogLevel.ERROR)
        chain, record = open_deployment(DeploymentStore(settings.deployments_dir))
        token = record.token
        platform, finance = account("dev1", settings), account("dev2", settings)
        accounts = {alias: account(alias, settings) for alias in SIGNER_ACCOUNTS}

        # MEs: a platform ME, then the rest spawned from it; signer = payout = a dev account.
        signer_of: dict[int, str] = {}  # ME id -> alias of its current signer
        payout_of: dict[int, str] = {}
        names: dict[int, str] = {}
        for i in range(N_MES):
            alias = SIGNER_ACCOUNTS[i % len(SIGNER_ACCOUNTS)]
            address = accounts[alias].address
            name = f"bench-me-{i:02d}"
            me_id = chain.register_me(name, address, address, 1 if i else 0, sender=platform)
            signer_of[me_id], payout_of[me_id], names[me_id] = alias, alias, name
        me_ids = sorted(signer_of)

        def signatures(message, terms: Terms) -> list[bytes]:
            return party_signatures(message, terms.parties, signer_of, accounts)

        # Alliances: every size from 2 to 20 parties; volumes and tiers at random.
        alliances = []
        weights = [rng.uniform(0.2, 1.8) for _ in range(N_ALLIANCES)]
        counts = [int(EVENTS * w / sum(weights)) for w in weights]
        counts[0] += EVENTS - sum(counts)
        mean_amount = (100 + 500_000) / 2 * 10**4  # base units (cents 100..500,000, 6 decimals)
        tiered = 0
        for j in range(N_ALLIANCES):
            n = 2 + (j * 7) % 19
            parties = rng.sample(me_ids, n)
            shares = dict(zip(parties, partition(rng, n), strict=True))
            target, excess = 0, {}
            if j % 3 == 0:
                per_period = counts[j] / len(PERIODS) * mean_amount
                target = int(per_period * rng.uniform(0.4, 1.2))
                excess = dict(zip(parties, partition(rng, n), strict=True))
                tiered += 1
            terms = Terms.build(token, shares, target, excess)
            name = f"bench-alliance-{j:02d}"
            aid = chain.agreement_id(name)
            message = chain.approval_message(aid, 1, terms)
            if j % 10 == 5:  # the two-step path: propose, then activate with every signature
                chain.propose(aid, terms, sender=platform)
                chain.activate(aid, 1, terms, signatures(message, terms), sender=platform)
            else:
                chain.create(aid, terms, signatures(message, terms), sender=platform)
            alliances.append((name, aid, terms))

        def events_for(periods) -> list[RevenueEvent]:
            out = []
            for j, (name, _, _) in enumerate(alliances):
                per = counts[j] // len(PERIODS)
                for p_index, period in enumerate(PERIODS):
                    if period not in periods:
                        continue
                    size = per if p_index < len(PERIODS) - 1 else counts[j] - per * (len(PERIODS) - 1)
                    for k in range(size):
                        cents = event_rng.randint(100, 500_000)
                        out.append(
                            RevenueEvent(
                                reference=f"A{j:02d}-{period}-{k:06d}",
                                alliance=name,
                                amount=cents * 10**4,
                                period=period,
                                row=len(out) + 1,
                            )
                        )
            return out

        def settle(events) -> int:
            settler = Settler(chain, finance, batch_gas=settings.batch_gas, from_block=record.block)
            with contract_errors():
                chain.token.mint(finance.address, sum(e.amount for e in events), sender=finance)
            summary = settler.run(events)
            assert summary.settled == len(events), summary
            return summary.batches

        event_rng = random.Random(SEED + 1)
        batches = settle(events_for(PERIODS[:2]))

        # Month end: close 202609 everywhere, 202610 for ten alliances; three MEs withdraw.
        for _, aid, _ in alliances:
            chain.close_period(aid, PERIODS[0], sender=finance)
        for _, aid, _ in alliances[:10]:
            chain.close_period(aid, PERIODS[1], sender=finance)
        withdrawals = 0
        for me_id in me_ids[1:4]:
            chain.withdraw(me_id, token, sender=accounts[payout_of[me_id]])
            withdrawals += 1

        # An ME changes its signer (with its old signer's consent); an alliance it is party to is
        # amended, and the amendment is signed by the new signer.
        amended_name, amended_id, old_terms = alliances[1]
        changed = old_terms.parties[0]
        new_alias = next(a for a in SIGNER_ACCOUNTS if a != signer_of[changed])
        payout = accounts[payout_of[changed]].address
        consent = chain.sign_me_update(accounts[signer_of[changed]], changed, payout, accounts[new_alias].address)
        chain.update_me(changed, payout, accounts[new_alias].address, consent, sender=platform)
        signer_of[changed] = new_alias
        extra = next(m for m in me_ids if m not in old_terms.parties)
        parties = [*old_terms.parties, extra]
        new_terms = Terms.build(token, dict(zip(parties, partition(rng, len(parties)), strict=True)))
        version = chain.propose(amended_id, new_terms, sender=platform)
        chain.activate(
            amended_id, version, new_terms,
            signatures(chain.approval_message(amended_id, version, new_terms), new_terms), sender=platform,
        )  # fmt: skip

        batches += settle(events_for(PERIODS[2:]))
        withdrawer = next(m for m in me_ids[4:] if chain.balance_of(m, token) > 0)
        over_target = sum(
            chain.period(aid, period)[0] > terms.target
            for _, aid, terms in alliances
            if terms.target
            for period in PERIODS
        )
    cli(env, "withdraw", names[withdrawer], "--account", payout_of[withdrawer])
    withdrawals += 1
    return {
        "alliances": len(alliances),
        "tiered_alliances": tiered,
        "periods_over_target": over_target,
        "mes": len(me_ids),
        "batches": batches,
        "withdrawals": withdrawals,
        "deployment_block": record.block,
        "ledger": record.ledger,
    }


# ---------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------


def measure_audit(env: dict) -> tuple[float, float, dict, list]:
    """Median wall time and median service time of the audit command; its counts and findings."""
    walls, services, report = [], [], {}
    for _ in range(AUDIT_RUNS):
        start = time.perf_counter()
        proc = cli(env, "audit", "--format", "json", check=False)
        walls.append(time.perf_counter() - start)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"ledger audit -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        report = json.loads(proc.stdout)
        services.append(report["seconds"])
    return statistics.median(walls), statistics.median(services), report, report.get("findings", [])


def decode_raw(url: str, ledger: str, from_block: int, to_block: int) -> tuple[float, int, int]:
    from ledger.chain.reader import LogReader
    from ledger.chain.rpc import HttpRpc
    from ledger.services.audit import event_abi

    times, events, logs = [], 0, 0
    for _ in range(DECODE_RUNS):
        start = time.perf_counter()
        reader = LogReader(HttpRpc(url, timeout=300).request, ledger, event_abi())
        events = logs = 0
        for log in reader.read(["RevenueSettled", "PartiesCredited"], from_block, to_block):
            logs += 1
            if log.event == "RevenueSettled":
                events += len(log.args["entries"])
        times.append(time.perf_counter() - start)
    return statistics.median(times), events, logs


def decode_web3(url: str, ledger: str, abi: list, from_block: int, to_block: int) -> tuple[float, int, int]:
    from web3 import Web3

    times, events, logs = [], 0, 0
    for _ in range(DECODE_RUNS):
        start = time.perf_counter()
        w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 300}))
        contract = w3.eth.contract(address=ledger, abi=abi)
        events = logs = 0
        for item in contract.events.RevenueSettled().get_logs(from_block=from_block, to_block=to_block):
            logs += 1
            events += len(item["args"]["entries"])
        for _item in contract.events.PartiesCredited().get_logs(from_block=from_block, to_block=to_block):
            logs += 1
        times.append(time.perf_counter() - start)
    return statistics.median(times), events, logs


def decode_ape(env: dict, ledger: str, from_block: int, to_block: int) -> tuple[float, int, int]:
    """Ape's ContractLog objects over ``[from_block, to_block]`` (connected to the bench node)."""
    from ledger.chain.connect import connected
    from ledger.chain.writer import project
    from ledger.config import Settings

    times, events, logs = [], 0, 0
    with connected(Settings.from_env(env)):
        contract = project().AllianceLedger.at(ledger)
        for _ in range(DECODE_RUNS):
            start = time.perf_counter()
            events = logs = 0
            for item in contract.RevenueSettled.range(from_block, to_block + 1):
                logs += 1
                events += len(item.entries)
            for _item in contract.PartiesCredited.range(from_block, to_block + 1):
                logs += 1
            times.append(time.perf_counter() - start)
    return statistics.median(times), events, logs


def main() -> int:
    (ROOT / ".tmp").mkdir(exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=ROOT / ".tmp", prefix="bench-audit-") as data:
        port = free_port()
        env = {**os.environ, "LEDGER_DATA_DIR": data, "LEDGER_PORT": str(port)}
        url = f"http://127.0.0.1:{port}"
        try:
            cli(env, "chain", "up")
            build_start = time.perf_counter()
            cli(env, "deploy", "--json")
            history = build_history(env)
            history_build_s = time.perf_counter() - build_start
            from ledger.chain.rpc import HttpRpc

            head = int(HttpRpc(url).request("eth_blockNumber"), 16)
            print(f"history: {EVENTS:,} events, {history['alliances']} alliances ({history['tiered_alliances']} "
                  f"with a target; {history['periods_over_target']} periods crossed it), {history['mes']} MEs, "
                  f"{history['batches']} settlement batches, blocks {history['deployment_block']}..{head}; "
                  f"built in {history_build_s:.1f} s", flush=True)  # fmt: skip

            audit_wall_s, audit_service_s, report, findings = measure_audit(env)
            checked = report["checked"]
            if checked.get("events") != EVENTS:
                findings = [*findings, {"kind": "bench", "message": f"audit counted {checked.get('events')} events"}]

            ledger, first = history["ledger"], history["deployment_block"]
            raw_s, raw_events, raw_logs = decode_raw(url, ledger, first, head)
            from ledger.services.audit import event_abi

            abi = [e for e in event_abi() if e["name"] in ("RevenueSettled", "PartiesCredited")]
            web3_s, web3_events, web3_logs = decode_web3(url, ledger, abi, first, head)
            assert (web3_events, web3_logs) == (raw_events, raw_logs), (web3_events, web3_logs, raw_events, raw_logs)
            ape_s, ape_events, ape_logs = decode_ape(env, ledger, first, head)
            assert (ape_events, ape_logs) == (raw_events, raw_logs), (ape_events, ape_logs, raw_events, raw_logs)
        finally:
            cli(env, "chain", "down", check=False)

    blocks = head - first + 1
    raw_rate, web3_rate, ape_rate = raw_events / raw_s, web3_events / web3_s, ape_events / ape_s
    section = {
        "events": EVENTS,
        "alliances": history["alliances"],
        "blocks": blocks,
        "logs": checked.get("logs"),
        "log_pages": checked.get("log_pages"),
        "audit_wall_s": round(audit_wall_s, 3),
        "audit_service_s": round(audit_service_s, 3),
        "audit_events_per_s": round(EVENTS / audit_wall_s),
        "decode_raw_events_per_s": round(raw_rate),
        "decode_generic_events_per_s": round(web3_rate),
        "decode_generic_over_raw": round(raw_rate / web3_rate, 1),
        "decode_ape_events_per_s": round(ape_rate),
        "history_build_s": round(history_build_s, 1),
    }
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["audit"] = section
    results["audit_events_per_s"] = section["audit_events_per_s"]
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    print(f"audit of {EVENTS:,} events ({checked.get('logs'):,} logs in {checked.get('log_pages')} pages, "
          f"{blocks} blocks, {history['alliances']} alliances)")  # fmt: skip
    print("  checked: " + ", ".join(f"{k} {v}" for k, v in checked.items()))
    print(f"  ledger audit, whole command   {audit_wall_s:8.2f} s   {EVENTS / audit_wall_s:10,.0f} events/s"
          f"   (target >= 20,000; median of {AUDIT_RUNS})")  # fmt: skip
    print(f"  audit service alone           {audit_service_s:8.2f} s   {EVENTS / audit_service_s:10,.0f} events/s")
    print(f"decoding RevenueSettled + PartiesCredited ({raw_logs:,} logs, {raw_events:,} events)")
    print(f"  raw eth_getLogs + eth-abi     {raw_s:8.2f} s   {raw_rate:10,.0f} events/s")
    print(f"  web3 per-event objects        {web3_s:8.2f} s   {web3_rate:10,.0f} events/s   "
          f"({raw_rate / web3_rate:.1f}x slower than raw)")  # fmt: skip
    print(f"  Ape ContractLog objects       {ape_s:8.2f} s   {ape_rate:10,.0f} events/s   "
          f"({raw_rate / ape_rate:.1f}x slower than raw)")  # fmt: skip
    print(f"wrote {RESULTS.relative_to(ROOT)} (script wall time {time.perf_counter() - started:.0f} s)")
    if findings:
        print(f"\nthe audit reported {len(findings)} findings on a clean history:", file=sys.stderr)
        for finding in findings[:20]:
            print(f"  [{finding['kind']}] {finding['message']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
