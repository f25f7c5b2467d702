"""Bands, recoup first and nested alliances on the contract, against the reference book of ledger/money.py
(issue 18): exact credits per tier and party, the recoup reached once across periods, the inner alliance
credited by its own terms in the same transaction, finance paying in the outer total once, and the nesting
limits and errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import money
from ledger.chain.writer import LedgerWriter
from ledger.errors import InputError
from ledger.models import Band, Terms, text_to_bytes32
from ledger.services.alliances import check_nested
from ledger.terms import NOT_NESTED, credit_run, nested_credit, nested_reference

from .helpers import isolated, revert_of, sign_all

PERIOD = 202611


def create(ledger, name: str, terms: Terms, signers, kitchen, sender) -> bytes:
    """Create and activate ``terms`` (every party's signer signs)."""
    aid = LedgerWriter.agreement_id(name)
    by_id = {me_id: signers[i] for i, me_id in enumerate(kitchen.values())}
    ledger.create(aid, terms, sign_all(ledger, [by_id[p] for p in terms.parties], aid, 1, terms), sender=sender)
    return aid


def refs(prefix: str, count: int) -> list[bytes]:
    return [text_to_bytes32(f"{prefix}-{k}") for k in range(count)]


def balances(ledger, token, ids) -> dict[int, int]:
    return {me_id: ledger.balance_of(me_id, token) for me_id in ids}


def test_three_bands_and_a_recoup_reached_across_periods_credit_exactly_the_reference_split(
    ledger, kitchen, signers, platform, funded, token
):
    f, o, r = kitchen["fridge"], kitchen["oven"], kitchen["recipe-app"]
    terms = Terms(
        token=token, parties=(f, o, r), shares=(5000, 3000, 2000),
        bands=(Band(target=1_000, shares=(2000, 3000, 5000)), Band(target=2_500, shares=(0, 5000, 5000)),
               Band(target=4_000, shares=(3334, 3333, 3333))),
        recoup=3_000, recoup_shares=(7000, 3000, 0),
    )  # fmt: skip
    aid = create(ledger, "shapes-bands", terms, signers, kitchen, funded)
    book = money.SplitState()
    before = balances(ledger, token, terms.parties)
    batches = [
        [(1_700, PERIOD), (999, PERIOD), (2_111, PERIOD + 1)],
        [(5_000, PERIOD), (3, PERIOD), (7_777, PERIOD + 1)],
    ]
    seq = 0
    expected = dict.fromkeys(terms.parties, 0)
    for b, batch in enumerate(batches):
        receipt = ledger.settle(aid, 1, seq, terms, refs(f"band-{b}", len(batch)), [a << 32 | p for a, p in batch],
                                sender=funded)  # fmt: skip
        logged = [credit_run(log.event, log.args) for log in ledger.logs(["PartiesCreditedByTier"],
                                                                         from_block=receipt.block_number)]  # fmt: skip
        runs, k = [], 0
        while k < len(batch):  # the reference, run by run of same-period events
            period, first, tiers = batch[k][1], seq + k, [[0] * 3 for _ in terms.tier_names]
            while k < len(batch) and batch[k][1] == period:
                split = book.settle(terms, seq + k, batch[k][0], period)
                tiers = [[a + c for a, c in zip(t, s, strict=True)] for t, s in zip(tiers, split.tiers, strict=True)]
                k += 1
            runs.append((period, first, tiers))
        assert [(r.period, r.first_seq, [list(v) for v in r.tiers(terms).values()]) for r in logged] == runs
        for _, _, tiers in runs:
            for i, me_id in enumerate(terms.parties):
                expected[me_id] += sum(t[i] for t in tiers)
        seq += len(batch)
    after = balances(ledger, token, terms.parties)
    assert {p: after[p] - before[p] for p in terms.parties} == expected
    assert sum(expected.values()) == sum(a for batch in batches for a, _ in batch)
    assert ledger.agreement(aid).recouped == book.recouped == 3_000  # reached once, in the second batch
    for period in (PERIOD, PERIOD + 1):
        revenue, _, recouped = ledger.period_states([(aid, period)])[0]
        assert (revenue, recouped) == (book.revenue[period], book.period_recouped.get(period, 0))


def test_a_nested_party_s_credit_is_split_by_the_inner_terms_in_the_same_transaction_and_paid_in_once(
    ledger, kitchen, signers, platform, funded, token, finance
):
    f, o, r, lg = (kitchen[n] for n in ("fridge", "oven", "recipe-app", "logistics"))
    inner = Terms.build(token, {o: 6000, lg: 4000}, 500, {o: 1000, lg: 9000})
    inner_id = create(ledger, "shapes-inner", inner, signers, kitchen, funded)
    outer = Terms.build(token, {f: 5000, r: 5000}, recoup=100, recoup_shares={f: 10_000}, nested={r: inner_id})
    outer_id = create(ledger, "shapes-outer", outer, signers, kitchen, funded)
    batch = [(333, PERIOD), (1_000, PERIOD), (77, PERIOD + 1)]
    owed, held = ledger.total_owed(token), ledger.token_balance(token, finance.address)
    before = balances(ledger, token, (f, o, r, lg))
    receipt = ledger.settle_nested(outer_id, 1, 0, outer, refs("nest", 3), [a << 32 | p for a, p in batch],
                                   [(inner_id, 1, inner)], sender=funded)  # fmt: skip
    total = sum(a for a, _ in batch)
    assert ledger.total_owed(token) - owed == total == held - ledger.token_balance(token, finance.address)
    reference = money.NestedBook({outer_id: outer, inner_id: inner})
    out = reference.settle(outer_id, batch)
    after = balances(ledger, token, (f, o, r, lg))
    assert {p: after[p] - before[p] for p in (f, o, lg)} == {p: out.accounts.get(p, 0) for p in (f, o, lg)}
    assert after[r] == before[r]  # an alliance is not paid as an ME
    logs = list(ledger.logs(["NestedSettled", "RevenueSettled"], from_block=receipt.block_number))
    nested = [nested_credit(log.args) for log in logs if log.event == "NestedSettled"]
    assert [(n.first_seq, n.me_id, n.inner, n.inner_seq, n.amount) for n in nested] == [
        (e.run_first_seq, e.me_id, e.inner, e.inner_seq, e.amount) for e in out.nested
    ]
    inner_settled = [log.args for log in logs if log.event == "RevenueSettled" and log.args["agreementId"] == inner_id]
    assert [(a["firstSeq"], [bytes(x) for x in a["refs"]], list(a["entries"])) for a in inner_settled] == [
        (e.inner_seq, [nested_reference(outer_id, e.run_first_seq, r)], [e.amount << 32 | e.period]) for e in out.nested
    ]
    assert ledger.agreement(inner_id).next_seq == len(out.nested)


def test_settle_refuses_nested_terms_and_reversals_of_them_are_refused(ledger, kitchen, signers, funded, token):
    f, o, r = kitchen["fridge"], kitchen["oven"], kitchen["recipe-app"]
    inner_id = create(ledger, "shapes-inner-2", Terms.build(token, {o: 5000, f: 5000}), signers, kitchen, funded)
    outer = Terms.build(token, {f: 5000, r: 5000}, nested={r: inner_id})
    outer_id = create(ledger, "shapes-outer-2", outer, signers, kitchen, funded)
    err = revert_of(lambda: ledger.settle(outer_id, 1, 0, outer, refs("x", 1), [10 << 32 | PERIOD], sender=funded))
    assert (err.name, bytes(err.args_["agreementId"])) == ("AgreementNestedTermsRequired", outer_id)
    err = revert_of(lambda: ledger.settle_nested(outer_id, 1, 0, outer, refs("y", 1), [10 << 32 | PERIOD], [],
                                                 sender=funded))  # fmt: skip
    assert (err.name, bytes(err.args_["innerId"])) == ("SettlementInnerTermsMissing", inner_id)
    ledger.settle_nested(outer_id, 1, 0, outer, refs("z", 1), [10 << 32 | PERIOD], ledger.inner_terms(outer),
                         sender=funded)  # fmt: skip
    err = revert_of(lambda: ledger.reverse(outer_id, 1, 1, outer, refs("r", 1), [5 << 32 | PERIOD], refs("z", 1),
                                           sender=funded))  # fmt: skip
    assert (err.name, bytes(err.args_["agreementId"])) == ("ReversalNestedUnsupported", outer_id)


def test_a_dissolved_party_of_the_inner_alliance_blocks_the_outer_settlement_naming_it(
    ledger, kitchen, signers, platform, funded, token
):
    f, o, r, lg = (kitchen[n] for n in ("fridge", "oven", "recipe-app", "logistics"))
    inner_id = create(ledger, "shapes-inner-3", Terms.build(token, {o: 5000, lg: 5000}), signers, kitchen, funded)
    outer = Terms.build(token, {f: 5000, r: 5000}, nested={r: inner_id})
    outer_id = create(ledger, "shapes-outer-3", outer, signers, kitchen, funded)
    ledger.dissolve_me(lg, sender=platform)
    err = revert_of(lambda: ledger.settle_nested(outer_id, 1, 0, outer, refs("d", 1), [10 << 32 | PERIOD],
                                                 ledger.inner_terms(outer), sender=funded))  # fmt: skip
    assert (err.name, bytes(err.args_["agreementId"]), err.args_["meId"]) == ("AgreementPartyDissolved", inner_id, lg)


def test_cycles_and_nesting_deeper_than_two_levels_are_refused_at_proposal(ledger, kitchen, signers, funded, token,
                                                                           platform):  # fmt: skip
    f, o, r, lg = (kitchen[n] for n in ("fridge", "oven", "recipe-app", "logistics"))
    c_id = create(ledger, "shapes-c", Terms.build(token, {o: 5000, lg: 5000}), signers, kitchen, funded)
    b_id = create(ledger, "shapes-b", Terms.build(token, {f: 5000, o: 5000}, nested={o: c_id}), signers, kitchen,
                  funded)  # fmt: skip
    a_terms = Terms.build(token, {f: 5000, r: 5000}, nested={r: b_id})
    a_id = create(ledger, "shapes-a", a_terms, signers, kitchen, funded)  # two levels below: allowed
    too_deep = Terms.build(token, {f: 5000, lg: 5000}, nested={lg: a_id})
    d_id = LedgerWriter.agreement_id("shapes-d")
    err = revert_of(lambda: ledger.propose(d_id, too_deep, sender=platform))
    assert (err.name, bytes(err.args_["agreementId"]), err.args_["depth"]) == ("AgreementNestingTooDeep", d_id, 3)
    with pytest.raises(InputError, match="3 levels below it; at most 2"):
        check_nested(ledger, d_id, too_deep)
    # c's next version nesting a (which reaches c through b): a cycle.
    cycle = Terms.build(token, {o: 5000, lg: 5000}, nested={lg: a_id})
    err = revert_of(lambda: ledger.propose(c_id, cycle, sender=platform))
    assert (err.name, bytes(err.args_["agreementId"]), bytes(err.args_["inner"])) == (
        "AgreementNestingCycle",
        c_id,
        a_id,
    )
    with pytest.raises(InputError, match="a cycle"):
        check_nested(ledger, c_id, cycle)
    assert NOT_NESTED not in Terms.build(token, {f: 5000, r: 5000}, nested={r: b_id}).nested_parties.values()


def test_the_settler_sends_nested_alliances_through_settle_nested_and_a_concurrent_inner_run_retries(
    ledger, kitchen, signers, funded, token
):
    from ledger.models import RevenueEvent
    from ledger.services.settlement import Settler, Summary

    f, o, r, lg = (kitchen[n] for n in ("fridge", "oven", "recipe-app", "logistics"))
    inner = Terms.build(token, {o: 5000, lg: 5000})
    inner_id = create(ledger, "settler-inner", inner, signers, kitchen, funded)
    outer = Terms.build(token, {f: 6000, r: 4000}, nested={r: inner_id})
    create(ledger, "settler-outer", outer, signers, kitchen, funded)

    def events(alliance: str, n: int, prefix: str) -> list[RevenueEvent]:
        return [RevenueEvent(reference=f"{prefix}-{i}", alliance=alliance, amount=1_000 + i, period=PERIOD, row=i + 2)
                for i in range(n)]  # fmt: skip

    direct = events("settler-inner", 5, "direct")
    inner_settler = Settler(ledger, funded)
    work, _ = inner_settler.prepare(direct)  # planned at the inner cursor 0
    before = balances(ledger, token, (f, o, r, lg))
    owed = ledger.total_owed(token)
    outer_events = events("settler-outer", 7, "outer")
    summary = Settler(ledger, funded, batch_size=3).run(outer_events)  # three batches: three inner events
    assert (summary.settled, summary.batches) == (7, 3)
    assert ledger.agreement(inner_id).next_seq == 3
    late = Summary()
    inner_settler._send(work, late, None, [])  # out of sequence once, re-read, then settled exactly once
    assert (late.retries, late.settled) == (1, 5)
    assert ledger.agreement(inner_id).next_seq == 8
    total = sum(e.amount for e in outer_events + direct)
    assert ledger.total_owed(token) - owed == total
    after = balances(ledger, token, (f, o, r, lg))
    assert sum(after.values()) - sum(before.values()) == total and after[r] == before[r]
    # The reversal of a nested alliance's event is refused before anything is sent.
    reversal = RevenueEvent(reference="outer-r", alliance="settler-outer", amount=1, period=PERIOD, row=2,
                            reverses="outer-0")  # fmt: skip
    with pytest.raises(InputError, match="has nested parties"):
        Settler(ledger, funded).prepare([reversal])


def test_a_reversal_after_a_version_without_recoup_unwinds_the_recouped_part_as_the_reference_does(
    ledger, kitchen, signers, platform, funded, token
):
    f, o = kitchen["fridge"], kitchen["oven"]
    v1 = Terms.build(token, {f: 5000, o: 5000}, 100, {f: 1000, o: 9000}, recoup=300, recoup_shares={f: 10_000})
    aid = create(ledger, "shapes-recoup-then-plain", v1, signers, kitchen, funded)
    book = money.SplitState()
    batch = [(250, PERIOD), (200, PERIOD)]
    ledger.settle(aid, 1, 0, v1, refs("rp", 2), [a << 32 | p for a, p in batch], sender=funded)
    for seq, (amount, period) in enumerate(batch):
        book.settle(v1, seq, amount, period)
    v2 = Terms.build(token, {f: 2000, o: 8000})
    ledger.propose(aid, v2, sender=platform)
    ledger.activate(aid, 2, v2, sign_all(ledger, signers[:2], aid, 2, v2), sender=platform)

    def net(me_id: int) -> int:  # balance less debt: a debit the balance does not cover becomes debt
        return ledger.balance_of(me_id, token) - ledger.debt_of(me_id, token)

    before = {p: net(p) for p in (f, o)}
    ledger.reverse(aid, 2, 2, v2, refs("rp-r", 1), [200 << 32 | PERIOD], [refs("rp", 2)[1]], sender=funded)
    expected = book.reverse(v2, 2, 200, PERIOD)  # banded 150 from the top, then 50 of the recouped part
    assert (before[f] - net(f), before[o] - net(o)) == expected.credits
    revenue, _, recouped = ledger.period_states([(aid, PERIOD)])[0]
    assert (revenue, recouped, ledger.agreement(aid).recouped) == (250, 250, 250)
    assert (revenue, recouped) == (book.revenue[PERIOD], book.period_recouped[PERIOD]) and book.recouped == 250


def test_a_classic_reversal_beyond_the_period_s_revenue_is_one_base_part_as_before(
    ledger, kitchen, signers, funded, token
):
    """The base table's part of a reversal is one part (its banded piece and the piece beyond the period's
    revenue together), split once with the reversal's offset: the rule of before issue 18. (Split in two
    pieces, the 989/8365 parties would end one unit apart at this sequence number.)"""
    f, o, r, lg = (kitchen[n] for n in ("fridge", "oven", "recipe-app", "logistics"))
    terms = Terms.build(token, {f: 371, o: 275, r: 989, lg: 8365})
    aid = create(ledger, "shapes-beyond", terms, signers, kitchen, funded)
    big = 10_203_623_751_552_236
    entries = [big << 32 | PERIOD, 1 << 32 | (PERIOD + 1), 1 << 32 | (PERIOD + 1)]
    ledger.settle(aid, 1, 0, terms, refs("bb", 3), entries, sender=funded)

    def net(me_id: int) -> int:
        return ledger.balance_of(me_id, token) - ledger.debt_of(me_id, token)

    before = {p: net(p) for p in terms.parties}
    # seq 3: booked in PERIOD + 1 (revenue 2), so all but 2 of it lies beyond the period's revenue
    ledger.reverse(aid, 1, 3, terms, refs("bb-r", 1), [big << 32 | (PERIOD + 1)], [refs("bb", 3)[0]], sender=funded)
    expected = money.split_reversal(3, big, 2, terms.shares)
    assert tuple(before[p] - net(p) for p in terms.parties) == expected.credits


def test_two_levels_of_nesting_settle_in_one_transaction_as_the_reference_book_does(
    ledger, kitchen, signers, funded, token
):
    f, o, r, lg = (kitchen[n] for n in ("fridge", "oven", "recipe-app", "logistics"))
    c = Terms.build(token, {o: 3000, lg: 7000}, recoup=50, recoup_shares={lg: 10_000})
    c_id = create(ledger, "deep-c", c, signers, kitchen, funded)
    b = Terms.build(token, {f: 5000, o: 5000}, nested={o: c_id})
    b_id = create(ledger, "deep-b", b, signers, kitchen, funded)
    a = Terms.build(token, {f: 2500, r: 7500}, 400, {f: 5000, r: 5000}, nested={r: b_id})
    a_id = create(ledger, "deep-a", a, signers, kitchen, funded)
    inner = ledger.inner_terms(a)
    assert {aid for aid, _, _ in inner} == {b_id, c_id}
    batch = [(333, PERIOD), (333, PERIOD), (91, PERIOD + 1)]
    before = balances(ledger, token, (f, o, r, lg))
    receipt = ledger.settle_nested(a_id, 1, 0, a, refs("deep", 3), [x << 32 | p for x, p in batch], inner,
                                   sender=funded)  # fmt: skip
    out = money.NestedBook({a_id: a, b_id: b, c_id: c}).settle(a_id, batch)
    after = balances(ledger, token, (f, o, r, lg))
    assert {p: after[p] - before[p] for p in (f, o, r, lg)} == {p: out.accounts.get(p, 0) for p in (f, o, r, lg)}
    assert sum(out.accounts.values()) == sum(x for x, _ in batch)
    logged = [nested_credit(log.args) for log in ledger.logs(["NestedSettled"], from_block=receipt.block_number)]
    assert [(n.agreement_id, n.me_id, n.inner, n.inner_seq, n.amount) for n in logged] == [
        (e.outer, e.me_id, e.inner, e.inner_seq, e.amount) for e in out.nested
    ]
    assert {n.inner for n in logged} == {b_id, c_id}


@st.composite
def _table(draw, n: int) -> list[int]:
    cuts = sorted(draw(st.lists(st.integers(0, money.BPS), min_size=n - 1, max_size=n - 1)))
    edges = [0, *cuts, money.BPS]
    return [edges[i + 1] - edges[i] for i in range(n)]


@st.composite
def _shaped(draw, parties: list[int], token: str) -> Terms:
    n = len(parties)
    k = draw(st.integers(0, 3))
    targets = sorted(draw(st.sets(st.integers(1, 10**6), min_size=k, max_size=k)))
    recoup = draw(st.one_of(st.just(0), st.integers(1, 2 * 10**6)))
    return Terms(
        token=token, parties=tuple(parties), shares=tuple(draw(_table(n))),
        bands=tuple(Band(target=t, shares=tuple(draw(_table(n)))) for t in targets),
        recoup=recoup, recoup_shares=tuple(draw(_table(n))) if recoup else (),
    )  # fmt: skip


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_random_shapes_and_a_nested_party_credit_exactly_what_the_reference_book_says(
    chain, ledger, kitchen, signers, funded, token, data
):
    f, o, r, lg = (kitchen[n] for n in ("fridge", "oven", "recipe-app", "logistics"))
    inner = data.draw(_shaped([o, lg], token), label="inner terms")
    outer = data.draw(_shaped([f, o, r], token), label="outer terms").model_copy(
        update={"nested": (NOT_NESTED, NOT_NESTED, LedgerWriter.agreement_id("prop-inner"))}
    )
    batches = data.draw(
        st.lists(st.lists(st.tuples(st.integers(1, 10**6), st.sampled_from([1, 2])), min_size=1, max_size=8),
                 min_size=1, max_size=3),
        label="batches",
    )  # fmt: skip
    with isolated(chain):
        inner_id = create(ledger, "prop-inner", inner, signers, kitchen, funded)
        outer_id = create(ledger, "prop-outer", outer, signers, kitchen, funded)
        book = money.NestedBook({outer_id: outer, inner_id: inner})
        ids = (f, o, r, lg)
        before = balances(ledger, token, ids)
        expected = dict.fromkeys(ids, 0)
        seq = 0
        for b, batch in enumerate(batches):
            entries = [a << 32 | p for a, p in batch]
            ledger.settle_nested(outer_id, 1, seq, outer, refs(f"prop-{b}", len(batch)), entries,
                                 [(inner_id, 1, inner)], sender=funded)  # fmt: skip
            for me_id, credit in book.settle(outer_id, batch).accounts.items():
                expected[me_id] += credit
            seq += len(batch)
        after = balances(ledger, token, ids)
        assert {p: after[p] - before[p] for p in ids} == expected
        assert sum(expected.values()) == sum(a for batch in batches for a, _ in batch)
        assert ledger.agreement(outer_id).recouped == book.state(outer_id).recouped
        assert ledger.agreement(inner_id).recouped == book.state(inner_id).recouped
        assert ledger.agreement(inner_id).next_seq == book.next_seq[inner_id]
