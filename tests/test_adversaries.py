"""Adversaries against the contract: reentrant tokens and payout receivers, non-standard tokens and
decimals, the low-decimal rounding attack, and signature replay across chains, deployments, versions,
agreements, terminations and ME-update nonces.

The test-only contracts are in contracts/test/ (ReentrantToken, ReentrantReceiver, NoReturnToken,
FalseReturnToken, FeeOnTransferToken). Plain refusals already covered elsewhere are not repeated here:
tests/test_agreements.py (approvals over other typed data, re-activation after termination),
tests/test_registry.py (a consent used twice), tests/test_reverts_and_events.py (a 1% fee token).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from eth_utils import keccak

from ledger import money
from ledger.chain import eip712
from ledger.chain.writer import LedgerWriter, contract_errors, project
from ledger.models import AgreementStatus, Terms, text_to_bytes32

from .helpers import KITCHEN, revert_of, sign_all

PERIOD = 202611
BPS = money.BPS
MAX = 2**256 - 1
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
REENTRANT_SELECTOR = keccak(text="ReentrancyGuardReentrantCall()")[:4]
ON_TRANSFER_FROM, ON_TRANSFER = 1, 2  # ReentrantToken.Hook


def entries_of(events):
    return [(amount << 32) | period for amount, period in events]


def refs_of(prefix, n, start=0):
    return [text_to_bytes32(f"{prefix}-{i}") for i in range(start, start + n)]


def raw(call):
    """A raw contract call, its revert decoded into ContractRevert like LedgerWriter's own calls."""
    with contract_errors():
        return call()


def assert_books_exact(ledger, token: str, me_ids) -> int:
    """Tokens held == total owed == the sum of the balances; returns that amount."""
    held = int(project().LedgerTestToken.at(token).balanceOf(ledger.address))
    owed = ledger.total_owed(token)
    assert held == owed == sum(ledger.balance_of(m, token) for m in me_ids)
    return owed


def expected_credits(terms: Terms, first_seq: int, amounts) -> list[int]:
    """The rotating rule in Python (ledger.money) for untiered terms."""
    totals = [0] * len(terms.parties)
    for k, amount in enumerate(amounts):
        credits = money.split(amount, terms.shares, money.offset_of(first_seq + k))
        totals = [t + c for t, c in zip(totals, credits, strict=True)]
    return totals


@dataclass
class Alliance:
    id: bytes
    terms: Terms


@pytest.fixture
def alliance_of(ledger, kitchen, signers, platform):
    """Creates an active agreement in any token among kitchen MEs and extra MEs given with their signer."""

    def make(name: str, token: str, shares: dict, extra_signers: dict | None = None) -> Alliance:
        signer_of = {kitchen[m]: signers[KITCHEN.index(m)] for m in KITCHEN} | (extra_signers or {})
        ids = {(kitchen[k] if isinstance(k, str) else k): bps for k, bps in shares.items()}
        terms = Terms.build(token, ids)
        aid = LedgerWriter.agreement_id(name)
        ledger.create(
            aid, terms, sign_all(ledger, [signer_of[p] for p in terms.parties], aid, 1, terms), sender=platform
        )
        return Alliance(aid, terms)

    return make


# ===================================================================================================
# Reentrancy
# ===================================================================================================


@pytest.fixture
def evil(ledger, admin, funded):
    """A ReentrantToken held by finance (approved), with FINANCE_ROLE: the worst case, a token that may
    itself call settle and closePeriod, so that only the reentrancy guard stands in the way."""
    token = project().ReentrantToken.deploy(sender=admin)
    token.mint(funded.address, 10**24, sender=admin)
    token.approve(ledger.address, MAX, sender=funded)
    ledger.grant_role("FINANCE_ROLE", token.address, sender=admin)
    return token


@pytest.fixture
def mallory(ledger, platform, attacker, evil):
    """An ME whose payout address is the malicious token itself (so the token may call withdraw)."""
    return ledger.register_me("mallory", evil.address, attacker.address, sender=platform)


def reentry_refused(contract) -> bool:
    return (
        contract.attempts() == 1
        and not contract.lastSuccess()
        and bytes(contract.lastReturnData()) == REENTRANT_SELECTOR
    )


