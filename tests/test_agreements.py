"""Alliance agreements: terms validation, EIP-712 approvals, amendments, termination, replay."""

from __future__ import annotations

import pytest

from ledger.chain import eip712
from ledger.chain.writer import LedgerWriter
from ledger.models import AgreementStatus, Band, Terms

from .helpers import revert_of, sign_all

AID = LedgerWriter.agreement_id("smart-kitchen")


@pytest.fixture
def terms(token, kitchen) -> Terms:
    return Terms.build(
        token, {kitchen["fridge"]: 4000, kitchen["oven"]: 3000, kitchen["recipe-app"]: 2000, kitchen["logistics"]: 1000}
    )


def raw_terms(token, parties, shares, target=0, excess=()):
    """Terms that skip the Python-side validation, to reach the contract's own checks (``target`` and
    ``excess`` as one band, when either is given)."""
    bands = (Band.model_construct(target=target, shares=tuple(excess)),) if target or excess else ()
    return Terms.model_construct(
        token=token, parties=tuple(parties), shares=tuple(shares), bands=bands, recoup=0, recoup_shares=(), nested=()
    )


def test_terms_hash_and_approval_digest_match_the_contract(ledger, terms):
    message = ledger.approval_message(AID, 3, terms)
    on_chain_hash = ledger.hash_terms(terms)
    assert bytes(ledger.contract.approvalDigest(AID, 3, on_chain_hash)) == eip712.digest(message)


def test_create_with_every_signature_activates_version_one_and_logs_the_terms(ledger, terms, signers, attacker):
    signatures = sign_all(ledger, signers, AID, 1, terms)
    receipt = ledger.create(AID, terms, signatures, sender=attacker)  # anyone may submit
    agreement = ledger.agreement("smart-kitchen")
    assert (agreement.status, agreement.active_version, agreement.latest_version) == (AgreementStatus.ACTIVE, 1, 1)
    assert ledger.terms_of(AID, 1) == terms
    activated = [log for log in ledger.logs(["AgreementActivated"], from_block=receipt.block_number)]
    assert [bytes(s) for s in activated[0].args["signatures"]] == signatures


def test_propose_then_activate(ledger, terms, signers, platform, finance):
    assert ledger.propose(AID, terms, sender=signers[2]) == 1  # a party's signer may propose
    assert ledger.agreement(AID).status == AgreementStatus.PROPOSED
    ledger.activate(AID, 1, terms, sign_all(ledger, signers, AID, 1, terms), sender=finance)
    assert ledger.agreement(AID).status == AgreementStatus.ACTIVE


def test_a_non_party_cannot_propose(ledger, terms, attacker):
    err = revert_of(lambda: ledger.propose(AID, terms, sender=attacker))
    assert err.name == "AgreementProposerNotParty"


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("one party", "AgreementPartyCount"),
        ("too many parties", "AgreementPartyCount"),
        ("short table", "AgreementTableLength"),
        ("sum 9999", "AgreementSharesSum"),
        ("duplicate", "AgreementDuplicateParty"),
        ("unordered", "AgreementPartiesUnordered"),
        ("unknown me", "MEUnknown"),
        ("excess without target", "AgreementBandTarget"),
        ("excess sum", "AgreementBandSharesSum"),
        ("zero token", "LedgerZeroAddress"),
    ],
)
def test_propose_rejects_invalid_terms(ledger, token, kitchen, platform, case, error):
    f, o, r = kitchen["fridge"], kitchen["oven"], kitchen["recipe-app"]
    zero = "0x" + "00" * 20
    bad = {
        "one party": raw_terms(token, [f], [10_000]),
        "too many parties": raw_terms(token, list(range(1, 66)), [10_000] + [0] * 64),
        "short table": raw_terms(token, [f, o], [10_000]),
        "sum 9999": raw_terms(token, [f, o], [5_000, 4_999]),
        "duplicate": raw_terms(token, [f, f], [5_000, 5_000]),
        "unordered": raw_terms(token, [o, f], [5_000, 5_000]),
        "unknown me": raw_terms(token, [f, 999], [5_000, 5_000]),
        "excess without target": raw_terms(token, [f, o], [5_000, 5_000], 0, [5_000, 5_000]),
        "excess sum": raw_terms(token, [f, o, r], [5_000, 5_000, 0], 100, [5_000, 5_000, 1]),
        "zero token": raw_terms(zero, [f, o], [5_000, 5_000]),
    }[case]
    assert revert_of(lambda: ledger.propose(AID, bad, sender=platform)).name == error


