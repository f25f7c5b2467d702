"""Unit tests of the auditor without a chain: the split recomputation, the terms hash, the event ABI, the whole
:class:`~ledger.services.audit.Auditor` driven by a fake JSON-RPC node that plays the contract, statement
reconciliation, and the HTTP JSON-RPC client against a server on localhost.

Run without the Ape plugin: ``python -m pytest -p no:ape_test tests/test_audit_unit.py``.
"""

from __future__ import annotations

import csv
import http.server
import json
import socket
import threading
from collections import defaultdict
from pathlib import Path

import pytest
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account._utils.encode_typed_data.encoding_and_hashing import hash_struct
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import money
from ledger.chain import eip712
from ledger.chain.codec import EventSpec, canonical_type
from ledger.chain.reader import LogReader
from ledger.chain.rpc import HttpRpc, RpcError
from ledger.errors import ChainUnavailable
from ledger.models import Band, Terms, bytes32_to_text
from ledger.services.audit import (
    EVENT_SIGNATURES,
    FINDING_KINDS,
    TERMS_TYPEHASH,
    AuditReport,
    Finding,
    TokenTotals,
    _jsonable,
    _Terms,
    audit,
    event_abi,
    recompute_runs,
    terms_hash,
    validate_terms,
)
from ledger.services.reconcile import Scope, StatementUnreadable, read_statement, reconcile
from ledger.terms import nested_reference

BPS = 10_000
CHAIN_ID = 31337
LEDGER = to_checksum_address("0x" + "1e" * 20)
USDC = to_checksum_address("0x" + "70" * 20)  # 6 decimals
EURT = to_checksum_address("0x" + "e2" * 20)  # 2 decimals
TOKENS = {USDC: (6, "USDC"), EURT: (2, "EURT")}
BAND_TYPE = "Band(uint128 target,uint16[] shares)"
TERMS_TYPE = (
    "Terms(address token,uint32[] parties,uint16[] shares,Band[] bands,uint128 recoup,uint16[] recoupShares,"
    "bytes32[] nested)"
)
APPROVAL_TYPE = "Approval(bytes32 agreementId,uint32 version,Terms terms)" + BAND_TYPE + TERMS_TYPE


def key(label: str) -> bytes:
    return keccak(text=label)


def addr(label: str) -> str:
    return Account.from_key(key(label)).address


ADMIN, PLATFORM, FINANCE = addr("admin"), addr("platform"), addr("finance")
ROLES = {"admin": b"\0" * 32, "platform": keccak(text="PLATFORM_ROLE"), "finance": keccak(text="FINANCE_ROLE")}


def b32(text: str) -> bytes:
    return text.encode().ljust(32, b"\0")


def sign(private_key: bytes, message) -> bytes:
    signature = bytes(Account.sign_message(message, private_key=private_key).signature)
    assert len(signature) == 65
    return signature


def packed_array(kind: str, values) -> bytes:
    """``abi.encodePacked`` of a Solidity array: every element padded to 32 bytes (the ABI encoding of the
    dynamic array without its offset and length words)."""
    return abi_encode([f"{kind}[]"], [list(values)])[64:]


def hand_terms_hash(token: str, parties, shares, target: int, excess, recoup=0, recoup_shares=(), nested=()) -> bytes:
    """``hashTerms`` of the contract, written out independently of the auditor (``target``/``excess``: one
    band, or a list of (target, shares) bands when ``excess`` is None)."""
    bands = [] if not target and not excess else ([(target, excess)] if excess is not None else target)
    band_hashes = b"".join(
        keccak(
            abi_encode(
                ["bytes32", "uint128", "bytes32"], [keccak(text=BAND_TYPE), t, keccak(packed_array("uint16", x))]
            )
        )
        for t, x in bands
    )
    return keccak(
        abi_encode(
            ["bytes32", "address", "bytes32", "bytes32", "bytes32", "uint128", "bytes32", "bytes32"],
            [
                keccak(text=TERMS_TYPE + BAND_TYPE),
                token,
                keccak(packed_array("uint32", parties)),
                keccak(packed_array("uint16", shares)),
                keccak(band_hashes),
                recoup,
                keccak(packed_array("uint16", recoup_shares)),
                keccak(b"".join(nested)),
            ],
        )
    )


# =====================================================================================================
# 1. recompute_runs against money.split_event
# =====================================================================================================


@st.composite
def share_tables(draw, n: int) -> tuple[int, ...]:
    cuts = sorted(draw(st.lists(st.integers(0, BPS), min_size=n - 1, max_size=n - 1)))
    bounds = [0, *cuts, BPS]
    return tuple(b - a for a, b in zip(bounds, bounds[1:], strict=False))


@st.composite
def random_terms(draw) -> _Terms:
    n = draw(st.integers(2, 20))
    parties = tuple(sorted(draw(st.sets(st.integers(1, 2**32 - 1), min_size=n, max_size=n))))
    shares = draw(share_tables(n))
    target = draw(st.one_of(st.just(0), st.integers(1, 3 * 10**12)))
    excess = draw(share_tables(n)) if target else ()
    return _Terms(USDC, parties, shares, target, excess)


PERIODS = (1, 2, 7)
batches = st.lists(st.tuples(st.integers(1, 10**12), st.sampled_from(PERIODS)), min_size=1, max_size=30)
priors = st.fixed_dictionaries({p: st.one_of(st.just(0), st.integers(0, 4 * 10**12)) for p in PERIODS})


def expected_runs(terms: _Terms, first_seq: int, batch, prior: dict[int, int]):
    """Runs of consecutive same-period events, each event split by money.split_event, then summed."""
    revenue = dict(prior)
    runs: list[dict] = []
    n = len(terms.parties)
    for k, (amount, period) in enumerate(batch):
        split = money.split_event(
            first_seq + k, amount, revenue[period], terms.shares, terms.target, terms.excess_shares
        )
        revenue[period] += amount
        if not runs or runs[-1]["period"] != period:
            runs.append({"period": period, "first_seq": first_seq + k, "count": 0, "base": [0] * n, "excess": [0] * n})
        run = runs[-1]
        run["count"] += 1
        run["total"] = run.get("total", 0) + amount
        run["base"] = [a + b for a, b in zip(run["base"], split.base, strict=True)]
        run["excess"] = [a + b for a, b in zip(run["excess"], split.excess, strict=True)]
    return runs, {p: revenue[p] for p in {p for _, p in batch}}


@given(terms=random_terms(), batch=batches, first_seq=st.integers(0, 2**64 - 31), prior=priors)
def test_recompute_runs_equals_the_per_event_rule_summed_run_by_run(terms, batch, first_seq, prior):
    entries = [amount << 32 | period for amount, period in batch]
    asked: list[int] = []

    def revenue_of(period: int) -> int:
        asked.append(period)
        return prior[period]

    runs, revenue = recompute_runs(b"kitchen", 3, terms, first_seq, entries, revenue_of)
    want, want_revenue = expected_runs(terms, first_seq, batch, prior)

    assert [(r.period, r.first_seq, r.count) for r in runs] == [(w["period"], w["first_seq"], w["count"]) for w in want]
    for run, w in zip(runs, want, strict=True):
        assert (run.agreement_id, run.version) == (b"kitchen", 3)
        assert run.base == w["base"]
        assert run.excess == w["excess"]
        assert sum(run.base) + sum(run.excess) == w["total"]
        assert all(c >= 0 for c in run.base + run.excess)
        if not terms.target:
            assert run.excess == [0] * len(terms.parties)
    # Runs split exactly where the period changes: no two neighbours share a period, and together they
    # cover the batch in order.
    assert all(a.period != b.period for a, b in zip(runs, runs[1:], strict=False))
    assert sum(r.count for r in runs) == len(batch)
    assert revenue == want_revenue
    assert sorted(asked) == sorted(set(asked)) == sorted(want_revenue)  # each period's revenue read once


def test_recompute_runs_hand_computed_example_across_the_target():
    """Worked by hand from the rule: offsets 905, 7086, 3267, 9448 for sequence numbers 5..8."""
    terms = _Terms(USDC, (1, 2, 3), (2500, 2500, 5000), 100, (5000, 3000, 2000))
    entries = [30 << 32 | 1, 10 << 32 | 1, 5 << 32 | 2, 1 << 32 | 1]
    runs, revenue = recompute_runs(b"a", 1, terms, 5, entries, {1: 90, 2: 0}.__getitem__)
    assert [(r.period, r.first_seq, r.count, r.base, r.excess) for r in runs] == [
        (1, 5, 2, [2, 3, 5], [15, 9, 6]),  # 30 at revenue 90: base 10 -> 2,3,5; excess 20 -> 10,6,4; then 10 -> 5,3,2
        (2, 7, 1, [1, 1, 3], [0, 0, 0]),
        (1, 8, 1, [0, 0, 0], [1, 0, 0]),  # period 1 again: a new run, starting from revenue 130
    ]
    assert revenue == {1: 131, 2: 5}


# =====================================================================================================
# 2. terms_hash and validate_terms
# =====================================================================================================

TERMS_TYPES = {
    "Terms": [
        {"name": "token", "type": "address"},
        {"name": "parties", "type": "uint32[]"},
        {"name": "shares", "type": "uint16[]"},
        {"name": "bands", "type": "Band[]"},
        {"name": "recoup", "type": "uint128"},
        {"name": "recoupShares", "type": "uint16[]"},
        {"name": "nested", "type": "bytes32[]"},
    ],
    "Band": [{"name": "target", "type": "uint128"}, {"name": "shares", "type": "uint16[]"}],
}


def test_terms_typehash_is_the_contracts():
    spelled = (
        b"Terms(address token,uint32[] parties,uint16[] shares,Band[] bands,uint128 recoup,uint16[] recoupShares,"
        b"bytes32[] nested)Band(uint128 target,uint16[] shares)"
    )
    assert keccak(spelled) == TERMS_TYPEHASH


@settings(max_examples=15)
@given(terms=random_terms())
def test_terms_hash_matches_a_hand_computation_and_eth_account(terms):
    ours = terms_hash(terms)
    assert ours == hand_terms_hash(terms.token, terms.parties, terms.shares, terms.target, terms.excess_shares)
    data = {
        "token": terms.token,
        "parties": list(terms.parties),
        "shares": list(terms.shares),
        "bands": [{"target": terms.target, "shares": list(terms.excess_shares)}] if terms.target else [],
        "recoup": 0,
        "recoupShares": [],
        "nested": [],
    }
    assert ours == hash_struct("Terms", TERMS_TYPES, data)


