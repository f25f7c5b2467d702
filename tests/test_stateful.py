"""Stateful property test: random sequences of ledger operations on the chain and in a plain-Python model.

A hypothesis ``RuleBasedStateMachine`` registers, updates and dissolves MEs, proposes, amends, signs
(activates), creates and terminates agreements, settles batches of revenue events, retries settled
batches, closes periods and withdraws, on a fresh deployment and in :class:`tests.ledger_model.LedgerModel`.
Every call must succeed on the chain exactly when the model says so, or revert with the custom error the
model names. After every step the machine checks, in one batched JSON-RPC round trip:

* conservation, per token: tokens held by the ledger == ``totalOwed`` == the sum of every ME's balance ==
  the model; every ME's balance, and every account's token holdings, equal the model's;
* exactly-once: the ``RevenueSettled`` logs are exactly the model's accepted batches, no reference is in
  them twice, and each agreement's sequence cursor equals the model's;
* every ME, agreement and period (revenue, closed) equals the model; a closed period's revenue never moves.

Each example starts from an Anvil snapshot taken right after the deployment and reverts to it at the end.
The machine drives the contract with raw JSON-RPC (ABI-encoded calls; Anvil signs for its test accounts):
a call the model refuses runs as an ``eth_call`` and its custom error is decoded from the revert data, a
call it accepts is sent as a transaction. Through Ape every revert would also fetch and print a call
trace (~0.2 s each); this way a step costs about 10 ms.

Cases and profiles:

* the quick case runs as many sequences as the active hypothesis profile's ``max_examples`` (25 by
  default, at most 100), 50 steps each, and checks that the sequences reach successful settlements,
  activations and withdrawals, and stale batches refused;
* the slow case (``-m slow``) is the fuzzing run: 10,000 sequences (or the profile's count, if larger)
  of the ``stateful-fuzz`` profile's 30 steps, about 0.3 s per sequence, so about an hour. It runs only
  under ``HYPOTHESIS_PROFILE=stateful-fuzz`` or ``fuzz``; ``STATEFUL_SEQUENCES=n`` runs n instead::

    HYPOTHESIS_PROFILE=stateful-fuzz ape test tests/test_stateful.py -m slow -s

* a self-check: with the model's rounding offset one sequence number off, the machine must fail.

``STATEFUL_STATS=1`` (with ``-s``) prints how often each call succeeded or reverted with each error.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from collections import Counter
from functools import lru_cache
from urllib.parse import urlsplit

import pytest
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ledger.chain import eip712
from ledger.chain.codec import EventSpec, canonical_type, revert_data
from ledger.chain.writer import EMPTY_TERMS, LedgerWriter, project
from ledger.models import AgreementStatus, Band, MEStatus, Terms, text_to_bytes32

from . import ledger_model
from .ledger_model import ZERO_REF, LedgerModel, Outcome

AGREEMENT_NAMES = tuple(f"alliance-{i}" for i in range(6))
PERIODS = (1, 2, 3, 2**32 - 1)
MAX_MES = 8
MAX_TERMINATED = 2
TX_GAS = 15_000_000
FUNDS = 2**250  # what finance holds of each token: enough for any batch the machine draws

QUICK_STEPS = 50  # steps per sequence in the quick case
QUICK_MAX_SEQUENCES = 100
# py-evm (LEDGER_NODE=pyevm) executes each call in Python, tens of times slower than revm: the quick case
# runs this many sequences there (the same machine and checks; depth is Anvil's job and forge's).
PYEVM_MAX_SEQUENCES = 5
FUZZ_PROFILES = ("stateful-fuzz", "fuzz")
FUZZ_SEQUENCES = 10_000
OUTCOMES: Counter = Counter()  # (function, error or 'ok') -> calls, since the test started


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


class Rpc:
    """JSON-RPC over one kept-alive HTTP connection (a fifth of the latency of `requests`)."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port or 80, parts.path or "/"
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def post(self, payload):
        body = json.dumps(payload)
        headers = {"Content-Type": "application/json"}
        try:
            self.connection.request("POST", self.path, body, headers)
            response = self.connection.getresponse()
        except (http.client.HTTPException, ConnectionError):  # the node closed the idle connection
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
            self.connection.request("POST", self.path, body, headers)
            response = self.connection.getresponse()
        return json.loads(response.read())

    def request(self, method: str, params: list | None = None):
        reply = self.post({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
        assert "error" not in reply, f"{method}: {reply['error']}"
        return reply["result"]

    def batch(self, calls: list[tuple[str, list]]) -> list:
        replies = self.post([{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)])
        by_id = {reply["id"]: reply for reply in replies}
        for i, (method, _) in enumerate(calls):
            assert "error" not in by_id[i], f"{method}: {by_id[i]['error']}"
        return [by_id[i]["result"] for i in range(len(calls))]


class InProcessRpc(Rpc):
    """The same requests to a node running in process (py-evm: ``LEDGER_NODE=pyevm``), through the chain
    layer's in-process transport."""

    def __init__(self, provider):
        from ledger.chain._inprocess import ProviderTransport

        self.post = ProviderTransport(provider)


class Env:
    """One deployment for the machine: the ledger, two settlement tokens, role and ME accounts."""

    def __init__(self, accounts):
        self.admin, self.platform, self.finance = accounts[0], accounts[1], accounts[2]
        self.outsider = accounts[11]
        self.pool = list(accounts[12:20])  # signers and payouts of the machine's MEs
        self.by_address = {a.address: a for a in [self.admin, self.platform, self.finance, self.outsider, *self.pool]}
        self.chain = LedgerWriter.deploy(
            admin=self.admin, platform=self.platform, finance=self.finance, sender=self.admin, token_decimals=6
        )
        second = project().LedgerTestToken.deploy("Second", "SND", 18, self.admin, self.finance, sender=self.admin)
        self.tokens = [self.chain.token, second]
        self.token_addresses = [t.address for t in self.tokens]
        for token in self.tokens:
            token.mint(self.finance.address, FUNDS, sender=self.finance)
            token.approve(self.chain.address, 2**256 - 1, sender=self.finance)
        import ape

        uri = ape.chain.provider.http_uri
        self.rpc = Rpc(uri) if uri else InProcessRpc(ape.chain.provider)
        self.chain_id = self.chain.chain_id
        self.holders = [self.chain.address, self.finance.address, self.outsider.address] + [
            a.address for a in self.pool
        ]
        abi = self.chain.contract.contract_type.model_dump(mode="json")["abi"]
        self.settled_spec = EventSpec.from_abi(next(i for i in abi if i.get("name") == "RevenueSettled"))
        self.reversed_spec = EventSpec.from_abi(next(i for i in abi if i.get("name") == "RevenueReversed"))
        self.functions, self.errors = {}, {}
        token_abi = self.tokens[1].contract_type.model_dump(mode="json")["abi"]
        for item in abi + token_abi:
            if item.get("type") in ("function", "error"):
                types = [canonical_type(i) for i in item["inputs"]]
                selector = _selector(f"{item['name']}({','.join(types)})")
                if item["type"] == "error":
                    self.errors[selector] = item["name"]
                elif item in abi:
                    self.functions[item["name"]] = (selector, types)
        unlocked = {to_checksum_address(a) for a in self.rpc.request("eth_accounts")}
        assert set(self.by_address) <= unlocked, "the node must sign for the test accounts"
        self.base_holdings = self.holdings()

    def holdings(self) -> dict[tuple[str, str], int]:
        return {(h, token.address): int(token.balanceOf(h)) for token in self.tokens for h in self.holders}

    # -- raw JSON-RPC: the ledger's functions by name, custom errors by selector ----------------------

    @staticmethod
    @lru_cache(maxsize=4096)
    def call(to: str, selector: bytes, types: tuple[str, ...], args: tuple) -> tuple[str, list]:
        data = "0x" + (selector + abi_encode(types, args)).hex()
        return "eth_call", [{"to": to, "data": data}, "latest"]

    def encode(self, fn: str, args: list) -> str:
        selector, types = self.functions[fn]
        return "0x" + (selector + abi_encode(types, args)).hex()

    def revert_of(self, sender: str, data: str) -> str | None:
        """The custom error a transaction would revert with now (an ``eth_call``), or None if it succeeds."""
        reply = self.rpc.post(
            {"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [
                {"from": sender, "to": self.chain.address, "data": data, "gas": hex(TX_GAS)}, "latest"]}
        )  # fmt: skip
        if "error" not in reply:
            return None
        raw = revert_data(reply["error"].get("data")) or b""  # a hex string on Anvil, nested on Hardhat
        return self.errors.get(raw[:4], f"undecoded revert 0x{raw.hex()} ({reply['error'].get('message')})")

    def send(self, sender: str, data: str) -> None:
        """Send a transaction (Anvil signs for its own accounts and mines it at once); it must succeed."""
        tx = {"from": sender, "to": self.chain.address, "data": data, "gas": hex(TX_GAS)}
        txn_hash = self.rpc.request("eth_sendTransaction", [tx])
        deadline = time.monotonic() + 30
        # Automine mines at once, but the receipt can lag the hash by a moment.
        while (receipt := self.rpc.request("eth_getTransactionReceipt", [txn_hash])) is None:
            assert time.monotonic() < deadline, f"transaction {txn_hash} was not mined"
        if receipt["status"] != "0x1":
            # A reverted transaction changes nothing but the sender's nonce: the same call says why.
            raise AssertionError(f"the transaction reverted with {self.revert_of(sender, data)}")


SEL = {
    "erc20Balance": _selector("balanceOf(address)"),
    "balanceOf": _selector("balanceOf(uint32,address)"),
    "totalOwed": _selector("totalOwed(address)"),
    "debtOf": _selector("debtOf(uint32,address)"),
    "totalDebt": _selector("totalDebt(address)"),
    "meCount": _selector("meCount()"),
    "meOf": _selector("meOf(uint32)"),
    "agreementOf": _selector("agreementOf(bytes32)"),
    "periodOf": _selector("periodOf(bytes32,uint32)"),
}


def _hex(value: str) -> bytes:
    return bytes.fromhex(value[2:])


def _uint(value: str) -> int:
    return int(value, 16)


# ---------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------


def share_table(n: int):
    """``n`` basis-point shares summing to 10,000 (zeros allowed), from cut points."""
    return st.lists(st.integers(0, 10_000), min_size=n - 1, max_size=n - 1).map(
        lambda cuts: [b - a for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), 10_000], strict=True)]
    )


