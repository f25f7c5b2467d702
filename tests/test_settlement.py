"""Settlement on the contract: exact splits equal to the Python money math, tiers, exactly-once,
closed periods, dissolved parties, withdrawals, and conservation after every action."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import money
from ledger.models import text_to_bytes32

from .helpers import KITCHEN, UNIT, isolated, revert_of, sign_all

PERIOD = 202611


def entries_of(events):
    return [(amount << 32) | period for amount, period in events]


def refs_of(prefix, n, start=0):
    return [text_to_bytes32(f"{prefix}-{i}") for i in range(start, start + n)]


def assert_conserved(ledger, token, me_ids):
    """Tokens held == total owed == sum of every ME's balance."""
    held = ledger.token_balance(token, ledger.address)
    owed = ledger.total_owed(token)
    assert held == owed == sum(ledger.balance_of(m, token) for m in me_ids)


def expected_credits(terms, first_seq, events, period_revenue=None):
    """What the Python money math says each party gets for `events` settled from `first_seq`."""
    revenue = dict(period_revenue or {})
    totals = [0] * len(terms.parties)
    for k, (amount, period) in enumerate(events):
        split = money.split_event(
            first_seq + k, amount, revenue.get(period, 0), terms.shares, terms.target, terms.excess_shares
        )
        revenue[period] = revenue.get(period, 0) + amount
        totals = [t + c for t, c in zip(totals, split.credits, strict=True)]
    return totals


def test_settle_credits_exactly_and_logs_the_batch(ledger, funded, make_alliance, token, kitchen):
    aid, terms = make_alliance("kitchen", {"fridge": 4000, "oven": 3000, "recipe-app": 2000, "logistics": 1000})
    events = [(1_000_001, PERIOD), (3, PERIOD), (777 * UNIT, PERIOD)]
    receipt = ledger.settle(aid, 1, 0, terms, refs_of("inv", 3), entries_of(events), sender=funded)
    want = expected_credits(terms, 0, events)
    assert [ledger.balance_of(p, token) for p in terms.parties] == want
    assert sum(want) == sum(a for a, _ in events)
    assert ledger.agreement(aid).next_seq == 3
    assert_conserved(ledger, token, kitchen.values())

    logs = list(ledger.logs(["RevenueSettled", "PartiesCredited"], from_block=receipt.block_number))
    settled, credited = logs[0].args, logs[1].args
    assert settled["firstSeq"] == 0 and [bytes(r) for r in settled["refs"]] == refs_of("inv", 3)
    assert list(settled["entries"]) == entries_of(events)
    assert credited["period"] == PERIOD and credited["count"] == 3
    assert [b + x for b, x in zip(credited["baseCredits"], credited["excessCredits"], strict=True)] == want


@st.composite
def alliances(draw):
    n = draw(st.integers(2, 4))
    cuts = sorted(draw(st.lists(st.integers(0, 10_000), min_size=n - 1, max_size=n - 1)))
    edges = [0, *cuts, 10_000]
    shares = [edges[i + 1] - edges[i] for i in range(n)]
    target = draw(st.one_of(st.just(0), st.integers(1, 10**12)))
    excess = []
    if target:
        cuts = sorted(draw(st.lists(st.integers(0, 10_000), min_size=n - 1, max_size=n - 1)))
        edges = [0, *cuts, 10_000]
        excess = [edges[i + 1] - edges[i] for i in range(n)]
    events = draw(
        st.lists(
            st.tuples(
                st.one_of(st.integers(1, 1_000), st.integers(1, 10**12), st.integers(1, 2**128 - 1)),
                st.sampled_from([1, 2, 202611]),
            ),
            min_size=1,
            max_size=12,
        )
    )
    return shares, target, excess, events