def test_terms_hash_fixed_example_and_sensitivity():
    parties, shares, excess = (1, 2, 3), (5000, 3000, 2000), (2000, 3000, 5000)

    def th(token=USDC, p=parties, s=shares, target=1_000_000, x=excess, **more):
        return terms_hash(_Terms(token, tuple(p), tuple(s), target, tuple(x), **more))

    base = th()
    assert base == hand_terms_hash(USDC, parties, shares, 1_000_000, excess)
    assert len(base) == 32
    # Every field counts.
    assert th(token=EURT) != base
    assert th(p=(1, 2, 4)) != base
    assert th(s=(5000, 2000, 3000)) != base
    assert th(target=1_000_001) != base
    assert th(x=(2000, 5000, 3000)) != base
    assert (
        th(recoup=5, recoup_shares=(10_000, 0, 0))
        == hand_terms_hash(USDC, parties, shares, 1_000_000, excess, 5, (10_000, 0, 0))
        != base
    )
    nested = (b"\0" * 32, b32("inner"), b"\0" * 32)
    assert th(nested=nested) == hand_terms_hash(USDC, parties, shares, 1_000_000, excess, nested=nested) != base
    two = ((1_000_000, excess), (2_000_000, (0, 0, 10_000)))
    assert th(target=0, x=(), bands=two) == hand_terms_hash(USDC, parties, shares, list(two), None) != base
    # No band: keccak of nothing for the bands.
    no_tier = th(target=0, x=())
    assert no_tier == keccak(
        abi_encode(
            ["bytes32", "address", "bytes32", "bytes32", "bytes32", "uint128", "bytes32", "bytes32"],
            [TERMS_TYPEHASH, USDC, keccak(packed_array("uint32", parties)),
             keccak(packed_array("uint16", shares)), keccak(b""), 0, keccak(b""), keccak(b"")],
        )
    )  # fmt: skip


def test_approval_digest_commits_to_the_terms_hash_as_the_contract_does():
    """approvalDigest(id, version, hashTerms(terms)) = keccak(0x1901 || domain || keccak(abi.encode(...)))."""
    terms = Terms.build(USDC, {1: 5000, 2: 3000, 3: 2000}, 1_000_000, {1: 2000, 2: 3000, 3: 5000})
    aid = b32("kitchen")
    domain = keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak(text="MEAllianceLedger"),
                keccak(text="1"),
                CHAIN_ID,
                LEDGER,
            ],
        )
    )
    th = terms_hash(_Terms(terms.token, terms.parties, terms.shares, terms.target, terms.excess_shares))
    struct = keccak(abi_encode(["bytes32", "bytes32", "uint32", "bytes32"], [keccak(text=APPROVAL_TYPE), aid, 2, th]))
    message = eip712.approval_message(CHAIN_ID, LEDGER, aid, 2, terms)
    assert eip712.digest(message) == keccak(b"\x19\x01" + domain + struct)


def _t(parties, shares, target=0, excess=(), **more):
    return _Terms(USDC, tuple(parties), tuple(shares), target, tuple(excess), **more)


@pytest.mark.parametrize(
    ("terms", "problem"),
    [
        (_t([1], [10_000]), "parties: an alliance needs 2 to 64 parties, got 1"),
        (_t(range(1, 66), [100] * 64 + [3600]), "parties: an alliance needs 2 to 64 parties, got 65"),
        (_t([2, 1], [5000, 5000]), "parties: not in strictly ascending ME id order (or a party appears twice)"),
        (_t([1, 1], [5000, 5000]), "parties: not in strictly ascending ME id order (or a party appears twice)"),
        (
            _t([1, 3, 2], [4000, 3000, 3000]),
            "parties: not in strictly ascending ME id order (or a party appears twice)",
        ),
        (_t([1, 2], [5000, 4999]), "shares sums to 9999 basis points; it must sum to 10000"),
        (_t([1, 2], [10_000]), "shares has 1 entries for 2 parties"),
        (_t([1, 2], [5000, 5000, 0]), "shares has 3 entries for 2 parties"),
        (
            _t([1, 2], [5000, 5000], 0, [5000, 5000]),
            "band 1: the target must be above 0 and at most " + str(2**128 - 1),
        ),
        (_t([1, 2], [5000, 5000], 7, []), "band 1 shares has 0 entries for 2 parties"),
        (_t([1, 2], [5000, 5000], 7, [10_000]), "band 1 shares has 1 entries for 2 parties"),
        (_t([1, 2], [5000, 5000], 7, [5000, 5001]), "band 1 shares sums to 10001 basis points; it must sum to 10000"),
        (
            _t([1, 2], [5000, 5000], bands=((7, (5000, 5000)), (7, (0, 10_000)))),
            "band 2: targets must be strictly ascending (7 after 7)",
        ),
        (_t([1, 2], [5000, 5000], recoup=9), "recoup shares has 0 entries for 2 parties"),
        (_t([1, 2], [5000, 5000], nested=(b"\0" * 32,)), "nested: 1 entries for 2 parties"),
    ],
)
def test_validate_terms_names_each_problem(terms, problem):
    assert validate_terms(terms) == problem


@pytest.mark.parametrize(
    "terms",
    [
        _t([1, 2], [5000, 5000]),
        _t([1, 9], [0, 10_000]),
        _t(range(1, 65), [156] * 63 + [10_000 - 156 * 63]),
        _t([3, 4, 5], [3333, 3333, 3334], 2**128 - 1, [0, 0, 10_000]),
    ],
)
def test_validate_terms_accepts_valid_terms(terms):
    assert validate_terms(terms) is None


def test_validate_terms_refuses_the_zero_token():
    terms = _Terms("0x" + "00" * 20, (1, 2), (5000, 5000), 0, ())
    assert validate_terms(terms) is not None


def test_terms_prefix_tables():
    assert _t([1, 2, 3], [5000, 3000, 2000]).prefix == [5000, 8000]
    assert _t([1, 2, 3], [5000, 3000, 2000]).prefix_excess == [5000, 8000]  # no tier: the base table
    assert _t([1, 2, 3], [5000, 3000, 2000], 5, [0, 1, 9999]).prefix_excess == [0, 1]


# =====================================================================================================
# 3. event_abi / EVENT_SIGNATURES
# =====================================================================================================

CANONICAL = {
    "MERegistered": "MERegistered(uint32,string,address,address,uint32)",
    "MEUpdated": "MEUpdated(uint32,address,address,uint32)",
    "MEDissolved": "MEDissolved(uint32)",
    "AgreementProposed": "AgreementProposed(bytes32,uint32,bytes32,(address,uint32[],uint16[],(uint128,uint16[])[],"
    "uint128,uint16[],bytes32[]),address)",
    "AgreementActivated": "AgreementActivated(bytes32,uint32,bytes[])",
    "AgreementEnded": "AgreementEnded(bytes32,uint32,bytes[])",
    "RevenueSettled": "RevenueSettled(bytes32,uint32,uint64,bytes32[],uint256[])",
    "PartiesCredited": "PartiesCredited(bytes32,uint32,uint32,uint64,uint64,uint256[],uint256[])",
    "PartiesCreditedByTier": "PartiesCreditedByTier(bytes32,uint32,uint32,uint64,uint64,uint256[])",
    "NestedSettled": "NestedSettled(bytes32,uint64,uint32,bytes32,uint64,uint256)",
    "RevenueReversed": "RevenueReversed(bytes32,uint32,uint64,bytes32[],uint256[],bytes32[])",
    "PartiesDebited": "PartiesDebited(bytes32,uint32,uint32,uint64,uint64,uint256[],uint256[])",
    "PartiesDebitedByTier": "PartiesDebitedByTier(bytes32,uint32,uint32,uint64,uint64,uint256[])",
    "DebtIncurred": "DebtIncurred(uint32,address,uint256)",
    "DebtNetted": "DebtNetted(uint32,address,uint256)",
    "PeriodClosed": "PeriodClosed(bytes32,uint32,uint128)",
    "Withdrawn": "Withdrawn(uint32,address,address,uint256)",
    "PayoutSkipped": "PayoutSkipped(uint32,address,address,uint256)",
    "RoleGranted": "RoleGranted(bytes32,address,address)",
    "RoleRevoked": "RoleRevoked(bytes32,address,address)",
}


def test_event_abi_parses_every_signature():
    abi = event_abi()
    assert [e["name"] for e in abi] == list(CANONICAL)
    assert len(abi) == len(EVENT_SIGNATURES)
    assert all(e["type"] == "event" and e["anonymous"] is False for e in abi)
    by_name = {e["name"]: e for e in abi}
    assert by_name["AgreementProposed"]["inputs"] == [
        {"type": "bytes32", "name": "agreementId", "indexed": True},
        {"type": "uint32", "name": "version", "indexed": True},
        {"type": "bytes32", "name": "termsHash", "indexed": False},
        {
            "type": "(address,uint32[],uint16[],(uint128,uint16[])[],uint128,uint16[],bytes32[])",
            "name": "terms",
            "indexed": False,
        },
        {"type": "address", "name": "proposer", "indexed": False},
    ]
    assert [(i["name"], i["indexed"]) for i in by_name["PartiesCredited"]["inputs"]] == [
        ("agreementId", True), ("period", True), ("version", False), ("firstSeq", False), ("count", False),
        ("baseCredits", False), ("excessCredits", False),
    ]  # fmt: skip
    assert [(i["name"], i["indexed"]) for i in by_name["Withdrawn"]["inputs"]] == [
        ("meId", True), ("token", True), ("to", False), ("amount", False),
    ]  # fmt: skip
    assert [i["indexed"] for i in by_name["RoleGranted"]["inputs"]] == [True, True, True]
    assert by_name["MERegistered"]["inputs"][1] == {"type": "string", "name": "name", "indexed": False}


def test_event_topics_are_the_keccak_of_the_canonical_signatures():
    reader = LogReader(None, LEDGER, event_abi())
    assert reader.topic("RevenueSettled") == keccak(text="RevenueSettled(bytes32,uint32,uint64,bytes32[],uint256[])")
    for name, signature in CANONICAL.items():
        assert reader.topic(name) == keccak(text=signature), name
    spec = EventSpec.from_abi(next(e for e in event_abi() if e["name"] == "AgreementProposed"))
    assert spec.indexed == [("agreementId", "bytes32"), ("version", "uint32")]
    assert [k for _, k in spec.data] == [
        "bytes32",
        "(address,uint32[],uint16[],(uint128,uint16[])[],uint128,uint16[],bytes32[])",
        "address",
    ]