def test_activation_rejects_a_signature_from_a_key_that_is_not_the_signer(
    ledger, terms, signers, attacker, kitchen, platform
):
    ledger.propose(AID, terms, sender=platform)
    signatures = sign_all(ledger, [signers[0], signers[1], attacker, signers[3]], AID, 1, terms)
    err = revert_of(lambda: ledger.activate(AID, 1, terms, signatures, sender=platform))
    assert err.name == "AgreementSignatureInvalid"
    assert err.args_["meId"] == kitchen["recipe-app"] and err.args_["recovered"] == attacker.address


def test_activation_rejects_missing_reordered_and_malformed_signatures(ledger, terms, signers, platform):
    ledger.propose(AID, terms, sender=platform)
    good = sign_all(ledger, signers, AID, 1, terms)
    assert (
        revert_of(lambda: ledger.activate(AID, 1, terms, good[:3], sender=platform)).name == "AgreementSignatureCount"
    )
    swapped = [good[1], good[0], *good[2:]]
    assert (
        revert_of(lambda: ledger.activate(AID, 1, terms, swapped, sender=platform)).name == "AgreementSignatureInvalid"
    )
    garbage = [b"\x01" * 65, *good[1:]]
    err = revert_of(lambda: ledger.activate(AID, 1, terms, garbage, sender=platform))
    assert err.name == "AgreementSignatureInvalid" and err.args_["recovered"] == "0x" + "00" * 20


@pytest.mark.parametrize("wrong", ["version", "chain id", "contract", "agreement", "terms"])
def test_activation_rejects_signatures_over_other_typed_data(ledger, terms, signers, platform, token, kitchen, wrong):
    ledger.propose(AID, terms, sender=platform)
    chain_id, address, agreement_id, version, signed_terms = ledger.chain_id, ledger.address, AID, 1, terms
    if wrong == "version":
        version = 2
    elif wrong == "chain id":
        chain_id += 1
    elif wrong == "contract":
        address = token
    elif wrong == "agreement":
        agreement_id = LedgerWriter.agreement_id("another")
    else:
        signed_terms = Terms.build(token, {p: s for p, s in zip(terms.parties, (2500, 2500, 2500, 2500), strict=True)})
    message = eip712.approval_message(chain_id, address, agreement_id, version, signed_terms)
    signatures = [eip712.sign(s, message) for s in signers]
    assert (
        revert_of(lambda: ledger.activate(AID, 1, terms, signatures, sender=platform)).name
        == "AgreementSignatureInvalid"
    )


def test_activation_checks_the_terms_against_the_commitment(ledger, terms, signers, platform, token):
    ledger.propose(AID, terms, sender=platform)
    other = Terms.build(token, {p: 2500 for p in terms.parties})
    signatures = sign_all(ledger, signers, AID, 1, other)
    assert (
        revert_of(lambda: ledger.activate(AID, 1, other, signatures, sender=platform)).name == "AgreementTermsMismatch"
    )


def test_amendment_needs_every_party_again_and_keeps_old_versions_readable(
    ledger, terms, signers, platform, token, kitchen
):
    ledger.create(AID, terms, sign_all(ledger, signers, AID, 1, terms), sender=platform)
    amended = Terms.build(token, {p: 2500 for p in terms.parties}, 10**9, {p: 2500 for p in terms.parties})
    assert ledger.propose(AID, amended, sender=signers[0]) == 2
    # Version 1 stays in force until version 2 is approved by every party.
    assert ledger.agreement(AID).active_version == 1
    partial = sign_all(ledger, signers[:3], AID, 2, amended) + sign_all(ledger, [signers[0]], AID, 2, amended)
    assert (
        revert_of(lambda: ledger.activate(AID, 2, amended, partial, sender=platform)).name
        == "AgreementSignatureInvalid"
    )
    # Version 1's signatures cannot activate version 2 (replay across versions).
    old = sign_all(ledger, signers, AID, 1, terms)
    assert revert_of(lambda: ledger.activate(AID, 2, amended, old, sender=platform)).name == "AgreementSignatureInvalid"
    ledger.activate(AID, 2, amended, sign_all(ledger, signers, AID, 2, amended), sender=platform)
    assert ledger.agreement(AID).active_version == 2
    assert ledger.terms_of(AID, 1) == terms and ledger.terms_of(AID, 2) == amended
    # Re-activating, or activating a version older than the one in force, is refused.
    assert (
        revert_of(
            lambda: ledger.activate(AID, 2, amended, sign_all(ledger, signers, AID, 2, amended), sender=platform)
        ).name
        == "AgreementVersionAlreadyActive"
    )
    err = revert_of(lambda: ledger.activate(AID, 1, terms, old, sender=platform))
    assert (err.name, err.args_) == ("AgreementVersionSuperseded", {"agreementId": AID, "version": 1, "active": 2})


