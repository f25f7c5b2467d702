"""Reversals: the debit rule (ledger/money.py against a plain model), the contract's settleReversals
(exact debits, debts, netting, conservation after every action), and the settler's link checks (every
refusal names the row, nothing is sent)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import money
from ledger.errors import InputError
from ledger.models import RevenueEvent, text_to_bytes32
from ledger.services.settlement import Settler

from .helpers import UNIT, revert_of

PERIOD = 202611
NEXT = 202612


def entries_of(events):
    return [(amount << 32) | period for amount, period in events]


def refs_of(prefix, n, start=0):
    return [text_to_bytes32(f"{prefix}-{i}") for i in range(start, start + n)]


def assert_invariant(ledger, token, me_ids):
    """held == totalOwed == sum of balances; totalDebt == sum of debts; never both for one ME."""
    held = ledger.token_balance(token, ledger.address)
    balances = [ledger.balance_of(m, token) for m in me_ids]
    debts = [ledger.debt_of(m, token) for m in me_ids]
    assert held == ledger.total_owed(token) == sum(balances)
    assert ledger.total_debt(token) == sum(debts)
    assert not any(b and d for b, d in zip(balances, debts, strict=True))


# ---------------------------------------------------------------------------------------------------
# The money math, against a plain model (no chain)
# ---------------------------------------------------------------------------------------------------


@st.composite
def tables(draw, n):
    cuts = sorted(draw(st.lists(st.integers(0, 10_000), min_size=n - 1, max_size=n - 1)))
    edges = [0, *cuts, 10_000]
    return [edges[i + 1] - edges[i] for i in range(n)]


@st.composite
def histories(draw):
    """Terms, and a random sequence of settlements, partial reversals and withdrawals."""
    n = draw(st.integers(2, 5))
    shares = draw(tables(n))
    target = draw(st.one_of(st.just(0), st.integers(1, 5_000)))
    excess = draw(tables(n)) if target else []
    actions = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("settle"), st.integers(1, 3_000), st.sampled_from([1, 2])),
                st.tuples(st.just("reverse"), st.integers(0, 10**6), st.sampled_from([1, 2]), st.integers(1, 3_000)),
                st.tuples(st.just("withdraw"), st.integers(0, n - 1)),
            ),
            min_size=1,
            max_size=40,
        )
    )
    return shares, target, excess, actions


@given(histories())
def test_random_settlements_and_partial_reversals_are_exact_and_conserved(history):
    """Each reversal's debits add up to it; debts are netted exactly from later credits; the plain model's
    conservation holds after every action: held == sum of balances, debts == sum of debts, never both."""
    shares, target, excess, actions = history
    n = len(shares)
    balance, debt = [0] * n, [0] * n
    held = paid_in = returned = withdrawn = 0
    revenue = {1: 0, 2: 0}
    originals: list[list[int]] = []  # [amount, reversed so far]
    seq = 0
    credited_total = debited_total = 0
    for action in actions:
        if action[0] == "settle":
            _, amount, period = action
            split = money.split_event(seq, amount, revenue[period], shares, target, excess)
            assert sum(split.credits) == amount
            revenue[period] += amount
            netted_total = 0
            for i, credit in enumerate(split.credits):
                before = balance[i] + 0, debt[i]
                balance[i], debt[i], netted = money.credit_account(balance[i], debt[i], credit)
                assert netted == min(before[1], credit)
                assert balance[i] - debt[i] == before[0] - before[1] + credit
                netted_total += netted
            paid_in += amount - netted_total
            held += amount - netted_total
            credited_total += amount
            originals.append([amount, 0])
        elif action[0] == "reverse":
            if not originals:
                continue
            _, pick, period, amount = action
            original = originals[pick % len(originals)]
            amount = min(amount, original[0] - original[1])
            if amount == 0:
                continue
            original[1] += amount
            before = revenue[period]
            split = money.split_reversal(seq, amount, before, shares, target, excess)
            assert sum(split.credits) == amount, "the debits add up to the reversal"
            above = sum(split.excess)
            assert above == (min(amount, max(0, before - target)) if target else 0)
            revenue[period] = money.revenue_after_reversal(before, amount)
            assert revenue[period] == max(0, before - amount)
            for i, d in enumerate(split.credits):
                old = balance[i], debt[i]
                balance[i], debt[i], covered = money.debit_account(balance[i], debt[i], d)
                assert covered == min(old[0], d)
                assert balance[i] - debt[i] == old[0] - old[1] - d
                returned += covered
                held -= covered
            debited_total += amount
        else:
            i = action[1]
            withdrawn += balance[i]
            held -= balance[i]
            balance[i] = 0
        seq += 1
        assert held == sum(balance) >= 0
        assert all(not (b and d) for b, d in zip(balance, debt, strict=True))
        assert sum(balance) - sum(debt) == credited_total - debited_total - withdrawn
        assert held == paid_in - returned - withdrawn


def test_a_reversal_right_after_its_event_restores_the_period_and_the_tiers():
    """Settling x and reversing x in the same period: the revenue is back where it was, and the debits
    come from the same tier tables as the credits did (up to one rounding unit per party and table)."""
    shares, excess, target = [5000, 3000, 2000], [2000, 2000, 6000], 1_000
    for before in (0, 400, 990, 1_000, 5_000):
        credit = money.split_event(7, 50, before, shares, target, excess)
        debit = money.split_reversal(8, 50, before + 50, shares, target, excess)
        assert money.revenue_after_reversal(before + 50, 50) == before
        assert sum(credit.base) == sum(debit.base) and sum(credit.excess) == sum(debit.excess)
        assert all(abs(c - d) <= 2 for c, d in zip(credit.credits, debit.credits, strict=True))


# ---------------------------------------------------------------------------------------------------
# The revenue file's optional `reverses` column
# ---------------------------------------------------------------------------------------------------


def test_the_reverses_column_is_read_from_csv_and_json_lines_and_spooled(tmp_path):
    from ledger.revenue_file import SpooledEvents, check_file, read_rows

    csv_path = tmp_path / "r.csv"
    csv_path.write_text("reference,alliance,amount,period,reverses\nA-1,k,10,202611,\nA-R1,k,2.5,202612,A-1\n")
    rows, problems = read_rows(csv_path)
    assert problems == [] and [r.reverses for r in rows] == [None, "A-1"]
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text(
        '{"reference": "A-1", "alliance": "k", "amount": "10", "period": 202611}\n'
        '{"reference": "A-R1", "alliance": "k", "amount": "2.5", "period": 202612, "reverses": "A-1"}\n'
        '{"reference": "A-R2", "alliance": "k", "amount": "1", "period": 202612, "reverses": null}\n'
    )
    rows, problems = read_rows(jsonl)
    assert problems == [] and [r.reverses for r in rows] == [None, "A-1", None]
    with SpooledEvents(tmp_path) as spool:
        problems, total = check_file(csv_path, lambda name: 6, spool=spool)
        assert total == 0
        events = spool.events("k")
    assert [(e.reference, e.amount, e.reverses) for e in events] == [
        ("A-1", 10_000_000, None),
        ("A-R1", 2_500_000, "A-1"),
    ]


def test_a_reversal_naming_its_original_in_nfd_names_the_nfc_reference_settled(tmp_path):
    from ledger.revenue_file import read_rows

    nfc, nfd = "CAF\u00c9-1", "CAFE\u0301-1"
    path = tmp_path / "r.csv"
    path.write_text(f"reference,alliance,amount,period,reverses\n{nfc},k,10,202611,\nR-1,k,1,202612,{nfd}\n"
                    f"{nfd}-R,k,1,202612,{nfc}-R\n", encoding="utf-8")  # fmt: skip
    rows, problems = read_rows(path)
    assert [r.reverses for r in rows] == [None, nfc]  # the original's NFC form, as it was settled
    assert problems == [f"row 4: reference '{nfc}-R' reverses itself"]  # one reference in two forms


def test_bad_reverses_values_are_refused_by_row(tmp_path):
    from ledger.revenue_file import read_rows

    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"reference": "A-1", "alliance": "k", "amount": "1", "period": 1, "reverses": 5}\n'
        '{"reference": "A-2", "alliance": "k", "amount": "1", "period": 1, "reverses": "A-2"}\n'
        '{"reference": "A-3", "alliance": "k", "amount": "1", "period": 1, "reverses": "' + "x" * 33 + '"}\n'
    )
    rows, problems = read_rows(path)
    assert rows == []
    assert problems[0] == "row 1: reverses must be text (the reference of a settled event), got int"
    assert problems[1] == "row 2: reference 'A-2' reverses itself"
    assert problems[2].startswith("row 3: reverses")


# ---------------------------------------------------------------------------------------------------
# The contract
# ---------------------------------------------------------------------------------------------------


def reverse(ledger, aid, terms, first_seq, items, sender, prefix="r"):
    """items: (amount, period, original reference text)."""
    refs = refs_of(prefix, len(items), first_seq)
    entries = entries_of([(a, p) for a, p, _ in items])
    originals = [text_to_bytes32(o) for _, _, o in items]
    return ledger.reverse(aid, 1, first_seq, terms, refs, entries, originals, sender=sender)


def test_a_reversal_debits_exactly_and_pays_finance_back(ledger, funded, make_alliance, token, kitchen):
    aid, terms = make_alliance("kitchen", {"fridge": 4000, "oven": 3000, "recipe-app": 2000, "logistics": 1000})
    ledger.settle(aid, 1, 0, terms, refs_of("inv", 2), entries_of([(1_000 * UNIT, PERIOD), (7, PERIOD)]),
                  sender=funded)  # fmt: skip
    before = [ledger.balance_of(p, token) for p in terms.parties]
    finance_before = ledger.token_balance(token, funded.address)
    receipt = reverse(ledger, aid, terms, 2, [(333 * UNIT + 1, NEXT, "inv-0"), (5, PERIOD, "inv-1")], funded)
    debits = [
        a + b
        for a, b in zip(
            money.split_reversal(2, 333 * UNIT + 1, 0, terms.shares).credits,
            money.split_reversal(3, 5, 1_000 * UNIT + 7, terms.shares).credits,
            strict=True,
        )
    ]
    assert sum(debits) == 333 * UNIT + 6
    assert [ledger.balance_of(p, token) for p in terms.parties] == [b - d for b, d in zip(before, debits, strict=True)]
    assert ledger.token_balance(token, funded.address) == finance_before + 333 * UNIT + 6
    assert ledger.period(aid, PERIOD)[0] == 1_000 * UNIT + 2
    assert ledger.period(aid, NEXT)[0] == 0
    assert ledger.agreement(aid).next_seq == 4
    assert_invariant(ledger, token, kitchen.values())
    logs = list(ledger.logs(["RevenueReversed", "PartiesDebited"], from_block=receipt.block_number))
    assert logs[0].event == "RevenueReversed"
    assert [bytes(o) for o in logs[0].args["originals"]] == [text_to_bytes32("inv-0"), text_to_bytes32("inv-1")]
    assert [log.event for log in logs[1:]] == ["PartiesDebited", "PartiesDebited"]  # one run per period


def test_a_reversal_above_the_target_is_debited_by_the_excess_table_first(ledger, funded, make_alliance, token):
    aid, terms = make_alliance("tiered", {"fridge": 5000, "oven": 5000}, target=100,
                               excess={"fridge": 9000, "oven": 1000})  # fmt: skip
    ledger.settle(aid, 1, 0, terms, refs_of("t", 1), entries_of([(150, PERIOD)]), sender=funded)
    # revenue 150, target 100: a reversal of 80 takes 50 from above the target and 30 from below.
    receipt = reverse(ledger, aid, terms, 1, [(80, PERIOD, "t-0")], funded)
    (debited,) = [log.args for log in ledger.logs(["PartiesDebited"], from_block=receipt.block_number)]
    assert sum(debited["excessDebits"]) == 50 and sum(debited["baseDebits"]) == 30
    split = money.split_reversal(1, 80, 150, terms.shares, terms.target, terms.excess_shares)
    assert list(debited["baseDebits"]) == list(split.base) and list(debited["excessDebits"]) == list(split.excess)
    assert ledger.period(aid, PERIOD)[0] == 70


def test_a_debit_beyond_the_balance_becomes_a_debt_netted_from_later_credits(
    ledger, funded, make_alliance, token, kitchen, payouts
):
    aid, terms = make_alliance("kitchen", {"fridge": 5000, "oven": 5000})
    fridge, oven = kitchen["fridge"], kitchen["oven"]
    ledger.settle(aid, 1, 0, terms, refs_of("d", 1), entries_of([(100 * UNIT, PERIOD)]), sender=funded)
    ledger.withdraw(fridge, token, sender=payouts[0])  # fridge took its 50; oven keeps 50
    finance_before = ledger.token_balance(token, funded.address)
    reverse(ledger, aid, terms, 1, [(100 * UNIT, PERIOD, "d-0")], funded)
    assert ledger.balance_of(fridge, token) == 0 and ledger.debt_of(fridge, token) == 50 * UNIT
    assert ledger.balance_of(oven, token) == 0 and ledger.debt_of(oven, token) == 0
    assert ledger.token_balance(token, funded.address) == finance_before + 50 * UNIT  # what balances covered
    assert_invariant(ledger, token, kitchen.values())
    # Next credits: fridge's 30 all go to its debt, and finance pays in only oven's 30.
    finance_before = ledger.token_balance(token, funded.address)
    receipt = ledger.settle(aid, 1, 2, terms, refs_of("d", 1, 1), entries_of([(60 * UNIT, PERIOD)]), sender=funded)
    assert ledger.debt_of(fridge, token) == 20 * UNIT and ledger.balance_of(fridge, token) == 0
    assert ledger.balance_of(oven, token) == 30 * UNIT
    assert ledger.token_balance(token, funded.address) == finance_before - 30 * UNIT
    (netted,) = [log.args for log in ledger.logs(["DebtNetted"], from_block=receipt.block_number)]
    assert netted["meId"] == fridge and netted["amount"] == 30 * UNIT
    assert_invariant(ledger, token, kitchen.values())
    # Then the rest of the debt is repaid and the remainder becomes withdrawable.
    ledger.settle(aid, 1, 3, terms, refs_of("d", 1, 2), entries_of([(100 * UNIT, PERIOD)]), sender=funded)
    assert ledger.debt_of(fridge, token) == 0 and ledger.balance_of(fridge, token) == 30 * UNIT
    assert ledger.total_debt(token) == 0
    assert_invariant(ledger, token, kitchen.values())


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("zero amount", "RevenueAmountInvalid"),
        ("closed period", "PeriodAlreadyClosed"),
        ("empty original", "ReversalOriginalEmpty"),
        ("originals length", "ReversalBatchInvalid"),
        ("stale cursor", "SettlementOutOfSequence"),
        ("not finance", "AccessControlUnauthorizedAccount"),
    ],
)
def test_the_contract_refuses_malformed_reversals_and_applies_nothing(
    ledger, funded, make_alliance, token, kitchen, attacker, case, error
):
    aid, terms = make_alliance("kitchen", {"fridge": 5000, "oven": 5000})
    ledger.settle(
        aid,
        1,
        0,
        terms,
        refs_of("m", 1),
        entries_of(
            [
                (100, PERIOD),
            ]
        ),
        sender=funded,
    )
    ledger.close_period(aid, 1, sender=funded)
    refs, entries, originals = refs_of("rv", 1), entries_of([(10, PERIOD)]), [text_to_bytes32("m-0")]
    seq, sender = 1, funded
    if case == "zero amount":
        entries = entries_of([(0, PERIOD)])
    elif case == "closed period":
        entries = entries_of([(10, 1)])
    elif case == "empty original":
        originals = [b"\0" * 32]
    elif case == "originals length":
        originals = []
    elif case == "stale cursor":
        seq = 0
    else:
        sender = attacker
    balances = [ledger.balance_of(p, token) for p in terms.parties]
    err = revert_of(lambda: ledger.reverse(aid, 1, seq, terms, refs, entries, originals, sender=sender))
    assert err.name == error
    assert [ledger.balance_of(p, token) for p in terms.parties] == balances
    assert ledger.agreement(aid).next_seq == 1
    assert_invariant(ledger, token, kitchen.values())


# ---------------------------------------------------------------------------------------------------
# The settler: the links the contract does not store
# ---------------------------------------------------------------------------------------------------


def event(ref, alliance, amount, period, row, reverses=None):
    return RevenueEvent(reference=ref, alliance=alliance, amount=amount, period=period, row=row, reverses=reverses)


def test_the_settler_refuses_every_bad_link_naming_the_row_and_sends_nothing(ledger, funded, make_alliance, token):
    aid, terms = make_alliance("kitchen", {"fridge": 5000, "oven": 5000})
    make_alliance("bakery", {"fridge": 5000, "oven": 5000})
    settler = Settler(ledger, funded, from_block=ledger.deployment_block)
    settler.run([event("k-1", "kitchen", 100, PERIOD, 2), event("b-1", "bakery", 100, PERIOD, 3)])
    settler.run([event("k-r1", "kitchen", 60, PERIOD, 2, reverses="k-1")])
    ledger.close_period(aid, 1, sender=funded)
    seq = ledger.agreement(aid).next_seq
    bad = [
        event("x-1", "kitchen", 10, PERIOD, 2, reverses="nowhere"),  # never settled
        event("x-2", "kitchen", 10, PERIOD, 3, reverses="b-1"),  # another alliance's
        event("x-3", "kitchen", 41, PERIOD, 4, reverses="k-1"),  # 60 + 41 > 100
        event("k-r1", "kitchen", 60, PERIOD, 5, reverses="k-1"),  # this reversal's reference again (settled)
        event("k-r1", "kitchen", 61, PERIOD, 6, reverses="k-1"),  # ... used twice with other values
        event("x-4", "kitchen", 10, 1, 7, reverses="k-1"),  # into a closed period
        event("x-5", "kitchen", 10, PERIOD, 8, reverses="k-r1"),  # a reversal of a reversal
    ]
    with pytest.raises(InputError) as info:
        settler.prepare(bad)
    text = str(info.value)
    assert "row 2: reverses 'nowhere', which was never settled for alliance 'kitchen'" in text
    assert "row 3: reverses 'b-1', which was settled for another alliance, not 'kitchen'" in text
    assert "row 4: reversals of 'k-1' would total 101 base units, more than its 100" in text
    assert "reference 'k-r1' repeats row 5" in text
    assert "row 7: period 1 of alliance 'kitchen' is closed" in text
    assert "row 8: reverses 'k-r1', which is itself a reversal" in text
    assert ledger.agreement(aid).next_seq == seq  # nothing was sent


def test_a_file_mixing_events_and_reversals_settles_in_sequence_and_again_settles_nothing(
    ledger, funded, make_alliance, token, kitchen
):
    aid, terms = make_alliance("kitchen", {"fridge": 6000, "oven": 4000})
    settler = Settler(ledger, funded, from_block=ledger.deployment_block, batch_size=2)
    events = [
        event("a-1", "kitchen", 100, PERIOD, 2),
        event("a-2", "kitchen", 50, PERIOD, 3),
        event("a-r1", "kitchen", 30, PERIOD, 4, reverses="a-1"),
        event("a-r2", "kitchen", 70, PERIOD, 5, reverses="a-1"),
        event("a-3", "kitchen", 20, PERIOD, 6),
    ]
    summary = settler.run(events)
    assert summary.settled == 5 and summary.reversals == 2
    assert ledger.agreement(aid).next_seq == 5
    assert ledger.period(aid, PERIOD)[0] == 70
    assert sum(ledger.balance_of(p, token) for p in terms.parties) == 70
    assert_invariant(ledger, token, kitchen.values())
    again = settler.run(events)
    assert again.settled == 0 and again.skipped == 5
    with pytest.raises(InputError, match=r"row 2: reversals of 'a-1' would total 101"):
        settler.prepare([event("a-r3", "kitchen", 1, PERIOD, 2, reverses="a-1")])


@pytest.mark.parametrize("indexed", [True, False], ids=["with the index", "reading every log"])
def test_reversals_settled_before_are_skipped_on_a_re_run_and_nothing_is_sent(
    ledger, funded, make_alliance, token, kitchen, tmp_path, indexed
):
    from ledger.chain.codec import compiled_abi
    from ledger.index import LedgerIndex

    aid, terms = make_alliance("kitchen", {"fridge": 6000, "oven": 4000})
    p = "si" if indexed else "sn"  # references are unique across the session's ledger

    def settler() -> Settler:  # a new process's settler: what it knows comes from the chain (or the index)
        index = None
        if indexed:
            index = LedgerIndex(tmp_path / "index.sqlite3", chain_id=ledger.chain_id, ledger=ledger.address,
                                from_block=ledger.deployment_block, abi=compiled_abi("AllianceLedger"))  # fmt: skip
        return Settler(ledger, funded, from_block=ledger.deployment_block, batch_size=2, index=index)

    sales = [event(f"{p}-1", "kitchen", 100, PERIOD, 2), event(f"{p}-2", "kitchen", 50, PERIOD, 3)]
    reversals = [event(f"{p}-r1", "kitchen", 30, NEXT, 4, reverses=f"{p}-1"),
                 event(f"{p}-r2", "kitchen", 50, NEXT, 5, reverses=f"{p}-2"),
                 event(f"{p}-r3", "kitchen", 70, NEXT, 6, reverses=f"{p}-1")]  # fmt: skip
    assert settler().run(sales + reversals).reversals == 3
    seq, balances = ledger.agreement(aid).next_seq, [ledger.balance_of(party, token) for party in terms.parties]
    block = ledger.head()
    for events in (sales + reversals, reversals, reversals[1:]):
        summary = settler().run(events)
        assert (summary.settled, summary.reversals, summary.skipped) == (0, 0, len(events))
    assert ledger.head() == block and ledger.agreement(aid).next_seq == seq  # nothing was sent
    assert [ledger.balance_of(party, token) for party in terms.parties] == balances
    # What the chain reversed already counts: the two sales are reversed in full.
    with pytest.raises(InputError) as info:
        settler().prepare([event(f"{p}-r4", "kitchen", 1, NEXT, 2, reverses=f"{p}-1"),
                           event(f"{p}-r5", "kitchen", 1, NEXT, 3, reverses=f"{p}-2"),
                           event(f"{p}-r6", "kitchen", 1, NEXT, 4, reverses=f"{p}-r1")])  # fmt: skip
    text = str(info.value)
    assert f"row 2: reversals of '{p}-1' would total 101 base units, more than its 100" in text
    assert f"row 3: reversals of '{p}-2' would total 51 base units, more than its 50" in text
    assert f"row 4: reverses '{p}-r1', which is itself a reversal" in text


def test_a_reversal_before_its_original_in_settlement_order_is_refused(ledger, funded, make_alliance):
    make_alliance("kitchen", {"fridge": 6000, "oven": 4000})
    settler = Settler(ledger, funded, from_block=ledger.deployment_block)
    with pytest.raises(InputError, match=r"row 2: reverses 'late' \(row 3, period 202612\), which would be settled"):
        settler.prepare([event("early", "kitchen", 5, PERIOD, 2, reverses="late"),
                         event("late", "kitchen", 5, NEXT, 3)])  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Reports: dry run, payouts, balances, the dashboard's overview, the audit
# ---------------------------------------------------------------------------------------------------


def test_reports_show_reversal_lines_negative_and_debts(ledger, funded, make_alliance, token, kitchen, payouts):
    import ape

    from ledger.services.audit import audit
    from ledger.services.overview import gather
    from ledger.services.reports import balances
    from ledger.services.reports import payouts as payout_lines
    from ledger.services.settlement import preview

    aid, terms = make_alliance("kitchen", {"fridge": 5000, "oven": 5000})
    settler = Settler(ledger, funded, from_block=ledger.deployment_block)
    settler.run([event("p-1", "kitchen", 100, PERIOD, 2)])
    ledger.withdraw(kitchen["fridge"], token, sender=payouts[0])
    reversal = [event("p-r1", "kitchen", 60, NEXT, 2, reverses="p-1")]
    work, _ = settler.prepare(reversal)
    rows = preview(ledger, work)
    assert [(r["me_id"], r["reversal"], r["total"]) for r in rows] == [
        (kitchen["fridge"], -30, -30),
        (kitchen["oven"], -30, -30),
    ]
    settler.run(reversal)
    lines = payout_lines(ledger, from_block=ledger.deployment_block, period=NEXT)
    assert [(line.me, line.tier, line.amount) for line in lines] == [
        ("fridge", "reversal", -30), ("oven", "reversal", -30)
    ]  # fmt: skip
    report = balances(ledger, from_block=ledger.deployment_block)
    fridge = next(r for r in report.rows if r.me == "fridge" and r.token == token)
    assert (fridge.balance, fridge.debt) == (0, 30)
    check = next(c for c in report.checks if c.token == token)
    assert check.ok and check.debt == check.sum_of_debts == ledger.total_debt(token)
    overview = gather(ledger, from_block=ledger.deployment_block, to_block=ape.chain.blocks.height)
    by_me = {m.me: m for m in overview.mes if m.token == token}
    assert by_me["fridge"].debt == 30 and by_me["fridge"].by_period[NEXT] == -30
    result = audit(ledger.rpc, ledger.address, from_block=ledger.deployment_block)
    assert result.clean, [f.message for f in result.findings]