def test_event_abi_matches_the_compiled_contract_if_built():
    artifact = Path(__file__).resolve().parent.parent / ".build" / "__local__.json"
    if not artifact.exists():
        pytest.skip("no compiled artifact (.build/__local__.json)")
    compiled = {
        e["name"]: [(i["name"], canonical_type(i), i["indexed"]) for i in e["inputs"]]
        for e in json.loads(artifact.read_text())["contractTypes"]["AllianceLedger"]["abi"]
        if e["type"] == "event"
    }
    for event in event_abi():
        assert [(i["name"], i["type"], i["indexed"]) for i in event["inputs"]] == compiled[event["name"]]


# =====================================================================================================
# 4. The Auditor against a fake node that plays the contract
# =====================================================================================================

# The contract's events, written out again here (independently of EVENT_SIGNATURES): (name, type, indexed).
FAKE_EVENTS = {
    "MERegistered": [("meId", "uint32", 1), ("name", "string", 0), ("payout", "address", 0),
                     ("signer", "address", 0), ("parent", "uint32", 0)],
    "MEUpdated": [("meId", "uint32", 1), ("payout", "address", 0), ("signer", "address", 0), ("nonce", "uint32", 0)],
    "MEDissolved": [("meId", "uint32", 1)],
    "AgreementProposed": [("agreementId", "bytes32", 1), ("version", "uint32", 1), ("termsHash", "bytes32", 0),
                          ("terms", "(address,uint32[],uint16[],(uint128,uint16[])[],uint128,uint16[],bytes32[])", 0),
                          ("proposer", "address", 0)],
    "AgreementActivated": [("agreementId", "bytes32", 1), ("version", "uint32", 1), ("signatures", "bytes[]", 0)],
    "AgreementEnded": [("agreementId", "bytes32", 1), ("version", "uint32", 1), ("signatures", "bytes[]", 0)],
    "RevenueSettled": [("agreementId", "bytes32", 1), ("version", "uint32", 1), ("firstSeq", "uint64", 0),
                       ("refs", "bytes32[]", 0), ("entries", "uint256[]", 0)],
    "PartiesCredited": [("agreementId", "bytes32", 1), ("period", "uint32", 1), ("version", "uint32", 0),
                        ("firstSeq", "uint64", 0), ("count", "uint64", 0), ("baseCredits", "uint256[]", 0),
                        ("excessCredits", "uint256[]", 0)],
    "PartiesCreditedByTier": [("agreementId", "bytes32", 1), ("period", "uint32", 1), ("version", "uint32", 0),
                              ("firstSeq", "uint64", 0), ("count", "uint64", 0), ("credits", "uint256[]", 0)],
    "NestedSettled": [("agreementId", "bytes32", 1), ("firstSeq", "uint64", 0), ("meId", "uint32", 1),
                      ("inner", "bytes32", 1), ("innerSeq", "uint64", 0), ("amount", "uint256", 0)],
    "PeriodClosed": [("agreementId", "bytes32", 1), ("period", "uint32", 1), ("revenue", "uint128", 0)],
    "Withdrawn": [("meId", "uint32", 1), ("token", "address", 1), ("to", "address", 0), ("amount", "uint256", 0)],
    "PayoutSkipped": [("meId", "uint32", 1), ("token", "address", 1), ("payout", "address", 0),
                      ("amount", "uint256", 0)],
    "RoleGranted": [("role", "bytes32", 1), ("account", "address", 1), ("sender", "address", 1)],
}  # fmt: skip
FAKE_TOPICS = {keccak(text=f"{n}({','.join(t for _, t, _ in spec)})"): n for n, spec in FAKE_EVENTS.items()}


def selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


