"""Access matrix: every state-changing function of AllianceLedger called by every role.

Each row of MATRIX is a function, each column a caller; a cell is OK (the call succeeds and the state
it exists to change changed as intended) or the exact custom error (and then nothing changed). Callers:

    admin         DEFAULT_ADMIN_ROLE
    platform      PLATFORM_ROLE
    finance       FINANCE_ROLE
    party_signer  the signer of "fridge", a party of the agreements used below
    other_signer  the signer of "recipe-app", an ME that is no party of them
    payout        the payout address of "fridge"
    other_payout  the payout address of "oven" (a party, but not the ME that withdraws)
    attacker      no role, no ME

Agreements need no role (the parties' signatures authorise them), so every caller may submit
activate/create/terminate with valid signatures; what they may not do with bad signatures is covered
in tests/test_agreements.py and tests/test_adversaries.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from ledger.chain import eip712
from ledger.chain.writer import LedgerWriter, contract_errors
from ledger.errors import ContractRevert
from ledger.models import AgreementStatus, MEStatus, Terms, text_to_bytes32

from .helpers import sign_all

PERIOD = 202611
ACTIVE = LedgerWriter.agreement_id("matrix-active")  # fridge + oven, active, one batch settled
PROPOSED = LedgerWriter.agreement_id("matrix-proposed")  # fridge + oven, version 1 proposed only
NESTED = LedgerWriter.agreement_id("matrix-nested")  # fridge + recipe-app, whose half goes on to ACTIVE
FRESH = LedgerWriter.agreement_id("matrix-fresh")  # does not exist yet

OK = "ok"
ROLE = "AccessControlUnauthorizedAccount"
PARTY = "AgreementProposerNotParty"
CURRENT = "AgreementProposerNotCurrentParty"
PAYOUT = "WithdrawCallerNotPayout"
CONFIRM = "AccessControlBadConfirmation"

CALLERS = ("admin", "platform", "finance", "party_signer", "other_signer", "payout", "other_payout", "attacker")

# OK: succeeds and changes what it exists to change. Otherwise the exact custom error, and nothing changes:
#   ROLE = AccessControlUnauthorizedAccount   PARTY = AgreementProposerNotParty
#   PAYOUT = WithdrawCallerNotPayout          CONFIRM = AccessControlBadConfirmation
#   CURRENT = AgreementProposerNotCurrentParty
# A row "function (case)" calls the function in another situation: "proposeAgreement (amendment)" proposes
# version 2 of the active fridge + oven agreement, naming fridge and recipe-app (other_signer's ME).
# fmt: off
MATRIX = {
    #                     admin    platform finance  party_   other_   payout   other_   attacker
    #                                                signer   signer            payout
    "registerME":         (ROLE,   OK,      ROLE,    ROLE,    ROLE,    ROLE,    ROLE,    ROLE),
    "registerMEs":        (ROLE,   OK,      ROLE,    ROLE,    ROLE,    ROLE,    ROLE,    ROLE),
    "updateME":           (ROLE,   OK,      ROLE,    ROLE,    ROLE,    ROLE,    ROLE,    ROLE),
    "dissolveME":         (ROLE,   OK,      ROLE,    ROLE,    ROLE,    ROLE,    ROLE,    ROLE),
    "proposeAgreement":   (PARTY,  OK,      PARTY,   OK,      PARTY,   PARTY,   PARTY,   PARTY),
    "proposeAgreement (amendment)":
                          (CURRENT, OK,     CURRENT, OK,      CURRENT, CURRENT, CURRENT, CURRENT),
    "proposeAgreements":  (ROLE,   OK,      ROLE,    ROLE,    ROLE,    ROLE,    ROLE,    ROLE),
    "activateAgreement":  (OK,     OK,      OK,      OK,      OK,      OK,      OK,      OK),
    "createAgreement":    (OK,     OK,      OK,      OK,      OK,      OK,      OK,      OK),
    "terminateAgreement": (OK,     OK,      OK,      OK,      OK,      OK,      OK,      OK),
    "settle":             (ROLE,   ROLE,    OK,      ROLE,    ROLE,    ROLE,    ROLE,    ROLE),
    "settleReversals":    (ROLE,   ROLE,    OK,      ROLE,    ROLE,    ROLE,    ROLE,    ROLE),
    "settleNested":       (ROLE,   ROLE,    OK,      ROLE,    ROLE,    ROLE,    ROLE,    ROLE),
    "closePeriod":        (ROLE,   ROLE,    OK,      ROLE,    ROLE,    ROLE,    ROLE,    ROLE),
    "withdraw":           (PAYOUT, PAYOUT,  PAYOUT,  PAYOUT,  PAYOUT,  OK,      PAYOUT,  PAYOUT),
    # payout(token, [fridge]): anyone may send a payout run; the money goes to fridge's payout address only.
    "payout":             (OK,     OK,      OK,      OK,      OK,      OK,      OK,      OK),
    "grantRole":          (OK,     ROLE,    ROLE,    ROLE,    ROLE,    ROLE,    ROLE,    ROLE),
    "revokeRole":         (OK,     ROLE,    ROLE,    ROLE,    ROLE,    ROLE,    ROLE,    ROLE),
    # renounceRole(PLATFORM_ROLE, platform): only the holder itself can give its role up.
    "renounceRole":       (CONFIRM, OK,     CONFIRM, CONFIRM, CONFIRM, CONFIRM, CONFIRM, CONFIRM),
}
# fmt: on

CASES = [
    pytest.param(function, caller, expected, id=f"{function}-{caller}")
    for function, row in MATRIX.items()
    for caller, expected in zip(CALLERS, row, strict=True)
]


@dataclass
class World:
    ledger: LedgerWriter
    token: str
    callers: dict[str, Any]
    terms: Terms
    fridge: int
    oven: int
    recipe_app: int
    logistics: int
    signers: list
    accounts: Any


@pytest.fixture(scope="module")
def world(ledger, funded, kitchen, signers, payouts, admin, platform, finance, attacker, accounts) -> World:
    """An active agreement with a settled batch (fridge is owed 50) and a proposed one; module-scoped, so
    it is built once and every test starts from it (Ape reverts each test's changes)."""
    token = ledger.token.address
    terms = Terms.build(token, {kitchen["fridge"]: 5000, kitchen["oven"]: 5000})
    ledger.create(ACTIVE, terms, sign_all(ledger, signers[:2], ACTIVE, 1, terms), sender=platform)
    ledger.settle(ACTIVE, 1, 0, terms, [text_to_bytes32("m-0")], [(100 << 32) | PERIOD], sender=funded)
    ledger.propose(PROPOSED, terms, sender=platform)
    callers = {
        "admin": admin,
        "platform": platform,
        "finance": finance,
        "party_signer": signers[0],
        "other_signer": signers[2],
        "payout": payouts[0],
        "other_payout": payouts[1],
        "attacker": attacker,
    }
    return World(
        ledger,
        token,
        callers,
        terms,
        kitchen["fridge"],
        kitchen["oven"],
        kitchen["recipe-app"],
        kitchen["logistics"],
        signers,
        accounts,
    )


def _role(w: World, name: str) -> bytes:
    return bytes(getattr(w.ledger.contract, name)())


def _raw(call):
    """A raw contract call with the ledger's custom errors decoded into ContractRevert."""
    with contract_errors():
        return call()


def _norm(args: dict) -> dict:
    """Error arguments compared by value: addresses case-insensitively (Ape checksums them when it decodes
    the error itself, eth-abi in the ledger's fallback decoder does not), bytes as bytes."""
    return {k: v.lower() if isinstance(v, str) else bytes(v) if isinstance(v, bytes) else v for k, v in args.items()}


def _status(w: World, agreement_id: bytes) -> tuple:
    raw = w.ledger.contract.agreementOf(agreement_id)
    return AgreementStatus(int(raw.status)), int(raw.activeVersion), int(raw.latestVersion)


@dataclass
class Row:
    """How to call one function as `sender`, what state it changes, what that state must become, and the
    role an AccessControlUnauthorizedAccount names."""

    call: Any
    probe: Any
    changed: Any
    role: str = ""


def row_of(function: str, w: World) -> Row:
    led, c = w.ledger, w.ledger.contract
    new_payout, new_signer = w.accounts[14].address, w.accounts[15].address
    if function == "registerME":
        return Row(
            lambda s: led.register_me("matrix-new", new_payout, new_signer, sender=s),
            lambda: led.me_count(),
            lambda before: before + 1,
            "PLATFORM_ROLE",
        )
    if function == "updateME":
        consent = led.sign_me_update(w.signers[0], w.fridge, new_payout, new_signer)
        return Row(
            lambda s: led.update_me(w.fridge, new_payout, new_signer, consent, sender=s),
            lambda: (led.me(w.fridge).payout, led.me(w.fridge).signer, led.me(w.fridge).nonce),
            lambda before: (new_payout, new_signer, before[2] + 1),
            "PLATFORM_ROLE",
        )
    if function == "registerMEs":
        return Row(
            lambda s: _raw(
                lambda: c.registerMEs(["matrix-a", "matrix-b"], [new_payout] * 2, [new_signer] * 2, [0, 0], sender=s)
            ),  # fmt: skip
            lambda: int(c.meCount()),
            lambda before: before + 2,
            "PLATFORM_ROLE",
        )
    if function == "proposeAgreements":
        return Row(
            lambda s: _raw(lambda: c.proposeAgreements([FRESH], [w.terms.as_tuple()], sender=s)),
            lambda: _status(w, FRESH),
            lambda _: (AgreementStatus.PROPOSED, 0, 1),
            "PLATFORM_ROLE",
        )
    if function == "dissolveME":
        return Row(
            lambda s: led.dissolve_me(w.logistics, sender=s),
            lambda: led.me(w.logistics).status,
            lambda _: MEStatus.DISSOLVED,
            "PLATFORM_ROLE",
        )
    if function == "proposeAgreement":
        return Row(
            lambda s: led.propose(FRESH, w.terms, sender=s),
            lambda: _status(w, FRESH),
            lambda _: (AgreementStatus.PROPOSED, 0, 1),
        )
    if function == "proposeAgreement (amendment)":
        amended = Terms.build(w.token, {w.fridge: 5000, w.recipe_app: 5000})
        return Row(
            lambda s: led.propose(ACTIVE, amended, sender=s),
            lambda: _status(w, ACTIVE),
            lambda _: (AgreementStatus.ACTIVE, 1, 2),
        )
    if function == "activateAgreement":
        signatures = sign_all(led, w.signers[:2], PROPOSED, 1, w.terms)
        return Row(
            lambda s: led.activate(PROPOSED, 1, w.terms, signatures, sender=s),
            lambda: _status(w, PROPOSED),
            lambda _: (AgreementStatus.ACTIVE, 1, 1),
        )
    if function == "createAgreement":
        signatures = sign_all(led, w.signers[:2], FRESH, 1, w.terms)
        return Row(
            lambda s: led.create(FRESH, w.terms, signatures, sender=s),
            lambda: _status(w, FRESH),
            lambda _: (AgreementStatus.ACTIVE, 1, 1),
        )
    if function == "terminateAgreement":
        message = led.termination_message(ACTIVE, 1)
        signatures = [eip712.sign(s, message) for s in w.signers[:2]]
        return Row(
            lambda s: led.terminate(ACTIVE, w.terms, signatures, sender=s),
            lambda: _status(w, ACTIVE),
            lambda _: (AgreementStatus.TERMINATED, 1, 1),
        )
    if function == "settle":
        refs, entries = [text_to_bytes32("m-1")], [(10 << 32) | PERIOD]
        return Row(
            lambda s: led.settle(ACTIVE, 1, 1, w.terms, refs, entries, sender=s),
            lambda: (
                led.agreement(ACTIVE).next_seq,
                led.balance_of(w.fridge, w.token) + led.balance_of(w.oven, w.token),
                led.total_owed(w.token),
                led.token_balance(w.token, led.address),
            ),
            lambda before: (before[0] + 1, before[1] + 10, before[2] + 10, before[3] + 10),
            "FINANCE_ROLE",
        )
    if function == "settleNested":
        # recipe-app is an alliance: its half goes on to the active agreement (fridge and oven).
        outer = Terms.build(w.token, {w.fridge: 5000, w.recipe_app: 5000}, nested={w.recipe_app: ACTIVE})
        led.create(NESTED, outer, sign_all(led, [w.signers[0], w.signers[2]], NESTED, 1, outer),
                   sender=w.callers["platform"])  # fmt: skip
        refs, entries = [text_to_bytes32("n-1")], [(10 << 32) | PERIOD]
        return Row(
            lambda s: led.settle_nested(NESTED, 1, 0, outer, refs, entries, [(ACTIVE, 1, w.terms)], sender=s),
            lambda: (
                led.agreement(NESTED).next_seq,
                led.agreement(ACTIVE).next_seq,
                led.balance_of(w.fridge, w.token) + led.balance_of(w.oven, w.token),
                led.balance_of(w.recipe_app, w.token),
                led.total_owed(w.token),
            ),
            lambda before: (before[0] + 1, before[1] + 1, before[2] + 10, before[3], before[4] + 10),
            "FINANCE_ROLE",
        )
    if function == "settleReversals":
        refs, entries, originals = [text_to_bytes32("m-r1")], [(10 << 32) | PERIOD], [text_to_bytes32("m-0")]
        return Row(
            lambda s: led.reverse(ACTIVE, 1, 1, w.terms, refs, entries, originals, sender=s),
            lambda: (
                led.agreement(ACTIVE).next_seq,
                led.balance_of(w.fridge, w.token) + led.balance_of(w.oven, w.token),
                led.total_owed(w.token),
                led.token_balance(w.token, led.address),
            ),
            lambda before: (before[0] + 1, before[1] - 10, before[2] - 10, before[3] - 10),
            "FINANCE_ROLE",
        )
    if function == "closePeriod":
        return Row(
            lambda s: led.close_period(ACTIVE, PERIOD, sender=s),
            lambda: led.period(ACTIVE, PERIOD),
            lambda before: (before[0], True),
            "FINANCE_ROLE",
        )
    if function == "withdraw":
        payout = w.callers["payout"].address
        return Row(
            lambda s: led.withdraw(w.fridge, w.token, sender=s),
            lambda: (
                led.balance_of(w.fridge, w.token),
                led.total_owed(w.token),
                led.token_balance(w.token, payout),
            ),
            lambda before: (0, before[1] - before[0], before[2] + before[0]),
        )
    if function == "payout":
        payout = w.callers["payout"].address
        return Row(
            lambda s: led.payout(w.token, [w.fridge], sender=s),
            lambda: (
                led.balance_of(w.fridge, w.token),
                led.total_owed(w.token),
                led.token_balance(w.token, payout),
            ),
            lambda before: (0, before[1] - before[0], before[2] + before[0]),
        )
    if function == "grantRole":
        grantee = w.accounts[12].address
        finance_role = _role(w, "FINANCE_ROLE")
        return Row(
            lambda s: _raw(lambda: c.grantRole(finance_role, grantee, sender=s)),
            lambda: bool(c.hasRole(finance_role, grantee)),
            lambda _: True,
            "DEFAULT_ADMIN_ROLE",
        )
    if function == "revokeRole":
        finance_role, holder = _role(w, "FINANCE_ROLE"), w.callers["finance"].address
        return Row(
            lambda s: _raw(lambda: c.revokeRole(finance_role, holder, sender=s)),
            lambda: bool(c.hasRole(finance_role, holder)),
            lambda _: False,
            "DEFAULT_ADMIN_ROLE",
        )
    if function == "renounceRole":
        platform_role, holder = _role(w, "PLATFORM_ROLE"), w.callers["platform"].address
        return Row(
            lambda s: _raw(lambda: c.renounceRole(platform_role, holder, sender=s)),
            lambda: bool(c.hasRole(platform_role, holder)),
            lambda _: False,
        )
    raise AssertionError(function)  # pragma: no cover


def test_the_matrix_names_every_state_changing_function(ledger):
    """A new external function that changes state must get a row here."""
    abi = ledger.contract.contract_type.model_dump(mode="json")["abi"]
    mutating = {i["name"] for i in abi if i["type"] == "function" and i["stateMutability"] not in ("view", "pure")}
    assert mutating == {row.split(" ")[0] for row in MATRIX}


@pytest.mark.parametrize(("function", "caller", "expected"), CASES)
def test_access(world, function, caller, expected):
    row = row_of(function, world)
    sender = world.callers[caller]
    before = row.probe()
    if expected == OK:
        row.call(sender)
        assert row.probe() == row.changed(before), "the allowed call did not change what it exists to change"
        assert row.probe() != before
        return
    with pytest.raises(ContractRevert) as info:
        row.call(sender)
    err = info.value
    assert err.name == expected
    if expected == ROLE:
        want = {"account": sender.address, "neededRole": _role(world, row.role)}
    elif expected == PARTY:
        want = {"caller": sender.address}
    elif expected == CURRENT:
        want = {"agreementId": ACTIVE, "currentVersion": 1, "caller": sender.address}
    elif expected == PAYOUT:
        want = {"meId": world.fridge, "caller": sender.address, "payout": world.callers["payout"].address}
    else:
        want = {}
    assert _norm(err.args_) == _norm(want)
    assert row.probe() == before, "a refused call changed state"