@pytest.mark.parametrize("bubble", [False, True], ids=["swallowed", "bubbled"])
def test_a_token_reentering_settle_from_transfer_from_is_refused(ledger, funded, evil, kitchen, alliance_of, bubble):
    a = alliance_of("re-settle", evil.address, {"fridge": 5000, "oven": 5000})
    # The nested batch is valid in every respect (the cursor is already 1 when the token is called).
    nested = ledger.contract.settle.encode_input(
        a.id, 1, 1, a.terms.as_tuple(), refs_of("nested", 1), entries_of([(1_000, PERIOD)])
    )
    evil.arm(ON_TRANSFER_FROM, ledger.address, nested, bubble, sender=funded)
    settle = lambda: ledger.settle(a.id, 1, 0, a.terms, refs_of("outer", 1), entries_of([(100, PERIOD)]), sender=funded)  # noqa: E731
    if bubble:
        assert revert_of(settle).name == "ReentrancyGuardReentrantCall"
        assert ledger.agreement(a.id).next_seq == 0
        assert assert_books_exact(ledger, evil.address, kitchen.values()) == 0
    else:
        settle()
        assert reentry_refused(evil)
        assert ledger.agreement(a.id).next_seq == 1
        assert [ledger.balance_of(p, evil.address) for p in a.terms.parties] == [50, 50]
        assert assert_books_exact(ledger, evil.address, kitchen.values()) == 100
        # Control: outside a settlement the very same call (the token pays for it) goes through, so the
        # guard was the only thing that stopped it.
        evil.mint(evil.address, 1_000, sender=funded)
        raw(lambda: evil.execute(evil.address, evil.approve.encode_input(ledger.address, MAX), sender=funded))
        raw(lambda: evil.execute(ledger.address, nested, sender=funded))
        assert ledger.agreement(a.id).next_seq == 2
        assert assert_books_exact(ledger, evil.address, kitchen.values()) == 1_100


def test_a_token_reentering_withdraw_during_settlement_is_refused(
    ledger, funded, evil, kitchen, mallory, alliance_of, attacker
):
    a = alliance_of("re-withdraw", evil.address, {"fridge": 5000, mallory: 5000}, {mallory: attacker})
    ledger.settle(a.id, 1, 0, a.terms, refs_of("w", 1), entries_of([(100, PERIOD)]), sender=funded)
    nested = ledger.contract.withdraw.encode_input(mallory, evil.address)
    evil.arm(ON_TRANSFER_FROM, ledger.address, nested, False, sender=funded)
    ledger.settle(a.id, 1, 1, a.terms, refs_of("w", 1, 1), entries_of([(100, PERIOD)]), sender=funded)
    assert reentry_refused(evil)
    me_ids = [*kitchen.values(), mallory]
    assert [ledger.balance_of(p, evil.address) for p in a.terms.parties] == [100, 100]
    assert assert_books_exact(ledger, evil.address, me_ids) == 200
    # Outside a settlement the same call is an ordinary withdrawal of exactly the balance.
    raw(lambda: evil.execute(ledger.address, nested, sender=attacker))
    assert int(evil.balanceOf(evil.address)) == 100
    assert assert_books_exact(ledger, evil.address, me_ids) == 100


def test_closing_the_period_from_inside_settlement_has_no_effect_on_the_money(
    ledger, funded, evil, kitchen, alliance_of
):
    """closePeriod has no reentrancy guard; re-entered during the pull it succeeds, but settlement has
    already booked everything by then (checks-effects-interactions), so the period closes with the batch
    in it and the balances are exact."""
    a = alliance_of("re-close", evil.address, {"fridge": 5000, "oven": 5000})
    evil.arm(
        ON_TRANSFER_FROM, ledger.address, ledger.contract.closePeriod.encode_input(a.id, PERIOD), True, sender=funded
    )
    ledger.settle(a.id, 1, 0, a.terms, refs_of("c", 2), entries_of([(61, PERIOD), (40, PERIOD)]), sender=funded)
    assert evil.attempts() == 1 and evil.lastSuccess()
    assert ledger.period(a.id, PERIOD) == (101, True)
    assert [ledger.balance_of(p, evil.address) for p in a.terms.parties] == expected_credits(a.terms, 0, [61, 40])
    assert assert_books_exact(ledger, evil.address, kitchen.values()) == 101
    err = revert_of(
        lambda: ledger.settle(a.id, 1, 2, a.terms, refs_of("c", 1, 2), entries_of([(5, PERIOD)]), sender=funded)
    )
    assert err.name == "PeriodAlreadyClosed"