class FakeChain:
    """A JSON-RPC node (``request``/``batch``) serving one ledger's logs and views, and a model of the contract
    that writes them: every operation is one transaction in its own block, its logs encoded as Solidity does."""

    def __init__(self):
        self.block = 0
        self.logs: list[dict] = []
        self.txs: dict[str, dict] = {}
        self.mes: dict[int, dict] = {}
        self.terms: dict[tuple[bytes, int], Terms] = {}
        self.active: dict[bytes, int] = {}
        self.latest: dict[bytes, int] = defaultdict(int)
        self.next_seq: dict[bytes, int] = defaultdict(int)
        self.revenue: dict[tuple[bytes, int], int] = defaultdict(int)
        self.balances: dict[tuple[int, str], int] = defaultdict(int)
        self.owed: dict[str, int] = defaultdict(int)
        self.held: dict[str, int] = defaultdict(int)
        self.settled: dict[str, int] = defaultdict(int)
        self.withdrawn: dict[str, int] = defaultdict(int)
        self.payouts: dict[tuple[str, int, int, str], int] = defaultdict(int)
        self.credit_hook = None  # (alliance, first seq, base, excess) -> (base, excess), or None to drop the run
        self.book = money.NestedBook()  # the state of the shaped settlements (settle_shaped)
        self.code = "0x6080604052"
        self.me_count_extra = 0
        self.refuse_over: int | None = None  # refuse eth_getLogs ranges of more blocks than this
        self.idle_blocks = 3
        self.log_ranges: list[tuple[int, int]] = []
        self.call_blocks: set[str] = set()
        self.methods: list[str] = []

    # -- the contract model ---------------------------------------------------------------------------

    def _tx(self, data: bytes = b"") -> str:
        self.block += 1
        tx = "0x" + keccak(text=f"tx {self.block}").hex()
        self.txs[tx] = {"hash": tx, "blockNumber": hex(self.block), "input": "0x" + data.hex()}
        return tx

    def _emit(self, tx: str, event: str, **args) -> None:
        index = sum(1 for log in self.logs if log["block"] == self.block)
        self.logs.append({"event": event, "args": args, "block": self.block, "tx": tx, "index": index})

    def find(self, event: str, **match) -> list[dict]:
        return [
            log for log in self.logs if log["event"] == event and all(log["args"][k] == v for k, v in match.items())
        ]

    def grant(self, role: str, account: str) -> None:
        self._emit(self._tx(), "RoleGranted", role=ROLES[role], account=account, sender=ADMIN)

    def register(self, name: str) -> int:
        me_id = len(self.mes) + 1
        self.mes[me_id] = {"name": name, "key": key(f"{name} signer 0"), "payout": addr(f"{name} payout 0"), "nonce": 0}
        me = self.mes[me_id]
        self._emit(self._tx(), "MERegistered", meId=me_id, name=name, payout=me["payout"],
                   signer=Account.from_key(me["key"]).address, parent=0)  # fmt: skip
        return me_id

    def signer(self, me_id: int) -> str:
        return Account.from_key(self.mes[me_id]["key"]).address

    def update_me(self, me_id: int, *, consent_key: bytes | None = None) -> None:
        me = self.mes[me_id]
        nonce = me["nonce"]
        new_key, payout = key(f"{me['name']} signer {nonce + 1}"), addr(f"{me['name']} payout {nonce + 1}")
        signer = Account.from_key(new_key).address
        message = eip712.me_update_message(CHAIN_ID, LEDGER, me_id, payout, signer, nonce)
        consent = sign(consent_key or me["key"], message)
        data = selector("updateME(uint32,address,address,bytes)") + abi_encode(
            ["uint32", "address", "address", "bytes"], [me_id, payout, signer, consent]
        )
        tx = self._tx(data)
        me.update(key=new_key, payout=payout, nonce=nonce + 1)
        self._emit(tx, "MEUpdated", meId=me_id, payout=payout, signer=signer, nonce=nonce + 1)

    def dissolve(self, me_id: int) -> None:
        self._emit(self._tx(), "MEDissolved", meId=me_id)

    def propose(self, name, token, shares, target=0, excess=None, *, logged_hash: bytes | None = None,
                proposer: str = PLATFORM) -> int:  # fmt: skip
        aid = b32(name)
        terms = Terms.build(token, shares, target, excess)
        version = self.latest[aid] = self.latest[aid] + 1
        self.terms[(aid, version)] = terms
        real = hand_terms_hash(token, terms.parties, terms.shares, terms.target, terms.excess_shares)
        self._emit(self._tx(), "AgreementProposed", agreementId=aid, version=version, termsHash=logged_hash or real,
                   terms=terms.as_tuple(), proposer=proposer)  # fmt: skip
        return version

    def activate(self, name: str, version: int, *, keys: dict[int, bytes] | None = None) -> None:
        aid = b32(name)
        terms = self.terms[(aid, version)]
        message = eip712.approval_message(CHAIN_ID, LEDGER, aid, version, terms)
        keys = {p: self.mes[p]["key"] for p in terms.parties} | (keys or {})
        signatures = [sign(keys[p], message) for p in terms.parties]
        self.active[aid] = version
        self._emit(self._tx(), "AgreementActivated", agreementId=aid, version=version, signatures=signatures)

    def end(self, name: str) -> None:
        aid = b32(name)
        version = self.active[aid]
        message = eip712.termination_message(CHAIN_ID, LEDGER, aid, version)
        signatures = [sign(self.mes[p]["key"], message) for p in self.terms[(aid, version)].parties]
        self._emit(self._tx(), "AgreementEnded", agreementId=aid, version=version, signatures=signatures)

    def settle(self, name: str, events: list[tuple[str, int, int]]) -> str:
        """Settles ``(reference, amount, period)`` events as the contract does: one PartiesCredited per run of
        consecutive same-period events, each run the sum of money.split_event over its events."""
        aid = b32(name)
        version = self.active[aid]
        terms = self.terms[(aid, version)]
        first_seq = self.next_seq[aid]
        tx = self._tx()
        self._emit(tx, "RevenueSettled", agreementId=aid, version=version, firstSeq=first_seq,
                   refs=[b32(r) for r, _, _ in events], entries=[a << 32 | p for _, a, p in events])  # fmt: skip
        self.next_seq[aid] += len(events)
        self.settled[terms.token] += sum(a for _, a, _ in events)
        n, k = len(terms.parties), 0
        while k < len(events):
            period, start = events[k][2], k
            base, excess = [0] * n, [0] * n
            while k < len(events) and events[k][2] == period:
                amount = events[k][1]
                split = money.split_event(first_seq + k, amount, self.revenue[(aid, period)], terms.shares,
                                          terms.target, terms.excess_shares)  # fmt: skip
                base = [a + b for a, b in zip(base, split.base, strict=True)]
                excess = [a + b for a, b in zip(excess, split.excess, strict=True)]
                self.revenue[(aid, period)] += amount
                k += 1
            if self.credit_hook is not None:
                changed = self.credit_hook(name, first_seq + start, base, excess)
                if changed is None:  # the run is neither logged nor credited
                    continue
                base, excess = changed
            self._emit(tx, "PartiesCredited", agreementId=aid, period=period, version=version,
                       firstSeq=first_seq + start, count=k - start, baseCredits=base, excessCredits=excess)  # fmt: skip
            for me_id, b, x in zip(terms.parties, base, excess, strict=True):
                self.balances[(me_id, terms.token)] += b + x
                self.owed[terms.token] += b + x
                self.held[terms.token] += b + x
                for tier, value in (("base", b), ("excess", x)):
                    if value:
                        self.payouts[(name, period, me_id, tier)] += value
        return tx

    def propose_terms(self, name: str, terms: Terms, *, logged_hash: bytes | None = None) -> int:
        """Propose terms of any shape (bands, recoup, nested parties)."""
        aid = b32(name)
        version = self.latest[aid] = self.latest[aid] + 1
        self.terms[(aid, version)] = terms
        real = hand_terms_hash(terms.token, terms.parties, terms.shares, [(b.target, b.shares) for b in terms.bands],
                               None, terms.recoup, terms.recoup_shares, terms.nested)  # fmt: skip
        self._emit(self._tx(), "AgreementProposed", agreementId=aid, version=version, termsHash=logged_hash or real,
                   terms=terms.as_tuple(), proposer=PLATFORM)  # fmt: skip
        return version

    def settle_shaped(self, name: str, events: list[tuple[str, int, int]], *, tamper=None) -> str:
        """``settleNested`` (or ``settle``) as the contract does it, from the reference book of ledger/money.py:
        per run the credited event of the terms' shape, and each nested party's credit passed on as one event
        of its inner alliance (its RevenueSettled, its credited event, then NestedSettled). ``tamper(kind,
        args)`` may change the logged arguments."""
        tamper = tamper or (lambda kind, args: args)
        aid = b32(name)
        book = self.book
        for (agreement, version), terms in self.terms.items():
            if self.active.get(agreement) == version:
                book.terms[agreement] = terms
        for agreement, seq in self.next_seq.items():
            book.next_seq[agreement] = seq
        tx = self._tx()
        out = book.settle(aid, [(a, p) for _, a, p in events])
        token = book.terms[aid].token
        self.settled[token] += sum(a for _, a, _ in events)
        first = self.next_seq[aid]
        self._emit(tx, "RevenueSettled", **tamper("outer", dict(agreementId=aid, version=self.active[aid],
                   firstSeq=first, refs=[b32(r) for r, _, _ in events],
                   entries=[a << 32 | p for _, a, p in events])))  # fmt: skip
        by_inner_seq = {(e.inner, e.inner_seq): e for e in out.nested}
        for run in out.runs:
            terms = book.terms[run.agreement_id]
            version = self.active[run.agreement_id]
            nested_event = by_inner_seq.get((run.agreement_id, run.first_seq))
            if nested_event is not None:
                ref = nested_reference(nested_event.outer, nested_event.run_first_seq, nested_event.me_id)
                self._emit(tx, "RevenueSettled", **tamper("inner", dict(agreementId=run.agreement_id,
                           version=version, firstSeq=run.first_seq, refs=[ref],
                           entries=[nested_event.amount << 32 | run.period])))  # fmt: skip
            common = dict(agreementId=run.agreement_id, period=run.period, version=version, firstSeq=run.first_seq,
                          count=run.count)  # fmt: skip
            tiers = [list(t) for t in run.tiers]
            if terms.by_tier:
                self._emit(tx, "PartiesCreditedByTier", **tamper("credits", {**common, "credits": [
                    c for tier in tiers for c in tier]}))  # fmt: skip
            else:
                excess = tiers[1] if len(tiers) > 1 else [0] * len(terms.parties)
                self._emit(tx, "PartiesCredited", **tamper("credits", {**common, "baseCredits": tiers[0],
                           "excessCredits": excess}))  # fmt: skip
            if nested_event is not None:
                e = nested_event
                self._emit(tx, "NestedSettled", **tamper("nested", dict(agreementId=e.outer, firstSeq=e.run_first_seq,
                           meId=e.me_id, inner=e.inner, innerSeq=e.inner_seq, amount=e.amount)))  # fmt: skip
            alliance = bytes32_to_text(run.agreement_id)
            for t, tier in enumerate(terms.tier_names):
                for i, me_id in enumerate(terms.parties):
                    if tiers[t][i] and me_id not in terms.nested_parties:
                        self.payouts[(alliance, run.period, me_id, tier)] += tiers[t][i]
        for me_id, credit in out.accounts.items():
            self.balances[(me_id, token)] += credit
            self.owed[token] += credit
            self.held[token] += credit
        for agreement, seq in book.next_seq.items():
            self.next_seq[agreement] = seq
        return tx

    def close(self, name: str, period: int) -> None:
        aid = b32(name)
        self._emit(self._tx(), "PeriodClosed", agreementId=aid, period=period, revenue=self.revenue[(aid, period)])

    def withdraw(self, me_id: int, token: str) -> int:
        amount = self.balances[(me_id, token)]
        self.balances[(me_id, token)] = 0
        self.owed[token] -= amount
        self.held[token] -= amount
        self.withdrawn[token] += amount
        self._emit(self._tx(), "Withdrawn", meId=me_id, token=token, to=self.mes[me_id]["payout"], amount=amount)
        return amount

    def payout_skipped(self, me_id: int, token: str, *, amount: int | None = None, payout: str | None = None) -> None:
        """A payout run that could not pay the ME: nothing moves (``amount``/``payout`` to tamper)."""
        amount = self.balances[(me_id, token)] if amount is None else amount
        payout = self.mes[me_id]["payout"] if payout is None else payout
        self._emit(self._tx(), "PayoutSkipped", meId=me_id, token=token, payout=payout, amount=amount)

    # -- the node ---------------------------------------------------------------------------------------

    @property
    def head(self) -> int:
        return self.block + self.idle_blocks

    def _raw(self, log: dict) -> dict:
        spec, args = FAKE_EVENTS[log["event"]], log["args"]
        signature = f"{log['event']}({','.join(t for _, t, _ in spec)})"
        topics = [keccak(text=signature)] + [abi_encode([t], [args[n]]) for n, t, i in spec if i]
        data = abi_encode([t for _, t, i in spec if not i], [args[n] for n, _, i in spec if not i])
        return {
            "address": LEDGER.lower(),
            "topics": ["0x" + t.hex() for t in topics],
            "data": "0x" + data.hex(),
            "blockNumber": hex(log["block"]),
            "transactionHash": log["tx"],
            "transactionIndex": "0x0",
            "logIndex": hex(log["index"]),
            "removed": False,
        }

    def _call(self, to: str, data: bytes) -> bytes:
        sel, args = data[:4], data[4:]
        if to.lower() == LEDGER.lower():
            if sel == selector("meCount()"):
                return abi_encode(["uint32"], [len(self.mes) + self.me_count_extra])
            if sel == selector("totalOwed(address)"):
                (token,) = abi_decode(["address"], args)
                return abi_encode(["uint256"], [self.owed[to_checksum_address(token)]])
            if sel == selector("balanceOf(uint32,address)"):
                me_id, token = abi_decode(["uint32", "address"], args)
                return abi_encode(["uint256"], [self.balances[(me_id, to_checksum_address(token))]])
            if sel in (selector("totalDebt(address)"), selector("debtOf(uint32,address)")):
                return abi_encode(["uint256"], [0])  # this model settles no reversals
        token = to_checksum_address(to)
        if token in TOKENS:
            if sel == selector("balanceOf(address)"):
                (holder,) = abi_decode(["address"], args)
                return abi_encode(["uint256"], [self.held[token] if holder.lower() == LEDGER.lower() else 0])
            if sel == selector("decimals()"):
                return abi_encode(["uint8"], [TOKENS[token][0]])
            if sel == selector("symbol()"):
                return abi_encode(["string"], [TOKENS[token][1]])
        raise RpcError("eth_call", {"code": 3, "message": "execution reverted"})

    def request(self, method: str, params: list | None = None):
        params = params or []
        self.methods.append(method)
        if method == "eth_chainId":
            return hex(CHAIN_ID)
        if method == "eth_blockNumber":
            return hex(self.head)
        if method == "eth_getCode":
            return self.code if params[0].lower() == LEDGER.lower() else "0x"
        if method == "eth_getLogs":
            (flt,) = params
            lo, hi = int(flt["fromBlock"], 16), int(flt["toBlock"], 16)
            if self.refuse_over is not None and hi - lo + 1 > self.refuse_over:
                raise RpcError(method, {"code": -32005, "message": f"range of {hi - lo + 1} blocks too large"})
            self.log_ranges.append((lo, hi))
            wanted = {bytes.fromhex(t[2:]) for t in flt["topics"][0]}
            assert flt["address"].lower() == LEDGER.lower()
            return [
                self._raw(log)
                for log in self.logs
                if lo <= log["block"] <= hi and keccak(text=self._sig(log["event"])) in wanted
            ]
        if method == "eth_getTransactionByHash":
            return self.txs.get(params[0])
        if method == "eth_call":
            call, block = params
            self.call_blocks.add(block)
            return "0x" + self._call(call["to"], bytes.fromhex(call["data"][2:])).hex()
        raise RpcError(method, {"code": -32601, "message": "method not found"})

    @staticmethod
    def _sig(event: str) -> str:
        return f"{event}({','.join(t for _, t, _ in FAKE_EVENTS[event])})"

    def batch(self, calls):
        return [self.request(method, params) for method, params in calls]

    has_code = HttpRpc.has_code  # the audit asks the client, which asks eth_getCode


FRIDGE, OVEN, APP, LOGISTICS = 1, 2, 3, 4


def history(*, kitchen_keys=None, consent_key=None, credit_hook=None, later_events=None, trio_hash=None,
            kitchen_v2_hash=None) -> FakeChain:  # fmt: skip
    """A consistent history (tampered where an argument says so): 3 roles, 4 MEs (one re-keyed), alliance
    "kitchen" (USDC, tiered v1 then untiered v2), "duo" (EURT, ended at the end), "trio" (never settled)."""
    chain = FakeChain()
    chain.credit_hook = credit_hook
    for role, account in (("admin", ADMIN), ("platform", PLATFORM), ("finance", FINANCE)):
        chain.grant(role, account)
    for name in ("fridge", "oven", "recipe-app", "logistics"):
        chain.register(name)
    chain.update_me(LOGISTICS, consent_key=consent_key)
    chain.propose("kitchen", USDC, {FRIDGE: 5000, OVEN: 3000, APP: 2000}, 1_000_000,
                  {FRIDGE: 2000, OVEN: 3000, APP: 5000})  # fmt: skip
    chain.activate("kitchen", 1, keys=kitchen_keys)
    chain.propose("duo", EURT, {OVEN: 6000, LOGISTICS: 4000})
    chain.activate("duo", 1)
    chain.propose("trio", USDC, {FRIDGE: 3334, OVEN: 3333, APP: 3333}, logged_hash=trio_hash)
    chain.activate("trio", 1)
    chain.settle("kitchen", [("inv-1", 400_000, 1), ("inv-2", 700_000, 1), ("inv-3", 12_345, 2), ("inv-4", 1, 2),
                             ("inv-5", 99_999, 1)])  # fmt: skip
    chain.settle("duo", [("duo-1", 1_000_001, 1), ("duo-2", 3, 1)])
    chain.close("kitchen", 1)
    chain.propose("kitchen", USDC, {FRIDGE: 4000, OVEN: 4000, APP: 2000}, logged_hash=kitchen_v2_hash)
    chain.activate("kitchen", 2)
    chain.settle("kitchen", later_events or [("inv-6", 250_000, 2), ("inv-7", 333_333, 3)])
    chain.withdraw(FRIDGE, USDC)
    chain.end("duo")
    chain.dissolve(LOGISTICS)
    return chain


