"""The settlement service: whole-file validation, exactly-once across re-runs, retries and a second
operator settling overlapping events at the same time."""

from __future__ import annotations

import pytest

from ledger.errors import InputError
from ledger.models import RevenueEvent
from ledger.services.settlement import Settler, Summary, batch_size_for, preview

PERIOD = 202611


def events_for(alliance, n, start=0, amount=1_000, period=PERIOD, prefix="ev"):
    return [
        RevenueEvent(reference=f"{prefix}-{i}", alliance=alliance, amount=amount + i, period=period, row=i + 2)
        for i in range(start, start + n)
    ]


def credited_total(ledger, token, parties):
    return sum(ledger.balance_of(p, token) for p in parties)


@pytest.fixture
def kitchen_alliance(make_alliance):
    return make_alliance(
        "kitchen",
        {"fridge": 4000, "oven": 3000, "recipe-app": 2000, "logistics": 1000},
        target=50_000,
        excess={"fridge": 1000, "oven": 1000, "recipe-app": 7000, "logistics": 1000},
    )


def test_a_run_settles_every_event_and_a_re_run_settles_nothing_new(ledger, funded, kitchen_alliance, token):
    aid, terms = kitchen_alliance
    events = events_for("kitchen", 25)
    settler = Settler(ledger, funded, batch_size=10)
    first = settler.run(events)
    assert (first.settled, first.skipped) == (25, 0)
    assert first.batches == 3
    assert first.moved == {token: sum(e.amount for e in events)}
    again = settler.run(events)
    assert (again.settled, again.skipped, again.batches) == (0, 25, 0)
    assert credited_total(ledger, token, terms.parties) == sum(e.amount for e in events)


def test_a_run_interrupted_half_way_completes_on_re_run_without_paying_twice(ledger, funded, kitchen_alliance, token):
    aid, terms = kitchen_alliance
    events = events_for("kitchen", 30)
    settler = Settler(ledger, funded, batch_size=10)
    calls = {"n": 0}
    real_pipeline = ledger.pipeline

    def crash_after_first_batch(*args, **kwargs):
        pipeline = real_pipeline(*args, **kwargs)
        real_submit = pipeline.submit

        def submit(*a, **k):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt  # Ctrl-C while the second batch is being sent
            return real_submit(*a, **k)

        pipeline.submit = submit
        return pipeline

    ledger.pipeline = crash_after_first_batch
    try:
        with pytest.raises(KeyboardInterrupt):
            settler.run(events)
    finally:
        del ledger.pipeline
    partial = ledger.agreement(aid).next_seq
    assert partial == 10
    summary = settler.run(events)
    assert (summary.settled, summary.skipped) == (30 - partial, partial)
    assert ledger.agreement(aid).next_seq == 30
    assert credited_total(ledger, token, terms.parties) == sum(e.amount for e in events)


def test_events_another_operator_settled_first_are_skipped(ledger, funded, kitchen_alliance, token):
    aid, terms = kitchen_alliance
    mine = events_for("kitchen", 10)
    Settler(ledger, funded).run(events_for("kitchen", 6, start=4))  # overlaps events 4..9
    summary = Settler(ledger, funded).run(mine)
    assert (summary.settled, summary.skipped) == (4, 6)
    assert ledger.agreement(aid).next_seq == 10
    assert credited_total(ledger, token, terms.parties) == sum(e.amount for e in mine)


def test_a_plan_made_before_another_operator_settled_is_refused_and_re_planned(ledger, funded, kitchen_alliance, token):
    aid, terms = kitchen_alliance
    mine = events_for("kitchen", 8)
    settler = Settler(ledger, funded)
    work, _ = settler.prepare(mine)  # our view: cursor 0, nothing settled
    Settler(ledger, funded).run(mine[:4])  # the other operator lands first
    summary = Summary()
    settler._send(work, summary, None, [])
    assert summary.retries == 1
    assert (summary.settled, summary.skipped) == (4, 4)
    assert ledger.agreement(aid).next_seq == 8
    assert credited_total(ledger, token, terms.parties) == sum(e.amount for e in mine)


