"""Write docs/performance.md from bench/results.json: the one page that states the measured figures.

    python scripts/perf_table.py            # rewrite docs/performance.md (make bench runs it last)
    python scripts/perf_table.py --check    # exit 1 if the page is not what the JSON gives

Every number on the page is read from ``bench/results.json`` or computed from it here (ratios, the
per-party and per-batch growth laws), so the page cannot drift from the measurements; the prose around
the tables says how each figure was taken. ``tests/test_docs.py`` fails when the committed
page differs from what this script makes of the committed JSON.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
PAGE = ROOT / "docs" / "performance.md"

HOT_PATH_BASELINE = 2_414  # n5_k1000 gas per event that a contract change may raise by at most 2%
BLOCK_GAS = 30_000_000
BATCH_GAS = 12_000_000  # LEDGER_BATCH_GAS's default
EVENTS_A_YEAR = 100_000_000
WIDTH = 110  # prose is wrapped at this width; table rows stay one line each


def prose(text: str) -> str:
    """A paragraph written over several lines, as one line (``render`` wraps it again)."""
    return " ".join(text.split())


SETTLE_HOW = prose(
    """
How: the file is checked as a stream and its sound rows spooled to disk by alliance (one alliance's events
in memory at a time); the chain is read with batched `eth_call`s (500 per request) instead of one Ape call
each; batches are sized from the gas limit (the cost model under `LEDGER_BATCH_GAS` and half the block gas
limit) and sent through one pipeline (`LEDGER_TX_WINDOW` in flight, local nonces, signed locally). The first
batch of each alliance is simulated; when a batch reverts, its alliance's later batches revert too (out of
sequence), the first one's reason is found once none of the alliance is in flight, retryable ones (another
run moved the cursor, spent the allowance or took the nonce; an out-of-gas batch) re-read the chain and
carry on, and any other is reported after every other alliance has settled. The waits keep the
`Transactor`'s guards: dropped transactions are sent again, a stalled local node is mined. Before this
design, the same command managed 251 events/s on a 20,000-event file (its preparation made 1,500 Ape view
calls at ~40 ms each).
"""
)


def n(value, places: int = 0) -> str:
    """A figure with thousands separators, rounded to ``places`` decimals."""
    return f"{value:,.{places}f}"


def mb(value: float) -> str:
    """Megabytes: one decimal below 10, whole above."""
    return n(value, 1 if value < 10 else 0)


def sci(value: float) -> str:
    """``3.38 x 10^11``."""
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa} x 10^{int(exponent)}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}"


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares line through ``points``: (intercept, slope)."""
    count = len(points)
    mean_x = sum(x for x, _ in points) / count
    mean_y = sum(y for _, y in points) / count
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)
    return mean_y - slope * mean_x, slope


