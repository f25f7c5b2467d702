"""Payout runs on the contract: `payout(token, meIds)` pays each listed ME's whole balance to its own
payout address, from any account; a receiver that reverts or a token that blocks the address is skipped
with `PayoutSkipped` and keeps its balance; the books stay exact after every step (tokens held ==
totalOwed == the sum of the balances)."""

from __future__ import annotations

import pytest

from ledger.chain.writer import project
from ledger.services.audit import audit

from .helpers import KITCHEN, revert_of
from .test_adversaries import (
    PERIOD,
    REENTRANT_SELECTOR,
    alliance_of,  # noqa: F401 - fixture
    assert_books_exact,
    entries_of,
    evil,  # noqa: F401 - fixture
    raw,
    refs_of,
    token_for,  # noqa: F401 - fixture
)


def assert_audit_clean(ledger) -> None:
    """`ledger audit`'s checks over the whole chain history, including the payout runs."""
    report = audit(ledger.rpc, ledger.address, from_block=ledger.deployment_block)
    assert report.clean, [f.message for f in report.findings]
    return report


def erc20_balance(token: str, holder: str) -> int:
    return int(project().LedgerTestToken.at(token).balanceOf(holder))


def payout_logs(ledger, receipt) -> list[tuple[str, dict]]:
    """The ledger's Withdrawn/PayoutSkipped events of a receipt, in order."""
    found = []
    for item in receipt.logs:
        log = ledger.log_reader.decode(item)
        if log is not None and log.event in ("Withdrawn", "PayoutSkipped"):
            found.append((log.event, log.args))
    return found


@pytest.fixture
def settled_kitchen(ledger, funded, kitchen, alliance_of):  # noqa: F811
    """A four-party kitchen alliance in `token` with 1,000,003 base units settled."""

    def make(token: str, name: str = "payrun"):
        a = alliance_of(name, token, {"fridge": 4000, "oven": 3000, "recipe-app": 2000, "logistics": 1000})
        ledger.settle(a.id, 1, 0, a.terms, refs_of(name, 2), entries_of([(1_000_000, PERIOD), (3, PERIOD)]),
                      sender=funded)  # fmt: skip
        return a

    return make


def test_a_payout_run_sent_by_anyone_pays_each_me_its_whole_balance_at_its_payout_address(
    ledger, token, kitchen, payouts, attacker, settled_kitchen
):
    settled_kitchen(token)
    ids = [kitchen[m] for m in KITCHEN]
    owed = [ledger.balance_of(i, token) for i in ids]
    before = [erc20_balance(token, p.address) for p in payouts]
    receipt = ledger.payout(token, ids, sender=attacker)
    assert [erc20_balance(token, p.address) - b for p, b in zip(payouts, before, strict=True)] == owed
    assert sum(owed) == 1_000_003
    assert payout_logs(ledger, receipt) == [
        ("Withdrawn", {"meId": i, "token": token, "to": p.address, "amount": o})
        for i, p, o in zip(ids, payouts, owed, strict=True)
    ]
    assert erc20_balance(token, attacker.address) == 0
    assert assert_books_exact(ledger, token, ids) == 0


def test_a_payout_run_run_again_pays_nothing_twice(ledger, token, kitchen, payouts, attacker, settled_kitchen):
    settled_kitchen(token)
    ids = [kitchen[m] for m in KITCHEN]
    ledger.payout(token, ids, sender=attacker)
    after_first = [erc20_balance(token, p.address) for p in payouts]
    receipt = ledger.payout(token, ids + ids, sender=attacker)
    assert payout_logs(ledger, receipt) == []
    assert [erc20_balance(token, p.address) for p in payouts] == after_first
    assert assert_books_exact(ledger, token, ids) == 0


def test_an_me_listed_twice_in_one_run_is_paid_once(ledger, token, kitchen, payouts, attacker, settled_kitchen):
    settled_kitchen(token)
    fridge = kitchen["fridge"]
    owed = ledger.balance_of(fridge, token)
    before = erc20_balance(token, payouts[0].address)
    receipt = ledger.payout(token, [fridge, fridge], sender=attacker)
    assert erc20_balance(token, payouts[0].address) - before == owed
    assert [e for e, _ in payout_logs(ledger, receipt)] == ["Withdrawn"]
    assert assert_books_exact(ledger, token, kitchen.values()) == 1_000_003 - owed


def test_a_payout_address_blocked_by_the_token_is_skipped_and_keeps_its_balance_while_the_others_are_paid(
    ledger,
    kitchen,
    payouts,
    attacker,
    admin,
    token_for,  # noqa: F811
    settled_kitchen,  # noqa: F811
):
    blk = token_for("BlocklistToken")
    settled_kitchen(blk.address)
    ids = [kitchen[m] for m in KITCHEN]
    owed = [ledger.balance_of(i, blk.address) for i in ids]
    blk.setBlocked(payouts[1].address, True, sender=admin)  # oven's payout address
    receipt = ledger.payout(blk.address, ids, sender=attacker)
    logs = payout_logs(ledger, receipt)
    assert logs[1] == ("PayoutSkipped", {"meId": ids[1], "token": blk.address, "payout": payouts[1].address,
                                         "amount": owed[1]})  # fmt: skip
    assert [e for e, _ in logs] == ["Withdrawn", "PayoutSkipped", "Withdrawn", "Withdrawn"]
    assert [int(blk.balanceOf(p.address)) for p in payouts] == [owed[0], 0, owed[2], owed[3]]
    assert ledger.balance_of(ids[1], blk.address) == owed[1]
    assert assert_books_exact(ledger, blk.address, ids) == owed[1]
    assert assert_audit_clean(ledger).counts.get("payouts_skipped") == 1
    # Unblocked, the next run pays it, and only it.
    blk.setBlocked(payouts[1].address, False, sender=admin)
    receipt = ledger.payout(blk.address, ids, sender=attacker)
    assert payout_logs(ledger, receipt) == [
        ("Withdrawn", {"meId": ids[1], "token": blk.address, "to": payouts[1].address, "amount": owed[1]})
    ]
    assert [int(blk.balanceOf(p.address)) for p in payouts] == owed
    assert assert_books_exact(ledger, blk.address, ids) == 0
    assert_audit_clean(ledger)