AMOUNTS = st.one_of(
    st.just(1), st.integers(1, 100), st.integers(1, 10**6), st.integers(1, 10**12), st.integers(1, 2**96)
)
BAD_AMOUNTS = st.one_of(st.just(0), st.integers(2**126, 2**128 - 1), st.just(2**128))
TARGETS = st.one_of(st.just(0), st.integers(1, 100), st.integers(1, 10**6), st.integers(1, 10**12))
SMALL_AMOUNTS = st.one_of(st.just(1), st.integers(1, 1_000), st.integers(1, 10**7))
MISTAKES_TERMS = ("any ME", "unknown ME", "other token")
MISTAKES_REVERSE = (
    "beyond the original",
    "never settled",
    "another alliance's",
    "a reversal reference used twice",
    "a closed period",
    "an empty original",
    "another sequence number",
)
MISTAKES_SETTLE = (
    "another version",
    "other terms",
    "another sequence number",
    "a bad amount",
    "a period over 2**128",
    "period 0",
    "a closed period",
    "an empty reference",
    "a settled reference",
    "a repeated reference",
)


def rarely(data, label: str) -> bool:
    """True about one draw in ten; shrinks to False."""
    return data.draw(st.integers(0, 9), label=label) == 9


def draw_kind(data, label: str, mistakes: tuple[str, ...], clean: int = 6) -> str | None:
    """None (no mistake) ``clean`` times in ``clean + len(mistakes)``, else one mistake; shrinks to None."""
    return data.draw(st.sampled_from((None,) * clean + tuple(mistakes)), label=f"{label}: mistake")


def other_terms(data, terms: Terms, tokens: list[str]) -> Terms:
    """Terms that differ from ``terms`` (so their hash does): another token, or the shares rotated."""
    rotated = terms.shares[1:] + terms.shares[:1]
    if rotated != terms.shares and data.draw(st.booleans(), label="rotate shares"):
        return terms.model_copy(update={"shares": rotated})
    return terms.model_copy(update={"token": next(t for t in tokens if t != terms.token)})


