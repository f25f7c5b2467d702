"""Teams sign as teams: an ME whose signer is a real Safe (1.4.1, from the pinned npm package) approves,
ends and consents through ERC-1271; the contract, the signing service and the audit each refuse what
the Safe would not accept.

The Safe here: owners accounts 12, 13, 14 (``owners``), threshold 2; the "team" ME registered with the
Safe as its signer. Signing goes through ``ledger.services`` (what the CLI calls), the contract checks
are asserted with their custom errors and arguments.
"""

from __future__ import annotations

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak

from ledger.chain import eip712
from ledger.chain import safe as safe_lib
from ledger.chain.rpc import HttpRpc
from ledger.errors import LedgerError
from ledger.models import Terms
from ledger.services import alliances, mes, safes
from ledger.services.alliances import SignatureStore
from ledger.services.audit import Auditor

from .helpers import revert_of


@pytest.fixture(scope="session")
def owners(accounts):
    return [accounts[12], accounts[13], accounts[14]]


@pytest.fixture(scope="session")
def safe_store(tmp_path_factory):
    return safes.SafeStore(tmp_path_factory.mktemp("safes"))


@pytest.fixture(scope="session")
def team_safe(ledger, owners, safe_store, admin):
    return safes.create(ledger, safe_store, "team", [o.address for o in owners], 2, sender=admin)


@pytest.fixture(scope="session")
def other_safe(ledger, owners, safe_store, admin):
    return safes.create(ledger, safe_store, "other", [o.address for o in owners], 2, sender=admin)


@pytest.fixture(scope="session")
def team(ledger, kitchen, team_safe, platform, accounts):
    """The "team" ME: its signer is the Safe, its payout account 15."""
    return ledger.register_me("team", accounts[15].address, team_safe.address, sender=platform)


@pytest.fixture
def store(tmp_path, ledger):
    return SignatureStore(tmp_path / "signatures", ledger.chain_id, ledger.address)


def team_terms(ledger, kitchen, team) -> Terms:
    return Terms.build(ledger.token.address, {kitchen["fridge"]: 4_000, team: 6_000}, 0, {})


def owner_sigs(ledger, safe_address: str, digest: bytes, accounts) -> bytes:
    message = safe_lib.message(ledger.chain_id, safe_address, digest)
    return safe_lib.pack({a.address: eip712.sign(a, message) for a in accounts})


def approval_digest(ledger, agreement_id: bytes, version: int, terms: Terms) -> bytes:
    return eip712.digest(ledger.approval_message(agreement_id, version, terms))


def exec_safe(ledger, safe_info, fn: str, types: list[str], args: list, owners) -> None:
    data = keccak(text=f"{fn}({','.join(types)})")[:4] + abi_encode(types, args)
    safes.exec_transaction(ledger, safe_info, safe_info.address, data, owners)


# ---------------------------------------------------------------------------------------------------
# The hashing matches the Safe contracts themselves
# ---------------------------------------------------------------------------------------------------


def test_the_safe_message_hash_built_offline_is_the_one_the_safe_computes(ledger, team_safe):
    digest = keccak(b"any ledger digest")
    # getMessageHash(bytes) of CompatibilityFallbackHandler, asked through the Safe (its fallback handler)
    data = keccak(text="getMessageHash(bytes)")[:4] + abi_encode(["bytes"], [digest])
    reply = ledger.rpc.request("eth_call", [{"to": team_safe.address, "data": "0x" + data.hex()}, "latest"])
    assert bytes.fromhex(reply[2:])[:32] == safe_lib.message_hash(ledger.chain_id, team_safe.address, digest)


def test_safe_create_records_owners_and_threshold_read_back_from_the_chain(ledger, team_safe, owners, safe_store):
    assert sorted(team_safe.owners) == sorted(o.address for o in owners)
    assert team_safe.threshold == 2
    assert safe_store.address("team", ledger.chain_id) == team_safe.address
    assert safes.resolve(ledger, safe_store, "team").address == team_safe.address


# ---------------------------------------------------------------------------------------------------
# The contract: ERC-1271 through SignatureChecker
# ---------------------------------------------------------------------------------------------------


def test_an_me_whose_signer_is_a_safe_approves_with_two_of_three_owners(
    ledger, kitchen, team, team_safe, signers, owners, finance
):
    terms = team_terms(ledger, kitchen, team)
    aid = ledger.agreement_id("team-deal")
    digest = approval_digest(ledger, aid, 1, terms)
    signatures = [eip712.sign(signers[0], ledger.approval_message(aid, 1, terms)),
                  owner_sigs(ledger, team_safe.address, digest, owners[1:])]  # fmt: skip
    ledger.create(aid, terms, signatures, sender=finance)
    assert ledger.agreement(aid).active_version == 1