def run_audit(chain: FakeChain, **options) -> AuditReport:
    return audit(chain, LEDGER.lower(), **options)


CLEAN_COUNTS = {
    "logs": 29,  # 3 roles, 4 MEs, 1 update, 4 proposals, 4 activations, 4 + 2 + 3 settlement logs, close,
    "mes": 4,  # withdrawal, end, dissolution
    "me_updates": 1,
    "agreements": 3,
    "versions": 4,
    "activations": 4,
    "signatures": 3 + 2 + 3 + 3 + 2,
    "batches": 3,
    "events": 9,
    "credit_runs": 6,
    "periods_closed": 1,
    "withdrawals": 1,
    "terminations": 1,
    "mes_dissolved": 1,
    "consents": 1,
    "log_pages": 1,
    "log_pages_refused": 0,
}


@pytest.fixture(scope="module")
def clean() -> tuple[FakeChain, AuditReport]:
    chain = history()
    return chain, run_audit(chain)


def test_the_clean_history_has_no_findings_and_the_right_totals(clean):
    chain, report = clean
    assert report.findings == []
    assert report.clean
    assert report.counts == CLEAN_COUNTS
    assert (report.chain_id, report.ledger, report.from_block, report.to_block) == (CHAIN_ID, LEDGER, 0, chain.head)
    assert report.roles == {"admin": [ADMIN], "finance": [FINANCE], "platform": [PLATFORM]}
    assert report.me_names == {1: "fridge", 2: "oven", 3: "recipe-app", 4: "logistics"}
    assert report.alliance_tokens == {"kitchen": USDC, "duo": EURT, "trio": USDC}
    # Credits per (alliance, period, ME, tier) are the model's (money.split_event summed per run).
    assert report.payouts == dict(chain.payouts)
    assert (
        sum(v for (a, *_), v in report.payouts.items() if a == "kitchen")
        == 400_000 + 700_000 + 12_346 + 99_999 + 583_333
    )
    assert [t.token for t in report.tokens] == [USDC, EURT]
    withdrawn = chain.find("Withdrawn")[0]["args"]["amount"]
    assert withdrawn > 0
    usdc, eurt = report.tokens
    assert (usdc.symbol, usdc.decimals, eurt.symbol, eurt.decimals) == ("USDC", 6, "EURT", 2)
    assert (usdc.settled, usdc.credited, usdc.withdrawn) == (1_795_678, 1_795_678, withdrawn)
    assert usdc.owed == usdc.balances == usdc.held == 1_795_678 - withdrawn
    assert (eurt.settled, eurt.credited, eurt.withdrawn, eurt.owed, eurt.balances, eurt.held) == (1_000_004,) * 2 + (
        0, 1_000_004, 1_000_004, 1_000_004,
    )  # fmt: skip
    # Every view is read at the block the log scan ended at; all logs came in one page.
    assert chain.call_blocks == {hex(chain.head)}
    assert chain.log_ranges == [(0, chain.head)]
    assert report.as_dict()["result"] == "clean"


def test_the_tier_split_in_the_clean_history_matches_hand_numbers(clean):
    """kitchen v1, period 1: 400,000 + 700,000 (600,000 base, 100,000 excess) then 99,999 excess."""
    _, report = clean
    p = report.payouts
    base = [p[("kitchen", 1, m, "base")] for m in (FRIDGE, OVEN, APP)]
    excess = [p[("kitchen", 1, m, "excess")] for m in (FRIDGE, OVEN, APP)]
    assert sum(base) == 1_000_000 and sum(excess) == 199_999
    assert base == [500_000, 300_000, 200_000]  # exact: 1,000,000 splits 50/30/20 with no remainder
    # 100,000 at offset 6181 -> 20,000 / 30,000 / 50,000; 99,999 at offset 4724 -> 20,000 / 29,999 / 50,000.
    assert excess == [40_000, 59_999, 100_000]


def _only(report: AuditReport, kind: str) -> Finding:
    found = [f for f in report.findings if f.kind == kind]
    assert len(found) == 1, report.findings
    return found[0]


def test_an_approval_signed_with_the_wrong_key_is_a_signature_finding():
    chain = history(kitchen_keys={OVEN: key("intruder")})
    report = run_audit(chain)
    assert report.findings_by_kind() == {"signature": 1}
    finding = report.findings[0]
    activation = chain.find("AgreementActivated", agreementId=b32("kitchen"), version=1)[0]
    assert (finding.block, finding.tx) == (activation["block"], activation["tx"])
    assert finding.values == {"alliance": "kitchen", "version": 1, "me_id": OVEN, "recovered": addr("intruder"),
                              "signer": chain.signer(OVEN)}  # fmt: skip


def test_an_me_update_consented_by_the_wrong_key_is_a_signature_finding():
    chain = history(consent_key=key("intruder"))
    report = run_audit(chain)
    assert report.findings_by_kind() == {"signature": 1}
    assert report.findings[0].values == {"me_id": LOGISTICS, "recovered": addr("intruder"),
                                         "signer": Account.from_key(key("logistics signer 0")).address}  # fmt: skip
    assert report.counts["consents"] == 1


def test_a_credit_off_by_one_unit_is_a_credit_finding():
    def hook(name, first_seq, base, excess):
        if name == "kitchen" and first_seq == 0:  # the first run: inv-1, inv-2 in period 1
            return [base[0] + 1, base[1] - 1, base[2]], excess
        return base, excess

    chain = history(credit_hook=hook)
    report = run_audit(chain)
    assert report.findings_by_kind() == {"credit": 1}
    finding = report.findings[0]
    clean_base = finding.values["recomputed_base"]
    assert clean_base == [500_000, 300_000, 200_000]  # 400,000 + the 600,000 below the target, split 50/30/20
    assert finding.values["credited_base"] == [500_001, 299_999, 200_000]
    assert finding.values["credited_excess"] == finding.values["recomputed_excess"] == [20_000, 30_000, 50_000]
    assert (finding.values["alliance"], finding.values["period"], finding.values["first_seq"],
            finding.values["count"]) == ("kitchen", 1, 0, 2)  # fmt: skip
    assert "fridge base" in finding.message and "oven base" in finding.message


def test_a_reference_repeated_in_a_later_batch_is_a_duplicate():
    chain = history(later_events=[("inv-2", 250_000, 2), ("inv-7", 333_333, 3)])
    report = run_audit(chain)
    assert report.findings_by_kind() == {"duplicate": 1}
    first = chain.find("RevenueSettled", agreementId=b32("kitchen"), firstSeq=0)[0]
    assert report.findings[0].values == {"reference": "inv-2", "first_tx": first["tx"], "first_block": first["block"]}


def test_a_reference_settled_again_in_another_unicode_form_is_a_duplicate():
    """Before references were normalised, "café" typed as NFC and as NFD were two events: the audit
    reports such a pair, as the settler now treats them as one reference."""
    nfc, nfd = "caf\u00e9-9", "cafe\u0301-9"
    report = run_audit(history(later_events=[(nfc, 250_000, 2), (nfd, 333_333, 3)]))
    assert report.findings_by_kind() == {"duplicate": 1}
    assert report.findings[0].values["reference"] == nfd


def test_a_reference_repeated_within_one_batch_is_a_duplicate():
    report = run_audit(history(later_events=[("inv-6", 250_000, 2), ("inv-6", 333_333, 3)]))
    assert report.findings_by_kind() == {"duplicate": 1}
    assert report.findings[0].values["reference"] == "inv-6"


def test_revenue_settled_into_a_closed_period_is_a_closed_period_finding():
    chain = history(later_events=[("inv-6", 250_000, 1), ("inv-7", 333_333, 3)])  # period 1 is closed
    report = run_audit(chain)
    assert report.findings_by_kind() == {"closed-period": 1}
    assert report.findings[0].values == {"alliance": "kitchen", "period": 1}
    assert report.findings[0].block == chain.find("RevenueSettled", firstSeq=5)[0]["block"]


def test_held_tokens_below_total_owed_is_a_conservation_finding():
    chain = history()
    chain.held[USDC] -= 1
    report = run_audit(chain)
    assert report.findings_by_kind() == {"conservation": 1}
    assert report.findings[0].values == {"token": USDC, "held": chain.owed[USDC] - 1, "owed": chain.owed[USDC]}
    assert "0.000001 USDC missing" in report.findings[0].message


def test_an_me_balance_view_that_differs_is_a_conservation_finding():
    chain = history()
    chain.balances[(OVEN, EURT)] += 1
    report = run_audit(chain)
    # The ME's balance disagrees with its credits, and so does the sum of balances with totalOwed.
    assert report.findings_by_kind() == {"conservation": 2}
    me, total = report.findings
    expected = chain.balances[(OVEN, EURT)] - 1
    assert me.values == {"me_id": OVEN, "token": EURT, "reported": expected + 1, "expected": expected}
    assert total.values == {"token": EURT, "balances": 1_000_005, "owed": 1_000_004}


def test_a_terms_hash_that_does_not_match_the_logged_terms_is_a_terms_finding():
    report = run_audit(history(trio_hash=b"\x01" * 32))
    assert report.findings_by_kind() == {"terms": 1}
    assert report.findings[0].values == {"alliance": "trio", "version": 1}
    assert "0101" in report.findings[0].message


def test_a_bad_terms_hash_on_a_version_with_settlements_is_reported_once():
    report = run_audit(history(kitchen_v2_hash=b"\x02" * 32))
    assert report.findings_by_kind() == {"terms": 1}