# ---------------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------------


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self, env: Env):
        super().__init__()
        self.env = env
        self.chain = env.chain
        self.snapshot = env.rpc.request("evm_snapshot")
        self.start_block = _uint(env.rpc.request("eth_blockNumber")) + 1
        self.model = LedgerModel(ledger=env.chain.address, finance=env.finance.address, holdings=env.base_holdings)
        self.fresh = 0  # counter for fresh ME names and revenue references

    def teardown(self):
        assert self.env.rpc.request("evm_revert", [self.snapshot]) is True

    # -- plumbing -----------------------------------------------------------------------------------

    def expect(self, outcome: Outcome, sender, fn: str, *args) -> None:
        """``fn(*args)`` from ``sender`` must revert with ``outcome.error``, or succeed if that is None.

        A call the model refuses runs as an ``eth_call`` from ``sender`` (the same state, so the same
        revert, decoded, without mining a block); one it accepts is sent as a transaction and must be
        mined successfully.
        """
        event(f"{fn}: {outcome.error or 'ok'}")
        OUTCOMES[(fn, outcome.error or "ok")] += 1
        data = self.env.encode(fn, list(args))
        if outcome.error is None:
            self.env.send(sender.address, data)
        else:
            error = self.env.revert_of(sender.address, data)
            assert error == outcome.error, f"{fn}: the chain says {error or 'success'}, the model {outcome.error}"

    def next_name(self, prefix: str) -> str:
        self.fresh += 1
        return f"{prefix}{self.fresh}"

    def account(self, data, label: str):
        return data.draw(st.sampled_from(self.env.pool), label=label)

    def other_account(self, data, address: str, label: str):
        return data.draw(st.sampled_from([a for a in self.env.pool if a.address != address]), label=label)

    def me_ids(self) -> list[int]:
        return sorted(self.model.mes)

    def active_me_ids(self) -> list[int]:
        return [i for i in self.me_ids() if self.model.mes[i].status == MEStatus.ACTIVE]

    def draw_me_id(self, data, label: str) -> int:
        """An existing ME id, or (rarely) the next, unregistered one."""
        if not self.model.mes or rarely(data, f"{label}: unknown ME"):
            return len(self.model.mes) + 1
        return data.draw(st.sampled_from(self.me_ids()), label=label)

    def agreements_where(self, test) -> list[bytes]:
        return sorted(k for k, a in self.model.agreements.items() if test(a))

    def settleable(self) -> list[bytes]:
        """Active agreements whose parties are all active."""
        return self.agreements_where(
            lambda a: (
                a.status == AgreementStatus.ACTIVE
                and all(self.model.me_status(p) == MEStatus.ACTIVE for p in a.versions[a.active_version].parties)
            )
        )

    def pending(self) -> list[bytes]:
        """Live agreements whose latest version is not the active one."""
        return self.agreements_where(
            lambda a: a.status != AgreementStatus.TERMINATED and a.latest_version != a.active_version
        )

    def draw_terms(self, data, token: str | None = None, *, mistakes: bool = True) -> Terms:
        """Terms over 2-5 active MEs (rarely: a dissolved or unknown one), random shares, optional tier."""
        ids, active = self.me_ids(), self.active_me_ids()
        kind = draw_kind(data, "terms", MISTAKES_TERMS) if mistakes else None
        pool = ids if kind == "any ME" or len(active) < 2 else active
        n = data.draw(st.integers(2, min(5, len(pool))), label="party count")
        parties = sorted(
            data.draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n, unique=True), label="parties")
        )
        if kind == "unknown ME":
            parties[-1] = len(ids) + 1
        shares = data.draw(share_table(n), label="shares")
        # The shapes: none, one band (the classic target), up to MAX_BANDS bands, and a recoup first.
        band_count = data.draw(st.sampled_from((0, 0, 1, 1, 2, 3)), label="bands")
        targets = sorted(data.draw(st.sets(TARGETS.filter(bool), min_size=band_count, max_size=band_count),
                                   label="band targets"))  # fmt: skip
        bands = tuple(Band(target=t, shares=tuple(data.draw(share_table(n), label=f"band {j + 1} shares")))
                      for j, t in enumerate(targets))  # fmt: skip
        recoup = data.draw(st.one_of(st.just(0), st.just(0), st.integers(1, 10**7), st.integers(1, 10**12)),
                           label="recoup")  # fmt: skip
        recoup_shares = tuple(data.draw(share_table(n), label="recoup shares")) if recoup else ()
        if token is None or kind == "other token":
            token = data.draw(st.sampled_from(self.env.token_addresses), label="token")
        return Terms(
            token=token, parties=tuple(parties), shares=tuple(shares), bands=bands, recoup=recoup,
            recoup_shares=recoup_shares,
        )  # fmt: skip

    def sign(self, data, message, parties, *, mistakes: bool = True) -> tuple[list[bytes], list[str]]:
        """Every party's current signer signs ``message``; rarely one is from the wrong account or missing.
        Returns the signatures and who made them."""
        signers = [self.model.signer_of(p) for p in parties]
        signers = [s if s in self.env.by_address else self.env.pool[0].address for s in signers]
        kind = draw_kind(data, "signatures", ("a wrong signer", "one missing")) if mistakes else None
        if kind == "a wrong signer":
            i = data.draw(st.integers(0, len(signers) - 1), label="forged party")
            signers[i] = self.other_account(data, signers[i], "forger").address
        if kind == "one missing":
            signers = signers[:-1]
        return [eip712.sign(self.env.by_address[s], message) for s in signers], signers

    def approvals(self, data, agreement_id: bytes, version: int, terms: Terms, *, mistakes: bool = True):
        message = eip712.approval_message(self.env.chain_id, self.chain.address, agreement_id, version, terms)
        return self.sign(data, message, terms.parties, mistakes=mistakes)

    # -- MEs ----------------------------------------------------------------------------------------

    def _register(self, data, *, mistakes: bool = True):
        name = self.next_name("me-")
        payout, signer = self.account(data, "payout"), self.account(data, "signer")
        parent = 0
        kind = draw_kind(data, "register", ("a taken name", "a parent", "an unknown parent")) if mistakes else None
        if kind == "a taken name":
            name = data.draw(st.sampled_from(sorted(self.model.names)), label="taken name")
        elif kind == "a parent":
            parent = data.draw(st.sampled_from(self.me_ids()), label="parent")
        elif kind == "an unknown parent":
            parent = len(self.model.mes) + 1
        outcome = self.model.register(name, payout.address, signer.address, parent)
        self.expect(outcome, self.env.platform, "registerME", name, payout.address, signer.address, parent)

    @initialize(data=st.data(), count=st.integers(2, 5))
    def start(self, data, count):
        """A few MEs and one active agreement among them, so every sequence can settle from its first step."""
        for _ in range(count):
            self._register(data, mistakes=False)
        self._create(data, LedgerWriter.agreement_id(AGREEMENT_NAMES[0]), mistakes=False)

    @precondition(lambda self: len(self.model.mes) < MAX_MES)
    @rule(data=st.data())
    def register(self, data):
        self._register(data)

    @precondition(lambda self: len(self.active_me_ids()) > 2)  # keep two active MEs to make agreements with
    @rule(data=st.data())
    def dissolve(self, data):
        me_id = self.draw_me_id(data, "ME")
        outcome = self.model.dissolve(me_id)
        self.expect(outcome, self.env.platform, "dissolveME", me_id)

    @rule(data=st.data())
    def update_me(self, data):
        """A new payout and signer with the current signer's consent (rarely: a forged or stale consent)."""
        me_id = self.draw_me_id(data, "ME")
        payout, signer = self.account(data, "new payout"), self.account(data, "new signer")
        current = self.model.signer_of(me_id)
        by = self.env.by_address.get(current, self.env.outsider)
        nonce = self.model.mes[me_id].nonce if me_id in self.model.mes else 0
        kind = draw_kind(data, "consent", ("a wrong signer", "another nonce"))
        if kind == "a wrong signer":
            by = self.other_account(data, current, "forger")
        elif kind == "another nonce":
            nonce = data.draw(st.integers(0, nonce + 2).filter(lambda n: n != nonce), label="nonce")
        message = eip712.me_update_message(
            self.env.chain_id, self.chain.address, me_id, payout.address, signer.address, nonce
        )
        consent = eip712.sign(by, message)
        outcome = self.model.update(me_id, payout.address, signer.address, by.address, nonce)
        self.expect(outcome, self.env.platform, "updateME", me_id, payout.address, signer.address, consent)

    # -- agreements ---------------------------------------------------------------------------------

    def _propose(self, data, agreement_id: bytes):
        """A proposal by the platform, a signer of a party of the new terms, a signer of a party of the
        current version, or an outsider; the proposer shows the current version's terms (rarely others)."""
        existing = self.model.agreements.get(agreement_id)
        terms = self.draw_terms(data, existing.token if existing else None)
        live = existing is not None and existing.status != AgreementStatus.TERMINATED
        current = existing.versions[existing.version_in_force] if live else None
        choices = ["platform", "platform", "a party", "a party", "outsider"] + ["a current party"] * 2 * live
        proposer = data.draw(st.sampled_from(choices), label="by")
        if proposer in ("a party", "a current party"):
            parties = terms.parties if proposer == "a party" else current.parties
            signer = self.model.signer_of(data.draw(st.sampled_from(parties), label="proposing party"))
            sender = self.env.by_address.get(signer, self.env.outsider)
        else:
            sender = self.env.platform if proposer == "platform" else self.env.outsider
        if live and draw_kind(data, "current terms", ("other terms",)) == "other terms":
            current = other_terms(data, current, self.env.token_addresses)
        outcome = self.model.propose(
            agreement_id, terms, sender=sender.address, platform=proposer == "platform", current=current
        )
        shown = current.as_tuple() if current is not None else EMPTY_TERMS
        self.expect(outcome, sender, "proposeAgreement", agreement_id, terms.as_tuple(), shown)

    @precondition(lambda self: len(self.model.mes) >= 2)
    @rule(data=st.data())
    def propose(self, data):
        """Version 1 of a new agreement, or a new version of any agreement (also an ended one)."""
        name = data.draw(st.sampled_from(AGREEMENT_NAMES), label="agreement")
        self._propose(data, LedgerWriter.agreement_id(name))

    @precondition(lambda self: self.agreements_where(lambda a: a.status != AgreementStatus.TERMINATED))
    @rule(data=st.data())
    def amend(self, data):
        """A new version of a live agreement (it stays on its active version until this one is signed);
        half the time every party signs it and it is activated in the same step."""
        live = self.agreements_where(lambda a: a.status != AgreementStatus.TERMINATED)
        agreement_id = data.draw(st.sampled_from(live), label="agreement")
        self._propose(data, agreement_id)
        if agreement_id in self.pending() and data.draw(st.booleans(), label="and activate it"):
            self._activate(data, agreement_id, mistakes=False)

    @precondition(lambda self: self.pending())
    @rule(data=st.data())
    def sign_and_activate(self, data):
        """Every party signs the latest version of an agreement that has one pending, then activate it
        (rarely: another agreement; another version: an older pending one, the active one, one older than
        it or one never proposed; other terms; bad signatures)."""
        kind = draw_kind(data, "activation", ("any agreement", "another version", "other terms"))
        choices = self.pending() if kind != "any agreement" else sorted(self.model.agreements)
        self._activate(data, data.draw(st.sampled_from(choices), label="agreement"), kind=kind)

    @precondition(lambda self: self.agreements_where(lambda a: a.status != AgreementStatus.TERMINATED
                                                     and a.latest_version >= 2))  # fmt: skip
    @rule(data=st.data())
    def activate_any_version(self, data):
        """Every party signs any version of a live agreement that has several and it is submitted: a
        pending one older than the latest (accepted: a later proposal never blocks a signed version, and
        the older pending ones are superseded), the one in force, one it superseded, or none at all."""
        live = self.agreements_where(lambda a: a.status != AgreementStatus.TERMINATED and a.latest_version >= 2)
        agreement_id = data.draw(st.sampled_from(live), label="agreement")
        kind = data.draw(st.sampled_from(["an older pending version", "another version"]), label="which")
        if kind == "an older pending version" and len(self.active_me_ids()) >= 2:
            # Two more proposals by the platform, so there is an older pending version to activate.
            token = self.model.agreements[agreement_id].token
            for _ in range(2):
                terms = self.draw_terms(data, token, mistakes=False)
                outcome = self.model.propose(agreement_id, terms, sender=self.env.platform.address, platform=True)
                self.expect(outcome, self.env.platform, "proposeAgreement", agreement_id, terms.as_tuple(), EMPTY_TERMS)
        self._activate(data, agreement_id, kind=kind, mistakes=False)
        if kind == "an older pending version":  # and then one that activation superseded
            self._activate(data, agreement_id, kind="a superseded version", mistakes=False)

    def _activate(self, data, agreement_id: bytes, *, kind: str | None = None, mistakes: bool = True):
        agreement = self.model.agreements[agreement_id]
        version = agreement.latest_version
        if kind == "another version":  # an older pending one succeeds; one in force or before it does not
            version = data.draw(st.sampled_from(range(agreement.latest_version + 2)), label="version")
        if kind == "an older pending version":
            older = range(agreement.active_version + 1, agreement.latest_version)
            version = data.draw(st.sampled_from(older), label="version") if older else version
        if kind == "a superseded version":
            superseded = range(1, agreement.active_version)
            version = data.draw(st.sampled_from(superseded), label="version") if superseded else version
        terms = agreement.versions.get(version, agreement.versions[agreement.latest_version])
        if kind == "other terms":
            terms = other_terms(data, terms, self.env.token_addresses)
        signatures, signed_by = self.approvals(data, agreement_id, version, terms, mistakes=mistakes)
        outcome = self.model.activate(agreement_id, version, terms, signed_by)
        if outcome.ok and version < agreement.latest_version:
            OUTCOMES[("activateAgreement", "ok, an older pending version")] += 1
        self.expect(
            outcome, self.env.outsider, "activateAgreement", agreement_id, version, terms.as_tuple(), signatures
        )

    def _create(self, data, agreement_id: bytes, *, mistakes: bool = True):
        terms = self.draw_terms(data, mistakes=mistakes)
        signatures, signed_by = self.approvals(data, agreement_id, 1, terms, mistakes=mistakes)
        outcome = self.model.create(agreement_id, terms, signed_by)
        self.expect(outcome, self.env.finance, "createAgreement", agreement_id, terms.as_tuple(), signatures)

    @precondition(lambda self: len(self.model.mes) >= 2)
    @rule(data=st.data())
    def create(self, data):
        """Propose and activate version 1 at once, under an unused name (rarely: a used one)."""
        ids = [LedgerWriter.agreement_id(name) for name in AGREEMENT_NAMES]
        unused = [i for i in ids if i not in self.model.agreements]
        choices = unused if unused and not rarely(data, "create: a used name") else ids
        self._create(data, data.draw(st.sampled_from(choices), label="agreement"))

    @precondition(
        lambda self: (
            self.agreements_where(lambda a: a.status != AgreementStatus.TERMINATED)
            and len(self.agreements_where(lambda a: a.status == AgreementStatus.TERMINATED)) < MAX_TERMINATED
        )
    )
    @rule(data=st.data())
    def terminate(self, data):
        """Every party's signer signs the termination of the version in force (rarely: the wrong terms
        or version, bad signatures, an agreement that already ended)."""
        live = self.agreements_where(lambda a: a.status != AgreementStatus.TERMINATED)
        choices = sorted(self.model.agreements) if rarely(data, "terminate: any agreement") else live
        agreement_id = data.draw(st.sampled_from(choices), label="agreement")
        agreement = self.model.agreements[agreement_id]
        version = agreement.version_in_force
        terms = agreement.versions[version]
        kind = draw_kind(data, "termination", ("other terms", "another version"))
        if kind == "other terms":
            terms = other_terms(data, terms, self.env.token_addresses)
        signed_version = version
        if kind == "another version":
            signed_version = data.draw(st.integers(0, agreement.latest_version + 1), label="signed version")
        message = eip712.termination_message(self.env.chain_id, self.chain.address, agreement_id, signed_version)
        signatures, signed_by = self.sign(data, message, terms.parties)
        outcome = self.model.terminate(agreement_id, terms, signed_version, signed_by)
        self.expect(outcome, self.env.outsider, "terminateAgreement", agreement_id, terms.as_tuple(), signatures)

    # -- settlement ---------------------------------------------------------------------------------

    def open_periods(self, agreement_id: bytes) -> list[int]:
        return [p for p in PERIODS if not self.model.period(agreement_id, p).closed] or list(PERIODS)

    def draw_events(self, data, agreement_id: bytes, *, one_period: bool = False) -> tuple[list[bytes], list[int]]:
        """1-20 events with fresh references in open periods of the agreement."""
        n = data.draw(st.integers(1, 20), label="events")
        periods = self.open_periods(agreement_id)
        if one_period:
            periods = [data.draw(st.sampled_from(periods), label="period")]
        amounts = SMALL_AMOUNTS if one_period else AMOUNTS
        refs, entries = [], []
        for _ in range(n):
            amount = data.draw(amounts, label="amount")
            period = data.draw(st.sampled_from(periods), label="period")
            refs.append(text_to_bytes32(self.next_name("ref-")))
            entries.append((amount << 32) | period)
        return refs, entries

    def _settle(self, agreement_id, version, first_seq, terms, refs, entries) -> Outcome:
        debt_before = self.model.total_debt[terms.token]
        outcome = self.model.settle(agreement_id, version, first_seq, terms, refs, entries)
        self.expect(
            outcome, self.env.finance, "settle", agreement_id, version, first_seq, terms.as_tuple(), refs, entries
        )
        if outcome.ok and self.model.total_debt[terms.token] < debt_before:
            OUTCOMES[("settle", "ok, a debt netted")] += 1
        return outcome

    def _settle_fresh(self, data, *, one_period: bool):
        choices = self.settleable() or self.agreements_where(lambda a: a.status == AgreementStatus.ACTIVE)
        agreement_id = data.draw(st.sampled_from(choices), label="agreement")
        agreement = self.model.agreements[agreement_id]
        refs, entries = self.draw_events(data, agreement_id, one_period=one_period)
        version = agreement.active_version
        self._settle(agreement_id, version, agreement.next_seq, agreement.versions[version], refs, entries)

    @precondition(lambda self: self.agreements_where(lambda a: a.status == AgreementStatus.ACTIVE))
    @rule(data=st.data())
    def settle(self, data):
        """A well-formed batch at the cursor under the active version: fresh references, open periods."""
        self._settle_fresh(data, one_period=False)

    @precondition(lambda self: self.agreements_where(lambda a: a.status == AgreementStatus.ACTIVE))
    @rule(data=st.data())
    def settle_in_one_period(self, data):
        """A well-formed batch of small events in one period: one long run, rounding and tier crossings."""
        self._settle_fresh(data, one_period=True)

    @precondition(lambda self: self.model.agreements)
    @rule(data=st.data())
    def settle_with_a_mistake(self, data):
        """A batch with one thing wrong. A batch naming a reference settled before (or one twice) is
        refused by the client's check; the machine sends it anyway at a stale sequence number (a retry),
        which the contract must refuse."""
        inactive = self.agreements_where(lambda a: a.status != AgreementStatus.ACTIVE)
        active = self.settleable() or self.agreements_where(lambda a: a.status == AgreementStatus.ACTIVE)
        choices = active if active and not (inactive and rarely(data, "settle: an agreement not active")) else inactive
        agreement_id = data.draw(st.sampled_from(choices), label="agreement")
        agreement = self.model.agreements[agreement_id]
        closed = [p for p in PERIODS if self.model.period(agreement_id, p).closed]
        applicable = [
            kind
            for kind in MISTAKES_SETTLE
            if (kind != "a closed period" or closed)
            and (kind != "a settled reference" or self.model.credited)
            and (kind != "other terms" or agreement.versions)
        ]
        kind = data.draw(st.sampled_from(applicable), label="mistake")
        refs, entries = self.draw_events(data, agreement_id)
        version = agreement.active_version or agreement.latest_version
        terms = agreement.versions[version]
        first_seq = agreement.next_seq
        k = data.draw(st.integers(0, len(entries) - 1), label="event")
        amount, period = entries[k] >> 32, entries[k] & 0xFFFFFFFF
        if kind == "another version":
            version = data.draw(st.integers(0, agreement.latest_version + 1).filter(lambda v: v != version), label="v")
        elif kind == "other terms":
            terms = other_terms(data, terms, self.env.token_addresses)
        elif kind == "another sequence number":
            first_seq = data.draw(st.integers(0, first_seq + 3).filter(lambda s: s != first_seq), label="seq")
        elif kind == "a bad amount":
            entries[k] = (data.draw(BAD_AMOUNTS, label="bad amount") << 32) | period
        elif kind == "a period over 2**128":
            entries[k] = (2**128 - 1 << 32) | period
            entries.append((2**127 << 32) | period)
            refs.append(text_to_bytes32(self.next_name("ref-")))
        elif kind == "period 0":
            entries[k] = amount << 32
        elif kind == "a closed period":
            entries[k] = (amount << 32) | data.draw(st.sampled_from(closed), label="closed period")
        elif kind == "an empty reference":
            refs[k] = ZERO_REF
        elif kind == "a settled reference":
            refs[k] = data.draw(st.sampled_from(sorted(self.model.credited)), label="settled reference")
        elif kind == "a repeated reference" and len(refs) > 1:
            refs[k] = refs[(k + 1) % len(refs)]
        refusal = self.model.client_refusal(refs)
        if refusal is not None:
            event(f"settle: the client refused a batch with a {refusal}")
            if agreement.next_seq == 0:
                return  # nothing settled yet: no stale sequence number to retry at; the client sends nothing
            first_seq = data.draw(st.integers(0, agreement.next_seq - 1), label="stale seq")
            outcome = self._settle(agreement_id, version, first_seq, terms, refs, entries)
            self.assert_refused_as_stale(outcome, agreement_id, version, terms)
            return
        self._settle(agreement_id, version, first_seq, terms, refs, entries)

    def reversible(self) -> list[bytes]:
        """Active agreements with a settled event not yet wholly reversed."""
        model = self.model
        reversals = model.reversed_refs
        live = {
            c.agreement_id
            for ref, c in model.credited.items()
            if ref not in reversals and model.reversed[ref] < c.amount
        }
        return [a for a in self.agreements_where(lambda a: a.status == AgreementStatus.ACTIVE) if a in live]

    @precondition(lambda self: self.reversible())
    @rule(data=st.data())
    def reverse(self, data):
        """1-5 partial reversals of settled events, booked in open periods (sometimes all of what is
        left of an original; sometimes with a link mistake only the client can see, and then nothing
        is sent; sometimes with a mistake the contract must refuse). Balances below a debit become debts."""
        self._reverse(data, data.draw(st.sampled_from(self.reversible()), label="agreement"))

    @precondition(lambda self: self.reversible())
    @rule(data=st.data())
    def reverse_after_withdrawals(self, data):
        """The parties of an agreement withdraw what they hold, then reversals come: debts, which the
        next settlements net."""
        agreement_id = data.draw(st.sampled_from(self.reversible()), label="agreement")
        agreement = self.model.agreements[agreement_id]
        token = agreement.token
        for me_id in agreement.versions[agreement.active_version].parties:
            if self.model.balances[(me_id, token)] and data.draw(st.booleans(), label="withdraws"):
                sender = self.env.by_address.get(self.model.payout_of(me_id), self.env.outsider)
                outcome = self.model.withdraw(me_id, token, sender=sender.address)
                self.expect(outcome, sender, "withdraw", me_id, token)
        self._reverse(data, agreement_id)
        if data.draw(st.booleans(), label="then settle"):  # new revenue: debts are netted first
            refs, entries = self.draw_events(data, agreement_id)
            version = agreement.active_version
            self._settle(agreement_id, version, agreement.next_seq, agreement.versions[version], refs, entries)

    def _reverse(self, data, agreement_id: bytes):
        model = self.model
        agreement = model.agreements[agreement_id]
        reversals = model.reversed_refs
        pool = sorted(
            ref for ref, c in model.credited.items()
            if c.agreement_id == agreement_id and ref not in reversals and model.reversed[ref] < c.amount
        )  # fmt: skip
        periods = self.open_periods(agreement_id)
        refs, entries, originals = [], [], []
        left = {ref: model.credited[ref].amount - model.reversed[ref] for ref in pool}
        for _ in range(data.draw(st.integers(1, 5), label="reversals")):
            choices = [ref for ref in pool if left[ref] > 0]
            if not choices:
                break
            original = data.draw(st.sampled_from(choices), label="original")
            amount = data.draw(st.one_of(st.just(left[original]), st.integers(1, left[original])), label="amount")
            left[original] -= amount
            refs.append(text_to_bytes32(self.next_name("rev-")))
            entries.append((amount << 32) | data.draw(st.sampled_from(periods), label="period"))
            originals.append(original)
        kind = data.draw(st.sampled_from((None,) * 6 + MISTAKES_REVERSE), label="mistake")
        k = data.draw(st.integers(0, len(refs) - 1), label="which")
        amount = entries[k] >> 32
        closed = [p for p in PERIODS if model.period(agreement_id, p).closed]
        others = sorted(ref for ref, c in model.credited.items() if c.agreement_id != agreement_id)
        first_seq = agreement.next_seq
        if kind == "beyond the original":
            entries[k] = ((amount + left[originals[k]] + 1) << 32) | (entries[k] & 0xFFFFFFFF)
        elif kind == "never settled":
            originals[k] = text_to_bytes32(self.next_name("never-"))
        elif kind == "another alliance's" and others:
            originals[k] = data.draw(st.sampled_from(others), label="other")
        elif kind == "a reversal reference used twice":
            refs[k] = data.draw(st.sampled_from(sorted(model.credited)), label="used")
        elif kind == "a closed period" and closed:
            entries[k] = (amount << 32) | data.draw(st.sampled_from(closed), label="closed period")
        elif kind == "an empty original":
            originals[k] = ZERO_REF
        elif kind == "another sequence number":
            first_seq = data.draw(st.integers(0, first_seq + 3).filter(lambda s: s != first_seq), label="seq")
        if kind != "an empty original":
            refusal = model.reversal_refusal(agreement_id, refs, entries, originals)
            if refusal is not None:
                event(f"reverse: the client refused: {refusal}")
                return  # the client sends nothing
        version = agreement.active_version
        terms = agreement.versions[version]
        debt_before = dict(model.total_debt)
        outcome = model.reverse(agreement_id, version, first_seq, terms, refs, entries, originals)
        self.expect(outcome, self.env.finance, "settleReversals", agreement_id, version, first_seq,
                    terms.as_tuple(), refs, entries, originals)  # fmt: skip
        if outcome.ok and model.total_debt[terms.token] > debt_before.get(terms.token, 0):
            OUTCOMES[("settleReversals", "ok, a debt incurred")] += 1

    @precondition(lambda self: self.model.batches)
    @rule(data=st.data())
    def retry_settled_batch(self, data):
        """Submit a batch that was settled before, unchanged (a retry after a lost receipt)."""
        batch = data.draw(st.sampled_from(self.model.batches), label="batch")
        terms = self.model.agreements[batch.agreement_id].versions[batch.version]
        outcome = self._settle(
            batch.agreement_id, batch.version, batch.first_seq, terms, list(batch.refs), list(batch.entries)
        )
        self.assert_refused_as_stale(outcome, batch.agreement_id, batch.version, terms)

    def assert_refused_as_stale(self, outcome: Outcome, agreement_id: bytes, version: int, terms: Terms) -> None:
        """A batch at a sequence number below the cursor is never credited; while its agreement is active
        under the same version and terms, the refusal is SettlementOutOfSequence."""
        assert outcome.error is not None, "a batch at a stale sequence number was credited"
        agreement = self.model.agreements[agreement_id]
        in_force = agreement.status == AgreementStatus.ACTIVE and agreement.active_version == version
        if in_force and agreement.versions[version] == terms:
            assert outcome.error == "SettlementOutOfSequence", outcome.error

    @rule(data=st.data())
    def close_period(self, data):
        if self.model.agreements and not rarely(data, "close: an unknown agreement"):
            agreement_id = data.draw(st.sampled_from(sorted(self.model.agreements)), label="agreement")
        else:
            agreement_id = LedgerWriter.agreement_id(data.draw(st.sampled_from(AGREEMENT_NAMES), label="agreement"))
        period = data.draw(st.sampled_from(PERIODS), label="period")
        outcome = self.model.close_period(agreement_id, period)
        self.expect(outcome, self.env.finance, "closePeriod", agreement_id, period)

    @rule(data=st.data())
    def withdraw(self, data):
        """An ME with a balance withdraws it to its payout address (rarely: any ME, another caller)."""
        owed = sorted(k for k, v in self.model.balances.items() if v)
        if owed and not rarely(data, "withdraw: any ME and token"):
            me_id, token = data.draw(st.sampled_from(owed), label="ME and token")
        else:
            me_id = self.draw_me_id(data, "ME")
            token = data.draw(st.sampled_from(self.env.token_addresses), label="token")
        sender = self.env.by_address.get(self.model.payout_of(me_id), self.env.outsider)
        if rarely(data, "withdraw: from another account"):
            sender = self.other_account(data, sender.address, "caller")
        outcome = self.model.withdraw(me_id, token, sender=sender.address)
        self.expect(outcome, sender, "withdraw", me_id, token)

    @rule(data=st.data())
    def payout(self, data):
        """A payout run by any account over a few MEs (some listed twice; rarely an unknown id, or none)."""
        token = data.draw(st.sampled_from(self.env.token_addresses), label="token")
        known = self.me_ids()
        ids = data.draw(st.lists(st.sampled_from(known), max_size=4), label="MEs") if known else []
        if rarely(data, "payout: an unknown ME"):
            ids = [*ids, len(known) + 1]
        sender = self.account(data, "caller")
        outcome = self.model.payout(token, ids)
        self.expect(outcome, sender, "payout", token, ids)

    # -- invariants ---------------------------------------------------------------------------------

    @invariant()
    def chain_equals_model(self):
        env, model, ledger = self.env, self.model, self.chain.address
        model.check(env.token_addresses)
        calls, expected = [], []  # expected[i]: (key, decoder, what the model says)

        def read(key, to, name, types, args, decode, want):
            calls.append(env.call(to, SEL[name], tuple(types), tuple(args)))
            expected.append((key, decode, want))

        for token in env.token_addresses:
            for holder in env.holders:
                read(("held", token, holder), token, "erc20Balance", ["address"], [holder], _uint,
                     model.holdings[(holder, token)])  # fmt: skip
            read(("totalOwed", token), ledger, "totalOwed", ["address"], [token], _uint, model.total_owed[token])
            read(("totalDebt", token), ledger, "totalDebt", ["address"], [token], _uint, model.total_debt[token])
            for me_id in model.mes:
                read(("balance of ME", me_id, token), ledger, "balanceOf", ["uint32", "address"], [me_id, token],
                     _uint, model.balances[(me_id, token)])  # fmt: skip
                read(("debt of ME", me_id, token), ledger, "debtOf", ["uint32", "address"], [me_id, token],
                     _uint, model.debts[(me_id, token)])  # fmt: skip
        read(("meCount",), ledger, "meCount", [], [], _uint, len(model.mes))
        for me_id, me in model.mes.items():
            want = (me.payout, me.status, me.nonce, me.signer, me.name)
            read(("ME", me_id), ledger, "meOf", ["uint32"], [me_id], _me, want)
        for name in AGREEMENT_NAMES:
            agreement_id = LedgerWriter.agreement_id(name)
            a = model.agreements.get(agreement_id)
            want = (a.token, a.status, a.active_version, a.latest_version, a.next_seq, a.recouped) if a else None
            read(("agreement", name), ledger, "agreementOf", ["bytes32"], [agreement_id], _agreement, want)
            if a:
                for period in PERIODS:
                    state = model.period(agreement_id, period)
                    read(("period", name, period), ledger, "periodOf", ["bytes32", "uint32"], [agreement_id, period],
                         _period, (state.revenue, state.closed, state.recouped))  # fmt: skip
        calls.append(("eth_getLogs", [self._settled_filter()]))

        results = env.rpc.batch(calls)
        got = {}
        for raw, (key, decode, want) in zip(results, expected, strict=False):
            got[key] = decode(raw)
            assert got[key] == want, f"{' '.join(map(str, key))}: the chain has {got[key]}, the model {want}"
        # The invariant read off the chain alone: held == totalOwed == the sum of the balances,
        # totalDebt == the sum of the debts, and no ME has both a balance and a debt in one token.
        for token in env.token_addresses:
            owed = sum(got[("balance of ME", me_id, token)] for me_id in model.mes)
            assert got[("held", token, ledger)] == got[("totalOwed", token)] == owed
            assert got[("totalDebt", token)] == sum(got[("debt of ME", me_id, token)] for me_id in model.mes)
            for me_id in model.mes:
                assert not (got[("balance of ME", me_id, token)] and got[("debt of ME", me_id, token)])
        self.check_settled_logs(results[-1])

    def _settled_filter(self) -> dict:
        return {
            "address": self.chain.address,
            "fromBlock": hex(self.start_block),
            "toBlock": "latest",
            "topics": [["0x" + self.env.settled_spec.topic0.hex(), "0x" + self.env.reversed_spec.topic0.hex()]],
        }

    def check_settled_logs(self, raw_logs):
        """Exactly-once on the chain: the logs are the model's batches; no reference appears twice."""
        batches, seen = [], set()
        for item in raw_logs:
            topics = [_hex(t) for t in item["topics"]]
            reversal = topics[0] == self.env.reversed_spec.topic0
            spec = self.env.reversed_spec if reversal else self.env.settled_spec
            args = spec.decode(topics, _hex(item["data"]))
            refs = tuple(bytes(r) for r in args["refs"])
            originals = tuple(bytes(r) for r in args["originals"]) if reversal else ()
            batches.append(
                ledger_model.SettledBatch(
                    bytes(args["agreementId"]),
                    args["version"],
                    args["firstSeq"],
                    refs,
                    tuple(args["entries"]),
                    originals,
                )
            )
            assert not seen.intersection(refs), "a reference was credited twice"
            assert len(set(refs)) == len(refs), "a reference was credited twice in one batch"
            seen.update(refs)
        assert batches == self.model.batches
        assert seen == set(self.model.credited)


