"""Bands, recoup first and nested alliances in the reference math (ledger/money.py) and the terms rules
(ledger/terms.py): exact credits, exact sums, the recoup reached exactly once, bands reset per period."""

from __future__ import annotations

import pytest
from eth_utils import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import money
from ledger.chain import eip712
from ledger.terms import BAND_TYPE, MAX_BANDS, NOT_NESTED, TERMS_TYPE, Band, Terms, nested_reference, terms_problem

TOKEN = "0x" + "11" * 20


@st.composite
def tables(draw, n):
    cuts = sorted(draw(st.lists(st.integers(0, money.BPS), min_size=n - 1, max_size=n - 1)))
    edges = [0, *cuts, money.BPS]
    return tuple(edges[i + 1] - edges[i] for i in range(n))


@st.composite
def shaped_terms(draw, max_parties=6, max_target=10**6, recoup=None, min_parties=2):
    n = draw(st.integers(min_parties, max_parties))
    k = draw(st.integers(0, MAX_BANDS))
    targets = sorted(draw(st.sets(st.integers(1, max_target), min_size=k, max_size=k)))
    bands = tuple(Band(target=t, shares=draw(tables(n))) for t in targets)
    amount = draw(st.integers(0, 3 * max_target)) if recoup is None else recoup
    return Terms(
        token=TOKEN,
        parties=tuple(range(1, n + 1)),
        shares=draw(tables(n)),
        bands=bands,
        recoup=amount,
        recoup_shares=draw(tables(n)) if amount else (),
    )


events = st.lists(st.tuples(st.integers(1, 10**6), st.integers(1, 3)), min_size=1, max_size=40)