@pytest.mark.parametrize("nested", ["withdraw the same ME", "withdraw another ME", "settle"])
def test_a_token_reentering_from_the_withdrawal_transfer_is_refused(
    ledger, funded, evil, kitchen, mallory, alliance_of, platform, attacker, nested
):
    # Two MEs paid to the token; each would be allowed to withdraw on its own.
    mallory2 = ledger.register_me("mallory-2", evil.address, attacker.address, sender=platform)
    a = alliance_of("re-pay", evil.address, {mallory: 5000, mallory2: 5000}, {mallory: attacker, mallory2: attacker})
    ledger.settle(a.id, 1, 0, a.terms, refs_of("p", 1), entries_of([(300, PERIOD)]), sender=funded)
    data = {
        "withdraw the same ME": ledger.contract.withdraw.encode_input(mallory, evil.address),
        "withdraw another ME": ledger.contract.withdraw.encode_input(mallory2, evil.address),
        "settle": ledger.contract.settle.encode_input(
            a.id, 1, 1, a.terms.as_tuple(), refs_of("p", 1, 1), entries_of([(300, PERIOD)])
        ),
    }[nested]
    evil.arm(ON_TRANSFER, ledger.address, data, False, sender=attacker)
    raw(
        lambda: evil.execute(
            ledger.address, ledger.contract.withdraw.encode_input(mallory, evil.address), sender=attacker
        )
    )
    assert reentry_refused(evil)
    assert int(evil.balanceOf(evil.address)) == 150  # paid once, exactly
    assert (ledger.balance_of(mallory, evil.address), ledger.balance_of(mallory2, evil.address)) == (0, 150)
    assert ledger.agreement(a.id).next_seq == 1
    assert assert_books_exact(ledger, evil.address, [mallory, mallory2]) == 150
    if nested == "withdraw another ME":  # control: on its own, that withdrawal is allowed
        raw(lambda: evil.execute(ledger.address, data, sender=attacker))
        assert int(evil.balanceOf(evil.address)) == 300
        assert assert_books_exact(ledger, evil.address, [mallory, mallory2]) == 0


@pytest.mark.parametrize("bubble", [False, True], ids=["swallowed", "bubbled"])
def test_a_payout_receiver_notified_by_the_token_cannot_withdraw_twice(
    ledger, funded, evil, kitchen, alliance_of, platform, attacker, admin, bubble
):
    """ERC-777/ERC-1363 style: the token calls the receiving contract, which calls withdraw again."""
    receiver = project().ReentrantReceiver.deploy(ledger.address, sender=attacker)
    eve = ledger.register_me("eve", receiver.address, attacker.address, sender=platform)
    a = alliance_of("re-receiver", evil.address, {"fridge": 5000, eve: 5000}, {eve: attacker})
    ledger.settle(a.id, 1, 0, a.terms, refs_of("r", 1), entries_of([(1_001, PERIOD)]), sender=funded)
    owed = ledger.balance_of(eve, evil.address)
    withdraw = ledger.contract.withdraw.encode_input(eve, evil.address)
    evil.setNotifyReceivers(True, sender=admin)
    receiver.setReentry(withdraw, bubble, sender=attacker)
    me_ids = [*kitchen.values(), eve]
    pull = lambda: raw(lambda: receiver.callLedger(withdraw, sender=attacker))  # noqa: E731
    if bubble:
        assert revert_of(pull).name == "ReentrancyGuardReentrantCall"
        assert ledger.balance_of(eve, evil.address) == owed and int(evil.balanceOf(receiver.address)) == 0
        assert assert_books_exact(ledger, evil.address, me_ids) == 1_001
    else:
        pull()
        assert receiver.notifications() == 1 and reentry_refused(receiver)
        assert int(evil.balanceOf(receiver.address)) == owed
        assert ledger.balance_of(eve, evil.address) == 0
        assert assert_books_exact(ledger, evil.address, me_ids) == 1_001 - owed


# ===================================================================================================
# Token behaviours
# ===================================================================================================


@pytest.fixture
def token_for(ledger, admin, funded):
    """Deploys a test token contract, mints to finance and approves the ledger."""

    def deploy(contract: str, *args):
        token = getattr(project(), contract).deploy(*args, sender=admin)
        token.mint(funded.address, 10**40, sender=admin)
        token.approve(ledger.address, MAX, sender=funded)
        return token

    return deploy


def withdraw_all(ledger, token: str, terms: Terms, payout_of) -> list[int]:
    """Withdraws every party's balance; returns what each payout address received."""
    received = []
    for me_id in terms.parties:
        owed = ledger.balance_of(me_id, token)
        payout = payout_of(me_id)
        before = int(project().LedgerTestToken.at(token).balanceOf(payout.address))
        assert ledger.withdraw(me_id, token, sender=payout) == owed
        received.append(int(project().LedgerTestToken.at(token).balanceOf(payout.address)) - before)
    return received


@pytest.fixture
def payout_of(kitchen, payouts):
    by_id = {kitchen[m]: payouts[i] for i, m in enumerate(KITCHEN)}
    return lambda me_id: by_id[me_id]


