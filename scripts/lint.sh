#!/usr/bin/env bash
# `make lint`: static analysis of the contracts (slither) and of the Python code (ruff).
#
# Exits non-zero on any ruff finding, and on any slither finding of high or medium impact that is not in
# the ACCEPTED list below (each with the reason it is a false positive). Low, informational and
# optimization findings are printed, not fatal. The tools come from LINT_VENV (default .venv-lint, built
# by `make lint` from requirements-lint.txt); slither compiles with the solc-js adapter, so nothing is
# downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."

LINT_VENV=${LINT_VENV:-.venv-lint}
SOLC=scripts/solc/bin/solc-v0.8.30
OUT=.tmp/slither
mkdir -p "$OUT"

# What slither analyses. A folder target compiles the folder's own *.sol files (not its sub-folders) in one
# standard-JSON compilation, with their imports:
#   contracts/         AllianceLedger, with libraries/SplitMath and interfaces/IAllianceLedger
#   contracts/tokens/  LedgerTestToken (the local chains' settlement token)
# Not analysed: contracts/test/ (deliberately malicious and non-standard tokens for the adversary tests)
# and contracts/bench/ (an OpenZeppelin 4 PaymentSplitter, a benchmark baseline that the ledger never uses).
# --filter-paths node_modules: findings inside OpenZeppelin's own code are not ours to fix (findings in our
# code that involve OpenZeppelin functions are still reported).
TARGETS=(contracts contracts/tokens)
ROOT=$PWD
OUTSIDE=$(mktemp -d /tmp/slither-wd.XXXXXX)
trap 'rm -rf "$OUTSIDE"' EXIT
cp -r contracts "$OUTSIDE/contracts" && ln -s "$ROOT/node_modules" "$OUTSIDE/node_modules"
status=0
reports=()
for target in "${TARGETS[@]}"; do
  report="$OUT/$(echo "$target" | tr / _).json"
  reports+=("$report")
  rm -f "$report"
  echo "== slither $target"
  # --fail-none: the gate below decides. slither prints its findings (and compiler warnings) on stderr.
  # Known, harmless: "Impossible to generate IR for AllianceLedger._nonReentrantBefore/_nonReentrantAfter/
  # _reentrancyGuardEntered": slither 0.11.6 cannot model OpenZeppelin's TransientSlot (EIP-1153), so it
  # does not see the nonReentrant guard; its reentrancy detectors still run, and report nothing because
  # settle and withdraw write no state after their external calls. tests/test_adversaries.py checks the
  # guard itself against reentrant tokens and receivers.
  # --solc-args=--optimize: the optimizer with 200 runs, as ape-config.yaml compiles (it only sets the
  # standard-JSON settings; the adapter gets no extra flag).
  # On a copy of contracts/ outside the project: crytic-compile walks up from the target and from the
  # working directory, would find foundry.toml (the forge suites), ask a `forge` on PATH for its settings
  # and replace these with them. The copy is compiled by the solc-js adapter with exactly these settings.
  (cd "$OUTSIDE" && "$ROOT/$LINT_VENV/bin/slither" "$target" \
    --solc "$ROOT/$SOLC" --solc-standard-json --solc-args=--optimize \
    --solc-remaps "@openzeppelin/contracts=node_modules/@openzeppelin/contracts" \
    --filter-paths "node_modules" \
    --exclude-optimization \
    --fail-none --json "$ROOT/$report") || status=1
done

"$LINT_VENV/bin/python" - "${reports[@]}" <<'PY' || status=1
"""Gate over slither's JSON reports: fail on high/medium findings that are not accepted below."""
import json
import sys