def gas(r: dict) -> list[str]:
    g, a, oz, meta = r["gas_per_event"], r["agreement_gas"], r["oz_payment_splitter"], r["meta"]
    rev, pay, sh = r["gas_per_reversal"], r["payout_gas"], r["shapes_gas"]
    by_parties = [(int(k[1:].split("_")[0]), v) for k, v in g.items() if k.endswith("_k1000") and k != "n64_k1000"]
    base, per_party = fit(by_parties)
    # per event at batch size k = c + B / k: B from the 100- and 1,000-event batches of 5 parties
    per_batch = (g["n5_k100"] - g["n5_k1000"]) / (1 / 100 - 1 / 1000)
    cap_batch = g["n64_k1000"] * 1000
    return [
        "## Gas",
        "",
        f"Measured by `make bench` (`scripts/bench.py`) on Anvil {meta['anvil']} (solc {meta['solc']}, optimizer "
        f"{meta['optimizer_runs']} runs, {meta['evm']}), {meta['date'][:10]}; whole-transaction gas (the 21,000 base, "
        "calldata, execution, logs), steady state: each measured batch follows a warm-up batch, so the storage slots "
        "it writes are already non-zero (an agreement's first batch pays once more for the slots it creates: the "
        "cursor, the period, each party's balance). `scripts/bench.py` documents the method.",
        "",
        "| what | gas | note |",
        "|---|---:|---|",
        f"| settle, 5 parties, batch of 1,000 (`gas_per_event.n5_k1000`) | **{n(g['n5_k1000'])} per event** | "
        f"target ≤ 2,600, and at most 2% above {n(HOT_PATH_BASELINE)} for any contract change; exactly-once included |",
        f"| settle, 5 parties, 1,000, crossing a target tier (`n5_k1000_tier`) | {n(g['n5_k1000_tier'])} per event | |",
        f"| settle, 2 / 10 / 50 / 64 parties, batch of 1,000 | {n(g['n2_k1000'])} / {n(g['n10_k1000'])} / "
        f"{n(g['n50_k1000'])} / {n(g['n64_k1000'])} per event | see the growth laws below |",
        f"| settle, 5 parties, batch of 100 / of 1 | {n(g['n5_k100'])} / {n(g['n5_k1'])} per event | |",
        f"| settle, 5 parties, 3 bands, 1,000 events crossing two band edges (`shapes_gas.n5_b3_k1000`) | "
        f"{n(sh['n5_b3_k1000'])} per event | target ≤ 2,750; [agreements.md](agreements.md) |",
        f"| settle, 5 parties, a recoup reached inside the batch (`shapes_gas.n5_recoup_k1000`) | "
        f"{n(sh['n5_recoup_k1000'])} per event | target ≤ 2,800 |",
        f"| settle, outer 5 parties with one an inner 4-party alliance, inner split included "
        f"(`shapes_gas.nested_n5_i4_k1000`) | {n(sh['nested_n5_i4_k1000'])} per outer event | "
        f"{sh['nested_ratio']:.2f}x a flat 8-party alliance ({n(sh['n8_k1000'])}; target ≤ 2x): the inner split "
        "runs once per run of same-period events |",
        f"| reverse, 5 parties, batch of 1,000 (`gas_per_reversal.n5_k1000`) | **{n(rev['n5_k1000'])} per reversal** | "
        f"{rev['n5_k1000_ratio']:.2f}x a settled event (target ≤ 2.5x); every reversal runs in the settlement module "
        "by delegatecall since the contract outgrew EIP-170 (3,096 when it ran in the ledger itself); "
        "[reversals.md](reversals.md) |",
        f"| create and activate a 5-party agreement, 5 signatures (`agreement_gas.n5`) | **{n(a['n5'])}** | "
        "target ≤ 150,000 |",
        f"| the same with one ME's signer a 2-of-3 Safe, ERC-1271 (`n5_one_safe`) | {n(a['n5_one_safe'])} | "
        f"+{n(a['n5_one_safe'] - a['n5'])}; [teams.md](teams.md) |",
        f"| create and activate a 5-party agreement with 3 bands (`shapes_gas.create_n5_b3`) | "
        f"{n(sh['create_n5_b3'])} | target ≤ 200,000 |",
        f"| propose, then activate (two transactions) | {n(a['n5_propose_then_activate'])} | |",
        f"| an amendment proposed by a party's signer, showing the terms in force (`n5_amend_by_party`) | "
        f"{n(a['n5_amend_by_party'])} | |",
        f"| create and activate a 64-party agreement (the cap) | {n(a['n64'])} | |",
        f"| withdraw (`withdraw_gas`) | {n(r['withdraw_gas'])} | more when the payout address holds none of the "
        "token yet |",
        "| payout run, batch of 100 MEs, sent by anyone (`payout_gas.per_me_k100`) | "
        f"**{n(pay['per_me_k100'])} per ME** | target ≤ 20,000; {n(pay['per_me_k100_first'])} per ME when the "
        "payout addresses hold none of the token yet; [finance-year.md](finance-year.md) |",
        f"| OpenZeppelin 4.9.6 PaymentSplitter, 5 payees, per payment (k=100 / k=1) | "
        f"{n(oz['per_payment_n5_k100'])} / {n(oz['per_payment_n5_k1'])} | k transfers in, then 5 `release`s, "
        "divided by k |",
        "",
        f"The ledger settles a payment to 5 parties for **{oz['per_payment_n5_k100'] / g['n5_k1000']:.1f}x less gas** "
        "than PaymentSplitter (k=100), while also enforcing exactly-once, tiers and signed terms.",
        "",
        "**Growth laws** (computed here from the rows above):",
        "",
        f"- per event, by parties p (batches of 1,000; least squares over 2 to 50 parties): about "
        f"**{n(base)} + {n(per_party)} p** gas. The event loop only accumulates, per party but the last, "
        "`floor((o + a*S_i)/10000)`; credits are taken as differences once per run of same-period events, with "
        "one balance write per party per batch. What an event costs beyond that is its calldata (64 bytes: the "
        "reference and `amount << 32 | period`) and its share of the `RevenueSettled` log (every reference, amount "
        "and period, so history can be rebuilt from logs).",
        f"- per batch, whatever its size: about **{n(per_batch)}** gas (from the batches of 100 and 1,000 at 5 "
        f"parties), so an event costs about {n(g['n5_k1000'] - per_batch / 1000)} + {n(per_batch)} / k at batch "
        "size k.",
        f"- at the cap of 64 parties: activating an agreement costs {n(a['n64'])} gas and a 1,000-event batch "
        f"{n(cap_batch / 1e6, 1)} million, {'under' if cap_batch <= BATCH_GAS else 'over'} the settler's default "
        f"budget of {n(BATCH_GAS)} per transaction (`LEDGER_BATCH_GAS`) and far below a {n(BLOCK_GAS / 1e6)}-million "
        "block. No function loops over history: every loop is over the parties of one agreement or the events of "
        "one batch.",
        "",
    ]


