"""Gas benchmark of the AllianceLedger, with OpenZeppelin 4.9.6's PaymentSplitter as the baseline.

Run with ``make bench``. Ape starts a fresh Anvil (``ethereum:local:foundry``, the same node the tests
use), this script deploys a new ledger and its 6-decimal test token, registers 64 MEs (the party cap) (signers and
payout addresses are Ape test accounts derived from the test mnemonic) and measures the
``gas_used`` of transaction receipts. Every figure is the whole transaction's gas: the 21,000 base,
calldata, execution and logs, exactly what the sender pays for. The results are merged into
``bench/results.json`` (the sections this script owns are replaced, other keys are kept) and printed.

Methodology
-----------
Steady state. Storage writes cost much more when a slot goes from zero to non-zero, which happens
once in an agreement's life, not per event. Every measured transaction therefore runs after a
warm-up of the same kind, so the slots it writes are already non-zero, as they are in production.

``gas_per_event[nN_kK]``
    An agreement of N parties (equal-ish shares, no target tier) is created; a warm-up batch of
    ``WARMUP_EVENTS`` events is settled; then ONE batch of K events is settled and its
    ``gas_used / K`` is the figure. Events are realistic: references like ``INV-2026-11-000123``
    (18 ASCII bytes of a bytes32), amounts drawn uniformly from 1.00 to 5,000.00 units (cents) at 6
    decimals, all in one period (202611), entries encoded as ``amount << 32 | period``.
    ``n5_k1000_tier`` is the same as ``n5_k1000`` with a period target set halfway through the
    measured batch's revenue: its first events are split by the base table, one event crosses the
    target (split by both tables) and the rest by the excess table.
    Every settled batch (warm-ups included) is checked: the ledger's ``totalOwed`` and the sum of the
    parties' balances must both grow by exactly the batch total, or the script fails.

``shapes_gas`` (issue 18: bands, recoup first, nested alliances)
    Measured like ``gas_per_event`` (a warm-up batch of ``WARMUP_EVENTS`` events, then ONE batch of 1,000,
    whole tx gas / 1,000), with the same event data generator. ``n5_b3_k1000``: 5 parties, 3 bands whose
    first target the warm-up passes and whose second and third targets fall at a third and two thirds of
    the measured batch's revenue (the batch crosses two band edges; ``PartiesCreditedByTier``).
    ``n5_recoup_k1000``: 5 parties, a recoup amount (100% to the first party) reached halfway through the
    measured batch (its events split by the recoup table, one by both, the rest by the shares).
    ``nested_n5_i4_k1000``: an outer 5-party alliance whose fifth party is an inner 4-party alliance
    (``settleNested``: each run's credit of that party becomes one event of the inner alliance, split
    there in the same transaction); ``n8_k1000`` is a flat 8-party alliance (``settle``) and
    ``nested_ratio`` = nested / n8 (target <= 2). ``create_n5_b3``: ``createAgreement`` of 5 parties with
    3 bands (target <= 200,000). Checked: ``totalOwed`` and the balances of every ME credited (inner parties
    included) grow by exactly the batch total.

``gas_per_reversal``
    ``n5_k1000``: an agreement of 5 parties settles a warm-up batch and a batch of 1,000 events (as
    above), then ONE ``settleReversals`` batch of 1,000 reversals, each of one of those events (a third
    of its amount, same period), is sent and its ``gas_used / 1000`` is the figure. The parties'
    balances cover the debits (no debt). ``n5_k1000_ratio`` is that figure over
    ``gas_per_event.n5_k1000`` (target <= 2.5). Checked like settlement: ``totalOwed`` and the parties'
    balances both fall by exactly the batch total, and finance receives it.

``agreement_gas``
    ``n5``: one ``createAgreement`` (propose and activate in one transaction, 5 EIP-712 approval
    signatures). ``n5_propose_then_activate``: ``proposeAgreement`` + ``activateAgreement`` of another
    5-party agreement (two transactions, so two 21,000 bases). Both are sent by the platform account.
    ``n5_amend_by_party``: ``proposeAgreement`` of version 2 of that agreement by a party's signer, who
    shows the terms in force (the contract hashes them and finds the signer among their parties).
    ``n5_one_safe``: ``createAgreement`` of 5 parties of which one ME's signer is a 2-of-3 Safe 1.4.1
    (from the npm package; a proxy with the CompatibilityFallbackHandler): the ledger asks the Safe
    through ERC-1271, which checks two owner signatures.

``withdraw_gas``
    A ``withdraw`` by an ME's payout address of its whole balance, in steady state: the ME has a
    balance, other MEs are still owed (``totalOwed`` stays non-zero) and the payout address already
    holds tokens from an earlier withdrawal. (The first withdrawal to a payout address that holds no
    token yet costs ~17,000 more; it is printed for information.)

``payout_gas``
    A payout run (``payout(token, meIds)``) of ``PAYOUT_BATCH`` MEs in one transaction, sent by an
    account with no role; each ME's balance comes from two 50-party agreements settled beforehand.
    ``per_me_k100`` = the run's gas / 100 in steady state: the payout addresses already hold the token
    (a second run after a second settlement), ``totalOwed`` stays non-zero. ``per_me_k100_first`` is
    the first run, whose payout addresses receive the token for the first time (their token balance
    slots go from zero to non-zero). Against ``withdraw_gas`` for one ME paid by its own transaction.

``oz_payment_splitter``
    The baseline is PaymentSplitter (``contracts/bench/OZPaymentSplitter.sol``) with the 5 payees of
    2,000 shares each. One round of K payments is: K ERC-20 ``transfer``s of revenue (same amount
    distribution as above) from a payer into the splitter, then ``release(IERC20 token, address
    account)`` once for each of the 5 payees. ``per_payment_n5_kK`` = (sum of the K transfer gas + the
    5 release gas) / K. A fresh splitter is deployed per K and runs two rounds: the first round is a
    cold start (the splitter's release bookkeeping and the payees' token balances go from zero to
    non-zero) and is printed for information; the second round is the steady state and is the
    recorded figure, like the ledger figures above.

The headline ratio is ``oz_payment_splitter.per_payment_n5_k100 / gas_per_event.n5_k1000``.
Randomness is seeded per measurement (``SEED``), so reruns produce the same calldata and the same gas.

The node is the Anvil the tests use (``scripts/bin/anvil``, without step tracing). It runs
Anvil's default hardfork (recorded as ``meta.hardfork``), while the contracts are compiled for
``meta.evm``; the Prague calldata floor (EIP-7623) is far below every measured transaction's gas.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ape
from ape.api import AccountAPI, ReceiptAPI
from ape.contracts import ContractInstance
from ape.contracts.base import ContractTransaction
from ape.logging import logger

from ledger.chain import eip712
from ledger.chain.writer import EMPTY_TERMS, LedgerWriter, project
from ledger.models import Terms, text_to_bytes32

ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = ROOT / "bench" / "results.json"
NETWORK = "ethereum:local:foundry"

SEED = 20261101
DECIMALS = 6
UNIT = 10**DECIMALS
PERIOD = 202611
ME_COUNT = 64  # the contract's party cap (MAX_PARTIES): the worst case is measured too
WARMUP_EVENTS = 10
BPS = 10_000

# key -> (parties, events in the measured batch, with a target tier)
SETTLE_CASES: dict[str, tuple[int, int, bool]] = {
    "n2_k1000": (2, 1000, False),
    "n5_k1": (5, 1, False),
    "n5_k100": (5, 100, False),
    "n5_k1000": (5, 1000, False),
    "n10_k1000": (10, 1000, False),
    "n50_k1000": (50, 1000, False),
    "n5_k1000_tier": (5, 1000, True),
    "n64_k1000": (64, 1000, False),  # worst case at the party cap
}
SPLITTER_PAYMENTS = (1, 100)
SPLITTER_PAYEES = 5

# Targets from the issue.
TARGET_GAS_PER_EVENT_N5_K1000 = 2_600
TARGET_AGREEMENT_N5 = 150_000
TARGET_PAYOUT_PER_ME = 20_000
PAYOUT_BATCH = 100
TARGET_REVERSAL_RATIO = 2.5
TARGET_BANDS_N5_B3 = 2_750
TARGET_RECOUP = 2_800
TARGET_NESTED_RATIO = 2.0
TARGET_CREATE_N5_B3 = 200_000
BASELINE_N5_K1000 = 2_414.7  # before issue 18: the hot path may rise by at most 2%


class BenchError(RuntimeError):
    """A sanity check failed: the figures would be meaningless."""


@dataclass(frozen=True)
class MEAccounts:
    me_id: int
    signer: AccountAPI
    payout: AccountAPI


@dataclass(frozen=True)
class Event:
    ref: bytes
    amount: int

    @property
    def entry(self) -> int:
        return (self.amount << 32) | PERIOD


@dataclass
class Bench:
    """One deployment with its roles and MEs."""

    ledger: LedgerWriter
    admin: AccountAPI
    platform: AccountAPI
    finance: AccountAPI
    payer: AccountAPI
    mes: list[MEAccounts]

    @property
    def token(self) -> str:
        return self.ledger.token.address


def data_source(key: str) -> random.Random:
    """Each measurement draws its own seeded data, so its figure does not depend on the others."""
    return random.Random(f"{SEED}:{key}")


def amounts(rng: random.Random, count: int) -> list[int]:
    """Revenue amounts of 1.00 to 5,000.00 units (whole cents) at 6 decimals."""
    return [rng.randint(100, 500_000) * (UNIT // 100) for _ in range(count)]


def events(rng: random.Random, first_seq: int, count: int) -> list[Event]:
    """Invoice-like events: reference ``INV-2026-11-<seq>`` and a realistic amount."""
    return [
        Event(text_to_bytes32(f"INV-2026-11-{first_seq + i:06d}"), amount)
        for i, amount in enumerate(amounts(rng, count))
    ]


# -- setup ------------------------------------------------------------------------------------------


def setup() -> Bench:
    """Deploy the ledger and token, register ME_COUNT MEs, fund finance and approve the ledger."""
    test_accounts = ape.accounts.test_accounts
    admin, platform, finance, payer = (test_accounts[i] for i in range(4))
    ledger = LedgerWriter.deploy(admin=admin, platform=platform, finance=finance, sender=admin, token_decimals=DECIMALS)
    mes: list[MEAccounts] = []
    for i in range(ME_COUNT):
        signer, payout = test_accounts.generate_test_account(), test_accounts.generate_test_account()
        me_id = ledger.register_me(f"bench-me-{i + 1:02d}", payout.address, signer.address, sender=platform)
        mes.append(MEAccounts(me_id, signer, payout))
    ledger.token.mint(finance.address, 10**12 * UNIT, sender=finance)
    ledger.token.approve(ledger.address, 2**256 - 1, sender=finance)
    return Bench(ledger, admin, platform, finance, payer, mes)


def equal_shares(n: int) -> list[int]:
    """Basis points summing to 10,000, as equal as possible (the remainder goes to the first ones)."""
    return [BPS // n + (1 if i < BPS % n else 0) for i in range(n)]


def terms_for(bench: Bench, n: int, target: int = 0) -> Terms:
    """Terms among MEs 1..n; with a target, the excess table is the base table reversed."""
    ids = [me.me_id for me in bench.mes[:n]]
    shares = equal_shares(n)
    excess = dict(zip(ids, reversed(shares), strict=True)) if target else None
    return Terms.build(bench.token, dict(zip(ids, shares, strict=True)), target, excess)


def approvals(bench: Bench, agreement_id: bytes, version: int, terms: Terms) -> list[bytes]:
    """Every party's EIP-712 approval of ``version``, in party order."""
    message = bench.ledger.approval_message(agreement_id, version, terms)
    signer_of = {me.me_id: me.signer for me in bench.mes}
    return [eip712.sign(signer_of[p], message) for p in terms.parties]