# High/medium findings reviewed and accepted as false positives, keyed by detector and the code elements
# it names (stable across line moves, unlike slither's triage ids). A new finding, or one of these in
# another place, fails the lint.
ACCEPTED = {
    # Solidity zero-initialises value-type locals; each of these is an accumulator or "previous" cursor
    # whose intended start is 0. (A `= 0` initialiser beside each would silence slither at no gas cost.)
    "uninitialized-local SplitMath.creditsOf.previous": "cursor over cumulative sums starts at 0",
    "uninitialized-local AllianceLedger._validateTerms.previous": "party ids are >= 1, so 0 is below any id",
    "uninitialized-local AllianceLedger._checkSum.sum": "sum of the share table starts at 0",
    "uninitialized-local AllianceLedgerState._prefixSums.running": "running share sum starts at 0",
    "uninitialized-local AllianceLedger._validateBands.previous": "band 1's target must be above 0",
    "uninitialized-local AllianceLedgerShapes._setInner.count": "inner ids collected so far start at 0",
    "uninitialized-local AllianceLedgerShapes._setInner.seen": "an id is not a repeat until found again",
    # A memory struct of running totals (zeroed by Solidity), whose rootId is set on the next line.
    "uninitialized-local AllianceLedgerShapes._settleTiers.totals": "running totals start at 0",
    "uninitialized-local AllianceLedgerShapes.settleReversals.totals": "running totals start at 0",
    # One storage layout (AllianceLedgerState) shared by the ledger and its settlement module, which runs
    # by delegatecall: the ledger writes these (registerME/updateME/dissolveME; activation), the module's
    # code only reads them, so slither, analysing each contract alone, sees no write.
    "uninitialized-state AllianceLedgerState._mes | AllianceLedgerState._checkBatch | "
    "AllianceLedgerShapes._checkInner": "written by AllianceLedger, read through the shared layout",
    "uninitialized-state AllianceLedgerState._termsHash | AllianceLedgerState._checkTerms":
        "written by AllianceLedger at activation, read through the shared layout",
    # ECDSA.tryRecover returns (address, RecoverError, bytes32). The error is dropped on purpose: every
    # malformed signature yields address(0), which never equals a signer (registerME/updateME refuse a
    # zero signer), so the caller reports which party's signature is wrong instead of a generic ECDSA
    # revert (see the NatSpec of AllianceLedger._recover).
    "unused-return AllianceLedger._recover | AllianceLedger._recover.(recovered,None,None) = "
    "ECDSA.tryRecover(digest,signature)": "the error is mapped to address(0) by design",
}
FATAL = ("High", "Medium")


def path_of(element):
    names, parent = [], element
    while parent:
        if parent.get("name"):
            names.append(parent["name"])
        parent = parent.get("type_specific_fields", {}).get("parent")
    return ".".join(reversed(names))


def key_of(result):
    return result["check"] + " " + " | ".join(path_of(e) for e in result["elements"])


failed, seen, counts = [], set(), {}
for report in sys.argv[1:]:
    try:
        with open(report, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as err:
        print(f"no slither report {report}: {err}")
        sys.exit(1)
    if not data.get("success"):
        print(f"slither failed on {report}: {data.get('error')}")
        sys.exit(1)
    for result in (data.get("results") or {}).get("detectors", []):
        impact, key = result["impact"], key_of(result)
        if impact in FATAL and key in ACCEPTED:
            seen.add(key)
            impact = f"{impact} (accepted)"
        elif impact in FATAL:
            failed.append(result)
        counts[impact] = counts.get(impact, 0) + 1

print("slither findings by impact:", ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none")
for key in sorted(set(ACCEPTED) - seen):
    print(f"note: accepted finding no longer reported (remove it from scripts/lint.sh): {key}")
for result in failed:
    print(f"NEW {result['impact'].upper()} ({result['check']}): {result['description'].strip()}")
    print(f"    key: {key_of(result)}")
if failed:
    print(f"{len(failed)} high/medium finding(s): fix them, or (false positives only) accept them in scripts/lint.sh")
    sys.exit(1)
PY

echo "== ruff"
"$LINT_VENV/bin/ruff" check ledger scripts tests || status=1
"$LINT_VENV/bin/ruff" format --check ledger scripts tests || status=1

if [ "$status" -ne 0 ]; then
  echo "lint: FAILED"
else
  echo "lint: OK"
fi
exit "$status"