@pytest.mark.parametrize("case", ["one owner of two", "a non-owner", "another safe", "another agreement"])
def test_the_contract_refuses_a_safe_signature_the_safe_would_not_accept(
    ledger, kitchen, team, team_safe, other_safe, signers, owners, attacker, finance, case
):
    terms = team_terms(ledger, kitchen, team)
    aid = ledger.agreement_id("team-deal")
    digest = approval_digest(ledger, aid, 1, terms)
    packed = {
        "one owner of two": lambda: owner_sigs(ledger, team_safe.address, digest, owners[:1]),
        "a non-owner": lambda: owner_sigs(ledger, team_safe.address, digest, [owners[0], attacker]),
        "another safe": lambda: owner_sigs(ledger, other_safe.address, digest, owners[:2]),
        "another agreement": lambda: owner_sigs(
            ledger, team_safe.address, approval_digest(ledger, ledger.agreement_id("other-deal"), 1, terms), owners[:2]
        ),
    }[case]()
    signatures = [eip712.sign(signers[0], ledger.approval_message(aid, 1, terms)), packed]
    err = revert_of(lambda: ledger.create(aid, terms, signatures, sender=finance))
    assert err.name == "AgreementSignatureRefused"
    assert err.args_ == {"agreementId": aid, "version": 1, "meId": team, "signer": team_safe.address}


def test_a_safe_whose_owners_changed_after_signing_is_refused_when_the_activation_runs(
    ledger, kitchen, team, team_safe, signers, owners, platform, finance
):
    terms = team_terms(ledger, kitchen, team)
    aid = ledger.agreement_id("team-deal")
    version = ledger.propose(aid, terms, sender=platform)
    digest = approval_digest(ledger, aid, version, terms)
    signatures = [eip712.sign(signers[0], ledger.approval_message(aid, version, terms)),
                  owner_sigs(ledger, team_safe.address, digest, owners[:2])]  # fmt: skip
    # owners[1] leaves the Safe (removeOwner(prevOwner, owner, threshold), signed by 2 owners)
    current = safes.info(ledger, team_safe.address)
    index = [o.lower() for o in current.owners].index(owners[1].address.lower())
    prev = current.owners[index - 1] if index else "0x0000000000000000000000000000000000000001"
    exec_safe(ledger, current, "removeOwner", ["address", "address", "uint256"], [prev, owners[1].address, 2],
              [owners[0], owners[2]])  # fmt: skip
    err = revert_of(lambda: ledger.activate(aid, version, terms, signatures, sender=finance))
    assert err.name == "AgreementSignatureRefused"
    assert err.args_["meId"] == team


def test_a_key_signer_still_gets_the_key_that_did_sign_named(
    ledger, kitchen, team, team_safe, signers, owners, finance
):
    terms = team_terms(ledger, kitchen, team)
    aid = ledger.agreement_id("team-deal")
    digest = approval_digest(ledger, aid, 1, terms)
    signatures = [eip712.sign(signers[1], ledger.approval_message(aid, 1, terms)),
                  owner_sigs(ledger, team_safe.address, digest, owners[:2])]  # fmt: skip
    err = revert_of(lambda: ledger.create(aid, terms, signatures, sender=finance))
    assert err.name == "AgreementSignatureInvalid"
    assert err.args_ == {"agreementId": aid, "version": 1, "meId": kitchen["fridge"], "recovered": signers[1].address}


def test_a_safe_consents_to_an_me_update_and_a_short_consent_is_refused(
    ledger, team, team_safe, owners, platform, accounts
):
    new_payout = accounts[16].address
    nonce = ledger.me(team).nonce
    message = eip712.me_update_message(ledger.chain_id, ledger.address, team, new_payout, team_safe.address, nonce)
    short = owner_sigs(ledger, team_safe.address, eip712.digest(message), owners[:1])
    err = revert_of(lambda: ledger.update_me(team, new_payout, team_safe.address, short, sender=platform))
    assert err.name == "MEConsentRefused"
    assert err.args_ == {"meId": team, "signer": team_safe.address}
    enough = owner_sigs(ledger, team_safe.address, eip712.digest(message), owners[1:])
    ledger.update_me(team, new_payout, team_safe.address, enough, sender=platform)
    assert ledger.me(team).payout == new_payout


# ---------------------------------------------------------------------------------------------------
# The signing service (what `ledger alliance sign/submit`, `ledger me consent/update` call)
# ---------------------------------------------------------------------------------------------------