@lru_cache(maxsize=4096)
def _me(raw: str):
    payout, _parent, status, nonce, signer, name = abi_decode(
        ["(address,uint32,uint8,uint32,address,string)"], _hex(raw)
    )[0]
    return (to_checksum_address(payout), MEStatus(status), nonce, to_checksum_address(signer), name)


@lru_cache(maxsize=4096)
def _agreement(raw: str):
    token, status, active, latest, next_seq, recouped = abi_decode(
        ["address", "uint8", "uint32", "uint32", "uint64", "uint128"], _hex(raw)
    )
    if status == 0:
        return None
    return (to_checksum_address(token), AgreementStatus(status), active, latest, next_seq, recouped)


def _period(raw: str):
    revenue, closed, recouped = abi_decode(["uint128", "bool", "uint120"], _hex(raw))
    return (revenue, closed, recouped)


# ---------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(accounts):
    return Env(accounts)


def machine_settings(**overrides) -> settings:
    base = {
        "deadline": None,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    }
    return settings(settings.default, **{**base, **overrides})


def run_machine(env, **overrides):
    def ledger_machine():
        return LedgerMachine(env)

    run_state_machine_as_test(ledger_machine, settings=machine_settings(**overrides))


def active_profile() -> str:
    return os.environ.get("HYPOTHESIS_PROFILE", "default")


