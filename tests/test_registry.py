"""The ME registry: registration, consented updates, dissolution, and their reverts and events."""

from __future__ import annotations

import pytest

from ledger.chain import eip712
from ledger.errors import NotFoundError
from ledger.models import MEStatus

from .helpers import revert_of


def test_register_records_the_me_and_logs_it(ledger, platform, accounts):
    me_id = ledger.register_me("oven-2", accounts[12].address, accounts[13].address, sender=platform)
    me = ledger.me(me_id)
    assert (me.name, me.payout, me.signer, me.status, me.parent) == (
        "oven-2",
        accounts[12].address,
        accounts[13].address,
        MEStatus.ACTIVE,
        0,
    )
    assert ledger.me_id_by_name("oven-2") == me_id
    log = list(ledger.logs(["MERegistered"]))[-1]
    assert log.args["meId"] == me_id and log.args["name"] == "oven-2"


def test_register_a_spawned_me_records_its_parent(ledger, platform, kitchen, accounts):
    child = ledger.register_me(
        "fridge-spinoff", accounts[12].address, accounts[12].address, kitchen["fridge"], sender=platform
    )
    assert ledger.me(child).parent == kitchen["fridge"]


@pytest.mark.parametrize(
    ("name", "payout", "signer", "parent", "error"),
    [
        ("", 12, 12, 0, "MENameInvalid"),
        ("x" * 65, 12, 12, 0, "MENameInvalid"),
        ("fridge", 12, 12, 0, "MENameTaken"),
        ("new", None, 12, 0, "LedgerZeroAddress"),
        ("new", 12, None, 0, "LedgerZeroAddress"),
        ("new", 12, 12, 999, "MEUnknown"),
    ],
)
def test_register_rejects_bad_input_with_its_custom_error(
    ledger, platform, kitchen, accounts, name, payout, signer, parent, error
):
    zero = "0x" + "00" * 20
    address = lambda i: zero if i is None else accounts[i].address  # noqa: E731
    err = revert_of(lambda: ledger.register_me(name, address(payout), address(signer), parent, sender=platform))
    assert err.name == error


def test_only_the_platform_registers_and_dissolves(ledger, kitchen, attacker, finance):
    for account in (attacker, finance):
        err = revert_of(lambda: ledger.register_me("x", attacker.address, attacker.address, sender=account))
        assert err.name == "AccessControlUnauthorizedAccount"
        assert err.args_["account"] == account.address
        err = revert_of(lambda: ledger.dissolve_me(kitchen["oven"], sender=account))
        assert err.name == "AccessControlUnauthorizedAccount"


def test_dissolve_marks_the_me_and_cannot_repeat(ledger, platform, kitchen):
    ledger.dissolve_me(kitchen["oven"], sender=platform)
    assert ledger.me(kitchen["oven"]).status == MEStatus.DISSOLVED
    err = revert_of(lambda: ledger.dissolve_me(kitchen["oven"], sender=platform))
    assert err.name == "MENotActive" and err.args_["meId"] == kitchen["oven"]
    assert revert_of(lambda: ledger.dissolve_me(999, sender=platform)).name == "MEUnknown"


def test_update_needs_the_consent_of_the_current_signer(ledger, platform, kitchen, signers, accounts):
    fridge = kitchen["fridge"]
    new_payout, new_signer = accounts[14].address, accounts[15].address
    consent = ledger.sign_me_update(signers[0], fridge, new_payout, new_signer)
    ledger.update_me(fridge, new_payout, new_signer, consent, sender=platform)
    me = ledger.me(fridge)
    assert (me.payout, me.signer, me.nonce) == (new_payout, new_signer, 1)
    # The same consent cannot be replayed (the nonce moved on), nor can the old signer consent again.
    err = revert_of(lambda: ledger.update_me(fridge, new_payout, new_signer, consent, sender=platform))
    assert err.name == "MEConsentInvalid" and err.args_["signer"] == new_signer


def test_update_rejects_a_consent_from_another_key(ledger, platform, kitchen, attacker, accounts):
    consent = ledger.sign_me_update(attacker, kitchen["fridge"], attacker.address, attacker.address)
    err = revert_of(
        lambda: ledger.update_me(kitchen["fridge"], attacker.address, attacker.address, consent, sender=platform)
    )
    assert err.name == "MEConsentInvalid" and err.args_["recovered"] == attacker.address


def test_update_digest_matches_the_contract(ledger, kitchen, accounts):
    message = eip712.me_update_message(
        ledger.chain_id, ledger.address, kitchen["oven"], accounts[1].address, accounts[2].address, 7
    )
    on_chain = bytes(ledger.contract.meUpdateDigest(kitchen["oven"], accounts[1].address, accounts[2].address, 7))
    assert eip712.digest(message) == on_chain


def test_unknown_me_lookups_say_so(ledger):
    with pytest.raises(NotFoundError, match="no ME named 'nobody'"):
        ledger.me_id_by_name("nobody")
    with pytest.raises(NotFoundError):
        ledger.me(4242)