def cli(r: dict) -> list[str]:
    c, au = r["cli"], r["audit"]
    return [
        "## Command-line timings",
        "",
        "`scripts/bench_cli.py` (section `cli`): median wall time of whole processes on the project's 2-core "
        "machine; successive runs differ by up to about 25%.",
        "",
        "| command | seconds |",
        "|---|---:|",
        f"| `ledger --help` (Ape not imported; target < 0.3 s) | {c['help_s']} |",
        f"| `ledger me list` (read-only: batched JSON-RPC reads, Ape not started; 4.5 s before) | {c['command_s']} |",
        "| `ledger demo` from nothing: start the chain, deploy, register 5 MEs, 4 signatures, settle 3,000 events, "
        f"close the period, payouts | {c['demo_3000_events_s']} |",
        "",
        "Read-only commands on the local chain (`payouts`, `balance`, `me list/show`, `alliance list`, `dashboard`) "
        "read over JSON-RPC without starting Ape, whose plugins take seconds to import; commands that send "
        "transactions still go through Ape. Scripts that run many operations should use the Python layer in one "
        "process.",
        "",
        f"### `ledger audit` over {n(au['events'])} revenue events",
        "",
        f"`scripts/bench_audit.py` (section `audit`) builds a history of {n(au['events'])} events ({au['alliances']} "
        "alliances of 2 to 20 parties, some with target tiers, closed periods, a signer change, an amendment, "
        "withdrawals) and times the whole command. `ledger audit` needs no Ape: it talks JSON-RPC directly.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| whole command, process start to exit (target ≥ 20,000 events/s) | {au['audit_wall_s']} s: "
        f"**{n(au['audit_events_per_s'])} events/s** (`audit_events_per_s`) |",
        f"| the audit alone, without process start-up | {au['audit_service_s']} s: "
        f"{n(au['events'] / au['audit_service_s'])} events/s |",
        f"| fetch + decode, raw `eth_getLogs` + eth-abi (what the audit uses) | {n(au['decode_raw_events_per_s'])} "
        "events/s |",
        f"| fetch + decode, web3.py per-event objects (`events.X().get_logs`) | "
        f"{n(au['decode_generic_events_per_s'])} events/s ({au['decode_generic_over_raw']}x slower) |",
        f"| fetch + decode, Ape's `ContractLog` objects (`X.range`) | {n(au['decode_ape_events_per_s'])} events/s |",
        "",
    ]