def test_a_token_without_return_values_settles_and_pays_exactly(
    ledger, funded, token_for, kitchen, alliance_of, payout_of
):
    """USDT-style transfer/transferFrom that return nothing: SafeERC20 accepts them."""
    usdt = token_for("NoReturnToken", 6)
    a = alliance_of("usdt", usdt.address, {"fridge": 4000, "oven": 3500, "recipe-app": 2500})
    amounts = [1_000_001, 3, 777_000_000]
    ledger.settle(a.id, 1, 0, a.terms, refs_of("u", 3), entries_of([(x, PERIOD) for x in amounts]), sender=funded)
    want = expected_credits(a.terms, 0, amounts)
    assert [ledger.balance_of(p, usdt.address) for p in a.terms.parties] == want
    assert assert_books_exact(ledger, usdt.address, kitchen.values()) == sum(amounts)
    assert withdraw_all(ledger, usdt.address, a.terms, payout_of) == want
    assert assert_books_exact(ledger, usdt.address, kitchen.values()) == 0


def test_a_token_without_return_values_that_takes_a_fee_is_refused(ledger, funded, token_for, admin, alliance_of):
    usdt = token_for("NoReturnToken", 6)
    usdt.setFee(10, sender=admin)  # 0.1%
    a = alliance_of("usdt-fee", usdt.address, {"fridge": 5000, "oven": 5000})
    err = revert_of(
        lambda: ledger.settle(a.id, 1, 0, a.terms, refs_of("f", 1), entries_of([(10_000, PERIOD)]), sender=funded)
    )
    assert (err.name, err.args_["expected"], err.args_["received"]) == ("TokenTransferShortfall", 10_000, 9_990)
    assert ledger.agreement(a.id).next_seq == 0 and ledger.total_owed(usdt.address) == 0


def test_a_fee_switched_on_after_settlement_costs_the_payout_not_the_books(
    ledger, funded, token_for, admin, kitchen, alliance_of, payout_of
):
    """USDT can turn a transfer fee on at any time: the ledger still pays (and books) the whole balance; the
    token takes its fee from the payment, and the ledger's holdings still equal what it owes."""
    usdt = token_for("NoReturnToken", 6)
    a = alliance_of("usdt-late-fee", usdt.address, {"fridge": 5000, "oven": 5000})
    ledger.settle(a.id, 1, 0, a.terms, refs_of("l", 1), entries_of([(20_000, PERIOD)]), sender=funded)
    usdt.setFee(100, sender=admin)  # 1%
    assert withdraw_all(ledger, usdt.address, a.terms, payout_of) == [9_900, 9_900]
    assert assert_books_exact(ledger, usdt.address, kitchen.values()) == 0


def test_a_token_returning_false_is_refused_on_settle_and_on_withdraw(
    ledger, funded, token_for, admin, kitchen, alliance_of, payouts
):
    bad = token_for("FalseReturnToken")
    a = alliance_of("false", bad.address, {"fridge": 5000, "oven": 5000})
    bad.setFailing(True, sender=admin)
    err = revert_of(
        lambda: ledger.settle(a.id, 1, 0, a.terms, refs_of("b", 1), entries_of([(10, PERIOD)]), sender=funded)
    )
    assert err.name == "SafeERC20FailedOperation" and err.args_["token"].lower() == bad.address.lower()
    assert ledger.agreement(a.id).next_seq == 0 and assert_books_exact(ledger, bad.address, kitchen.values()) == 0

    bad.setFailing(False, sender=admin)
    ledger.settle(a.id, 1, 0, a.terms, refs_of("b", 1), entries_of([(10, PERIOD)]), sender=funded)
    bad.setFailing(True, sender=admin)
    err = revert_of(lambda: ledger.withdraw(kitchen["fridge"], bad.address, sender=payouts[0]))
    assert err.name == "SafeERC20FailedOperation"
    assert ledger.balance_of(kitchen["fridge"], bad.address) == 5  # nothing lost with the failed payment
    assert assert_books_exact(ledger, bad.address, kitchen.values()) == 10
    bad.setFailing(False, sender=admin)
    assert ledger.withdraw(kitchen["fridge"], bad.address, sender=payouts[0]) == 5
    assert int(bad.balanceOf(payouts[0].address)) == 5


def test_a_fee_on_transfer_token_is_booked_only_when_nothing_is_lost(ledger, funded, token_for, kitchen, alliance_of):
    """FeeOnTransferToken burns floor(1%): a batch of 99 base units arrives whole and is booked; 100 loses 1
    and is refused."""
    fee = token_for("FeeOnTransferToken")
    a = alliance_of("fee-edge", fee.address, {"fridge": 5000, "oven": 5000})
    ledger.settle(a.id, 1, 0, a.terms, refs_of("e", 2), entries_of([(50, PERIOD), (49, PERIOD)]), sender=funded)
    assert assert_books_exact(ledger, fee.address, kitchen.values()) == 99
    err = revert_of(
        lambda: ledger.settle(a.id, 1, 2, a.terms, refs_of("e", 1, 2), entries_of([(100, PERIOD)]), sender=funded)
    )
    assert (err.name, err.args_["expected"], err.args_["received"]) == ("TokenTransferShortfall", 100, 99)
    assert assert_books_exact(ledger, fee.address, kitchen.values()) == 99