@given(terms=shaped_terms(), batch=events, first_seq=st.integers(0, 2**40))
@settings(max_examples=300)
def test_every_event_is_split_exactly_and_its_parts_and_credits_add_up_to_the_amount(terms, batch, first_seq):
    state = money.SplitState()
    for k, (amount, period) in enumerate(batch):
        seq = first_seq + k
        result = state.settle(terms, seq, amount, period)
        assert sum(result.parts) == amount
        assert sum(result.credits) == amount
        for part, table, credits in zip(result.parts, terms.tier_tables, result.tiers, strict=True):
            assert sum(credits) == part
            assert list(credits) == money.split(part, table, money.offset_of(seq))
            for credit, share in zip(credits, table, strict=True):
                assert credit in (part * share // money.BPS, part * share // money.BPS + 1)


@given(terms=shaped_terms(max_target=60), amount=st.integers(1, 200), banded=st.integers(0, 200))
def test_band_parts_put_each_unit_in_the_tier_its_running_total_falls_in(terms, amount, banded):
    targets = [b.target for b in terms.bands]
    expected = [0] * (len(targets) + 1)
    for unit in range(banded + 1, banded + amount + 1):  # revenue up to and including a target is below it
        expected[sum(1 for t in targets if unit > t)] += 1
    assert money.band_parts(amount, banded, targets) == expected


@given(terms=shaped_terms(max_parties=4, max_target=5000), batch=events, data=st.data())
@settings(max_examples=200)
def test_the_recoup_is_reached_exactly_once_across_periods_whatever_the_order(terms, batch, data):
    order = data.draw(st.permutations(batch))
    state = money.SplitState()
    recouped, crossed = 0, 0
    for seq, (amount, period) in enumerate(order):
        before = state.recouped
        result = state.settle(terms, seq, amount, period)
        part = result.parts[0] if terms.recoup else 0
        recouped += part
        assert state.recouped == recouped
        if before < terms.recoup <= state.recouped:
            crossed += 1
        if before >= terms.recoup:
            assert part == 0  # once reached, never again
        elif part < amount:
            assert state.recouped == terms.recoup  # a cut event fills the recoup exactly
    total = sum(a for a, _ in batch)
    assert recouped == min(terms.recoup, total)
    assert crossed == (1 if terms.recoup and total >= terms.recoup else 0)


@given(terms=shaped_terms(max_parties=4, max_target=5000), batch=events, data=st.data())
@settings(max_examples=200)
def test_bands_start_from_zero_in_every_period_and_count_only_the_revenue_not_recouped(terms, batch, data):
    order = data.draw(st.permutations(batch))
    state = money.SplitState()
    band_totals: dict[int, list[int]] = {}
    head = 1 if terms.recoup else 0
    for seq, (amount, period) in enumerate(order):
        parts = state.settle(terms, seq, amount, period).parts
        totals = band_totals.setdefault(period, [0] * (len(terms.bands) + 1))
        for j, part in enumerate(parts[head:]):
            totals[j] += part
    for period, totals in band_totals.items():
        banded = state.revenue[period] - state.period_recouped.get(period, 0)
        assert totals == money.band_parts(banded, 0, [b.target for b in terms.bands])


@given(terms=shaped_terms(max_parties=4, max_target=5000), batch=events)
@settings(max_examples=200)
def test_reversing_every_event_from_the_last_unwinds_the_exact_parts_and_the_recoup(terms, batch):
    state = money.SplitState()
    settled = [state.settle(terms, seq, amount, period) for seq, (amount, period) in enumerate(batch)]
    for seq, ((amount, period), original) in reversed(list(enumerate(zip(batch, settled, strict=True)))):
        reversal = state.reverse(terms, seq, amount, period)
        assert reversal.parts == original.parts
        assert reversal.tiers == original.tiers  # same offset: the very credits come back
    assert state.recouped == 0
    assert all(v == 0 for v in state.revenue.values())
    assert all(v == 0 for v in state.period_recouped.values())


@given(
    seq=st.integers(0, 2**32),
    amount=st.integers(1, 10**9),
    revenue=st.integers(0, 10**9),
    target=st.integers(1, 10**9),
    tabs=st.tuples(tables(3), tables(3)),
)
def test_one_band_without_recoup_is_the_old_target_and_excess_split(seq, amount, revenue, target, tabs):
    terms = Terms(token=TOKEN, parties=(1, 2, 3), shares=tabs[0], target=target, excess_shares=tabs[1])
    state = money.SplitState(revenue={1: revenue})
    result = state.settle(terms, seq, amount, 1)
    old = money.split_event(seq, amount, revenue, tabs[0], target, tabs[1])
    assert result.tiers == (old.base, old.excess)
    reverse = money.SplitState(revenue={1: revenue}).reverse(terms, seq, amount, 1)
    old = money.split_reversal(seq, amount, revenue, tabs[0], target, tabs[1])
    assert reverse.tiers == (old.base, old.excess)


def test_an_event_crossing_the_recoup_and_two_band_edges_is_cut_into_four_exact_parts():
    terms = Terms(
        token=TOKEN, parties=(1, 2), shares=(5000, 5000),
        bands=(Band(target=100, shares=(2000, 8000)), Band(target=200, shares=(0, 10000))),
        recoup=50, recoup_shares=(10000, 0),
    )  # fmt: skip
    result = money.SplitState().settle(terms, 0, 300, 7)
    assert result.parts == (50, 100, 100, 50)  # recoup 50, then banded 0..250: base 100, band 1 100, band 2 50
    assert result.tiers == ((50, 0), (50, 50), (20, 80), (0, 50))
    assert terms.tier_names == ("recoup", "base", "band 1", "band 2")


# ---------------------------------------------------------------------------------------------------
# Nested alliances
# ---------------------------------------------------------------------------------------------------

OUTER, INNER, DEEP = (name.encode().ljust(32, b"\0") for name in ("outer", "inner", "deep"))


def _nested_book(inner_terms: Terms, deep_terms: Terms) -> money.NestedBook:
    outer = Terms(token=TOKEN, parties=(1, 2, 3), shares=(5000, 3000, 2000), nested=(NOT_NESTED, INNER, NOT_NESTED))
    return money.NestedBook({OUTER: outer, INNER: inner_terms, DEEP: deep_terms})


@given(
    batch=events,
    inner_terms=shaped_terms(max_parties=4, max_target=10**5),
    deep_terms=shaped_terms(max_parties=3, max_target=10**5),
)
@settings(max_examples=150)
def test_a_nested_party_s_credit_is_split_by_the_inner_terms_and_the_accounts_gain_exactly_the_batch(
    batch, inner_terms, deep_terms
):
    # the inner alliance's party 10+ are MEs; its first party is itself an alliance (two levels deep)
    n = len(inner_terms.parties)
    inner_terms = inner_terms.model_copy(
        update={"parties": tuple(range(10, 10 + n)), "nested": (DEEP, *(NOT_NESTED,) * (n - 1))}
    )
    deep_terms = deep_terms.model_copy(update={"parties": tuple(range(20, 20 + len(deep_terms.parties)))})
    book = _nested_book(inner_terms, deep_terms)
    out = book.settle(OUTER, batch)
    assert sum(out.accounts.values()) == sum(a for a, _ in batch)  # finance pays in the outer total once
    assert 2 not in out.accounts and 10 not in out.accounts  # alliances are not credited as MEs
    reference = money.NestedBook({INNER: inner_terms.model_copy(update={"nested": ()})})
    by_inner = [e for e in out.nested if e.inner == INNER]
    for event in by_inner:  # the inner alliance's credits are its own terms applied to what it was credited
        run = next(r for r in out.runs if r.agreement_id == INNER and r.first_seq == event.inner_seq)
        mirror = reference.settle(INNER, [(event.amount, event.period)]).runs[0]
        assert run.tiers == mirror.tiers
    assert [e.inner_seq for e in by_inner] == list(range(len(by_inner)))  # the inner cursor advances by one each


def test_the_nested_reference_is_derived_from_the_outer_run_and_the_party():
    expected = keccak(OUTER + (5).to_bytes(32, "big") + (2).to_bytes(32, "big"))
    assert nested_reference(OUTER, 5, 2) == expected


# ---------------------------------------------------------------------------------------------------
# Rules and typed data
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"bands": tuple(Band(target=t, shares=(5000, 5000)) for t in range(1, MAX_BANDS + 2))}, "bands"),
        ({"bands": (Band(target=0, shares=(5000, 5000)),)}, "band 1"),
        ({"bands": (Band(target=5, shares=(5000, 5000)), Band(target=5, shares=(5000, 5000)))}, "band 2"),
        ({"bands": (Band(target=5, shares=(5000, 4000)),)}, "band 1 shares"),
        ({"recoup": 10}, "recoup shares"),
        ({"recoup_shares": (5000, 5000)}, "recoup shares"),
        ({"recoup": 2**120, "recoup_shares": (5000, 5000)}, "recoup"),
        ({"nested": (NOT_NESTED,)}, "nested"),
    ],
)
def test_terms_that_break_a_rule_are_refused_naming_the_field(change, field):
    base = {"token": TOKEN, "parties": (1, 2), "shares": (5000, 5000)}
    with pytest.raises(ValueError, match=field):
        Terms(**{**base, **change})


