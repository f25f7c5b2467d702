#!/usr/bin/env python3
"""Hand-written mutants of the contract, and which test kills each one (`make mutants`).

Each mutant is one small, plausible mistake in contracts/AllianceLedger.sol or contracts/libraries/
SplitMath.sol (an off-by-one in the rounding offset, a prefix sum taken wrongly, the cursor not advanced,
a missing nonReentrant, a debt not netted, a payout skipped twice, an ERC-1271 check skipped, ...), or in
a check of the Python layer the contract leaves to the client (run against its own pytest tests). For
each, in turn, the script applies it to a *copy* of the project (under .tmp/mutants/; the working tree is
never touched), runs the forge suite's quick campaign there and, if forge lets the mutant survive, a fast
subset of the pytest suite on Anvil. It prints a table (mutant, killed by what, seconds), lists any
survivor and exits non-zero if one survives or a mutant no longer applies (its original text, or its
anchor, is not found exactly once: the message names the mutant; update it with the contract).

    python scripts/mutants.py                 # all mutants
    python scripts/mutants.py cursor-not-advanced shortfall-check-dropped
    python scripts/mutants.py --list
    python scripts/mutants.py --check         # after a contract edit: names every mutant that no longer applies
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEDGER = "contracts/AllianceLedger.sol"
SPLIT = "contracts/libraries/SplitMath.sol"
STATE = "contracts/AllianceLedgerState.sol"  # storage and internals shared with the settlement module
SHAPES = "contracts/AllianceLedgerShapes.sol"  # bands, recoup, nested alliances, reversals
FORGE = ROOT / "node_modules/@foundry-rs/forge-linux-amd64/bin/forge"
# The pytest subset run when forge misses a mutant: the contract-level tests (reverts and their
# arguments, the access matrix, the adversaries, settlement and the Python model's stateful check).
PYTEST_SUBSET = [
    "tests/test_reverts_and_events.py",
    "tests/test_access_matrix.py",
    "tests/test_adversaries.py",
    "tests/test_settlement.py",
    "tests/test_agreements.py",
    "tests/test_stateful.py",
]
SETTLEMENT = "ledger/services/settlement.py"
AUDIT = "ledger/services/audit/recompute.py"
COPIED = ["contracts", "forge", "foundry.toml", "scripts", "ledger", "tests", "ape-config.yaml", "pyproject.toml"]


@dataclass(frozen=True)
class Mutant:
    """`original` is replaced by `mutated` in `path`. The original must occur exactly once in the file, or,
    with `within`, the first occurrence after `within` (itself found exactly once, e.g. the function's
    signature) is the one replaced: a snippet repeated in two functions stays distinctive. `tests`: a
    mutant of the Python layer is run against these pytest node ids only (forge does not see it)."""

    name: str
    path: str
    original: str
    mutated: str
    what: str
    within: str | None = None
    tests: tuple[str, ...] = ()


MUTANTS = [
    Mutant(
        "offset-off-by-one",
        SPLIT,
        "return (seq * ROUNDING_STRIDE) % BPS;",
        "return (seq * ROUNDING_STRIDE + 1) % BPS;",
        "the rounding offset is shifted by one",
    ),
    Mutant(
        "offset-of-next-event",
        LEDGER,
        "_addEvent(batch, amount, SplitMath.offsetOf(firstSeq + k), revenue);",
        "_addEvent(batch, amount, SplitMath.offsetOf(firstSeq + k + 1), revenue);",
        "each event is rounded with the next event's offset",
    ),
    Mutant(
        "accumulate-drops-offset",
        SPLIT,
        "div(add(offset, mul(amount, mload(p))), BPS)",
        "div(mul(amount, mload(p)), BPS)",
        "the cumulative floors ignore the offset (plain floor rounding)",
    ),
    Mutant(
        "prefix-sum-shifted",
        STATE,
        "running += shares[i];\n            prefix[i] = running;",
        "prefix[i] = running;\n            running += shares[i];",
        "the prefix sums are taken one share late (S_(i-1) for S_i)",
    ),
    Mutant(
        "excess-split-by-base-table",
        LEDGER,
        "batch.prefixExcess = _prefixSums(band.shares);",
        "batch.prefixExcess = batch.prefixBase;",
        "revenue above the target is split by the base table",
    ),
    Mutant(
        "last-party-short-one-unit",
        SPLIT,
        "credits[m] = total - previous;",
        "credits[m] = total - previous == 0 ? 0 : total - previous - 1;",
        "the last party's remainder loses a unit (dust kept by the ledger)",
    ),
    Mutant(
        "tier-boundary-off-by-one",
        SPLIT,
        "base = target - periodRevenue;",
        "base = target - periodRevenue - 1;",
        "the event that crosses the target puts one unit too few below it",
    ),
    Mutant(
        "period-revenue-not-recorded",
        LEDGER,
        "_periods[agreementId][batch.period].revenue = uint128(revenue);",
        "",
        "the period's revenue is not stored (the tier restarts every batch)",
    ),
    Mutant(
        "cursor-not-advanced",
        LEDGER,
        "agreement.nextSeq = firstSeq + uint64(entries.length);",
        "agreement.nextSeq = firstSeq;",
        "settle does not advance the sequence cursor (a retried batch is credited again)",
        within="function settle(",
    ),
    Mutant(
        "withdraw-without-nonReentrant",
        LEDGER,
        "function withdraw(uint32 meId, address token) external nonReentrant returns",
        "function withdraw(uint32 meId, address token) external returns",
        "withdraw has no reentrancy guard",
    ),
    Mutant(
        "settle-without-nonReentrant",
        LEDGER,
        ") external onlyRole(FINANCE_ROLE) nonReentrant returns",
        ") external onlyRole(FINANCE_ROLE) returns",
        "settle has no reentrancy guard",
        within="function settle(",
    ),
    Mutant(
        "signature-skipped-first-party",
        LEDGER,
        "if (!valid) {\n                if (recovered == address(1)) revert AgreementSignatureRefused",
        "if (!valid && i != 0) {\n                if (recovered == address(1)) revert AgreementSignatureRefused",
        "the first party's approval/termination signature is not checked",
    ),
    Mutant(
        "signature-skipped-last-party",
        LEDGER,
        "if (!valid) {\n                if (recovered == address(1)) revert AgreementSignatureRefused",
        "if (!valid && i + 1 < n) {\n                if (recovered == address(1)) revert AgreementSignatureRefused",
        "the last party's approval/termination signature is not checked",
    ),
    Mutant(
        "consent-check-dropped",
        LEDGER,
        "if (!valid) {\n            if (recovered == address(1)) revert MEConsentRefused",
        "if (false) {\n            if (recovered == address(1)) revert MEConsentRefused",
        "updateME takes any consent signature",
    ),
    Mutant(
        "consent-nonce-not-spent",
        LEDGER,
        "me.nonce = nonce + 1;",
        "me.nonce = nonce;",
        "an ME update's consent can be replayed",
    ),
    Mutant(
        "period-closed-check-dropped",
        LEDGER,
        "if (closed) revert PeriodAlreadyClosed(batch.agreementId, period);",
        "",
        "settle accepts events for a closed period",
    ),
    Mutant(
        "close-period-role-dropped",
        LEDGER,
        "function closePeriod(bytes32 agreementId, uint32 period) external onlyRole(FINANCE_ROLE) {",
        "function closePeriod(bytes32 agreementId, uint32 period) external {",
        "anyone may close a period",
    ),
    Mutant(
        "register-role-dropped",
        LEDGER,
        "        onlyRole(PLATFORM_ROLE)\n        returns (uint32 meId)",
        "        returns (uint32 meId)",
        "anyone may register an ME",
    ),
    Mutant(
        "settle-role-dropped",
        LEDGER,
        "onlyRole(FINANCE_ROLE) nonReentrant",
        "nonReentrant",
        "anyone may settle revenue",
        within="function settle(",
    ),
    Mutant(
        "settle-dissolved-party-check-dropped",
        STATE,
        "if (_mes[parties[i]].status != IAllianceLedger.MEStatus.Active) {\n"
        "                revert IAllianceLedger.AgreementPartyDissolved(agreementId, parties[i]);\n"
        "            }",
        "",
        "settle credits an agreement with a dissolved party",
    ),
    Mutant(
        "activation-dissolved-party-check-dropped",
        LEDGER,
        "if (requireActive && me.status != MEStatus.Active)",
        "if (requireActive && me.status == MEStatus.None)",
        "an agreement with a dissolved party can be activated",
    ),
    Mutant(
        "total-owed-not-updated",
        LEDGER,
        "_totalOwed[token] += paidIn;",
        "",
        "settle does not add to totalOwed",
    ),
    Mutant(
        "withdraw-not-zeroing",
        LEDGER,
        "account.balance = 0;",
        "",
        "withdraw pays the balance but leaves it in place",
    ),
    Mutant(
        "withdraw-caller-check-dropped",
        LEDGER,
        "if (msg.sender != payout) revert WithdrawCallerNotPayout(meId, msg.sender, payout);",
        "",
        "anyone may trigger an ME's withdrawal",
    ),
    Mutant(
        "shortfall-check-dropped",
        LEDGER,
        "if (received != paidIn) revert TokenTransferShortfall(token, paidIn, received);",
        "",
        "settle books more than a fee-on-transfer token delivered",
    ),
    Mutant(
        "empty-reference-accepted",
        STATE,
        "if (refs[k] == bytes32(0)) revert IAllianceLedger.RevenueReferenceEmpty(agreementId, firstSeq + uint64(k));",
        "",
        "an event without a reference is settled",
    ),
    Mutant(
        "token-change-allowed",
        LEDGER,
        "} else if (terms.token != agreement.token) {\n"
        "            revert AgreementTokenChanged(agreement.token, terms.token);\n        }",
        "}",
        "an amendment may change the settlement token",
    ),
    Mutant(
        "termination-not-recorded",
        LEDGER,
        "agreement.status = AgreementStatus.Terminated;",
        "",
        "a terminated agreement stays active",
    ),
    Mutant(
        "recouped-part-not-kept-per-period",
        SHAPES,
        "t.periodRecouped += part;",
        "",
        "the recoup part is not recorded in the period, so it counts toward the period's bands",
    ),
    Mutant(
        "reversal-band-edge-off-by-one",
        SHAPES,
        "if (banded > low) {",
        "if (banded > low + 1) {",
        "a reversal leaves the last unit above a band edge in the wrong tier",
    ),
    Mutant(
        "inner-reference-not-derived-from-the-run",
        SHAPES,
        "keccak256(abi.encode(f.outerId, f.runFirstSeq, f.meId))",
        "keccak256(abi.encode(f.outerId, f.meId))",
        "the inner alliance's event reference does not name the outer run",
    ),
    # -- reversals and debts --------------------------------------------------------------------------
    Mutant(
        "debt-not-netted",
        STATE,
        "if (debt != 0) {\n            netted = credit < debt ? credit : debt;",
        "if (false) {\n            netted = credit < debt ? credit : debt;",
        "a credit goes to the balance while the ME still owes a debt (the debt is not netted)",
    ),
    Mutant(
        "netted-debt-pulled-from-finance",
        LEDGER,
        "paidIn = total - netted;",
        "paidIn = total;",
        "settle pulls the netted part from finance too (finance pays the debt twice)",
    ),
    Mutant(
        "total-debt-not-reduced-by-netting",
        LEDGER,
        "if (netted != 0) _totalDebt[token] -= netted;",
        "",
        "netting repays an ME's debt but totalDebt keeps it",
    ),
    Mutant(
        "reversal-debt-not-recorded",
        STATE,
        "owed = debit - balance;\n                debt += owed;",
        "owed = debit - balance;",
        "a reversal beyond the balance creates no debt (the ME keeps what it was paid)",
    ),
    Mutant(
        "reversal-returns-uncovered-part",
        SHAPES,
        "returned = total - incurred;",
        "returned = total;",
        "settleReversals sends finance the whole reversal, also what the balances did not cover",
    ),
    Mutant(
        "reversal-excess-by-base-table",
        SHAPES,
        "SplitMath.accumulate(amount, offset, t.prefix[cursor], t.sums[cursor]);\n"
        "                t.parts[cursor] += amount;",
        "SplitMath.accumulate(amount, offset, t.prefix[baseTier], t.sums[baseTier]);\n"
        "                t.parts[baseTier] += amount;",
        "a reversal above the target is debited by the base table",
    ),
    Mutant(
        "reversal-period-revenue-not-reduced",
        SHAPES,
        "t.banded = banded - amount;\n                return;",
        "return;",
        "a reversal does not un-book the period's revenue (the tier of later events is wrong)",
    ),
    Mutant(
        "reversal-cursor-not-advanced",
        SHAPES,
        "agreement.nextSeq = firstSeq + uint64(entries.length);",
        "agreement.nextSeq = firstSeq;",
        "settleReversals does not advance the cursor (a retried reversal is debited again)",
        within="function settleReversals(",
    ),
    Mutant(
        "reversal-role-dropped",
        LEDGER,
        "onlyRole(FINANCE_ROLE) nonReentrant",
        "nonReentrant",
        "anyone may settle reversals (and take the balances' tokens)",
        within="function settleReversals(",
    ),
    Mutant(
        "reversal-originals-count-unchecked",
        SHAPES,
        "if (originals.length != refs.length) {\n"
        "            revert IAllianceLedger.ReversalBatchInvalid(agreementId, refs.length, originals.length);\n"
        "        }",
        "",
        "a reversal batch with fewer originals than reversals is settled",
    ),
    Mutant(
        "client-reversal-exceeds-original",
        SETTLEMENT,
        "if total > original_amount:",
        "if total > 2 * original_amount:",
        "the client lets reversals of an event total more than its amount (up to twice)",
        tests=(
            "tests/test_reversals.py::"
            "test_a_file_mixing_events_and_reversals_settles_in_sequence_and_again_settles_nothing",
            "tests/test_reversals.py::test_the_settler_refuses_every_bad_link_naming_the_row_and_sends_nothing",
        ),
    ),
    # -- payout runs ------------------------------------------------------------------------------------
    Mutant(
        "payout-skipped-credited-twice",
        LEDGER,
        "_setBalance(meId, token, amount);\n                _totalOwed[token] += amount;",
        "_setBalance(meId, token, amount + amount);\n                _totalOwed[token] += amount + amount;",
        "a payout the token refused restores the balance twice (PayoutSkipped credits it again)",
    ),
    Mutant(
        "payout-skipped-balance-lost",
        LEDGER,
        "_setBalance(meId, token, amount);\n                _totalOwed[token] += amount;",
        "_totalOwed[token] += amount;",
        "a payout the token refused loses the ME's balance",
    ),
    Mutant(
        "payout-balance-not-cleared",
        LEDGER,
        "_setBalance(meId, token, 0);",
        "",
        "a payout run pays a balance but leaves it in place",
    ),
    Mutant(
        "payout-unknown-me-passed-over",
        LEDGER,
        "if (to == address(0)) revert MEUnknown(meId);",
        "if (to == address(0)) continue;",
        "a payout run passes over an unknown ME id instead of refusing the list",
    ),
    # -- batch functions --------------------------------------------------------------------------------
    Mutant(
        "batch-register-name-check-skipped",
        LEDGER,
        "if (existing != 0) revert MENameTaken(name, existing);",
        "if (existing != 0 && msg.sig != this.registerMEs.selector) revert MENameTaken(name, existing);",
        "registerMEs skips the name check (a taken name is registered again)",
    ),
    Mutant(
        "batch-register-lengths-unchecked",
        LEDGER,
        "signers.length != n || parents.length != n",
        "signers.length != n",
        "registerMEs takes a parents array of another length",
    ),
    Mutant(
        "batch-register-role-dropped",
        LEDGER,
        "onlyRole(PLATFORM_ROLE)",
        "",
        "anyone may register MEs in a batch",
        within="function registerMEs(",
    ),
    Mutant(
        "batch-propose-lengths-unchecked",
        LEDGER,
        "if (n == 0 || terms.length != n) revert AgreementBatchInvalid(n, terms.length);",
        "if (n == 0) revert AgreementBatchInvalid(n, terms.length);",
        "proposeAgreements takes more terms than ids",
    ),
    Mutant(
        "batch-propose-role-dropped",
        LEDGER,
        "onlyRole(PLATFORM_ROLE)",
        "",
        "anyone may propose agreements in a batch",
        within="function proposeAgreements(",
    ),
    # -- contract signers (ERC-1271) ---------------------------------------------------------------------
    Mutant(
        "contract-signer-check-skipped",
        LEDGER,
        "if (SignatureChecker.isValidERC1271SignatureNow(signer, digest, signature)) return (true, signer);",
        "return (true, signer);",
        "a contract signer's ERC-1271 check is skipped (any signature counts for it)",
    ),
    Mutant(
        "contract-signer-refusal-misreported",
        LEDGER,
        "return (false, address(1));",
        "return (false, recovered);",
        "a contract signer's refusal is reported as a wrong key (...Invalid instead of ...Refused)",
    ),
]


def _locate(source: str, mutant: Mutant) -> int:
    """Where the mutant's original text starts; ValueError (naming the mutant) if it is not distinctive."""
    start = 0
    if mutant.within is not None:
        count = source.count(mutant.within)
        if count != 1:
            raise ValueError(f"{mutant.name}: its anchor {mutant.within!r} occurs {count} times in {mutant.path} "
                             "(expected once): update the mutant")  # fmt: skip
        start = source.index(mutant.within)
        at = source.find(mutant.original, start)
        if at < 0:
            raise ValueError(f"{mutant.name}: its original text is not found after {mutant.within!r} in "
                             f"{mutant.path}: update the mutant")  # fmt: skip
        return at
    count = source.count(mutant.original)
    if count != 1:
        raise ValueError(f"{mutant.name}: its original text occurs {count} times in {mutant.path} (expected "
                         "once): update the mutant")  # fmt: skip
    return source.index(mutant.original)