def settle(r: dict) -> list[str]:
    s = r["settle"]
    return [
        "## Settlement at scale",
        "",
        f"`scripts/bench_settle.py` (section `settle`): {n(s['mes'])} MEs and {s['alliances_registered']} alliances "
        f"of 2 to 20 parties drawn from all of them ({s['tiered_alliances']} of the settled ones with a target "
        f"tier), then one CSV of {n(s['events'])} revenue events over {s['alliances']} of the alliances, interleaved, "
        "and the whole `ledger settle FILE` command timed from process start to its summary, validation included.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| `ledger settle`, whole command (target ≥ 3,000 events/s) | {s['settle_s']} s: "
        f"**{n(s['settle_events_per_s'])} events/s** (`settle_events_per_s`) |",
        f"| its peak resident memory (target ≤ 500 MB) | **{s['settle_peak_rss_mb']} MB** (`settle_peak_rss_mb`) |",
        f"| batches, gas | {s['batches']} batches, {n(s['gas_used'])} gas ({n(s['gas_per_event'])} per event: most "
        "parties get their first balance slot) |",
        f"| `ledger payouts --format json` over that history (target ≤ 5 s) | **{s['payouts_s']} s** (`payouts_s`) |",
        f"| the same file settled again: nothing new, every event skipped | {s['resettle_s']} s |",
        f"| `ledger me list --json` ({n(s['mes'])} MEs) / `ledger balance --json` / `ledger audit` (clean) | "
        f"{s['me_list_s']} s / {s['balance_s']} s / {s['audit_s']} s |",
        "",
        SETTLE_HOW,
        "",
        f"At the measured {n(s['gas_per_event'])} gas per event, {n(EVENTS_A_YEAR)} events a year take "
        f"{sci(s['gas_per_event'] * EVENTS_A_YEAR)} gas; the capacity plan built on these figures is "
        "[scale.md](scale.md).",
        "",
    ]


def history(r: dict) -> list[str]:
    h = r["history"]
    zero, top = h["levels"][0], h["levels"][-1]
    at = f"H = {n(top['history_events'])}"
    rows = [
        ("`ledger settle`, 1,000 new events (median of 3)", "settle_1000_s", " s"),
        ("the same file again, nothing to send (no Ape start-up)", "noop_s", " s"),
        ("settle peak RSS", "settle_peak_rss_mb", " MB"),
        ("`ledger settle`, 100,000 new events", "settle_100k_events_per_s", " events/s"),
        ("`ledger audit` after 1,000 new events (from the checkpoint)", "audit_incremental_s", " s"),
        ("`ledger payouts --format json`", "payouts_s", " s"),
        ("`ledger me register`", "me_register_s", " s"),
    ]
    lines = [
        "## With history",
        "",
        f"`scripts/bench_history.py` (section `history`, {h['measured']}): {h['mes']} MEs, {h['alliances']} alliances; "
        "one chain grown to H settled events, each command timed as a whole process at each level. Measured on "
        f"the project's machine ({h['machine']}), so absolute times are several times an idle machine's: the "
        "ratio between the levels is what the local index and the audit checkpoint change.",
        "",
        f"| command | H = 0 | {at} | ratio |",
        "|---|---:|---:|---:|",
    ]
    for label, key, unit in rows:
        lines.append(f"| {label} | {n(zero[key], 2 if unit == ' s' else 0)}{unit} | "
                     f"{n(top[key], 2 if unit == ' s' else 0)}{unit} | {ratio(top[key], zero[key])} |")  # fmt: skip
    lines += [
        f"| `ledger audit --full` | {n(zero['audit_full_events'])} events in {zero['audit_full_s']} s | "
        f"{n(top['audit_full_events_per_s'])} events/s, peak RSS {top['audit_full_peak_rss_mb']} MB | |",
        "",
        "Before the local index and the checkpoint (the issue's figures, a quieter machine): settle of 1,000 events "
        "11.1 s at H = 0 and 38.4 s at 1 M, the no-op 8.1 s and 26.1 s, peak RSS 165 MB and 578 MB, audit peak RSS "
        "411 MB at 1 M. Growth laws (what stays flat in H, what must stay linear) and the cost of 100 M events a "
        "year: [scale.md](scale.md).",
        "",
    ]
    return lines


def imports(r: dict) -> list[str]:
    i = r["import"]
    return [
        "## Onboarding from files",
        "",
        f"`scripts/bench_import.py` (section `import`, {i['date'][:10]}, load average {i['load_avg_1m']} from other "
        "work); whole commands, process start to exit. What the imports do: [finance-year.md](finance-year.md).",
        "",
        "| command | seconds |",
        "|---|---:|",
        f"| `ledger me import` of {n(i['mes'])} MEs (target ≤ {i['target_s']} s) | **{i['me_import_s']}** "
        f"({i['me_import_per_s']} MEs/s) |",
        f"| the same file again: every row checked and skipped | {i['me_reimport_s']} |",
        f"| `ledger alliance import` of {i['alliances']} alliances of 2 to 20 parties, {i['tiered_alliances']} with a "
        f"target (target ≤ {i['target_s']} s) | **{i['alliance_import_s']}** |",
        f"| the same file again | {i['alliance_reimport_s']} |",
        "",
    ]