def test_owners_sign_one_at_a_time_and_submit_waits_for_the_threshold(
    ledger, kitchen, team, team_safe, signers, owners, platform, store
):
    terms = team_terms(ledger, kitchen, team)
    alliances.propose(ledger, "team-deal", terms, sender=platform, amend=False)
    alliances.sign(ledger, store, "team-deal", signers[0])
    assert alliances.sign(ledger, store, "team-deal", owners[2]) == ["team (as owner of its Safe)"]
    head = ledger.head()
    with pytest.raises(LedgerError, match=r"waiting for team \(1 of 2 owner signatures of Safe 0x"):
        alliances.submit(ledger, store, "team-deal", sender=platform)
    assert ledger.head() == head  # nothing was sent
    alliances.sign(ledger, store, "team-deal", owners[0])
    assert alliances.submit(ledger, store, "team-deal", sender=platform) == 1
    assert ledger.agreement("team-deal").active_version == 1


def test_signing_with_an_account_that_is_not_an_owner_is_refused(ledger, kitchen, team, platform, attacker, store):
    alliances.propose(ledger, "team-deal", team_terms(ledger, kitchen, team), sender=platform, amend=False)
    with pytest.raises(LedgerError, match="nor an owner of a Safe that is one"):
        alliances.sign(ledger, store, "team-deal", attacker)


def test_an_owner_signature_for_another_safe_or_agreement_is_refused_on_import(
    ledger, kitchen, team, team_safe, other_safe, owners, platform, store
):
    terms = team_terms(ledger, kitchen, team)
    alliances.propose(ledger, "team-deal", terms, sender=platform, amend=False)
    aid = ledger.agreement_id("team-deal")
    digest = approval_digest(ledger, aid, 1, terms)
    for_other_safe = eip712.sign(owners[0], safe_lib.message(ledger.chain_id, other_safe.address, digest))
    other_digest = approval_digest(ledger, ledger.agreement_id("other-deal"), 1, terms)
    for_other_deal = eip712.sign(owners[0], safe_lib.message(ledger.chain_id, team_safe.address, other_digest))
    for signature in (for_other_safe, for_other_deal):
        with pytest.raises(LedgerError, match="not the signer of any party"):
            alliances.add_signature(ledger, store, "team-deal", "0x" + signature.hex(), me_name="team")
    right = eip712.sign(owners[0], safe_lib.message(ledger.chain_id, team_safe.address, digest))
    assert alliances.add_signature(ledger, store, "team-deal", "0x" + right.hex(), me_name="team")[0] == 1
    assert store.get_owners(aid, alliances.APPROVAL, 1, team) == {owners[0].address: right}


def test_owner_signatures_of_a_removed_owner_stop_counting_before_anything_is_sent(
    ledger, kitchen, team, team_safe, signers, owners, platform, store
):
    alliances.propose(ledger, "team-deal", team_terms(ledger, kitchen, team), sender=platform, amend=False)
    for account in (signers[0], owners[0], owners[1]):
        alliances.sign(ledger, store, "team-deal", account)
    current = safes.info(ledger, team_safe.address)
    index = [o.lower() for o in current.owners].index(owners[1].address.lower())
    prev = current.owners[index - 1] if index else "0x0000000000000000000000000000000000000001"
    exec_safe(ledger, current, "removeOwner", ["address", "address", "uint256"], [prev, owners[1].address, 2],
              [owners[0], owners[2]])  # fmt: skip
    head = ledger.head()
    with pytest.raises(LedgerError, match="no longer count: not by a current owner"):
        alliances.submit(ledger, store, "team-deal", sender=platform)
    assert ledger.head() == head


def test_a_safe_ends_an_alliance_with_its_owners_termination_signatures(
    ledger, kitchen, team, team_safe, signers, owners, platform, store
):
    alliances.propose(ledger, "team-deal", team_terms(ledger, kitchen, team), sender=platform, amend=False)
    for account in (signers[0], owners[0], owners[2]):
        alliances.sign(ledger, store, "team-deal", account)
    alliances.submit(ledger, store, "team-deal", sender=platform)
    signed, ended = alliances.terminate(ledger, store, "team-deal", [signers[0], owners[1]], sender=platform)
    assert not ended
    signed, ended = alliances.terminate(ledger, store, "team-deal", [owners[2]], sender=platform)
    assert ended


def test_me_consent_by_safe_owners_is_packed_and_sent_once_the_threshold_is_reached(
    ledger, team, team_safe, owners, platform, accounts, tmp_path
):
    consents = mes.ConsentStore(tmp_path, ledger.chain_id, ledger.address)
    update = mes.plan_update(ledger, "team", accounts[16].address, None)
    mes.consent(ledger, consents, update, owners[0])
    with pytest.raises(LedgerError, match="1 of 2 owner signatures"):
        mes.submit(ledger, consents, update, signature=None, sender=platform)
    mes.consent(ledger, consents, update, owners[2])
    mes.submit(ledger, consents, update, signature=None, sender=platform)
    assert ledger.me(team).payout == accounts[16].address


# ---------------------------------------------------------------------------------------------------
# The audit
# ---------------------------------------------------------------------------------------------------