def test_an_amendment_cannot_change_the_token(ledger, terms, signers, platform, accounts):
    ledger.create(AID, terms, sign_all(ledger, signers, AID, 1, terms), sender=platform)
    other = terms.model_copy(update={"token": accounts[19].address})
    assert revert_of(lambda: ledger.propose(AID, other, sender=platform)).name == "AgreementTokenChanged"


def test_create_refuses_an_existing_agreement(ledger, terms, signers, platform):
    signatures = sign_all(ledger, signers, AID, 1, terms)
    ledger.create(AID, terms, signatures, sender=platform)
    assert revert_of(lambda: ledger.create(AID, terms, signatures, sender=platform)).name == "AgreementExists"


def test_termination_needs_every_party_and_is_final(ledger, terms, signers, platform, attacker):
    ledger.create(AID, terms, sign_all(ledger, signers, AID, 1, terms), sender=platform)
    message = ledger.termination_message(AID, 1)
    forged = [eip712.sign(s, message) for s in signers[:3]] + [eip712.sign(attacker, message)]
    assert revert_of(lambda: ledger.terminate(AID, terms, forged, sender=platform)).name == "AgreementSignatureInvalid"
    ledger.terminate(AID, terms, [eip712.sign(s, message) for s in signers], sender=attacker)
    assert ledger.agreement(AID).status == AgreementStatus.TERMINATED
    # Nothing revives it: not a replayed approval, not an amendment, not a second termination.
    assert (
        revert_of(
            lambda: ledger.activate(AID, 1, terms, sign_all(ledger, signers, AID, 1, terms), sender=platform)
        ).name
        == "AgreementTerminated"
    )
    assert revert_of(lambda: ledger.propose(AID, terms, sender=platform)).name == "AgreementTerminated"
    assert (
        revert_of(
            lambda: ledger.terminate(AID, terms, [eip712.sign(s, message) for s in signers], sender=platform)
        ).name
        == "AgreementTerminated"
    )


def test_a_dissolved_me_cannot_approve(ledger, terms, signers, platform, kitchen):
    ledger.propose(AID, terms, sender=platform)
    ledger.dissolve_me(kitchen["logistics"], sender=platform)
    err = revert_of(lambda: ledger.activate(AID, 1, terms, sign_all(ledger, signers, AID, 1, terms), sender=platform))
    assert err.name == "AgreementPartyDissolved" and err.args_["meId"] == kitchen["logistics"]


def test_unknown_agreements_are_refused(ledger, terms, signers, platform):
    assert revert_of(lambda: ledger.activate(AID, 1, terms, [], sender=platform)).name == "AgreementUnknown"
    assert revert_of(lambda: ledger.terminate(AID, terms, [], sender=platform)).name == "AgreementUnknown"
    assert revert_of(lambda: ledger.create(b"\0" * 32, terms, [], sender=platform)).name == "AgreementIdInvalid"


# -- who may propose a version, and which versions can be activated (issue 13, item 1) ----------------


def test_the_signer_of_an_outside_me_cannot_propose_a_version_naming_itself(ledger, token, kitchen, signers, platform):
    """The reproduction: logistics is no party of the alliance in force, so its signer may not add a version
    to it, even one that names logistics (which the old rule, "a party of the new terms", let through)."""
    f, o, r, lg = (kitchen[n] for n in ("fridge", "oven", "recipe-app", "logistics"))
    v1 = Terms.build(token, {f: 4000, o: 3000, r: 3000})
    ledger.create(AID, v1, sign_all(ledger, signers[:3], AID, 1, v1), sender=platform)
    hijack = Terms.build(token, {f: 1000, o: 1000, r: 1000, lg: 7000})
    err = revert_of(lambda: ledger.propose(AID, hijack, sender=signers[3]))
    assert (err.name, err.args_) == (
        "AgreementProposerNotCurrentParty",
        {"agreementId": AID, "currentVersion": 1, "caller": signers[3].address},
    )
    assert ledger.agreement(AID).latest_version == 1


def test_a_current_partys_signer_may_propose_and_the_platform_needs_no_current_terms(
    ledger, token, kitchen, signers, platform
):
    f, o, r = kitchen["fridge"], kitchen["oven"], kitchen["recipe-app"]
    v1 = Terms.build(token, {f: 5000, o: 5000})
    ledger.create(AID, v1, sign_all(ledger, signers[:2], AID, 1, v1), sender=platform)
    # Oven's signer proposes terms without oven: a party of the version in force speaks for the alliance.
    v2 = Terms.build(token, {f: 5000, r: 5000})
    assert ledger.propose(AID, v2, sender=signers[1]) == 2
    # The platform shows no current terms at all.
    empty = Terms.model_construct(token="0x" + "00" * 20, parties=(), shares=(), target=0, excess_shares=())
    assert ledger.propose(AID, v2, sender=platform, current=empty) == 3
    # Recipe-app (a party of versions 2 and 3 only, neither in force) may not.
    err = revert_of(lambda: ledger.propose(AID, v2, sender=signers[2], current=v1))
    assert err.name == "AgreementProposerNotCurrentParty"