def test_an_amendment_proposed_by_the_signer_of_an_outside_me_is_a_terms_finding():
    """Dryer is no party of kitchen's version in force: its signer proposing a version (even one naming
    dryer) breaks the contract's rule; a current party's signer may propose."""
    chain = history()
    dryer = chain.register("dryer")
    chain.propose("kitchen", USDC, {FRIDGE: 5000, OVEN: 5000}, proposer=chain.signer(OVEN))
    chain.propose("kitchen", USDC, {FRIDGE: 5000, dryer: 5000}, proposer=chain.signer(dryer))
    report = run_audit(chain)
    assert report.findings_by_kind() == {"terms": 1}
    assert "proposed by " + chain.signer(dryer) in report.findings[0].message
    assert report.findings[0].values == {"alliance": "kitchen", "version": 4}


def test_activating_an_older_pending_version_is_clean_and_one_older_than_the_version_in_force_is_not():
    chain = history()
    chain.propose("trio", USDC, {FRIDGE: 5000, OVEN: 3000, APP: 2000})
    chain.propose("trio", USDC, {FRIDGE: 6000, OVEN: 2000, APP: 2000})
    chain.activate("trio", 2)  # version 3 was proposed later: version 2 may still be put in force
    assert run_audit(chain).findings_by_kind() == {}
    chain.activate("trio", 3)
    chain.activate("trio", 2)  # the contract refuses this (superseded); a log of it is a finding
    report = run_audit(chain)
    assert report.findings_by_kind() == {"terms": 1}
    assert "activated version 2; version 3 was already in force" in report.findings[0].message


def test_settled_revenue_with_no_parties_credited_is_a_credit_finding():
    def hook(name, first_seq, base, excess):
        return None if name == "duo" else (base, excess)

    chain = history(credit_hook=hook)
    report = run_audit(chain)
    # Revenue settled but never credited is also, by definition, settled != credited for the token.
    assert report.findings_by_kind() == {"credit": 1, "conservation": 1}
    credit = _only(report, "credit")
    settled = chain.find("RevenueSettled", agreementId=b32("duo"))[0]
    assert (credit.block, credit.tx) == (settled["block"], settled["tx"])
    assert credit.values == {"alliance": "duo", "period": 1}
    assert "events 0..1 of period 1 were settled but never credited" in credit.message
    assert _only(report, "conservation").values == {"token": EURT, "settled": 1_000_004, "credited": 0}


def _comparable(report: AuditReport) -> dict:
    out = report.as_dict()
    out.pop("seconds")
    out["checked"] = {k: v for k, v in out["checked"].items() if not k.startswith("log_pages")}
    out["payouts"] = report.payouts
    return out


def test_a_page_of_one_block_gives_the_same_report(clean):
    chain, report = clean
    small = history()
    paged = run_audit(small, page_size=1)
    assert _comparable(paged) == _comparable(report)
    assert paged.counts["log_pages"] == chain.head + 1
    assert small.log_ranges == [(b, b) for b in range(chain.head + 1)]


def test_a_node_that_refuses_wide_ranges_still_yields_the_full_report(clean):
    _, report = clean
    chain = history()
    chain.refuse_over = 4
    refused = run_audit(chain)
    assert _comparable(refused) == _comparable(report)
    assert refused.counts["log_pages_refused"] >= 1
    assert refused.counts["log_pages"] == len(chain.log_ranges)
    # The pages answered are at most 4 blocks and tile [0, head] exactly.
    assert all(hi - lo + 1 <= 4 for lo, hi in chain.log_ranges)
    assert chain.log_ranges[0][0] == 0 and chain.log_ranges[-1][1] == chain.head
    assert all(b[0] == a[1] + 1 for a, b in zip(chain.log_ranges, chain.log_ranges[1:], strict=False))


def test_a_node_that_refuses_even_one_block_raises_rpc_error():
    chain = history()
    chain.refuse_over = 0
    with pytest.raises(RpcError, match="eth_getLogs failed: range of 1 blocks too large"):
        run_audit(chain)


def test_no_contract_at_the_address_is_chain_unavailable():
    chain = history()
    chain.code = "0x"
    with pytest.raises(ChainUnavailable) as info:
        run_audit(chain)
    assert str(info.value) == f"chain {CHAIN_ID} has no contract at {LEDGER}"
    assert info.value.exit_code == 2
    assert "eth_getLogs" not in chain.methods


def test_a_from_block_past_the_head_is_chain_unavailable():
    chain = history()
    with pytest.raises(
        ChainUnavailable, match=rf"--from-block {chain.head + 1} is past the chain's head \({chain.head}\)"
    ):
        run_audit(chain, from_block=chain.head + 1)


def test_more_mes_than_registrations_seen_means_the_history_is_incomplete():
    chain = history()
    chain.me_count_extra = 1
    with pytest.raises(ChainUnavailable) as info:
        run_audit(chain)
    assert "the logs from block 0 hold 4 of the ledger's 5 ME registrations" in str(info.value)
    assert "--from-block" in str(info.value)


def test_starting_after_the_registrations_means_the_history_is_incomplete():
    chain = history()
    start = chain.find("MEUpdated")[0]["block"]
    with pytest.raises(ChainUnavailable, match=f"the logs from block {start} hold 0 of the ledger's 4 ME"):
        run_audit(chain, from_block=start)


# =====================================================================================================
# Report helpers
# =====================================================================================================


def test_jsonable_keeps_json_safe_values():
    values = {
        "flag": True,
        "none": None,
        "small": 2**53,
        "big": 2**53 + 1,
        "negative": -(2**60),
        "raw": b"\x01\xff",
        "list": [1, 2**70, "x", b"\x02", False, None],
        "tuple": (3, (2**54, b"")),
        "text": "oven",
    }
    assert _jsonable(values) == {
        "flag": True,
        "none": None,
        "small": 2**53,
        "big": str(2**53 + 1),
        "negative": str(-(2**60)),
        "raw": "0x01ff",
        "list": [1, str(2**70), "x", "0x02", False, None],
        "tuple": [3, [str(2**54), "0x"]],
        "text": "oven",
    }
    assert json.loads(json.dumps(_jsonable(values)))["big"] == "9007199254740993"


def test_report_as_dict_and_findings_by_kind():
    totals = TokenTotals(USDC, "USDC", 6, settled=1_234_567, credited=1_234_567, withdrawn=0, owed=1_234_567)
    report = AuditReport(
        chain_id=5, ledger=LEDGER, from_block=3, to_block=9, counts={"logs": 2}, tokens=[totals],
        roles={"admin": [ADMIN]}, seconds=1.23456,
        findings=[Finding("credit", "a"), Finding("terms", "b", 4, "0xab", {"x": 1}), Finding("credit", "c")],
    )  # fmt: skip
    assert report.findings_by_kind() == {"credit": 2, "terms": 1}
    assert not report.clean
    assert report.token(USDC) is totals and report.token(EURT) is None
    assert report.as_dict() == {
        "result": "findings",
        "chain_id": 5,
        "ledger": LEDGER,
        "blocks": {"from": 3, "to": 9},
        "checked": {"logs": 2},
        "tokens": [
            {
                "token": USDC,
                "symbol": "USDC",
                "decimals": 6,
                "settled": "1.234567",
                "credited": "1.234567",
                "withdrawn": "0.000000",
                "reversed": "0.000000",
                "debited": "0.000000",
                "returned": "0.000000",
                "incurred": "0.000000",
                "netted": "0.000000",
                "owed": "1.234567",
                "balances": None,
                "held": None,
                "debt": None,
                "debts": None,
                "base_units": {"settled": "1234567", "credited": "1234567", "withdrawn": "0", "reversed": "0",
                               "debited": "0", "returned": "0", "incurred": "0", "netted": "0", "owed": "1234567",
                               "balances": None, "held": None, "debt": None, "debts": None},
            }
        ],
        "roles": {"admin": [ADMIN]},
        "findings_by_kind": {"credit": 2, "terms": 1},
        "findings": [
            {"kind": "credit", "message": "a", "block": None, "tx": None, "values": {}},
            {"kind": "terms", "message": "b", "block": 4, "tx": "0xab", "values": {"x": 1}},
            {"kind": "credit", "message": "c", "block": None, "tx": None, "values": {}},
        ],
        "seconds": 1.235,
        "checkpoint": {"resumed_from_block": None, "note": None},
    }  # fmt: skip
    empty = AuditReport(chain_id=1, ledger=LEDGER, from_block=0, to_block=0)
    assert empty.clean and empty.as_dict()["result"] == "clean" and empty.findings_by_kind() == {}


def test_every_finding_kind_is_documented():
    assert set(FINDING_KINDS) == {
        "signature", "terms", "credit", "duplicate", "closed-period", "settlement", "withdrawal", "conservation",
        "statement-differs", "statement-missing", "statement-extra", "debit", "reversal", "debt", "nested",
    }  # fmt: skip


# =====================================================================================================
# 5. Statement reconciliation
# =====================================================================================================

HEADER = "alliance,period,me_id,me,tier,token,symbol,amount,amount_base_units"
PAYOUTS = {
    ("kitchen", 1, 1, "base"): 1_500_000,
    ("kitchen", 1, 1, "excess"): 10,
    ("kitchen", 1, 2, "base"): 2_250_001,
    ("kitchen", 2, 3, "base"): 7,
    ("duo", 1, 2, "base"): 3_000_000,
}
NAMES = {1: "fridge", 2: "oven", 3: "recipe-app"}


def statement_report() -> AuditReport:
    report = AuditReport(chain_id=CHAIN_ID, ledger=LEDGER, from_block=0, to_block=10)
    report.tokens = [TokenTotals(token=USDC, symbol="USDC", decimals=6)]
    report.me_names = dict(NAMES)
    report.alliance_tokens = {"kitchen": USDC, "duo": USDC}
    report.payouts = dict(PAYOUTS)
    return report


def line(alliance, period, me_id, tier, units, *, amount=None, token=USDC) -> str:
    shown = money.format_amount(units, 6) if amount is None else amount
    return f"{alliance},{period},{me_id},{NAMES[me_id]},{tier},{token},USDC,{shown},{units}"


def statement_lines() -> list[str]:
    return [line(a, p, m, t, v) for (a, p, m, t), v in PAYOUTS.items()]


def write(tmp_path: Path, lines: list[str], header: str = HEADER, *, name="statement.csv", eol="\n", bom=False) -> Path:
    path = tmp_path / name
    text = eol.join([header, *lines]) + eol
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def kinds(report: AuditReport) -> dict[str, int]:
    return report.findings_by_kind()


def test_a_matching_statement_has_no_findings(tmp_path):
    report = statement_report()
    counts = reconcile(write(tmp_path, statement_lines()), report)
    assert report.findings == []
    assert counts == {"statement_lines": 5, "statement_lines_matching": 5}