@pytest.mark.parametrize("decimals", [0, 2, 6, 18])
def test_tokens_of_any_decimals_settle_and_withdraw_exactly(
    ledger, funded, admin, kitchen, alliance_of, payout_of, decimals
):
    token = project().LedgerTestToken.deploy(f"D{decimals}", f"D{decimals}", decimals, admin, funded, sender=admin)
    assert int(token.decimals()) == decimals
    token.mint(funded.address, 10**40, sender=funded)
    token.approve(ledger.address, MAX, sender=funded)
    a = alliance_of(f"decimals-{decimals}", token.address, {"fridge": 3333, "oven": 3333, "recipe-app": 3334})
    amounts = [
        1,  # one base unit
        10**decimals,  # one whole token
        money.parse_amount("1234567.89" if decimals >= 2 else "1234567", decimals),
        10 ** (9 + decimals) + 1,  # a billion tokens and a base unit
    ]
    ledger.settle(a.id, 1, 0, a.terms, refs_of("d", 4), entries_of([(x, PERIOD) for x in amounts]), sender=funded)
    want = expected_credits(a.terms, 0, amounts)
    assert [ledger.balance_of(p, token.address) for p in a.terms.parties] == want
    assert sum(want) == sum(amounts)
    assert withdraw_all(ledger, token.address, a.terms, payout_of) == want
    assert assert_books_exact(ledger, token.address, kitchen.values()) == 0


# ===================================================================================================
# The low-decimal rounding attack (0xSplits v2 audit)
# ===================================================================================================
#
# A majority party splits revenue into many tiny events hoping each event's rounding favours it. With a
# naive rule (floor every share, give the remainder to the first party) it wins every unit that does not
# divide evenly. With the rotating rule each party gets floor or ceil of its exact share per event, and
# the extra units rotate with the event's sequence number.

TABLES = [(9999, 1), (1, 9999), (6667, 3333), (5000, 3000, 2000), (3334, 3333, 3333), (9000, 999, 1)]