def report_outcomes() -> None:
    """With STATEFUL_STATS=1 (and -s): how often each call succeeded or reverted with each error."""
    if os.environ.get("STATEFUL_STATS"):
        print()
        for (fn, result), n in sorted(OUTCOMES.items()):
            print(f"{n:8d}  {fn}: {result}")


def test_chain_matches_the_model_over_random_sequences(env):
    """The quick case: as many sequences as the active profile's examples (25 by default; at most
    QUICK_MAX_SEQUENCES, the slow case is the long run), QUICK_STEPS steps each."""
    OUTCOMES.clear()
    from .conftest import node_kind

    cap = PYEVM_MAX_SEQUENCES if node_kind() == "pyevm" else QUICK_MAX_SEQUENCES
    run_machine(env, max_examples=min(settings.default.max_examples, cap), stateful_step_count=QUICK_STEPS)
    report_outcomes()
    if node_kind() == "pyevm":
        # Which states 5 random sequences reach is chance (one run of 2026-12-06 missed a refused proposal
        # while every sequence agreed with the model); the machine's reach is checked on the other nodes.
        return
    # The machine must keep reaching the states that matter, not only refusals.
    for wanted in [
        ("settle", "ok"),
        ("withdraw", "ok"),
        ("payout", "ok"),
        ("activateAgreement", "ok"),
        ("settle", "SettlementOutOfSequence"),
        ("proposeAgreement", "AgreementProposerNotCurrentParty"),
        ("activateAgreement", "AgreementVersionSuperseded"),
        ("activateAgreement", "ok, an older pending version"),
        ("settleReversals", "ok"),
        ("settleReversals", "ok, a debt incurred"),
        ("settle", "ok, a debt netted"),
    ]:
        assert OUTCOMES[wanted], f"no sequence reached {wanted}: the machine no longer exercises it"