def test_a_changed_amount_differs_on_its_line(tmp_path):
    lines = statement_lines()
    lines[2] = line("kitchen", 1, 2, "base", 2_250_000)  # data line 3 = file line 4
    report = statement_report()
    counts = reconcile(write(tmp_path, lines), report)
    assert kinds(report) == {"statement-differs": 1}
    finding = report.findings[0]
    assert finding.message == (
        "statement.csv line 4: kitchen 1 oven base: 2.250000 USDC stated, the chain credited 2.250001 USDC"
    )
    assert finding.values == {"line": 4, "alliance": "kitchen", "period": 1, "me": "oven", "tier": "base",
                              "stated": "2250000", "chain": "2250001"}  # fmt: skip
    assert counts == {"statement_lines": 5, "statement_lines_matching": 4}


def test_a_deleted_line_is_missing(tmp_path):
    lines = statement_lines()
    del lines[3]  # kitchen 2 recipe-app base 7
    report = statement_report()
    reconcile(write(tmp_path, lines), report)
    assert kinds(report) == {"statement-missing": 1}
    assert report.findings[0].message == (
        "statement.csv: no line for kitchen 2 recipe-app base: the chain credited 0.000007 USDC"
    )
    assert report.findings[0].values == {"line": None, "alliance": "kitchen", "period": 2, "me": "recipe-app",
                                         "tier": "base", "chain": "7"}  # fmt: skip


def test_an_added_line_is_extra(tmp_path):
    lines = [*statement_lines(), line("kitchen", 2, 1, "base", 5)]
    report = statement_report()
    reconcile(write(tmp_path, lines), report)
    assert kinds(report) == {"statement-extra": 1}
    assert report.findings[0].message == "statement.csv line 7: kitchen 2 fridge base: the chain credited nothing"


def test_a_repeated_line_is_extra(tmp_path):
    lines = statement_lines()
    lines.insert(1, lines[0])
    report = statement_report()
    counts = reconcile(write(tmp_path, lines), report)
    assert kinds(report) == {"statement-extra": 1}
    assert report.findings[0].message == "statement.csv line 3: kitchen 1 fridge base repeats an earlier line"
    assert counts == {"statement_lines": 6, "statement_lines_matching": 5}


def test_amount_and_base_units_that_disagree_differ(tmp_path):
    lines = statement_lines()
    lines[0] = line("kitchen", 1, 1, "base", 1_500_000, amount="1.500001")
    report = statement_report()
    reconcile(write(tmp_path, lines), report)
    assert kinds(report) == {"statement-differs": 1}
    assert report.findings[0].message == (
        "statement.csv line 2: kitchen 1 fridge base: amount 1.500001 and amount_base_units 1500000 disagree "
        "(1.500000 in token units)"
    )


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("1.5000000", "amount '1.5000000' has 7 decimals; the token has 6"),
        ("-1.5", "amount '-1.5' has a sign; amounts are positive numbers like 12.50"),
        ("", "the line has no amount"),
    ],
)
def test_an_unreadable_amount_differs(tmp_path, bad, problem):
    header = "alliance,period,me,tier,amount"
    lines = [f"{a},{p},{NAMES[m]},{t},{money.format_amount(v, 6)}" for (a, p, m, t), v in PAYOUTS.items()]
    lines[0] = f"kitchen,1,fridge,base,{bad}"
    report = statement_report()
    reconcile(write(tmp_path, lines, header), report)
    assert kinds(report) == {"statement-differs": 1}
    assert report.findings[0].message == f"statement.csv line 2: kitchen 1 fridge base: {problem}"


def test_a_statement_with_only_the_amount_column_reconciles(tmp_path):
    header = "alliance,period,me,tier,amount"
    lines = [f"{a},{p},{NAMES[m]},{t},{money.format_amount(v, 6)}" for (a, p, m, t), v in PAYOUTS.items()]
    report = statement_report()
    assert reconcile(write(tmp_path, lines, header), report) == {"statement_lines": 5, "statement_lines_matching": 5}
    assert report.findings == []
    lines[4] = "duo,1,oven,base,3.000001"
    report = statement_report()
    reconcile(write(tmp_path, lines, header), report)
    assert kinds(report) == {"statement-differs": 1}
    assert report.findings[0].values["line"] == 6 and report.findings[0].values["stated"] == "3000001"


def test_a_statement_with_only_base_units_and_me_ids_reconciles(tmp_path):
    header = "Alliance , PERIOD,me_id,tier,amount_base_units"  # header matched case- and space-insensitively
    lines = [f"{a},{p},{m},{t.upper()},{v}" for (a, p, m, t), v in PAYOUTS.items()]
    report = statement_report()
    assert reconcile(write(tmp_path, lines, header), report)["statement_lines_matching"] == 5
    assert report.findings == []


def test_a_line_in_another_token_differs(tmp_path):
    lines = statement_lines()
    lines[4] = line("duo", 1, 2, "base", 3_000_000, token=EURT)
    report = statement_report()
    reconcile(write(tmp_path, lines), report)
    assert kinds(report) == {"statement-differs": 1}
    assert (
        report.findings[0].message
        == f"statement.csv line 6: duo 1 oven base: token {EURT}, the alliance settles in {USDC}"
    )


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("kitchen,x,1,fridge,base,,,1,1000000", "period 'x' is not a whole number"),
        ("kitchen,1,9,fridge,base,,,1,1000000", "ME id 9 does not exist on the chain"),
        ("kitchen,1,1,oven,base,,,1,1000000", "me_id 1 is 'fridge' on the chain, the line says 'oven'"),
        ("kitchen,1,,ghost,base,,,1,1000000", "ME 'ghost' does not exist on the chain"),
        (
            "kitchen,1,1,fridge,bonus,,,1,1000000",
            "tier 'bonus' is not 'recoup', 'base', 'excess', 'band N' or 'reversal'",
        ),
        ("pantry,1,1,fridge,base,,,1,1000000", "alliance 'pantry' does not exist on the chain"),
    ],
)
def test_lines_that_name_nothing_on_the_chain_are_extra(tmp_path, row, problem):
    report = statement_report()
    reconcile(write(tmp_path, [*statement_lines(), row]), report)
    assert kinds(report) == {"statement-extra": 1}
    assert report.findings[0].message == f"statement.csv line 7: {problem}"


def test_scope_lines_outside_are_extra_and_payouts_outside_are_not_missing(tmp_path):
    kitchen_only = [x for x in statement_lines() if x.startswith("kitchen,")]
    report = statement_report()
    counts = reconcile(write(tmp_path, kitchen_only), report, Scope(alliance="kitchen"))
    assert report.findings == [] and counts["statement_lines_matching"] == 4
    # A duo line in a kitchen statement is extra (even though the chain has it).
    report = statement_report()
    reconcile(write(tmp_path, statement_lines()), report, Scope(alliance="kitchen"))
    assert kinds(report) == {"statement-extra": 1}
    assert report.findings[0].message == (
        "statement.csv line 6: duo 1 oven base is outside the statement's scope (--alliance kitchen)"
    )
    # Scope by ME and period: only oven's period-1 lines are due.
    oven_1 = [line("kitchen", 1, 2, "base", 2_250_001), line("duo", 1, 2, "base", 3_000_000)]
    report = statement_report()
    assert reconcile(write(tmp_path, oven_1), report, Scope(me="oven", period=1))["statement_lines_matching"] == 2
    assert report.findings == []
    report = statement_report()
    reconcile(write(tmp_path, oven_1[:1]), report, Scope(me="oven", period=1))
    assert kinds(report) == {"statement-missing": 1}
    assert report.findings[0].values["alliance"] == "duo"
    assert Scope(me="oven", period=1).describe() == "--me oven --period 1"
    assert Scope().describe() == "the whole ledger"


def test_bom_and_crlf_statements_reconcile_with_the_right_line_numbers(tmp_path):
    report = statement_report()
    path = write(tmp_path, statement_lines(), eol="\r\n", bom=True)
    assert reconcile(path, report)["statement_lines_matching"] == 5
    assert report.findings == []
    lines = statement_lines()
    lines[4] = line("duo", 1, 2, "base", 2_999_999)
    report = statement_report()
    reconcile(write(tmp_path, ["", *lines], eol="\r\n", bom=True), report)  # a blank line is skipped, but counted
    assert kinds(report) == {"statement-differs": 1}
    assert report.findings[0].values["line"] == 7
    header, rows = read_statement(write(tmp_path, statement_lines()[:1], eol="\r\n", bom=True))
    assert header == HEADER.split(",")
    assert rows == [(2, dict(zip(header, statement_lines()[0].split(","), strict=True)))]