def naive_split(amount: int, shares) -> list[int]:
    credits = [amount * s // BPS for s in shares]
    credits[0] += amount - sum(credits)
    return credits


def drift(shares, amounts, first_seq: int = 0) -> tuple[float, list[int]]:
    """The largest |credited - exact| of any party after any prefix of the events, in base units, and
    each party's total credit. Checks on the way that every credit is the floor or the ceiling of the
    exact share."""
    totals, exact, worst = [0] * len(shares), [0] * len(shares), 0
    for k, amount in enumerate(amounts):
        credits = money.split(amount, shares, money.offset_of(first_seq + k))
        for i, share in enumerate(shares):
            assert amount * share // BPS <= credits[i] <= -(-amount * share // BPS)  # floor or ceil
            totals[i] += credits[i]
            exact[i] += amount * share
            worst = max(worst, abs(totals[i] * BPS - exact[i]))
    return worst / BPS, totals


@pytest.mark.parametrize("shares", TABLES, ids=lambda s: "/".join(map(str, s)))
def test_tiny_events_keep_every_party_within_four_units_of_its_share(shares):
    """Constant tiny amounts (1, 2, 3 base units), 10,000 events (a full cycle of offsets) from two starting
    sequence numbers: no party ever drifts more than 4 units from its exact share (3.75 is the largest seen
    over these tables), and after the full cycle every party has exactly its share."""
    for amount in (1, 2, 3):
        for first in (0, 12_345):
            worst, totals = drift(shares, [amount] * 10_000, first)
            assert worst <= 4
            assert totals == [amount * s for s in shares]  # 10,000 x amount x s / 10,000


def test_random_tiny_amounts_do_not_drift_towards_anyone():
    """Random amounts of 1-3 units (independent of the sequence numbers) over 200 streams of 1,000 events:
    the minority's error is noise around zero, while the naive rule takes its whole share every time."""
    shares = (6667, 3333)
    errors, naive_errors = [], []
    for seed in range(200):
        rng = random.Random(seed)
        amounts = [rng.randint(1, 3) for _ in range(1_000)]
        exact = sum(amounts) * shares[1] / BPS
        minority = sum(money.split(a, shares, money.offset_of(k))[1] for k, a in enumerate(amounts))
        errors.append(minority - exact)
        naive_errors.append(sum(naive_split(a, shares)[1] for a in amounts) - exact)
    # No systematic shift: the mean error is within the constant-amount bound (measured +1.0), while a
    # single stream's noise is about +-9 units (at most 30 here, 4.4% of the minority's ~670).
    assert abs(sum(errors) / len(errors)) <= 4
    assert max(abs(e) for e in errors) < 0.05 * 670
    assert max(naive_errors) < -600  # naive: the minority loses (nearly) everything, every time


@pytest.mark.parametrize(
    ("decimals", "shares", "stream"),
    [
        (0, {"fridge": 6667, "oven": 3333}, "ones"),
        (2, {"fridge": 9000, "oven": 999, "recipe-app": 1}, "random 1-3"),
    ],
)
def test_the_contract_defeats_the_tiny_event_attack(
    ledger, funded, admin, kitchen, alliance_of, decimals, shares, stream
):
    """1,000 events of 1-3 base units in a 0- or 2-decimal token, settled in two batches on the contract:
    the credits are the rotating rule's; the minority parties get their share (to within a few units) where
    the naive rule would give them nothing at all."""
    token = project().LedgerTestToken.deploy("Tiny", "TNY", decimals, admin, funded, sender=admin)
    token.mint(funded.address, 10**12, sender=funded)
    token.approve(ledger.address, MAX, sender=funded)
    a = alliance_of(f"tiny-{decimals}", token.address, shares)
    rng = random.Random(7)
    amounts = [1] * 1_000 if stream == "ones" else [rng.randint(1, 3) for _ in range(1_000)]
    for start in (0, 500):
        batch = amounts[start : start + 500]
        ledger.settle(
            a.id, 1, start, a.terms, refs_of("t", 500, start), entries_of([(x, PERIOD) for x in batch]), sender=funded
        )
    got = [ledger.balance_of(p, token.address) for p in a.terms.parties]
    assert got == expected_credits(a.terms, 0, amounts)
    exact = [sum(amounts) * s / BPS for s in a.terms.shares]
    naive = [sum(c) for c in zip(*(naive_split(x, a.terms.shares) for x in amounts), strict=True)]
    bound = 4 if stream == "ones" else 0.05 * max(exact[1:])
    assert all(abs(g - e) <= bound for g, e in zip(got, exact, strict=True)), (got, exact)
    assert naive[1:] == [0] * (len(naive) - 1) and got[1] > 0.9 * exact[1]  # the attack's prize, denied
    assert_books_exact(ledger, token.address, kitchen.values())


def steered_amount(shares, seq: int) -> int:
    """The amount of 1-3 units whose rounding at `seq` favours the first (majority) party most."""
    offset = money.offset_of(seq)
    return max((1, 2, 3), key=lambda a: money.split(a, shares, offset)[0] * BPS - a * shares[0])


def test_amounts_chosen_by_sequence_number_steer_less_than_one_unit_per_event(
    ledger, funded, admin, kitchen, alliance_of
):
    """The offset is public, so whoever picks each event's amount knowing its seq (finance, trusted to
    report revenue as it happened) can steer the rounding unit of each event (IAllianceLedger.sol, the
    rounding NatSpec). Bounded: under one base unit per event, and less than naive rounding (floor,
    remainder to the first party) hands the majority without any steering."""
    token = project().LedgerTestToken.deploy("Tiny", "TNY", 0, admin, funded, sender=admin)
    token.mint(funded.address, 10**9, sender=funded)
    token.approve(ledger.address, MAX, sender=funded)
    a = alliance_of("steered", token.address, {"fridge": 6667, "oven": 3333})
    amounts = [steered_amount(a.terms.shares, seq) for seq in range(300)]
    ledger.settle(a.id, 1, 0, a.terms, refs_of("s", 300), entries_of([(x, PERIOD) for x in amounts]), sender=funded)
    majority = ledger.balance_of(kitchen["fridge"], token.address)
    exact = sum(amounts) * 6667 / BPS
    naive = sum(x - x * 3333 // BPS for x in amounts)  # the minority's floor, the remainder to the majority
    gain = majority - exact
    assert 0 < gain < len(amounts) / 2, f"majority got {majority}, exact share {exact:.1f}"
    assert gain < (naive - exact) / 1.5


# ===================================================================================================
# Signature replay
# ===================================================================================================


@pytest.fixture
def two_party(token, kitchen) -> Terms:
    return Terms.build(token, {kitchen["fridge"]: 6000, kitchen["oven"]: 4000})


def approvals(signers, chain_id, ledger_address, agreement_id, version, terms):
    message = eip712.approval_message(chain_id, ledger_address, agreement_id, version, terms)
    return [eip712.sign(s, message) for s in signers]


def terminations(signers, chain_id, ledger_address, agreement_id, version):
    message = eip712.termination_message(chain_id, ledger_address, agreement_id, version)
    return [eip712.sign(s, message) for s in signers]


@pytest.fixture
def second_ledger(admin, platform, finance, signers, payouts) -> LedgerWriter:
    """Another deployment on the same chain with the same MEs (same ids, signers and payouts)."""
    other = LedgerWriter.deploy(admin=admin, platform=platform, finance=finance, sender=admin, token_decimals=None)
    for i, name in enumerate(KITCHEN):
        other.register_me(name, payouts[i].address, signers[i].address, sender=platform)
    return other


def test_approvals_and_terminations_for_another_chain_id_are_refused(ledger, two_party, signers, platform):
    aid, pair = LedgerWriter.agreement_id("chain-replay"), signers[:2]
    foreign = approvals(pair, ledger.chain_id + 1, ledger.address, aid, 1, two_party)
    err = revert_of(lambda: ledger.create(aid, two_party, foreign, sender=platform))
    assert (err.name, err.args_["meId"]) == ("AgreementSignatureInvalid", two_party.parties[0])
    ledger.create(aid, two_party, approvals(pair, ledger.chain_id, ledger.address, aid, 1, two_party), sender=platform)
    foreign_end = terminations(pair, ledger.chain_id + 1, ledger.address, aid, 1)
    assert revert_of(lambda: ledger.terminate(aid, two_party, foreign_end, sender=platform)).name == (
        "AgreementSignatureInvalid"
    )
    assert ledger.agreement(aid).status == AgreementStatus.ACTIVE


def test_signatures_for_one_deployment_are_refused_by_another(
    ledger, second_ledger, two_party, signers, platform, kitchen, accounts
):
    aid, pair = LedgerWriter.agreement_id("deployment-replay"), signers[:2]
    terms_b = two_party
    signed_for_a = sign_all(ledger, pair, aid, 1, two_party)
    err = revert_of(lambda: second_ledger.create(aid, terms_b, signed_for_a, sender=platform))
    assert err.name == "AgreementSignatureInvalid"
    ledger.create(aid, two_party, signed_for_a, sender=platform)  # where they belong, they work
    second_ledger.create(aid, terms_b, sign_all(second_ledger, pair, aid, 1, terms_b), sender=platform)
    end_a = [eip712.sign(s, ledger.termination_message(aid, 1)) for s in pair]
    assert revert_of(lambda: second_ledger.terminate(aid, terms_b, end_a, sender=platform)).name == (
        "AgreementSignatureInvalid"
    )
    # An ME-update consent: both deployments have the fridge at nonce 0 with the same signer.
    new_payout, new_signer = accounts[14].address, accounts[15].address
    consent_a = ledger.sign_me_update(signers[0], kitchen["fridge"], new_payout, new_signer)
    err = revert_of(
        lambda: second_ledger.update_me(kitchen["fridge"], new_payout, new_signer, consent_a, sender=platform)
    )
    assert err.name == "MEConsentInvalid" and err.args_["signer"].lower() == signers[0].address.lower()
    ledger.update_me(kitchen["fridge"], new_payout, new_signer, consent_a, sender=platform)
    assert second_ledger.me(kitchen["fridge"]).signer == signers[0].address


def test_signatures_for_another_version_are_refused(ledger, two_party, signers, platform, finance):
    aid, pair = LedgerWriter.agreement_id("version-replay"), signers[:2]
    ledger.create(aid, two_party, sign_all(ledger, pair, aid, 1, two_party), sender=platform)
    v1_end = [eip712.sign(s, ledger.termination_message(aid, 1)) for s in pair]
    # An amendment with the very same terms still needs fresh approvals: the version is signed.
    assert ledger.propose(aid, two_party, sender=signers[0]) == 2
    v1_approvals = sign_all(ledger, pair, aid, 1, two_party)
    assert revert_of(lambda: ledger.activate(aid, 2, two_party, v1_approvals, sender=platform)).name == (
        "AgreementSignatureInvalid"
    )
    ledger.activate(aid, 2, two_party, sign_all(ledger, pair, aid, 2, two_party), sender=finance)
    # Termination signatures collected while version 1 was in force do not end version 2.
    assert revert_of(lambda: ledger.terminate(aid, two_party, v1_end, sender=platform)).name == (
        "AgreementSignatureInvalid"
    )
    ledger.terminate(
        aid, two_party, [eip712.sign(s, ledger.termination_message(aid, 2)) for s in pair], sender=platform
    )
    assert ledger.agreement(aid).status == AgreementStatus.TERMINATED


def test_signatures_for_another_agreement_id_are_refused(ledger, two_party, signers, platform):
    first, second, pair = LedgerWriter.agreement_id("id-one"), LedgerWriter.agreement_id("id-two"), signers[:2]
    signed_first = sign_all(ledger, pair, first, 1, two_party)
    ledger.create(first, two_party, signed_first, sender=platform)
    # Same terms, same version, another id.
    assert revert_of(lambda: ledger.create(second, two_party, signed_first, sender=platform)).name == (
        "AgreementSignatureInvalid"
    )
    ledger.create(second, two_party, sign_all(ledger, pair, second, 1, two_party), sender=platform)
    end_first = [eip712.sign(s, ledger.termination_message(first, 1)) for s in pair]
    assert revert_of(lambda: ledger.terminate(second, two_party, end_first, sender=platform)).name == (
        "AgreementSignatureInvalid"
    )
    ledger.terminate(first, two_party, end_first, sender=platform)
    assert ledger.agreement(second).status == AgreementStatus.ACTIVE


def test_approvals_collected_before_a_termination_are_dead_after_it(ledger, two_party, signers, platform, token):
    """Version 1 in force, version 2 proposed and fully approved, then the agreement ends: neither the
    version 2 approvals nor the original version 1 approvals (through createAgreement) revive it."""
    aid, pair = LedgerWriter.agreement_id("revive"), signers[:2]
    v1 = sign_all(ledger, pair, aid, 1, two_party)
    ledger.create(aid, two_party, v1, sender=platform)
    amended = Terms.build(token, {p: 5000 for p in two_party.parties})
    assert ledger.propose(aid, amended, sender=platform) == 2
    v2 = sign_all(ledger, pair, aid, 2, amended)
    ledger.terminate(
        aid, two_party, [eip712.sign(s, ledger.termination_message(aid, 1)) for s in pair], sender=platform
    )
    assert revert_of(lambda: ledger.activate(aid, 2, amended, v2, sender=platform)).name == "AgreementTerminated"
    assert revert_of(lambda: ledger.create(aid, two_party, v1, sender=platform)).name == "AgreementExists"
    agreement = ledger.agreement(aid)
    assert (agreement.status, agreement.active_version, agreement.latest_version) == (AgreementStatus.TERMINATED, 1, 2)


def test_a_high_s_copy_of_a_valid_approval_is_refused(ledger, two_party, signers, platform):
    """The malleable twin (s -> n - s, v flipped) of a valid signature recovers to nobody (OpenZeppelin
    ECDSA refuses high s), so a signature has exactly one accepted encoding."""
    aid, pair = LedgerWriter.agreement_id("malleable"), signers[:2]
    signed = sign_all(ledger, pair, aid, 1, two_party)
    r, s, v = signed[0][:32], int.from_bytes(signed[0][32:64], "big"), signed[0][64]
    twin = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])  # 27 <-> 28
    assert eip712.recover(ledger.approval_message(aid, 1, two_party), twin) == pair[0].address  # same signer...
    err = revert_of(lambda: ledger.create(aid, two_party, [twin, signed[1]], sender=platform))
    assert err.name == "AgreementSignatureInvalid" and int(err.args_["recovered"], 16) == 0  # ...refused on-chain
    ledger.create(aid, two_party, signed, sender=platform)