def test_a_proposer_must_show_the_terms_of_the_current_version(ledger, token, kitchen, signers, platform):
    f, o, r = kitchen["fridge"], kitchen["oven"], kitchen["recipe-app"]
    v1 = Terms.build(token, {f: 5000, o: 5000})
    ledger.create(AID, v1, sign_all(ledger, signers[:2], AID, 1, v1), sender=platform)
    # Claiming recipe-app is a current party by showing made-up terms fails on the commitment.
    forged = Terms.build(token, {f: 5000, r: 5000})
    err = revert_of(lambda: ledger.propose(AID, forged, sender=signers[2], current=forged))
    assert (err.name, err.args_) == ("AgreementTermsMismatch", {"agreementId": AID, "version": 1})


def test_while_nothing_was_ever_activated_the_latest_proposals_parties_may_propose(
    ledger, token, kitchen, signers, platform
):
    f, o, r = kitchen["fridge"], kitchen["oven"], kitchen["recipe-app"]
    v1 = Terms.build(token, {f: 5000, o: 5000})
    v2 = Terms.build(token, {f: 5000, r: 5000})
    assert ledger.propose(AID, v1, sender=signers[1]) == 1
    assert ledger.propose(AID, v2, sender=signers[0]) == 2
    err = revert_of(lambda: ledger.propose(AID, v1, sender=signers[1]))
    assert (err.name, err.args_["currentVersion"]) == ("AgreementProposerNotCurrentParty", 2)
    assert ledger.propose(AID, v1, sender=signers[2]) == 3


def test_a_fully_signed_version_stays_activatable_after_a_later_proposal(ledger, token, kitchen, signers, platform):
    """Version 2 is signed by every party, then version 3 is proposed: version 2 can still be put in force,
    version 3 after it; activating a newer version supersedes every older pending one."""
    f, o = kitchen["fridge"], kitchen["oven"]
    v1 = Terms.build(token, {f: 5000, o: 5000})
    ledger.create(AID, v1, sign_all(ledger, signers[:2], AID, 1, v1), sender=platform)
    v2, v3, v4 = (Terms.build(token, {f: s, o: 10_000 - s}) for s in (6000, 7000, 8000))
    for terms in (v2, v3, v4):
        ledger.propose(AID, terms, sender=signers[1])
    ledger.activate(AID, 2, v2, sign_all(ledger, signers[:2], AID, 2, v2), sender=platform)
    assert (ledger.agreement(AID).active_version, ledger.agreement(AID).latest_version) == (2, 4)
    # Version 4 jumps over version 3, which can never be activated now.
    ledger.activate(AID, 4, v4, sign_all(ledger, signers[:2], AID, 4, v4), sender=platform)
    err = revert_of(lambda: ledger.activate(AID, 3, v3, sign_all(ledger, signers[:2], AID, 3, v3), sender=platform))
    assert (err.name, err.args_) == ("AgreementVersionSuperseded", {"agreementId": AID, "version": 3, "active": 4})
    assert ledger.agreement(AID).active_version == 4


def test_any_version_of_a_never_activated_agreement_can_be_activated(ledger, token, kitchen, signers, platform):
    f, o = kitchen["fridge"], kitchen["oven"]
    v1, v2 = Terms.build(token, {f: 5000, o: 5000}), Terms.build(token, {f: 6000, o: 4000})
    ledger.propose(AID, v1, sender=platform)
    ledger.propose(AID, v2, sender=platform)
    ledger.activate(AID, 1, v1, sign_all(ledger, signers[:2], AID, 1, v1), sender=platform)
    assert ledger.agreement(AID).active_version == 1
    ledger.activate(AID, 2, v2, sign_all(ledger, signers[:2], AID, 2, v2), sender=platform)
    assert ledger.agreement(AID).active_version == 2


@pytest.mark.parametrize("version", [0, 3])
def test_activating_a_version_that_was_never_proposed_is_refused(ledger, terms, signers, platform, version):
    ledger.propose(AID, terms, sender=platform)
    ledger.propose(AID, terms, sender=platform)
    err = revert_of(lambda: ledger.activate(AID, version, terms, sign_all(ledger, signers, AID, 1, terms),
                                            sender=platform))  # fmt: skip
    assert (err.name, err.args_) == ("AgreementVersionUnknown", {"agreementId": AID, "version": version, "latest": 2})