def create_agreement(bench: Bench, name: str, terms: Terms) -> tuple[bytes, ReceiptAPI]:
    agreement_id = LedgerWriter.agreement_id(name)
    receipt = bench.ledger.create(agreement_id, terms, approvals(bench, agreement_id, 1, terms), sender=bench.platform)
    return agreement_id, receipt


def settle(bench: Bench, agreement_id: bytes, terms: Terms, first_seq: int, batch: Sequence[Event]) -> ReceiptAPI:
    """Settle one batch and check its credits add up to the batch total (fails loudly otherwise)."""
    ledger, token = bench.ledger, bench.token
    owed_before = ledger.total_owed(token)
    balances_before = [ledger.balance_of(p, token) for p in terms.parties]
    receipt = ledger.settle(
        agreement_id,
        1,
        first_seq,
        terms,
        [e.ref for e in batch],
        [e.entry for e in batch],
        sender=bench.finance,
    )
    total = sum(e.amount for e in batch)
    owed_delta = ledger.total_owed(token) - owed_before
    credited = sum(ledger.balance_of(p, token) for p in terms.parties) - sum(balances_before)
    if not owed_delta == credited == total:
        raise BenchError(
            f"batch of {len(batch)} events from seq {first_seq}: total {total}, "
            f"totalOwed grew by {owed_delta}, party balances by {credited}"
        )
    return receipt