def test_an_me_update_consent_is_bound_to_its_nonce_me_fields_and_chain(ledger, platform, kitchen, signers, accounts):
    fridge, oven = kitchen["fridge"], kitchen["oven"]
    p1, s1 = ledger.me(fridge).payout, signers[0].address
    p2, s2 = accounts[14].address, accounts[15].address

    def refused(me_id, payout, signer, consent):
        err = revert_of(lambda: ledger.update_me(me_id, payout, signer, consent, sender=platform))
        assert err.name == "MEConsentInvalid"
        return err

    # An ME whose signer is also the fridge's: a consent for the fridge does not move it.
    twin = ledger.register_me("fridge-twin", p1, s1, sender=platform)
    consent = ledger.sign_me_update(signers[0], fridge, p2, s2)
    refused(twin, p2, s2, consent)
    refused(fridge, accounts[16].address, s2, consent)  # another payout than the one consented to
    refused(fridge, p2, accounts[16].address, consent)  # another signer
    other_chain = eip712.me_update_message(ledger.chain_id + 1, ledger.address, fridge, p2, s2, 0)
    refused(fridge, p2, s2, eip712.sign(signers[0], other_chain))
    # A -> B -> A: when the first signer is back in charge, its first consent (nonce 0) is stale.
    ledger.update_me(fridge, p2, s2, consent, sender=platform)
    back = ledger.sign_me_update(accounts[15], fridge, p1, s1)
    ledger.update_me(fridge, p1, s1, back, sender=platform)
    assert (ledger.me(fridge).signer, ledger.me(fridge).nonce) == (s1, 2)
    err = refused(fridge, p2, s2, consent)
    assert err.args_["recovered"].lower() != s1.lower()  # the nonce-2 digest does not recover to the signer
    # A consent that was signed but never used goes stale when another update lands first.
    unused = ledger.sign_me_update(signers[1], oven, p2, s2)
    ledger.update_me(
        oven, p2, signers[1].address, ledger.sign_me_update(signers[1], oven, p2, signers[1].address), sender=platform
    )
    refused(oven, p2, s2, unused)
    assert ledger.me(twin).signer == s1 and ledger.me(oven).signer == signers[1].address
