"""The pure money math: exact splits, the rounding bounds, tiers, and decimal parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import money

amounts = st.integers(min_value=1, max_value=money.MAX_EVENT_AMOUNT)
seqs = st.integers(min_value=0, max_value=2**64 - 1)


@st.composite
def share_tables(draw, min_size=2, max_size=64):
    """Random basis-point tables summing to exactly 10,000 (zeros allowed)."""
    n = draw(st.integers(min_value=min_size, max_value=max_size))
    cuts = sorted(draw(st.lists(st.integers(0, money.BPS), min_size=n - 1, max_size=n - 1)))
    edges = [0, *cuts, money.BPS]
    return [edges[i + 1] - edges[i] for i in range(n)]


@given(amount=amounts, shares=share_tables(), seq=seqs)
def test_split_adds_up_to_the_amount_and_rounds_each_share_by_at_most_one_unit(amount, shares, seq):
    credits = money.split(amount, shares, money.offset_of(seq))
    assert sum(credits) == amount
    for credit, share in zip(credits, shares, strict=True):
        exact_floor = amount * share // money.BPS
        assert credit in (exact_floor, exact_floor + 1)
        if share == 0:
            assert credit == 0


@given(
    revenue=st.integers(0, 10**30),
    amount=st.integers(1, 10**30),
    target=st.integers(0, 10**30),
)
def test_tier_parts_add_up_and_only_the_part_above_the_target_is_excess(revenue, amount, target):
    base, excess = money.tier_parts(revenue, amount, target)
    assert base + excess == amount
    if target == 0:
        assert excess == 0
    else:
        assert revenue + base <= max(target, revenue)
        assert excess == max(0, revenue + amount - max(target, revenue))


def test_an_event_that_crosses_the_target_is_split_across_both_tables():
    split = money.split_event(
        seq=0, amount=300, period_revenue=900, shares=[5000, 5000], target=1000, excess_shares=[8000, 2000]
    )
    assert split.base == (50, 50)
    assert split.excess == (160, 40)
    assert sum(split.credits) == 300


def test_many_tiny_events_are_shared_in_proportion_to_shares():
    # The 0xSplits v2 low-decimal issue: a 1-unit event always rounds; with a fixed remainder rule a
    # majority party would take every unit. The rotating offset shares them out by share instead.
    shares = [9000, 500, 500]
    totals = [0, 0, 0]
    for seq in range(10_000):
        for i, credit in enumerate(money.split(1, shares, money.offset_of(seq))):
            totals[i] += credit
    assert totals == [9000, 500, 500]


def test_offsets_visit_every_value_once_per_ten_thousand_events():
    assert sorted(money.offset_of(s) for s in range(10_000)) == list(range(10_000))


@pytest.mark.parametrize(
    ("text", "decimals", "units"),
    [
        ("12.50", 2, 1250),
        ("12.5", 6, 12_500_000),
        ("0.000001", 6, 1),
        ("7", 0, 7),
        ("1.", 2, 100),
        (".5", 1, 5),
        ("123456789012345678901234567890.123456789012345678", 18, 123456789012345678901234567890123456789012345678),
    ],
)
def test_parse_amount_converts_exactly(text, decimals, units):
    assert money.parse_amount(text, decimals) == units


@pytest.mark.parametrize(
    ("text", "decimals", "fragment"),
    [
        ("", 6, "empty"),
        ("-1", 6, "sign"),
        ("+1", 6, "sign"),
        ("1e3", 6, "plain decimal"),
        ("1,000", 6, "plain decimal"),
        ("abc", 6, "plain decimal"),
        ("1.2.3", 6, "plain decimal"),
        ("0.1234567", 6, "has 7 decimals"),
        ("1.5", 0, "has 1 decimals"),
        ("NaN", 6, "plain decimal"),
        ("١٢", 6, "plain decimal"),
    ],
)
def test_parse_amount_refuses_what_is_not_a_plain_decimal(text, decimals, fragment):
    with pytest.raises(money.AmountError, match=fragment):
        money.parse_amount(text, decimals)


@given(units=st.integers(0, 10**40), decimals=st.integers(0, 30))
def test_format_and_parse_round_trip(units, decimals):
    assert money.parse_amount(money.format_amount(units, decimals), decimals) == units