def test_events_another_operator_settles_twice_during_a_run_are_counted_as_skipped_once(
    ledger, funded, kitchen_alliance, token
):
    """Two conflicts in one alliance: before the run's first batch and between two of its batches. Each
    event lands once, and the summary counts each event once (settled by this run, or skipped)."""
    aid, terms = kitchen_alliance
    mine = events_for("kitchen", 12, prefix="twice")
    settler = Settler(ledger, funded, batch_size=4, window=1)
    work, _ = settler.prepare(mine)  # our view: cursor 0, nothing settled
    Settler(ledger, funded).run(mine[:4])  # the other operator, before our first batch
    landed = []

    def the_other_operator_lands_again(count):
        landed.append(count)
        if len(landed) == 1:
            Settler(ledger, funded).run(mine[8:])

    summary = Summary()
    settler._send(work, summary, the_other_operator_lands_again, [])
    assert (summary.settled, summary.skipped) == (4, 8)
    assert ledger.agreement(aid).next_seq == 12
    assert credited_total(ledger, token, terms.parties) == sum(e.amount for e in mine)


def test_the_whole_file_is_validated_before_anything_is_sent(ledger, funded, kitchen_alliance, make_alliance, token):
    aid, terms = kitchen_alliance
    ledger.close_period(aid, PERIOD - 1, sender=funded)
    events = [
        *events_for("kitchen", 3),
        RevenueEvent(reference="ev-1", alliance="kitchen", amount=5, period=PERIOD, row=90),
        RevenueEvent(reference="late", alliance="kitchen", amount=5, period=PERIOD - 1, row=91),
        RevenueEvent(reference="lost", alliance="nowhere", amount=5, period=PERIOD, row=92),
    ]
    with pytest.raises(InputError) as info:
        Settler(ledger, funded).run(events)
    message = str(info.value)
    assert "row 90: reference 'ev-1' repeats row 3" in message
    assert "row 91: period 202610 of alliance 'kitchen' is closed" in message
    assert "row 92: no alliance named 'nowhere'" in message
    assert ledger.agreement(aid).next_seq == 0


def test_an_alliance_naming_a_dissolved_me_is_reported_by_row(ledger, funded, kitchen_alliance, platform, kitchen):
    aid, _ = kitchen_alliance
    ledger.dissolve_me(kitchen["oven"], sender=platform)
    with pytest.raises(InputError, match="rows 2, 3: alliance 'kitchen' names dissolved ME 'oven'; amend it first"):
        Settler(ledger, funded).run(events_for("kitchen", 2))
    assert ledger.agreement(aid).next_seq == 0


def test_a_reference_settled_earlier_with_other_values_is_a_conflict(ledger, funded, kitchen_alliance):
    aid, _ = kitchen_alliance
    Settler(ledger, funded).run(events_for("kitchen", 2))
    changed = [RevenueEvent(reference="ev-1", alliance="kitchen", amount=999, period=PERIOD, row=7)]
    with pytest.raises(InputError, match="row 7: reference 'ev-1' was already settled"):
        Settler(ledger, funded).run(changed)


def test_an_inactive_alliance_is_reported_by_row(ledger, funded, kitchen, platform, token, kitchen_alliance):
    from ledger.models import Terms

    terms = Terms.build(token, {kitchen["fridge"]: 5000, kitchen["oven"]: 5000})
    ledger.propose(ledger.agreement_id("pending"), terms, sender=platform)
    with pytest.raises(InputError, match="row 2: alliance 'pending' is proposed, not active"):
        Settler(ledger, funded).run(events_for("pending", 1))


def test_a_finance_account_without_enough_tokens_is_refused_before_sending(ledger, finance, kitchen_alliance, accounts):
    aid, _ = kitchen_alliance
    poor = accounts[16]
    ledger.grant_role("FINANCE_ROLE", poor.address, sender=accounts[0])
    with pytest.raises(Exception, match="holds 0 base units"):
        Settler(ledger, poor).run(events_for("kitchen", 1))
    assert ledger.agreement(aid).next_seq == 0


def test_batch_size_keeps_the_largest_agreements_within_the_gas_budget():
    assert batch_size_for(5) == 1_000
    assert batch_size_for(64) * (2_000 + 150 * 64) <= 12_000_000