def test_an_alliance_cannot_be_its_own_nested_party():
    assert "own party" in terms_problem(TOKEN, (1, 2), (5000, 5000), nested=(OUTER, NOT_NESTED), agreement_id=OUTER)


@given(terms=shaped_terms())
@settings(max_examples=50)
def test_the_terms_hash_is_the_eip712_struct_hash_every_wallet_signs(terms):
    message = eip712.approval_message(1, "0x" + "22" * 20, OUTER, 3, terms)
    approval = keccak(text="Approval(bytes32 agreementId,uint32 version,Terms terms)" + BAND_TYPE + TERMS_TYPE)
    body = keccak(approval + OUTER + (3).to_bytes(32, "big") + terms.struct_hash())
    assert message.body == body
    assert Terms.from_abi(terms.as_tuple()) == terms


@given(terms=shaped_terms(min_parties=3, max_parties=3, max_target=5000, recoup=4000), batch=events, later=tables(3))
@settings(max_examples=100)
def test_a_reversal_under_terms_without_recoup_still_unwinds_an_earlier_version_s_recouped_part(terms, batch, later):
    state = money.SplitState()
    for seq, (amount, period) in enumerate(batch):
        state.settle(terms, seq, amount, period)
    plain = Terms(token=TOKEN, parties=terms.parties, shares=later)  # a later version: no recoup, no bands
    for seq, (amount, period) in enumerate(reversed(batch), start=len(batch)):
        result = state.reverse(plain, seq, amount, period)
        assert sum(result.credits) == amount and result.parts == (amount,)  # all by the base table
        assert 0 <= state.period_recouped.get(period, 0) <= state.revenue[period]
    assert state.recouped == 0 and all(v == 0 for v in state.period_recouped.values())