# -- measurements -----------------------------------------------------------------------------------


def measure_gas_per_event(bench: Bench, key: str, parties: int, count: int, tiered: bool) -> float:
    """Gas per event of one K-event settle batch that follows a warm-up batch (see module docs)."""
    rng = data_source(key)
    warmup = events(rng, 0, WARMUP_EVENTS)
    measured = events(rng, WARMUP_EVENTS, count)
    # With a tier, the target falls halfway through the measured batch's revenue.
    target = sum(e.amount for e in warmup) + sum(e.amount for e in measured) // 2 if tiered else 0
    terms = terms_for(bench, parties, target)
    agreement_id, _ = create_agreement(bench, f"bench-{key}", terms)
    settle(bench, agreement_id, terms, 0, warmup)
    receipt = settle(bench, agreement_id, terms, WARMUP_EVENTS, measured)
    return receipt.gas_used / count


def settle_any(
    bench: Bench, agreement_id: bytes, terms: Terms, first_seq: int, batch: Sequence[Event], credited: Sequence[int],
    inner: Sequence[tuple[bytes, int, Terms]] = (),
) -> ReceiptAPI:  # fmt: skip
    """``settle`` or ``settleNested``; checks that ``totalOwed`` and the balances of the MEs ``credited``
    (inner alliances' parties included) grow by exactly the batch total."""
    ledger, token = bench.ledger, bench.token
    owed_before = ledger.total_owed(token)
    balances_before = [ledger.balance_of(p, token) for p in credited]
    refs, entries = [e.ref for e in batch], [e.entry for e in batch]
    if terms.nested:
        receipt = ledger.settle_nested(agreement_id, 1, first_seq, terms, refs, entries, inner, sender=bench.finance)
    else:
        receipt = ledger.settle(agreement_id, 1, first_seq, terms, refs, entries, sender=bench.finance)
    total = sum(e.amount for e in batch)
    owed_delta = ledger.total_owed(token) - owed_before
    got = sum(ledger.balance_of(p, token) for p in credited) - sum(balances_before)
    if not owed_delta == got == total:
        raise BenchError(f"batch of {len(batch)} from seq {first_seq}: total {total}, totalOwed +{owed_delta}, "
                         f"balances +{got}")  # fmt: skip
    return receipt