@pytest.mark.slow
def test_chain_matches_the_model_over_10k_random_sequences(env):
    """The fuzzing run: 10,000 sequences of the stateful-fuzz profile's length (about an hour); runs only
    under HYPOTHESIS_PROFILE=stateful-fuzz or fuzz. STATEFUL_SEQUENCES=n runs n instead."""
    if active_profile() not in FUZZ_PROFILES:
        pytest.skip(f"the 10,000-sequence run needs HYPOTHESIS_PROFILE in {FUZZ_PROFILES}")
    OUTCOMES.clear()
    sequences = int(os.environ.get("STATEFUL_SEQUENCES", max(FUZZ_SEQUENCES, settings.default.max_examples)))
    steps = settings.get_profile("stateful-fuzz").stateful_step_count
    started = time.perf_counter()
    run_machine(env, max_examples=sequences, stateful_step_count=steps)
    elapsed = time.perf_counter() - started
    print(f"\n{sequences} sequences of {steps} steps in {elapsed:.0f} s ({elapsed / sequences:.3f} s per sequence)")
    report_outcomes()


def test_the_machine_catches_a_wrong_rounding_offset(env, monkeypatch):
    """The machine can fail: with the model's rounding offset one sequence number off, some ME's balance
    differs from the chain's within a few sequences."""
    real = ledger_model.split_parts

    def shifted(seq, *args, **kwargs):
        return real(seq + 1, *args, **kwargs)

    monkeypatch.setattr(ledger_model, "split_parts", shifted)
    with pytest.raises(AssertionError, match="balance of ME .*: the chain has"):
        run_machine(
            env,
            max_examples=25,
            stateful_step_count=QUICK_STEPS,
            derandomize=True,
            database=None,
            phases=[Phase.generate],
            print_blob=False,
        )