@given(case=alliances())
def test_contract_credits_equal_the_python_money_math(chain, ledger, funded, token, kitchen, signers, case):

    shares, target, excess, events = case
    names = KITCHEN[: len(shares)]
    # Keep each period's total below 2**128 (the contract's per-period revenue field).
    events = [(a if a < 2**120 else a >> 10, p) for a, p in events]
    with isolated(chain):
        from ledger.chain.writer import LedgerWriter
        from ledger.models import Terms

        terms = Terms.build(
            token,
            {kitchen[m]: s for m, s in zip(names, shares, strict=True)},
            target,
            {kitchen[m]: s for m, s in zip(names, excess, strict=True)} if excess else {},
        )
        aid = LedgerWriter.agreement_id("prop")
        by_id = {kitchen[m]: signers[KITCHEN.index(m)] for m in names}
        ledger.create(aid, terms, sign_all(ledger, [by_id[p] for p in terms.parties], aid, 1, terms), sender=funded)
        # Events reach 2**120 each, beyond what the fixture gave finance: finance gets what this case pays in.
        ledger.token.mint(funded.address, sum(a for a, _ in events), sender=funded)
        # Settle in two batches so the tier state carries across transactions.
        cut = len(events) // 2
        first, second = events[:cut], events[cut:]
        if first:
            ledger.settle(aid, 1, 0, terms, refs_of("a", len(first)), entries_of(first), sender=funded)
        ledger.settle(aid, 1, len(first), terms, refs_of("b", len(second)), entries_of(second), sender=funded)
        want = expected_credits(terms, 0, events)
        assert [ledger.balance_of(p, token) for p in terms.parties] == want
        assert sum(want) == sum(a for a, _ in events)
        assert_conserved(ledger, token, kitchen.values())
        for period in {p for _, p in events}:
            assert ledger.period(aid, period)[0] == sum(a for a, p in events if p == period)


def test_an_event_crossing_the_target_is_split_across_both_tables(ledger, funded, make_alliance, token, kitchen):
    aid, terms = make_alliance(
        "bet", {"fridge": 5000, "oven": 5000}, target=1_000, excess={"fridge": 8000, "oven": 2000}
    )
    receipt = ledger.settle(
        aid, 1, 0, terms, refs_of("t", 2), entries_of([(900, PERIOD), (300, PERIOD)]), sender=funded
    )
    credited = list(ledger.logs(["PartiesCredited"], from_block=receipt.block_number))[0].args
    assert sum(credited["baseCredits"]) == 1_000 and sum(credited["excessCredits"]) == 200
    assert list(credited["excessCredits"]) == [160, 40]
    # A new period starts from zero again.
    ledger.settle(aid, 1, 2, terms, refs_of("t", 1, 2), entries_of([(1_000, PERIOD + 1)]), sender=funded)
    assert ledger.period(aid, PERIOD + 1)[0] == 1_000
    assert [ledger.balance_of(p, token) for p in terms.parties] == expected_credits(
        terms, 0, [(900, PERIOD), (300, PERIOD), (1_000, PERIOD + 1)]
    )


def test_the_same_batch_twice_is_refused_by_the_cursor(ledger, funded, make_alliance, token, kitchen):
    aid, terms = make_alliance("once", {"fridge": 5000, "oven": 5000})
    batch = (refs_of("x", 3), entries_of([(10, PERIOD)] * 3))
    ledger.settle(aid, 1, 0, terms, *batch, sender=funded)
    before = [ledger.balance_of(p, token) for p in terms.parties]
    err = revert_of(lambda: ledger.settle(aid, 1, 0, terms, *batch, sender=funded))
    assert (err.name, err.args_["expected"], err.args_["given"]) == ("SettlementOutOfSequence", 3, 0)
    # An overlapping batch and a partial retry (a later but stale cursor) are refused the same way.
    assert (
        revert_of(
            lambda: ledger.settle(aid, 1, 2, terms, refs_of("x", 2, 2), entries_of([(10, PERIOD)] * 2), sender=funded)
        ).name
        == "SettlementOutOfSequence"
    )
    assert (
        revert_of(
            lambda: ledger.settle(aid, 1, 4, terms, refs_of("y", 1), entries_of([(10, PERIOD)]), sender=funded)
        ).name
        == "SettlementOutOfSequence"
    )
    assert [ledger.balance_of(p, token) for p in terms.parties] == before
    assert_conserved(ledger, token, kitchen.values())


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("zero amount", "RevenueAmountInvalid"),
        ("amount over 128 bits", "RevenueAmountInvalid"),
        ("empty reference", "RevenueReferenceEmpty"),
        ("period zero", "PeriodInvalid"),
        ("empty batch", "SettlementBatchInvalid"),
        ("length mismatch", "SettlementBatchInvalid"),
        ("wrong version", "AgreementVersionNotActive"),
        ("wrong terms", "AgreementTermsMismatch"),
    ],
)
def test_settle_rejects_malformed_batches(ledger, funded, make_alliance, token, case, error):
    aid, terms = make_alliance("bad", {"fridge": 5000, "oven": 5000})
    version, refs, entries, use_terms = 1, refs_of("r", 1), entries_of([(5, PERIOD)]), terms
    if case == "zero amount":
        entries = entries_of([(0, PERIOD)])
    elif case == "amount over 128 bits":
        entries = entries_of([(2**128, PERIOD)])
    elif case == "empty reference":
        refs = [b"\0" * 32]
    elif case == "period zero":
        entries = entries_of([(5, 0)])
    elif case == "empty batch":
        refs, entries = [], []
    elif case == "length mismatch":
        refs = refs_of("r", 2)
    elif case == "wrong version":
        version = 2
    else:
        use_terms = terms.model_copy(update={"shares": (4000, 6000)})
    assert revert_of(lambda: ledger.settle(aid, version, 0, use_terms, refs, entries, sender=funded)).name == error