def local_chain(r: dict) -> list[str]:
    c = r["chain"]
    levels = c["levels"]

    def row(label: str, cell) -> str:
        return f"| {label} | " + " | ".join(cell(level) for level in levels) + " |"

    def opt(value, places: int = 0) -> str:
        return "-" if value is None else n(value, places)

    top = levels[-1]
    idle_ok = all(level["idle_bytes_per_min"] == 0 for level in levels)
    lines = [
        "## The local chain as its history grows",
        "",
        "`scripts/bench_chain.py` (section `chain`, its docstring says how): one chain started by `ledger chain up`, "
        "its history built by `ledger settle` of 100,000-event files. A snapshot every {c['snapshot_blocks']} blocks; "
        "the restart is the worst case, a power loss with a full journal since the newest snapshot. Design and "
        "guarantees: [local-chain.md](local-chain.md).",
        "",
        "| settled events (H) | " + " | ".join(n(level["settled_events"]) for level in levels) + " |",
        "|---|" + "---:|" * len(levels),
        row(f"bytes written per idle minute ({c['idle_window_s']} s window)", lambda x: n(x["idle_bytes_per_min"])),
        row("journal bytes per new block (one transfer)", lambda x: n(x["bytes_per_block"])),
        row("journal bytes per block of a settlement batch", lambda x: opt(x["settle_bytes_per_block"])),
        row(
            "p99 / max `eth_blockNumber` while a snapshot is taken (ms)",
            lambda x: f"{n(x['p99_block_number_ms'])} / {n(x['max_block_number_ms'])}",
        ),
        row("p99 `eth_blockNumber` while settling (ms)", lambda x: opt(x["build_p99_ms"])),
        row("snapshot taken in the private node (s)", lambda x: n(x["snapshot_s"], 1)),
        row(
            "restart after a power loss (s; journal blocks replayed)",
            lambda x: f"{n(x['restart_s'], 1)}; {x['restart_journal_blocks']}",
        ),
        row("state (Anvil's JSON) / store on disk (MB)", lambda x: f"{mb(x['state_mb'])} / {mb(x['store_mb'])}"),
        row("Anvil / supervisor memory (RSS, MB)", lambda x: f"{n(x['anvil_rss_mb'])} / {n(x['supervisor_rss_mb'])}"),
        "",
        f"Targets: 0 bytes per idle minute at every H ({'met' if idle_ok else 'not met'}); at "
        f"H = {n(top['settled_events'])}, p99 `eth_blockNumber` ≤ 50 ms ({n(top['p99_block_number_ms'])} ms) and a "
        f"restart ≤ 30 s ({n(top['restart_s'], 1)} s).",
        "",
        "Notes recorded with the measurement:",
        "",
    ]
    lines += [f"- {note}" for note in c.get("notes", [])]
    return lines + [""]


def render(results: dict) -> str:
    lines = [
        "# Performance: gas, timings and how they grow",
        "",
        "For whoever sizes a deployment or changes the contract: what a transaction costs, how long the commands "
        "take, and how both grow with parties, batch size and history.",
        "",
        "<!-- Generated by scripts/perf_table.py from bench/results.json: do not edit by hand. `make bench` measures "
        "and rewrites both; tests/test_docs.py checks that they agree. -->",
        "",
        "Every figure here comes from `bench/results.json`, written by `make bench` (the section of each script is "
        "named with its table). Timings are from the project's 2-core machine, often shared with other work: "
        "compare rows measured together rather than absolute seconds across sections.",
        "",
    ]
    for section in (gas, cli, settle, history, imports, local_chain):
        lines += section(results)
    return "\n".join(_wrapped(lines)).rstrip("\n") + "\n"


def _wrapped(lines: list[str]) -> list[str]:
    """Prose wrapped at ``WIDTH`` (list items with a hanging indent); headings, tables, comments as they are."""
    out = []
    for line in lines:
        if not line or line.startswith(("|", "#", "<!--")):
            out.append(line)
        else:
            indent = "  " if line.startswith("- ") else ""
            out += textwrap.wrap(line, WIDTH, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False)
    return out


def main(argv: list[str]) -> int:
    page = render(json.loads(RESULTS.read_text()))
    if "--check" in argv:
        if PAGE.read_text() != page:
            print(f"{PAGE.relative_to(ROOT)} is not what {RESULTS.relative_to(ROOT)} gives: run scripts/perf_table.py")
            return 1
        return 0
    PAGE.write_text(page)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
