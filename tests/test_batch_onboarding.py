"""`registerMEs` and `proposeAgreements`: many MEs or proposals in one transaction (platform role), each
exactly as the single-item function would, the whole call refused on the first bad item."""

from __future__ import annotations

import pytest

from ledger.chain.writer import LedgerWriter
from ledger.models import AgreementStatus, MEStatus, Terms

from .helpers import revert_of
from .test_adversaries import raw


def test_register_mes_registers_each_in_order_and_a_parent_may_be_an_earlier_one(ledger, platform, accounts):
    first = ledger.me_count() + 1
    payouts, signers = [accounts[12].address, accounts[13].address], [accounts[14].address, accounts[15].address]
    raw(lambda: ledger.contract.registerMEs(["batch-hub", "batch-leaf"], payouts, signers, [0, first], sender=platform))
    hub, leaf = ledger.me(first), ledger.me(first + 1)
    assert (hub.name, hub.payout, hub.signer, hub.parent, hub.status) == ("batch-hub", payouts[0], signers[0], 0,
                                                                          MEStatus.ACTIVE)  # fmt: skip
    assert (leaf.name, leaf.payout, leaf.signer, leaf.parent) == ("batch-leaf", payouts[1], signers[1], first)
    assert ledger.me_id_by_name("batch-leaf") == first + 1


def test_register_mes_refuses_unequal_arrays_and_a_taken_name_with_their_arguments_and_registers_none(
    ledger, platform, kitchen, accounts
):
    a = accounts[12].address
    count = ledger.me_count()
    err = revert_of(lambda: raw(lambda: ledger.contract.registerMEs(["x", "y"], [a], [a, a], [0, 0], sender=platform)))
    assert (err.name, err.args_) == ("MEBatchInvalid", {"names": 2, "payouts": 1, "signers": 2, "parents": 2})
    err = revert_of(lambda: raw(lambda: ledger.contract.registerMEs([], [], [], [], sender=platform)))
    assert err.name == "MEBatchInvalid"
    err = revert_of(lambda: raw(lambda: ledger.contract.registerMEs(["batch-new", "oven"], [a, a], [a, a], [0, 0],
                                                                    sender=platform)))  # fmt: skip
    assert (err.name, err.args_) == ("MENameTaken", {"name": "oven", "meId": kitchen["oven"]})
    assert ledger.me_count() == count


def test_propose_agreements_proposes_version_one_of_each_and_refuses_a_bad_batch_whole(
    ledger, platform, kitchen, token
):
    terms = Terms.build(token, {kitchen["fridge"]: 6000, kitchen["oven"]: 4000})
    bad = (token, [kitchen["fridge"], kitchen["oven"]], [6000, 3000], [], 0, [], [])  # shares sum to 9,000
    ids = [LedgerWriter.agreement_id(n) for n in ("batch-a", "batch-b")]
    err = revert_of(lambda: raw(lambda: ledger.contract.proposeAgreements(ids, [terms.as_tuple()], sender=platform)))
    assert (err.name, err.args_) == ("AgreementBatchInvalid", {"agreementIds": 2, "terms": 1})
    err = revert_of(lambda: raw(lambda: ledger.contract.proposeAgreements(ids, [terms.as_tuple(), bad],
                                                                          sender=platform)))  # fmt: skip
    assert (err.name, err.args_) == ("AgreementSharesSum", {"excessTable": False, "sum": 9000})
    assert ledger.agreements(ids) == [None, None]
    raw(lambda: ledger.contract.proposeAgreements(ids, [terms.as_tuple()] * 2, sender=platform))
    for agreement_id in ids:
        found = ledger.agreement(agreement_id)
        assert (found.status, found.latest_version, found.active_version) == (AgreementStatus.PROPOSED, 1, 0)
        assert ledger.terms_of(agreement_id, 1) == terms


def test_an_me_file_row_already_registered_is_skipped_when_identical_and_refused_with_another_parent(
    ledger, platform, kitchen, signers, payouts, accounts, tmp_path
):
    from ledger.errors import InputError
    from ledger.services.imports import check_me_file

    child = ledger.register_me("child", accounts[12].address, accounts[13].address, kitchen["fridge"], sender=platform)
    same = tmp_path / "same.csv"
    same.write_text(
        f"name,signer,payout,parent\nfridge,{signers[0].address},{payouts[0].address},\n"
        f"child,{accounts[13].address},{accounts[12].address},fridge\nnew-one,{accounts[14].address},,child\n"
    )
    new, skipped = check_me_file(ledger, same)
    assert [r.name for r in skipped] == ["fridge", "child"] and [r.name for r in new] == ["new-one"]
    other = tmp_path / "other.csv"
    other.write_text(f"name,signer,payout,parent\nchild,{accounts[13].address},{accounts[12].address},oven\n")
    with pytest.raises(InputError) as info:
        check_me_file(ledger, other)
    assert info.value.problems == [f"row 2: ME 'child' is registered (id {child}) with other values: parent fridge "
                                   f"(file: oven)"]  # fmt: skip