def test_only_finance_settles_and_closes_periods(ledger, funded, make_alliance, attacker, platform, signers):
    aid, terms = make_alliance("roles", {"fridge": 5000, "oven": 5000})
    for account in (attacker, platform, signers[0]):
        err = revert_of(
            lambda: ledger.settle(aid, 1, 0, terms, refs_of("r", 1), entries_of([(5, PERIOD)]), sender=account)
        )
        assert err.name == "AccessControlUnauthorizedAccount"
        assert (
            revert_of(lambda: ledger.close_period(aid, PERIOD, sender=account)).name
            == "AccessControlUnauthorizedAccount"
        )


def test_a_closed_period_rejects_later_events(ledger, funded, make_alliance):
    aid, terms = make_alliance("close", {"fridge": 5000, "oven": 5000})
    ledger.settle(aid, 1, 0, terms, refs_of("c", 1), entries_of([(50, PERIOD)]), sender=funded)
    receipt = ledger.close_period(aid, PERIOD, sender=funded)
    closed = list(ledger.logs(["PeriodClosed"], from_block=receipt.block_number))[0].args
    assert (closed["period"], closed["revenue"]) == (PERIOD, 50)
    err = revert_of(
        lambda: ledger.settle(aid, 1, 1, terms, refs_of("c", 1, 1), entries_of([(5, PERIOD)]), sender=funded)
    )
    assert (err.name, err.args_["period"]) == ("PeriodAlreadyClosed", PERIOD)
    assert revert_of(lambda: ledger.close_period(aid, PERIOD, sender=funded)).name == "PeriodAlreadyClosed"
    # Other periods still settle.
    ledger.settle(aid, 1, 1, terms, refs_of("c", 1, 1), entries_of([(5, PERIOD + 1)]), sender=funded)


def test_a_batch_touching_a_closed_period_is_refused_whole(ledger, funded, make_alliance, token, kitchen):
    aid, terms = make_alliance("whole", {"fridge": 5000, "oven": 5000})
    ledger.close_period(aid, PERIOD, sender=funded)
    mixed = entries_of([(5, PERIOD + 1), (5, PERIOD)])
    assert (
        revert_of(lambda: ledger.settle(aid, 1, 0, terms, refs_of("w", 2), mixed, sender=funded)).name
        == "PeriodAlreadyClosed"
    )
    assert ledger.period(aid, PERIOD + 1)[0] == 0
    assert_conserved(ledger, token, kitchen.values())


def test_an_agreement_naming_a_dissolved_me_cannot_settle_until_amended(
    ledger, funded, make_alliance, platform, kitchen, signers, token
):

    from ledger.models import Terms

    aid, terms = make_alliance("dissolve", {"fridge": 5000, "oven": 5000})
    ledger.settle(aid, 1, 0, terms, refs_of("d", 1), entries_of([(100, PERIOD)]), sender=funded)
    ledger.dissolve_me(kitchen["oven"], sender=platform)
    err = revert_of(
        lambda: ledger.settle(aid, 1, 1, terms, refs_of("d", 1, 1), entries_of([(100, PERIOD)]), sender=funded)
    )
    assert (err.name, err.args_["meId"]) == ("AgreementPartyDissolved", kitchen["oven"])
    # Amend without the dissolved ME; every remaining party signs; settlement resumes.
    amended = Terms.build(token, {kitchen["fridge"]: 6000, kitchen["recipe-app"]: 4000})
    ledger.propose(aid, amended, sender=platform)
    ledger.activate(aid, 2, amended, sign_all(ledger, [signers[0], signers[2]], aid, 2, amended), sender=platform)
    ledger.settle(aid, 2, 1, amended, refs_of("d", 1, 1), entries_of([(100, PERIOD)]), sender=funded)
    # The dissolved ME keeps its balance and can still withdraw it.
    owed = ledger.balance_of(kitchen["oven"], token)
    assert owed == 50