def _apply(copy: Path, mutant: Mutant) -> None:
    source = (ROOT / mutant.path).read_text()
    at = _locate(source, mutant)
    mutated = source[:at] + mutant.mutated + source[at + len(mutant.original) :]
    (copy / mutant.path).write_text(mutated)


def check() -> list[str]:
    """Every mutant that no longer applies, with the reason (the original or its anchor not found once)."""
    problems = []
    for mutant in MUTANTS:
        try:
            _locate((ROOT / mutant.path).read_text(), mutant)
        except ValueError as err:
            problems.append(str(err))
    return problems


def _restore(copy: Path) -> None:
    for path in {m.path for m in MUTANTS}:
        shutil.copyfile(ROOT / path, copy / path)


def _prepare(copy: Path) -> None:
    if copy.exists():
        shutil.rmtree(copy)
    copy.mkdir(parents=True)
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns(".cache", "__pycache__"))
        else:
            shutil.copy2(source, copy / name)
    (copy / "node_modules").symlink_to(ROOT / "node_modules")
    if (ROOT / ".forge").is_dir():  # forge's cache: only what a mutant changes is compiled again
        shutil.copytree(ROOT / ".forge", copy / ".forge")


def _forge(copy: Path) -> tuple[str | None, str]:
    """(the first failing test and its reason, or None if all pass; raw output on a build failure)."""
    solc = str(copy / "scripts/solc/bin/solc-v0.8.30")
    command = [str(FORGE), "test", "--root", str(copy), "--offline", "--use", solc, "--fail-fast", "--json"]
    env = {**os.environ, "FOUNDRY_INVARIANT_SHRINK_RUN_LIMIT": "0", "FOUNDRY_PROFILE": "default"}
    done = subprocess.run(command, cwd=copy, capture_output=True, text=True, env=env)
    start = done.stdout.find("{")
    try:
        results = json.loads(done.stdout[start:]) if start >= 0 else None
    except ValueError:
        results = None
    if results is None:
        return "build", (done.stdout + done.stderr)[-2000:]
    for suite, report in results.items():
        for test, outcome in report.get("test_results", {}).items():
            if outcome.get("status") == "Failure":
                reason = (outcome.get("reason") or "").replace("\n", " ")
                return f"forge {suite.split(':')[-1]}.{test.split('(')[0]}", reason
    return None, ""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pytest(copy: Path, tests: tuple[str, ...] = ()) -> tuple[str | None, str]:
    # Its own Anvil on a free port: never the one a test run in the working tree is using.
    env = {**os.environ, "PYTHONPATH": str(copy), "APE_FOUNDRY_HOST": f"http://127.0.0.1:{_free_port()}"}
    command = ["ape", "test", *(tests or PYTEST_SUBSET), "-m", "not slow", "-x", "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(command, cwd=copy, capture_output=True, text=True, env=env)
    if done.returncode == 0:
        return None, ""
    failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    if not failed:
        return "pytest (see its output)", done.stdout[-500:]
    return "pytest " + failed[0].split()[1], failed[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="run only these mutants (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument(
        "--check", action="store_true", help="only check that every mutant still applies (after a contract edit)"
    )
    parser.add_argument("--no-pytest", action="store_true", help="forge only (a survivor is reported as such)")
    parser.add_argument("--copy", default=".tmp/mutants", help="where the project is copied (removed afterwards)")
    args = parser.parse_args(argv)
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:42} {m.what}")
        return 0
    if args.check:
        problems = check()
        for problem in problems:
            print(f"mutants: NOT APPLICABLE: {problem}", file=sys.stderr)
        print(f"{len(MUTANTS) - len(problems)} of {len(MUTANTS)} mutants apply.")
        return 1 if problems else 0
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        print(f"mutants: unknown mutant(s): {', '.join(sorted(unknown))} (see --list)", file=sys.stderr)
        return 2
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    if not FORGE.exists():
        print("mutants: forge is not installed (run `make node_modules`)", file=sys.stderr)
        return 2

    copy = ROOT / args.copy
    rows: list[tuple[str, str, float, str]] = []
    try:
        _prepare(copy)
        for mutant in chosen:
            started = time.monotonic()
            _restore(copy)
            try:
                _apply(copy, mutant)
            except ValueError as err:
                rows.append((mutant.name, "NOT APPLIED", 0.0, str(err)))
                print(f"{mutant.name}: NOT APPLIED: {err}", flush=True)
                continue
            if mutant.tests:  # the Python layer: forge does not see it
                killer, reason = _pytest(copy, mutant.tests)
            else:
                killer, reason = _forge(copy)
            if killer == "build":
                killer, reason = "NOT BUILT", reason.strip().splitlines()[-1] if reason.strip() else ""
            elif killer is None and not args.no_pytest:
                killer, reason = _pytest(copy)
            elapsed = time.monotonic() - started
            rows.append((mutant.name, killer or "SURVIVED", elapsed, reason))
            print(f"{mutant.name}: {killer or 'SURVIVED'} ({elapsed:.0f} s) {reason[:150]}", flush=True)
    finally:
        shutil.rmtree(copy, ignore_errors=True)

    print()
    print(f"| {'mutant':42} | {'killed by':62} | {'s':>4} |")
    print(f"|{'-' * 44}|{'-' * 64}|{'-' * 6}|")
    for name, killer, elapsed, _ in rows:
        print(f"| {name:42} | {killer:62} | {elapsed:4.0f} |")
    bad = [row for row in rows if row[1] in ("SURVIVED", "NOT APPLIED", "NOT BUILT")]
    killed = len(rows) - len(bad)
    print(f"\n{killed} of {len(rows)} mutants killed.")
    for name, killer, _, reason in bad:
        print(f"  {killer}: {name}: {reason}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