def measure_shapes(bench: Bench) -> dict[str, Any]:
    """The issue-18 cases (module docs)."""
    out: dict[str, Any] = {}
    ids5 = [me.me_id for me in bench.mes[:5]]
    shares5 = dict(zip(ids5, equal_shares(5), strict=True))

    rng = data_source("n5_b3_k1000")
    warmup, measured = events(rng, 0, WARMUP_EVENTS), events(rng, WARMUP_EVENTS, 1000)
    w, m = sum(e.amount for e in warmup), sum(e.amount for e in measured)
    tables = [dict(zip(ids5, t, strict=True)) for t in ([4000, 3000, 1000, 1000, 1000], [0, 2500, 2500, 2500, 2500],
                                                         list(reversed(equal_shares(5))))]  # fmt: skip
    terms = Terms.build(
        bench.token, shares5, bands=list(zip((w // 2, w + m // 3, w + 2 * m // 3), tables, strict=True))
    )
    aid, _ = create_agreement(bench, "bench-n5-b3", terms)
    settle_any(bench, aid, terms, 0, warmup, ids5)
    out["n5_b3_k1000"] = round(settle_any(bench, aid, terms, WARMUP_EVENTS, measured, ids5).gas_used / 1000, 1)

    rng = data_source("n5_recoup_k1000")
    warmup, measured = events(rng, 0, WARMUP_EVENTS), events(rng, WARMUP_EVENTS, 1000)
    recoup = sum(e.amount for e in warmup) + sum(e.amount for e in measured) // 2
    terms = Terms.build(bench.token, shares5, recoup=recoup, recoup_shares={ids5[0]: BPS})
    aid, _ = create_agreement(bench, "bench-n5-recoup", terms)
    settle_any(bench, aid, terms, 0, warmup, ids5)
    out["n5_recoup_k1000"] = round(settle_any(bench, aid, terms, WARMUP_EVENTS, measured, ids5).gas_used / 1000, 1)
    if bench.ledger.agreement(aid).recouped != recoup:
        raise BenchError("the recoup was not reached inside the measured batch")

    ids4 = [me.me_id for me in bench.mes[5:9]]
    inner_terms = Terms.build(bench.token, dict(zip(ids4, equal_shares(4), strict=True)))
    inner_id, _ = create_agreement(bench, "bench-inner-i4", inner_terms)
    outer_terms = Terms.build(bench.token, shares5, nested={ids5[4]: inner_id})
    aid, _ = create_agreement(bench, "bench-nested-n5-i4", outer_terms)
    inner = [(inner_id, 1, inner_terms)]
    rng = data_source("nested_n5_i4_k1000")
    warmup, measured = events(rng, 0, WARMUP_EVENTS), events(rng, WARMUP_EVENTS, 1000)
    credited = ids5[:4] + ids4
    settle_any(bench, aid, outer_terms, 0, warmup, credited, inner)
    nested = settle_any(bench, aid, outer_terms, WARMUP_EVENTS, measured, credited, inner).gas_used / 1000
    flat = measure_gas_per_event(bench, "n8_k1000", 8, 1000, False)
    out["nested_n5_i4_k1000"] = round(nested, 1)
    out["n8_k1000"] = round(flat, 1)
    out["nested_ratio"] = round(nested / flat, 3)

    terms = Terms.build(bench.token, shares5, bands=[(10**9 * (j + 1), t) for j, t in enumerate(tables)])
    _, created = create_agreement(bench, "bench-create-n5-b3", terms)
    out["create_n5_b3"] = created.gas_used
    return out


def measure_gas_per_reversal(bench: Bench, parties: int = 5, count: int = 1000) -> float:
    """Gas per reversal of one batch of ``count`` reversals after the events it reverses (module docs)."""
    rng = data_source(f"reversal-n{parties}-k{count}")
    warmup = events(rng, 0, WARMUP_EVENTS)
    measured = events(rng, WARMUP_EVENTS, count)
    terms = terms_for(bench, parties)
    agreement_id, _ = create_agreement(bench, f"bench-reversal-n{parties}-k{count}", terms)
    settle(bench, agreement_id, terms, 0, warmup)
    settle(bench, agreement_id, terms, WARMUP_EVENTS, measured)
    ledger, token = bench.ledger, bench.token
    first_seq = WARMUP_EVENTS + count
    refs = [text_to_bytes32(f"RET-2026-11-{first_seq + i:06d}") for i in range(count)]
    amounts_ = [max(1, e.amount // 3) for e in measured]
    owed_before = ledger.total_owed(token)
    held_before = ledger.token_balance(token, bench.finance.address)
    receipt = ledger.reverse(
        agreement_id, 1, first_seq, terms, refs, [(a << 32) | PERIOD for a in amounts_], [e.ref for e in measured],
        sender=bench.finance,
    )  # fmt: skip
    total = sum(amounts_)
    owed_delta = owed_before - ledger.total_owed(token)
    returned = ledger.token_balance(token, bench.finance.address) - held_before
    if not owed_delta == returned == total or ledger.total_debt(token) != 0:
        raise BenchError(f"reversal batch: total {total}, totalOwed fell by {owed_delta}, finance got {returned}")
    return receipt.gas_used / count


def measure_agreement_gas(bench: Bench) -> dict[str, int]:
    """createAgreement of 5 parties, proposeAgreement + activateAgreement of another one, and
    createAgreement at the 64-party cap."""
    terms = terms_for(bench, 5)
    _, created = create_agreement(bench, "bench-agreement-create", terms)
    agreement_id = LedgerWriter.agreement_id("bench-agreement-two-step")
    contract = bench.ledger.contract
    proposed = contract.proposeAgreement(agreement_id, terms.as_tuple(), EMPTY_TERMS, sender=bench.platform)
    signatures = approvals(bench, agreement_id, 1, terms)
    activated = bench.ledger.activate(agreement_id, 1, terms, signatures, sender=bench.platform)
    # An amendment proposed by a party's signer, who shows the terms in force (checked on chain).
    party = bench.mes[0].signer
    bench.admin.transfer(party, 10**18)
    amended = contract.proposeAgreement(agreement_id, terms.as_tuple(), terms.as_tuple(), sender=party)
    _, widest = create_agreement(bench, "bench-agreement-n64", terms_for(bench, ME_COUNT))
    with_safe = measure_safe_agreement_gas(bench)
    return {
        "n5": created.gas_used,
        "n5_propose_then_activate": proposed.gas_used + activated.gas_used,
        "n5_amend_by_party": amended.gas_used,
        "n64": widest.gas_used,  # worst case at the party cap
        "n5_one_safe": with_safe,
    }


def measure_safe_agreement_gas(bench: Bench) -> int:
    """createAgreement of 4 key signers and one ME whose signer is a 2-of-3 Safe (see module docs)."""
    import tempfile

    from ledger.chain import safe as safe_lib
    from ledger.services import safes

    owners = [ape.accounts.test_accounts.generate_test_account() for _ in range(3)]
    with tempfile.TemporaryDirectory() as folder:
        store = safes.SafeStore(folder)
        team = safes.create(bench.ledger, store, "bench-team", [o.address for o in owners], 2, sender=bench.admin)
    payout = ape.accounts.test_accounts.generate_test_account()
    me_id = bench.ledger.register_me("bench-safe-me", payout.address, team.address, sender=bench.platform)
    ids = [me.me_id for me in bench.mes[:4]] + [me_id]
    terms = Terms.build(bench.token, dict(zip(ids, equal_shares(5), strict=True)), 0, None)
    agreement_id = LedgerWriter.agreement_id("bench-agreement-safe")
    message = bench.ledger.approval_message(agreement_id, 1, terms)
    signer_of = {me.me_id: me.signer for me in bench.mes}
    safe_message = safe_lib.message(bench.ledger.chain_id, team.address, eip712.digest(message))
    packed = safe_lib.pack({o.address: eip712.sign(o, safe_message) for o in owners[:2]})
    signatures = [packed if p == me_id else eip712.sign(signer_of[p], message) for p in terms.parties]
    return bench.ledger.create(agreement_id, terms, signatures, sender=bench.platform).gas_used


def measure_withdraw_gas(bench: Bench) -> tuple[int, int]:
    """(steady-state withdraw gas, first withdraw gas) of ME 1 from a 2-party agreement's credits."""
    terms = terms_for(bench, 2)
    agreement_id, _ = create_agreement(bench, "bench-withdraw", terms)
    rng = data_source("withdraw")
    me = bench.mes[0]
    bench.admin.transfer(me.payout, 10**18)  # the payout address pays for its own transaction
    gas: list[int] = []
    for round_ in range(2):
        first_seq = round_ * WARMUP_EVENTS
        settle(bench, agreement_id, terms, first_seq, events(rng, first_seq, WARMUP_EVENTS))
        owed = bench.ledger.balance_of(me.me_id, bench.token)
        held = bench.ledger.token_balance(bench.token, me.payout.address)
        receipt = bench.ledger.contract.withdraw(me.me_id, bench.token, sender=me.payout)
        if bench.ledger.token_balance(bench.token, me.payout.address) - held != owed:
            raise BenchError(f"withdraw of ME {me.me_id} did not pay its balance {owed}")
        gas.append(receipt.gas_used)
    first, steady = gas
    return steady, first


def measure_payout_gas(bench: Bench) -> dict[str, float]:
    """Per-ME gas of a payout run of PAYOUT_BATCH MEs: steady state and first time (see module docs)."""
    ledger, token = bench.ledger, bench.token
    test_accounts = ape.accounts.test_accounts
    ids, signer_of = [], {}
    for i in range(PAYOUT_BATCH):
        signer, payout = test_accounts.generate_test_account(), test_accounts.generate_test_account()
        me_id = ledger.register_me(f"bench-payout-{i + 1:03d}", payout.address, signer.address, sender=bench.platform)
        ids.append(me_id)
        signer_of[me_id] = signer
    halves = []
    for h in range(2):
        part = ids[h * 50 : (h + 1) * 50]
        terms = Terms.build(token, dict(zip(part, equal_shares(50), strict=True)))
        agreement_id = LedgerWriter.agreement_id(f"bench-payout-{h}")
        message = ledger.approval_message(agreement_id, 1, terms)
        signatures = [eip712.sign(signer_of[p], message) for p in terms.parties]
        ledger.create(agreement_id, terms, signatures, sender=bench.platform)
        halves.append((agreement_id, terms))
    rng = data_source("payout")
    gas = []
    for round_ in range(2):
        for agreement_id, terms in halves:
            settle(
                bench, agreement_id, terms, round_ * WARMUP_EVENTS, events(rng, round_ * WARMUP_EVENTS, WARMUP_EVENTS)
            )
        owed = ledger.balances_of(ids, token)
        total_before = ledger.total_owed(token)
        receipt = ledger.contract.payout(token, ids, sender=bench.payer)
        if any(ledger.balances_of(ids, token)) or total_before - ledger.total_owed(token) != sum(owed):
            raise BenchError("the payout run did not pay every ME its whole balance")
        gas.append(receipt.gas_used / PAYOUT_BATCH)
    first, steady = gas
    return {f"per_me_k{PAYOUT_BATCH}": round(steady, 1), f"per_me_k{PAYOUT_BATCH}_first": round(first, 1)}


def erc20_release(splitter: ContractInstance) -> ContractTransaction:
    """PaymentSplitter's ``release(IERC20 token, address account)`` overload, selected explicitly."""
    for abi in splitter.contract_type.mutable_methods:
        if abi.name == "release" and [i.type for i in abi.inputs] == ["address", "address"]:
            return ContractTransaction(abi, splitter.address)
    raise BenchError("PaymentSplitter has no release(address,address)")


def splitter_round(
    bench: Bench, splitter: ContractInstance, payees: Sequence[AccountAPI], payments: Sequence[int]
) -> float:
    """One round: a token transfer into the splitter per payment, then one ERC-20 release per payee."""
    token, payer = bench.ledger.token, bench.payer
    token.mint(payer.address, sum(payments), sender=bench.finance)
    gas = sum(token.transfer(splitter.address, amount, sender=payer).gas_used for amount in payments)
    release = erc20_release(splitter)
    held = sum(int(token.balanceOf(p.address)) for p in payees)
    pending = int(token.balanceOf(splitter.address))
    gas += sum(release(token.address, p.address, sender=payer).gas_used for p in payees)
    released = sum(int(token.balanceOf(p.address)) for p in payees) - held
    # Each release rounds down: less than one unit per payee stays behind (and is released later).
    if not 0 <= pending - released < SPLITTER_PAYEES:
        raise BenchError(f"splitter released {released} of the {pending} it held")
    return gas / len(payments)


def measure_payment_splitter(bench: Bench, count: int) -> tuple[float, float]:
    """(steady-state, cold) per-payment gas of a fresh 5-payee PaymentSplitter with ``count`` payments."""
    payees = [ape.accounts.test_accounts.generate_test_account() for _ in range(SPLITTER_PAYEES)]
    splitter = project().OZPaymentSplitter.deploy(
        [p.address for p in payees], [BPS // SPLITTER_PAYEES] * SPLITTER_PAYEES, sender=bench.admin
    )
    rng = data_source(f"splitter-{count}")
    cold = splitter_round(bench, splitter, payees, amounts(rng, count))
    steady = splitter_round(bench, splitter, payees, amounts(rng, count))
    return steady, cold


# -- results ----------------------------------------------------------------------------------------


def node_meta() -> dict[str, Any]:
    solidity = ape.config.get_config("solidity")
    client = str(ape.chain.provider.make_request("web3_clientVersion", []))  # e.g. "anvil/v1.7.1"
    node = ape.chain.provider.make_request("anvil_nodeInfo", [])
    return {
        "solc": str(solidity.version),
        "optimizer_runs": int(solidity.optimization_runs),
        "evm": str(solidity.evm_version),
        "anvil": client.split("/v", 1)[-1],
        "hardfork": str(node.get("hardFork", "")).lower(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def merge_results(path: Path, sections: dict[str, Any]) -> dict[str, Any]:
    """Replace this script's sections in the results file, keeping the keys other benchmarks own."""
    results = json.loads(path.read_text()) if path.exists() else {}
    results.update(sections)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return results


def print_table(sections: dict[str, Any], info: dict[str, float]) -> None:
    def row(label: str, value: float | int, note: str = "") -> None:
        figure = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
        print(f"  {label:<46} {figure:>12}  {note}")

    def verdict(value: float, target: float) -> str:
        return f"target <= {target:,} {'OK' if value <= target else 'MISSED'}"

    per_event = sections["gas_per_event"]
    print("\ngas per settled event (one batch after a warm-up batch, whole tx gas / events)")
    for key, value in per_event.items():
        row(key, value, verdict(value, TARGET_GAS_PER_EVENT_N5_K1000) if key == "n5_k1000" else "")
    base = per_event["n5_k1000"]
    print(
        f"  {f'n5_k1000 against {BASELINE_N5_K1000:,} before issue 18':<46} "
        f"{base / BASELINE_N5_K1000 - 1:>+11.2%}"
        f"  target <= +2% {'OK' if base <= BASELINE_N5_K1000 * 1.02 else 'MISSED'}"
    )
    shapes = sections["shapes_gas"]
    print("\nagreement shapes (issue 18; one batch of 1,000 after a warm-up, whole tx gas / events)")
    row(
        "n5_b3_k1000 (3 bands, two edges crossed)",
        shapes["n5_b3_k1000"],
        verdict(shapes["n5_b3_k1000"], TARGET_BANDS_N5_B3),
    )
    row(
        "n5_recoup_k1000 (recoup reached in the batch)",
        shapes["n5_recoup_k1000"],
        verdict(shapes["n5_recoup_k1000"], TARGET_RECOUP),
    )
    row("nested_n5_i4_k1000 (outer 5, inner 4)", shapes["nested_n5_i4_k1000"])
    row("n8_k1000 (flat 8 parties)", shapes["n8_k1000"])
    print(
        f"  {'nested_ratio (nested / flat 8)':<46} {shapes['nested_ratio']:>11.3f}x  "
        f"{verdict(shapes['nested_ratio'], TARGET_NESTED_RATIO)}"
    )
    row(
        "create_n5_b3 (createAgreement, 5 parties, 3 bands)",
        shapes["create_n5_b3"],
        verdict(shapes["create_n5_b3"], TARGET_CREATE_N5_B3),
    )
    reversal = sections["gas_per_reversal"]
    print("\ngas per reversal (one settleReversals batch of 1,000 after the events, whole tx gas / reversals)")
    row("n5_k1000", reversal["n5_k1000"])
    ratio = reversal["n5_k1000_ratio"]
    print(f"  {'n5_k1000_ratio (to a settled event)':<46} {ratio:>11.3f}x  {verdict(ratio, TARGET_REVERSAL_RATIO)}")
    print("\nagreements")
    for key, value in sections["agreement_gas"].items():
        row(key, value, verdict(value, TARGET_AGREEMENT_N5) if key == "n5" else "")
    print("\nwithdraw")
    row("withdraw (payout already holds tokens)", sections["withdraw_gas"])
    row("first withdraw to a payout (info)", info["withdraw_first"])
    print(f"\npayout run of {PAYOUT_BATCH} MEs, per ME paid")
    for key, value in sections["payout_gas"].items():
        row(
            key,
            value,
            verdict(value, TARGET_PAYOUT_PER_ME) if key == f"per_me_k{PAYOUT_BATCH}" else "first time (info)",
        )
    print("\nOpenZeppelin 4.9.6 PaymentSplitter, 5 payees: (k transfers + 5 releases) / k")
    for key, value in sections["oz_payment_splitter"].items():
        row(key, value, "steady state (second round)")
        row(f"{key} (cold first round, info)", info[f"{key}_cold"])
    ratio = sections["oz_payment_splitter"]["per_payment_n5_k100"] / per_event["n5_k1000"]
    print(f"\n  PaymentSplitter per_payment_n5_k100 / ledger n5_k1000 = {ratio:.2f}x")
    meta = sections["meta"]
    print(
        f"\n  solc {meta['solc']} (runs {meta['optimizer_runs']}, {meta['evm']}), anvil {meta['anvil']} "
        f"({meta['hardfork']}), {meta['date']}"
    )


def timed(label: str, run: Callable[[], Any]) -> Any:
    start = time.monotonic()
    value = run()
    print(f"  {label:<30} {time.monotonic() - start:6.1f} s", file=sys.stderr)
    return value


def main() -> int:
    logger.set_level("WARNING")
    with ape.networks.parse_network_choice(NETWORK):
        bench = timed("deploy, register MEs", setup)
        gas_per_event = {
            key: timed(f"settle {key}", lambda c=case, k=key: measure_gas_per_event(bench, k, *c))
            for key, case in SETTLE_CASES.items()
        }
        shapes = timed("bands, recoup, nested", lambda: measure_shapes(bench))
        per_reversal = timed("reverse n5_k1000", lambda: measure_gas_per_reversal(bench))
        agreement_gas = timed("agreements", lambda: measure_agreement_gas(bench))
        withdraw_gas, withdraw_first = timed("withdraw", lambda: measure_withdraw_gas(bench))
        info: dict[str, float] = {"withdraw_first": withdraw_first}
        payout_gas = timed("payout run", lambda: measure_payout_gas(bench))
        splitter: dict[str, float] = {}
        for count in SPLITTER_PAYMENTS:
            key = f"per_payment_n{SPLITTER_PAYEES}_k{count}"
            splitter[key], info[f"{key}_cold"] = timed(
                f"PaymentSplitter k={count}", lambda c=count: measure_payment_splitter(bench, c)
            )
        sections = {
            "gas_per_event": {key: round(value, 1) for key, value in gas_per_event.items()},
            "gas_per_reversal": {
                "n5_k1000": round(per_reversal, 1),
                "n5_k1000_ratio": round(per_reversal / gas_per_event["n5_k1000"], 3),
            },
            "agreement_gas": agreement_gas,
            "shapes_gas": shapes,
            "withdraw_gas": withdraw_gas,
            "payout_gas": payout_gas,
            "oz_payment_splitter": {key: round(value, 1) for key, value in splitter.items()},
            "meta": node_meta(),
        }
    merge_results(RESULTS_PATH, sections)
    print_table(sections, info)
    print(f"\nwrote {RESULTS_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