def test_a_terminated_agreement_cannot_settle(ledger, funded, make_alliance, signers):
    from ledger.chain import eip712

    aid, terms = make_alliance("ended", {"fridge": 5000, "oven": 5000})
    message = ledger.termination_message(aid, 1)
    ledger.terminate(aid, terms, [eip712.sign(s, message) for s in signers[:2]], sender=funded)
    err = revert_of(lambda: ledger.settle(aid, 1, 0, terms, refs_of("e", 1), entries_of([(5, PERIOD)]), sender=funded))
    assert err.name == "AgreementNotActive"


def test_settlement_pulls_exactly_the_batch_total_from_finance(ledger, funded, make_alliance, token):
    aid, terms = make_alliance("pull", {"fridge": 5000, "oven": 5000})
    before = ledger.token_balance(token, funded.address)
    ledger.settle(aid, 1, 0, terms, refs_of("p", 2), entries_of([(7, PERIOD), (11, PERIOD)]), sender=funded)
    assert before - ledger.token_balance(token, funded.address) == 18


def test_settlement_without_allowance_is_refused_and_books_nothing(ledger, finance, make_alliance, token, kitchen):
    aid, terms = make_alliance("noallow", {"fridge": 5000, "oven": 5000})
    ledger.token.mint(finance.address, 100, sender=finance)
    ledger.token.approve(ledger.address, 0, sender=finance)
    err = revert_of(lambda: ledger.settle(aid, 1, 0, terms, refs_of("n", 1), entries_of([(5, PERIOD)]), sender=finance))
    assert err.name == "ERC20InsufficientAllowance"
    assert ledger.agreement(aid).next_seq == 0
    assert_conserved(ledger, token, kitchen.values())


def test_withdraw_pays_the_payout_address_once(
    ledger, funded, make_alliance, token, kitchen, payouts, signers, attacker
):
    aid, terms = make_alliance("pay", {"fridge": 5000, "oven": 5000})
    ledger.settle(aid, 1, 0, terms, refs_of("w", 1), entries_of([(1_001, PERIOD)]), sender=funded)
    owed = ledger.balance_of(kitchen["fridge"], token)
    for account in (attacker, signers[0], funded):
        err = revert_of(lambda: ledger.withdraw(kitchen["fridge"], token, sender=account))
        assert err.name == "WithdrawCallerNotPayout" and err.args_["caller"] == account.address
    before = ledger.token_balance(token, payouts[0].address)
    assert ledger.withdraw(kitchen["fridge"], token, sender=payouts[0]) == owed
    assert ledger.token_balance(token, payouts[0].address) - before == owed
    assert ledger.balance_of(kitchen["fridge"], token) == 0
    assert revert_of(lambda: ledger.withdraw(kitchen["fridge"], token, sender=payouts[0])).name == "NothingToWithdraw"
    assert_conserved(ledger, token, kitchen.values())
    log = list(ledger.logs(["Withdrawn"]))[-1].args
    assert (log["meId"], log["to"], log["amount"]) == (kitchen["fridge"], payouts[0].address, owed)


def test_a_dissolved_me_can_still_withdraw(ledger, funded, make_alliance, token, kitchen, payouts, platform):
    aid, terms = make_alliance("gone", {"fridge": 5000, "oven": 5000})
    ledger.settle(aid, 1, 0, terms, refs_of("g", 1), entries_of([(10, PERIOD)]), sender=funded)
    ledger.dissolve_me(kitchen["oven"], sender=platform)
    assert ledger.withdraw(kitchen["oven"], token, sender=payouts[1]) == 5
    assert_conserved(ledger, token, kitchen.values())


def test_a_batch_across_periods_credits_each_period_run(ledger, funded, make_alliance, token):
    aid, terms = make_alliance("runs", {"fridge": 5000, "oven": 5000}, target=100, excess={"fridge": 10_000, "oven": 0})
    events = [(60, 1), (60, 2), (60, 1), (60, 2)]
    receipt = ledger.settle(aid, 1, 0, terms, refs_of("m", 4), entries_of(events), sender=funded)
    runs = list(ledger.logs(["PartiesCredited"], from_block=receipt.block_number))
    assert [(r.args["period"], r.args["firstSeq"], r.args["count"]) for r in runs] == [
        (1, 0, 1),
        (2, 1, 1),
        (1, 2, 1),
        (2, 3, 1),
    ]
    assert ledger.period(aid, 1)[0] == 120 and ledger.period(aid, 2)[0] == 120
    assert [ledger.balance_of(p, token) for p in terms.parties] == expected_credits(terms, 0, events)