def test_the_preview_predicts_every_credit_to_the_unit(ledger, funded, kitchen_alliance, token):
    aid, terms = kitchen_alliance
    Settler(ledger, funded).run(events_for("kitchen", 3, amount=20_000))  # the period is part-way to the target
    events = events_for("kitchen", 40, start=3, amount=777) + events_for("kitchen", 5, start=50, period=PERIOD + 1)
    settler = Settler(ledger, funded, batch_size=7)
    work, _ = settler.prepare(events)
    predicted = preview(ledger, work)
    before = {p: ledger.balance_of(p, token) for p in terms.parties}
    settler.run(events)
    for party in terms.parties:
        gained = ledger.balance_of(party, token) - before[party]
        assert gained == sum(row["total"] for row in predicted if row["me_id"] == party)
    assert any(row["excess"] for row in predicted)  # the preview crossed the target too


def test_an_allowance_another_run_spent_is_raised_again_and_the_run_finishes(ledger, funded, kitchen_alliance, token):
    """Two runs with one finance account: each approves what it needs, and approve sets (not adds), so one
    run can leave the other short. The run notices the revert, raises the allowance and carries on."""
    aid, terms = kitchen_alliance
    events = events_for("kitchen", 30, prefix="al")
    ledger.token.approve(ledger.address, 0, sender=funded)
    settler = Settler(ledger, funded, batch_size=10, window=1)  # each batch mined before the next is sent

    def other_run_overwrites_the_allowance(_count):
        ledger.token.approve(ledger.address, 5, sender=funded)

    summary = settler.run(events, progress=other_run_overwrites_the_allowance)
    assert (summary.settled, summary.batches) == (30, 3)
    # After the first and the second batch: the other run's approve takes the nonce the pipeline would
    # use next (a retry: drain, read the nonce again), then the batch is refused for the allowance (a
    # retry: raise it). Two of each.
    assert summary.retries == 4
    assert credited_total(ledger, token, terms.parties) == sum(e.amount for e in events)


def test_one_alliances_failure_neither_stops_nor_hides_another(ledger, funded, make_alliance, platform, kitchen, token):
    """Batches are pipelined: when an alliance's batch reverts, its later batches revert too (out of
    sequence). The run reports the first failure's own reason, and every other alliance is settled."""
    from ledger.errors import ContractRevert

    north, north_terms = make_alliance("north", {"fridge": 6000, "oven": 4000})
    south, south_terms = make_alliance("south", {"recipe-app": 5000, "logistics": 5000})
    events = events_for("north", 30, prefix="n") + events_for("south", 30, prefix="s")
    landed = []

    def oven_is_dissolved_after_the_first_batch(count):
        landed.append(count)
        if len(landed) == 1:
            ledger.dissolve_me(kitchen["oven"], sender=platform)

    settler = Settler(ledger, funded, batch_size=5, window=8)
    with pytest.raises(ContractRevert) as info:
        settler.run(events, progress=oven_is_dissolved_after_the_first_batch)
    assert info.value.name == "AgreementPartyDissolved"  # not the SettlementOutOfSequence of the later ones
    assert "alliance 'north'" in str(info.value)
    assert ledger.agreement(south).next_seq == 30
    assert credited_total(ledger, token, south_terms.parties) == sum(e.amount for e in events[30:])
    settled_north = ledger.agreement(north).next_seq
    assert 5 <= settled_north < 30 and settled_north % 5 == 0
    assert credited_total(ledger, token, north_terms.parties) == sum(e.amount for e in events[:settled_north])


@pytest.mark.http_node("switches automine off (evm_setAutomine), which py-evm's tester lacks")
def test_a_burst_on_a_node_that_stops_mining_is_detected_and_recovered(ledger, funded, kitchen_alliance, token):
    """Eight batches in flight on a node whose automine is off (what Anvil's automine stall looks like):
    the pipeline notices nothing lands, asks the node to mine, and the run finishes exactly once."""
    from ledger.chain.transact import TxPolicy

    aid, terms = kitchen_alliance
    events = events_for("kitchen", 40, prefix="stall")
    ledger.policy = TxPolicy(timeout=60, recheck=0.5, kick=True)
    ledger.rpc.request("evm_setAutomine", [False])
    try:
        summary = Settler(ledger, funded, batch_size=5, window=8).run(events)
        kicks = ledger.transactor.kicks
    finally:
        ledger.rpc.request("evm_setAutomine", [True])
        ledger.policy = TxPolicy()
    assert (summary.settled, summary.batches) == (40, 8)
    assert kicks >= 1
    assert ledger.agreement(aid).next_seq == 40
    assert credited_total(ledger, token, terms.parties) == sum(e.amount for e in events)
