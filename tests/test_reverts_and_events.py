"""The remaining revert paths with their arguments, and the contents of every event not covered by the
flow tests."""

from __future__ import annotations

import pytest

from ledger.chain import eip712
from ledger.chain.writer import LedgerWriter, project
from ledger.errors import ContractRevert
from ledger.models import Terms, text_to_bytes32

from .helpers import revert_of, sign_all

PERIOD = 202611
ZERO = "0x" + "00" * 20


def test_the_ledger_needs_an_admin(admin):
    with pytest.raises(ContractRevert) as info:
        LedgerWriter.deploy(admin=ZERO, platform=ZERO, finance=ZERO, sender=admin, token_decimals=None)
    assert (info.value.name, info.value.args_["field"]) == ("LedgerZeroAddress", "admin")


def test_update_of_an_unknown_me_or_to_a_zero_address_is_refused(ledger, platform, kitchen, signers):
    consent = ledger.sign_me_update(signers[0], kitchen["fridge"], signers[0].address, signers[0].address)
    assert (
        revert_of(lambda: ledger.update_me(77, signers[0].address, signers[0].address, consent, sender=platform)).name
        == "MEUnknown"
    )
    err = revert_of(lambda: ledger.update_me(kitchen["fridge"], ZERO, signers[0].address, consent, sender=platform))
    assert (err.name, err.args_["field"]) == ("LedgerZeroAddress", "payout")
    err = revert_of(lambda: ledger.update_me(kitchen["fridge"], signers[0].address, ZERO, consent, sender=platform))
    assert (err.name, err.args_["field"]) == ("LedgerZeroAddress", "signer")


def test_proposing_with_a_dissolved_me_names_it(ledger, platform, kitchen, token):
    ledger.dissolve_me(kitchen["oven"], sender=platform)
    terms = Terms.build(token, {kitchen["fridge"]: 5000, kitchen["oven"]: 5000})
    err = revert_of(lambda: ledger.propose(ledger.agreement_id("x"), terms, sender=platform))
    assert (err.name, err.args_["meId"], err.args_["status"]) == ("MENotActive", kitchen["oven"], 2)


def test_closing_a_period_of_an_unknown_agreement_is_refused(ledger, funded):
    err = revert_of(lambda: ledger.close_period(ledger.agreement_id("nope"), PERIOD, sender=funded))
    assert err.name == "AgreementUnknown"


def test_a_period_whose_revenue_would_pass_128_bits_is_refused(ledger, funded, make_alliance):
    aid, terms = make_alliance("huge", {"fridge": 5000, "oven": 5000})
    big = 2**127 + 1
    entries = [(big << 32) | PERIOD, (big << 32) | PERIOD]
    refs = [text_to_bytes32("h1"), text_to_bytes32("h2")]
    ledger.token.mint(funded.address, 2 * big, sender=funded)
    err = revert_of(lambda: ledger.settle(aid, 1, 0, terms, refs, entries, sender=funded))
    assert (err.name, err.args_["amount"]) == ("RevenueAmountInvalid", 2 * big)


def test_a_fee_on_transfer_token_is_refused_and_nothing_is_booked(ledger, funded, kitchen, signers, admin):
    fee_token = project().FeeOnTransferToken.deploy(sender=admin)
    fee_token.mint(funded.address, 10**6, sender=admin)
    fee_token.approve(ledger.address, 10**6, sender=funded)
    terms = Terms.build(fee_token.address, {kitchen["fridge"]: 5000, kitchen["oven"]: 5000})
    aid = ledger.agreement_id("fee")
    ledger.create(aid, terms, sign_all(ledger, signers[:2], aid, 1, terms), sender=funded)
    err = revert_of(
        lambda: ledger.settle(aid, 1, 0, terms, [text_to_bytes32("f")], [(1_000 << 32) | PERIOD], sender=funded)
    )
    assert (err.name, err.args_["expected"], err.args_["received"]) == ("TokenTransferShortfall", 1_000, 990)
    assert ledger.total_owed(fee_token.address) == 0
    assert ledger.balance_of(kitchen["fridge"], fee_token.address) == 0


def test_registry_events_carry_the_new_values(ledger, platform, kitchen, signers, accounts):
    fridge = kitchen["fridge"]
    consent = ledger.sign_me_update(signers[0], fridge, accounts[14].address, accounts[15].address)
    start = ledger.contract.chain_manager.blocks.height + 1
    ledger.update_me(fridge, accounts[14].address, accounts[15].address, consent, sender=platform)
    ledger.dissolve_me(kitchen["oven"], sender=platform)
    updated, dissolved = list(ledger.logs(["MEUpdated", "MEDissolved"], from_block=start))
    assert updated.args == {"meId": fridge, "payout": accounts[14].address, "signer": accounts[15].address, "nonce": 1}
    assert dissolved.args == {"meId": kitchen["oven"]}


def test_agreement_events_carry_terms_proposer_and_signatures(ledger, platform, kitchen, signers, token):
    terms = Terms.build(
        token, {kitchen["fridge"]: 6000, kitchen["oven"]: 4000}, 500, {kitchen["fridge"]: 1000, kitchen["oven"]: 9000}
    )
    aid = ledger.agreement_id("events")
    start = ledger.contract.chain_manager.blocks.height + 1
    ledger.propose(aid, terms, sender=signers[1])
    approvals = sign_all(ledger, signers[:2], aid, 1, terms)
    ledger.activate(aid, 1, terms, approvals, sender=platform)
    message = ledger.termination_message(aid, 1)
    ends = [eip712.sign(s, message) for s in signers[:2]]
    ledger.terminate(aid, terms, ends, sender=platform)
    proposed, activated, ended = list(
        ledger.logs(["AgreementProposed", "AgreementActivated", "AgreementEnded"], from_block=start)
    )
    assert proposed.args["agreementId"] == aid and proposed.args["version"] == 1
    assert proposed.args["proposer"] == signers[1].address
    assert proposed.args["termsHash"] == ledger.hash_terms(terms) == ledger.terms_hash(aid, 1)
    assert proposed.args["terms"] == (
        token,
        (kitchen["fridge"], kitchen["oven"]),
        (6000, 4000),
        ((500, (1000, 9000)),),
        0,
        (),
        (),
    )
    assert [bytes(s) for s in activated.args["signatures"]] == approvals
    assert ended.args["version"] == 1 and [bytes(s) for s in ended.args["signatures"]] == ends
    # The signatures in the logs recover, off-chain, to the parties' signers.
    assert [eip712.recover(ledger.approval_message(aid, 1, terms), s) for s in approvals] == [
        s.address for s in signers[:2]
    ]