def test_a_token_returning_false_skips_every_me_and_moves_nothing(
    ledger,
    kitchen,
    attacker,
    token_for,  # noqa: F811
    settled_kitchen,  # noqa: F811
):
    frt = token_for("FalseReturnToken")
    settled_kitchen(frt.address)
    ids = [kitchen[m] for m in KITCHEN]
    frt.setFailing(True, sender=attacker)
    receipt = ledger.payout(frt.address, ids, sender=attacker)
    assert [e for e, _ in payout_logs(ledger, receipt)] == ["PayoutSkipped"] * 4
    assert assert_books_exact(ledger, frt.address, ids) == 1_000_003


@pytest.mark.parametrize("bubble", [False, True], ids=["swallowed", "bubbled"])
def test_a_receiver_that_reenters_is_refused_and_a_reverting_one_is_skipped(
    ledger,
    funded,
    kitchen,
    alliance_of,  # noqa: F811
    platform,
    attacker,
    admin,
    evil,  # noqa: F811
    bubble,  # noqa: F811
):
    """The token notifies the receiving contract (ERC-777/1363 style), which calls `payout` again. Swallowed,
    the nested call is refused by the guard and the ME is paid once; bubbled, the receiver reverts the
    transfer: the ME is skipped and keeps its balance, and the other party is still paid."""
    receiver = project().ReentrantReceiver.deploy(ledger.address, sender=attacker)
    eve = ledger.register_me("eve", receiver.address, attacker.address, sender=platform)
    a = alliance_of("re-payrun", evil.address, {eve: 5000, "fridge": 5000}, {eve: attacker})
    ledger.settle(a.id, 1, 0, a.terms, refs_of("rp", 1), entries_of([(1_001, PERIOD)]), sender=funded)
    ids = [eve, kitchen["fridge"]]
    owed = [ledger.balance_of(i, evil.address) for i in ids]
    evil.setNotifyReceivers(True, sender=admin)
    receiver.setReentry(ledger.contract.payout.encode_input(evil.address, ids), bubble, sender=attacker)
    receipt = ledger.payout(evil.address, ids, sender=attacker)
    assert receiver.attempts() == (0 if bubble else 1)  # a reverted hook leaves no trace of its attempt
    events = [e for e, _ in payout_logs(ledger, receipt)]
    if bubble:
        assert events == ["PayoutSkipped", "Withdrawn"]
        assert ledger.balance_of(eve, evil.address) == owed[0]
        assert int(evil.balanceOf(receiver.address)) == 0
    else:
        assert not receiver.lastSuccess() and bytes(receiver.lastReturnData()) == REENTRANT_SELECTOR
        assert events == ["Withdrawn", "Withdrawn"]
        assert int(evil.balanceOf(receiver.address)) == owed[0]
    assert ledger.balance_of(kitchen["fridge"], evil.address) == 0
    assert assert_books_exact(ledger, evil.address, ids) == (owed[0] if bubble else 0)
    assert_audit_clean(ledger)


def test_payout_refuses_an_empty_list_the_zero_token_and_an_unknown_me_with_their_arguments(
    ledger, token, kitchen, attacker, settled_kitchen
):
    settled_kitchen(token)
    err = revert_of(lambda: raw(lambda: ledger.contract.payout(token, [], sender=attacker)))
    assert (err.name, err.args_) == ("PayoutBatchEmpty", {"token": token})
    err = revert_of(lambda: raw(lambda: ledger.contract.payout("0x" + "00" * 20, [1], sender=attacker)))
    assert (err.name, err.args_) == ("LedgerZeroAddress", {"field": "token"})
    err = revert_of(lambda: raw(lambda: ledger.contract.payout(token, [kitchen["fridge"], 999], sender=attacker)))
    assert (err.name, err.args_) == ("MEUnknown", {"meId": 999})
    assert ledger.balance_of(kitchen["fridge"], token) > 0  # nothing of the refused run was applied
    assert assert_books_exact(ledger, token, kitchen.values()) == 1_000_003


def test_a_dissolved_me_is_still_paid_to_its_payout_address(
    ledger, token, kitchen, payouts, attacker, platform, settled_kitchen
):
    settled_kitchen(token)
    oven = kitchen["oven"]
    owed = ledger.balance_of(oven, token)
    ledger.dissolve_me(oven, sender=platform)
    before = erc20_balance(token, payouts[1].address)
    ledger.payout(token, [oven], sender=attacker)
    assert erc20_balance(token, payouts[1].address) - before == owed
    assert owed > 0 and ledger.balance_of(oven, token) == 0