class TamperedRpc:
    """The node's JSON-RPC, with one byte string replaced in every log's data (a forged history)."""

    def __init__(self, rpc: HttpRpc, old: bytes, new: bytes):
        self.rpc, self.old, self.new = rpc, old.hex(), new.hex()

    def _fix(self, result):
        if isinstance(result, list):
            for item in result:
                if isinstance(item, dict) and "data" in item:
                    item["data"] = item["data"].replace(self.old, self.new)
        return result

    def request(self, method, params=None):
        return self._fix(self.rpc.request(method, params or []))

    def batch(self, calls):
        return [self._fix(r) for r in self.rpc.batch(calls)]

    has_code = HttpRpc.has_code  # through request(), like every other call


def _history_with_a_safe_signer(ledger, kitchen, team, team_safe, signers, owners, finance):
    terms = team_terms(ledger, kitchen, team)
    aid = ledger.agreement_id("team-deal")
    digest = approval_digest(ledger, aid, 1, terms)
    packed = owner_sigs(ledger, team_safe.address, digest, owners[:2])
    ledger.create(aid, terms, [eip712.sign(signers[0], ledger.approval_message(aid, 1, terms)), packed], sender=finance)
    return aid, digest, packed


def test_the_audit_verifies_safe_signatures_offline_and_is_clean(
    ledger, kitchen, team, team_safe, signers, owners, finance
):
    _history_with_a_safe_signer(ledger, kitchen, team, team_safe, signers, owners, finance)
    report = Auditor(ledger.rpc, ledger.address).run()
    assert report.clean, [f.message for f in report.findings]
    assert report.counts["contract_signatures"] == 1
    assert report.counts.get("contract_signatures_unverifiable", 0) == 0


def test_the_audit_reports_a_forged_safe_signature(
    ledger, kitchen, team, team_safe, signers, owners, attacker, finance
):
    aid, digest, packed = _history_with_a_safe_signer(ledger, kitchen, team, team_safe, signers, owners, finance)
    forged = owner_sigs(ledger, team_safe.address, digest, [owners[0], attacker])
    assert len(forged) == len(packed)
    report = Auditor(TamperedRpc(ledger.rpc, packed, forged), ledger.address).run()
    found = [f for f in report.findings if f.kind == "signature"]
    assert len(found) == 1
    assert f"not a valid signature of the Safe {team_safe.address}" in found[0].message
    assert "not an owner of the Safe" in found[0].message
    assert found[0].values["me_id"] == team


def test_the_audit_rebuilds_owners_at_the_activation_not_today(
    ledger, kitchen, team, team_safe, signers, owners, finance
):
    """An owner removed after the activation does not make the old approval a finding."""
    _history_with_a_safe_signer(ledger, kitchen, team, team_safe, signers, owners, finance)
    current = safes.info(ledger, team_safe.address)
    index = [o.lower() for o in current.owners].index(owners[1].address.lower())
    prev = current.owners[index - 1] if index else "0x0000000000000000000000000000000000000001"
    exec_safe(ledger, current, "removeOwner", ["address", "address", "uint256"], [prev, owners[1].address, 2],
              [owners[0], owners[2]])  # fmt: skip
    report = Auditor(ledger.rpc, ledger.address).run()
    assert report.clean, [f.message for f in report.findings]
    assert report.counts["contract_signatures"] == 1


@pytest.mark.anvil_only("sets an account's code with anvil_setCode")
def test_an_eip7702_delegated_key_still_signs_with_its_key_and_its_delegate_is_asked_otherwise(
    ledger, kitchen, team, team_safe, signers, owners, finance
):
    """An EIP-7702 account's code is 0xef0100 || delegate: ECDSA by its key counts; a signature that is
    not the key's goes to the delegate (here the Safe singleton, which refuses it)."""
    terms = team_terms(ledger, kitchen, team)
    aid = ledger.agreement_id("team-deal")
    delegated = "0xef0100" + team_safe.address[2:].lower()
    ledger.rpc.request("anvil_setCode", [signers[0].address, delegated])
    assert ledger.rpc.request("eth_getCode", [signers[0].address, "latest"]) == delegated
    packed = owner_sigs(ledger, team_safe.address, approval_digest(ledger, aid, 1, terms), owners[:2])
    wrong = [eip712.sign(signers[1], ledger.approval_message(aid, 1, terms)), packed]
    err = revert_of(lambda: ledger.create(aid, terms, wrong, sender=finance))
    assert err.name == "AgreementSignatureRefused" and err.args_["meId"] == kitchen["fridge"]
    right = [eip712.sign(signers[0], ledger.approval_message(aid, 1, terms)), packed]
    ledger.create(aid, terms, right, sender=finance)
    assert ledger.agreement(aid).active_version == 1