def test_a_non_ascii_digit_in_base_units_is_a_finding_not_a_crash(tmp_path):
    lines = statement_lines()
    lines[0] = "kitchen,1,1,fridge,base,,,,²"
    report = statement_report()
    reconcile(write(tmp_path, lines), report)
    assert kinds(report) == {"statement-differs": 1}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No such file or directory"),
        (b"", "the file is empty"),
        (b"alliance,period,me_id,tier,token\nkitchen,1,1,base,x\n", "the header lacks amount"),
        (b"me,amount\n", "the header lacks alliance, period, tier"),
        (b"period,tier,amount\n", "the header lacks alliance, me"),
        (HEADER.encode() + b"\nkitchen,1,1,fridge,base,,,\xff1,1\n", "not UTF-8 text (byte "),
    ],
)
def test_unreadable_statements_raise_statement_unreadable(tmp_path, content, message):
    path = tmp_path / "s.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(StatementUnreadable) as info:
        reconcile(path, statement_report())
    assert info.value.exit_code == 2
    assert str(info.value).startswith(f"statement {path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


HOSTILE = {1: '=HYPERLINK("http://x","y")', 2: "+SUM(1)", 3: "@cmd", 4: "-2+3", 5: "'quoted", 6: " lead",
           7: "trail\t", 8: "esc\x1b[31m", 9: "gpj.\u202eexe", 10: "-5"}  # fmt: skip


def test_a_statement_payouts_wrote_for_hostile_names_reads_back_exactly_and_no_cell_is_a_formula(tmp_path):
    """What `ledger payouts --format csv` writes (its own renderer) for names a spreadsheet would run or a
    stripping reader would change: every cell is safe to open, and the audit matches every line."""
    from ledger.cli.finance import _render

    alliances = {"=cmd|' /C calc'!A0": USDC, " kitchen ": USDC}
    payouts = {(alliance, 1, me_id, "base"): 1_000 * me_id for alliance in alliances for me_id in HOSTILE}
    rows = [
        {"alliance": a, "period": p, "me_id": m, "me": HOSTILE[m], "tier": t, "token": USDC, "symbol": "-USDC",
         "amount": money.format_amount(v, 6), "amount_base_units": str(v)}
        for (a, p, m, t), v in payouts.items()
    ]  # fmt: skip
    path = tmp_path / "statement.csv"
    path.write_text(_render("csv", rows, [], {}))
    for cell in (c for row in csv.reader(path.open(newline="")) for c in row):
        assert cell.isprintable() and not cell.startswith(("=", "+", "@", " ")), cell
        assert not cell.startswith("-") or cell == "-5", cell  # a plain number is a number
    report = AuditReport(chain_id=CHAIN_ID, ledger=LEDGER, from_block=0, to_block=10)
    report.tokens = [TokenTotals(token=USDC, symbol="-USDC", decimals=6)]
    report.me_names, report.alliance_tokens, report.payouts = dict(HOSTILE), alliances, payouts
    counts = reconcile(path, report)
    assert report.findings == []
    assert counts == {"statement_lines": len(rows), "statement_lines_matching": len(rows)}


# =====================================================================================================
# 6. HttpRpc
# =====================================================================================================


@pytest.fixture(autouse=True)
def _no_proxy_for_localhost(monkeypatch):
    """urllib honours http_proxy: keep localhost requests local whatever the environment says."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_rpc_with_nothing_listening_is_chain_unavailable():
    url = f"http://127.0.0.1:{free_port()}"
    rpc = HttpRpc(url, timeout=5)
    with pytest.raises(ChainUnavailable) as info:
        rpc.request("eth_chainId")
    message = str(info.value)
    assert message.startswith(f"no JSON-RPC node answers at {url} (") and message.endswith(")")
    assert "\n" not in message and info.value.exit_code == 2
    with pytest.raises(ChainUnavailable, match="no JSON-RPC node answers at"):
        rpc.batch([("eth_call", [1]), ("eth_call", [2])])
    with pytest.raises(ChainUnavailable):
        audit(rpc, LEDGER)


def _answer(call: dict) -> dict:
    if call["method"] == "fail":
        return {"jsonrpc": "2.0", "id": call["id"], "error": {"code": -32000, "message": "refused"}}
    return {"jsonrpc": "2.0", "id": call["id"], "result": f"{call['method']}:{call['params'][0]}"}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - the standard library's name
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        server.bodies.append(payload)
        status, body = 200, None
        if server.mode == "garbage":
            body = b"<html>not json</html>"
        elif server.mode == "http-500":
            status, body = 500, b"Internal Server Error"
        elif server.mode == "http-429-json":
            status, reply = 429, {"jsonrpc": "2.0", "id": 1, "error": {"code": -32005, "message": "rate limited"}}
        elif isinstance(payload, list):
            if server.mode == "no-batch":
                reply = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "batches unsupported"}}
            elif server.mode == "drop-first":
                reply = [_answer(c) for c in payload[1:]]
            else:  # answer out of order: the client must put results back by id
                reply = [_answer(c) for c in reversed(payload)]
        else:
            reply = _answer(payload)
        body = body if body is not None else json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def _server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def server(_server):
    _server.mode, _server.bodies = "batch", []
    return _server


def rpc_for(server) -> HttpRpc:
    return HttpRpc(f"http://127.0.0.1:{server.server_address[1]}", timeout=5)


def test_http_rpc_request_and_batch_in_order(server):
    rpc = rpc_for(server)
    assert rpc.request("eth_chainId", ["a"]) == "eth_chainId:a"
    calls = [("eth_call", [i]) for i in range(7)]
    assert rpc.batch(calls) == [f"eth_call:{i}" for i in range(7)]
    assert rpc.calls == 2
    assert isinstance(server.bodies[1], list) and [c["id"] for c in server.bodies[1]] == list(range(7))
    # Sent `size` at a time, ids continuing across chunks.
    assert rpc.batch(calls, size=3) == [f"eth_call:{i}" for i in range(7)]
    assert [[c["id"] for c in b] if isinstance(b, list) else b["params"] for b in server.bodies[2:]] == [
        [0, 1, 2], [3, 4, 5], [6],
    ]  # fmt: skip
    assert rpc.batch([]) == []


def test_http_rpc_falls_back_to_single_requests_when_batches_are_refused(server):
    server.mode = "no-batch"
    rpc = rpc_for(server)
    assert rpc.batch([("m", ["x"]), ("m", ["y"]), ("m", ["z"])]) == ["m:x", "m:y", "m:z"]
    assert rpc.calls == 4  # the refused batch, then one request per call
    assert [isinstance(b, list) for b in server.bodies] == [True, False, False, False]


def test_http_rpc_errors(server):
    rpc = rpc_for(server)
    with pytest.raises(RpcError) as info:
        rpc.request("fail", ["x"])
    assert (str(info.value), info.value.code, info.value.method) == ("fail failed: refused", -32000, "fail")
    with pytest.raises(RpcError, match="fail failed: refused"):
        rpc.batch([("ok", [1]), ("fail", [2])])
    server.mode = "drop-first"
    with pytest.raises(RpcError, match="first failed: no reply in the batch"):
        rpc.batch([("first", [1]), ("second", [2])])
    server.mode = "http-429-json"
    with pytest.raises(RpcError) as info:
        rpc.request("eth_getLogs", [{}])
    assert (str(info.value), info.value.code) == ("eth_getLogs failed: rate limited", -32005)
    server.mode = "http-500"
    with pytest.raises(RpcError) as info:
        rpc.request("eth_getLogs", [{}])
    assert (str(info.value), info.value.code) == ("eth_getLogs failed: HTTP 500", 500)
    server.mode = "garbage"
    with pytest.raises(ChainUnavailable, match="no JSON-RPC node answers at http://127.0.0.1:"):
        rpc.request("eth_chainId", [1])


# =====================================================================================================
# Payout runs: PayoutSkipped
# =====================================================================================================


def test_a_skipped_payout_that_names_the_balance_and_the_payout_address_audits_clean():
    chain = history()
    chain.payout_skipped(OVEN, USDC)
    report = run_audit(chain)
    assert report.findings == []
    assert report.counts["payouts_skipped"] == 1


@pytest.mark.parametrize("tamper", ["amount", "payout"])
def test_a_skipped_payout_with_another_amount_or_address_is_a_withdrawal_finding(tamper):
    chain = history()
    owed = chain.balances[(OVEN, USDC)]
    if tamper == "amount":
        chain.payout_skipped(OVEN, USDC, amount=owed + 1)
    else:
        chain.payout_skipped(OVEN, USDC, payout="0x" + "ab" * 20)
    report = run_audit(chain)
    assert [f.kind for f in report.findings] == ["withdrawal"]
    assert ("its balance is" if tamper == "amount" else "its payout address is") in report.findings[0].message


# =====================================================================================================
# 6. Bands, recoup and nested alliances, from the logs alone
# =====================================================================================================

PLATFORM_ME, NODE_A, NODE_B = 5, 6, 7


def shaped_history(tamper=None) -> FakeChain:
    """An outer alliance with two bands and a recoup whose party PLATFORM_ME is the inner alliance "nodes"
    (itself banded), settled across two periods; the recoup is reached inside the second batch."""
    chain = FakeChain()
    for role, account in (("admin", ADMIN), ("platform", PLATFORM), ("finance", FINANCE)):
        chain.grant(role, account)
    for name in ("fridge", "oven", "recipe-app", "logistics", "platform-me", "node-a", "node-b"):
        chain.register(name)
    nodes = Terms.build(USDC, {NODE_A: 5000, NODE_B: 5000}, 300_000, {NODE_A: 9000, NODE_B: 1000})
    chain.propose_terms("nodes", nodes)
    chain.activate("nodes", 1)
    outer = Terms(
        token=USDC, parties=(FRIDGE, OVEN, PLATFORM_ME), shares=(5000, 3000, 2000),
        bands=(Band(target=500_000, shares=(2000, 3000, 5000)), Band(target=900_000, shares=(0, 5000, 5000))),
        recoup=1_000_000, recoup_shares=(10_000, 0, 0), nested=(b"\0" * 32, b"\0" * 32, b32("nodes")),
    )  # fmt: skip
    chain.propose_terms("outer", outer)
    chain.activate("outer", 1)
    chain.settle_shaped("outer", [("o-1", 600_000, 1), ("o-2", 300_000, 1), ("o-3", 77_777, 2)], tamper=tamper)
    chain.settle_shaped("outer", [("o-4", 400_000, 1), ("o-5", 950_001, 1), ("o-6", 3, 2)], tamper=tamper)
    return chain


def test_the_audit_recomputes_bands_recoup_and_nested_alliances_from_the_logs_alone():
    chain = shaped_history()
    report = run_audit(chain)
    assert report.findings == []
    # The first batch all goes to the recoup (to fridge): the platform ME is credited, and passes on, only
    # in the second batch's two runs.
    assert report.counts["nested_events"] == 2
    assert report.payouts == dict(chain.payouts)
    assert {t for (a, *_, t) in report.payouts if a == "outer"} == {"recoup", "base", "band 1", "band 2"}
    (usdc,) = report.tokens
    total = 600_000 + 300_000 + 77_777 + 400_000 + 950_001 + 3
    assert usdc.settled == usdc.credited == usdc.owed == usdc.held == usdc.balances == total  # paid in once
    assert all(me_id != PLATFORM_ME for (_, _, me_id, _) in report.payouts)  # an alliance is not paid as an ME


def test_a_nested_credit_not_passed_on_in_full_is_a_finding():
    def tamper(kind, args):
        if kind == "nested" and args["firstSeq"] == 3:
            return {**args, "amount": args["amount"] - 1}
        return args

    report = run_audit(shaped_history(tamper))
    assert "nested" in report.findings_by_kind()
    assert any("passed on, the run credited" in f.message for f in report.findings)


def test_an_inner_event_with_another_reference_is_a_finding():
    def tamper(kind, args):
        if kind == "inner" and args["firstSeq"] == 0:  # the inner alliance's first event
            return {**args, "refs": [b32("not derived")]}
        return args

    report = run_audit(shaped_history(tamper))
    assert any(f.kind == "nested" and "not the derived reference" in f.message for f in report.findings)


def test_tier_credits_that_differ_from_the_recomputed_recoup_split_are_a_finding():
    def tamper(kind, args):
        if kind == "credits" and "credits" in args and args["agreementId"] == b32("outer") and args["firstSeq"] == 0:
            credits = list(args["credits"])
            credits[0], credits[1] = credits[0] - 1, credits[1] + 1  # one unit of the recoup to the wrong ME
            return {**args, "credits": credits}
        return args

    report = run_audit(shaped_history(tamper))
    assert [f.kind for f in report.findings if f.kind == "credit"] == ["credit"]
    assert "fridge recoup" in next(f.message for f in report.findings if f.kind == "credit")
