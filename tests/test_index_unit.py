"""Pieces of the index and the incremental audit that need no chain: log decoding by slicing against
eth-abi, the JSON of stored log arguments and of the audit's state, and references spilled to SQLite
against the in-memory set."""

from __future__ import annotations

import random

from eth_abi import encode as abi_encode
from eth_utils import to_checksum_address

from ledger.chain.codec import EventSpec, _fast_decode
from ledger.index.store import _dumps, _loads
from ledger.services.audit import _ME, Finding, TokenTotals, _Agreement, _Terms, event_abi
from ledger.services.audit import checkpoint as audit_state


def test_events_of_words_and_word_arrays_decode_by_slicing_exactly_as_eth_abi_does():
    rng = random.Random(7)
    specs = {spec.name: spec for spec in map(EventSpec.from_abi, event_abi())}
    for name in ("RevenueSettled", "PartiesCredited", "MEUpdated", "Withdrawn", "PeriodClosed"):
        spec = specs[name]
        assert spec.simple, name
        for _ in range(20):
            values = []
            for _, kind in spec.data:
                base = kind[:-2] if kind.endswith("[]") else kind

                def one(base=base):
                    if base == "address":
                        return to_checksum_address(rng.randbytes(20))
                    if base == "bytes32":
                        return rng.randbytes(32)
                    return rng.randrange(2 ** int(base[4:]))

                values.append(tuple(one() for _ in range(rng.randrange(0, 40))) if kind.endswith("[]") else one())
            data = abi_encode([kind for _, kind in spec.data], values)
            topics = [spec.topic0] + [rng.randbytes(12).rjust(32, b"\0") for _ in spec.indexed]
            fast = spec.decode(topics, data)
            assert _fast_decode(spec.data, data) is not None
            assert list(fast.values())[len(spec.indexed) :] == [v for v in values]


def test_truncated_data_is_left_to_eth_abi():
    spec = next(s for s in map(EventSpec.from_abi, event_abi()) if s.name == "RevenueSettled")
    data = abi_encode(["uint64", "bytes32[]", "uint256[]"], [1, [b"\1" * 32] * 3, [5, 6, 7]])
    assert _fast_decode(spec.data, data[:-32]) is None


def test_stored_log_arguments_round_trip_bytes_tuples_and_big_numbers():
    args = {"agreementId": b"\0\1" * 16, "terms": ("0xAbC", (1, 2), (5000, 5000), 2**200, ()), "name": "x"}
    back = _loads(_dumps(args))
    assert back["agreementId"] == args["agreementId"] and back["terms"][3] == 2**200
    assert back["terms"][1] == [1, 2] and back["name"] == "x"


def test_the_audit_state_round_trips_through_its_json():
    state = {
        "mes": {1: _ME("fridge", "0x1", "0x2", False, 3)},
        "agreements": {
            b"a" * 32: _Agreement("k", "0xT", "active", 2, 2, 7, {1: _Terms("0xT", (1, 2), (5000, 5000), 0, ())})
        },
        "periods": {(b"a" * 32, 202611): [10, None]},
        "tokens": {"0xT": TokenTotals("0xT", settled=5, credited=5)},
        "payouts": {("k", 202611, 1, "base"): 2**130},
        "roles": {"admin": {"0xA"}},
        "findings": [Finding("credit", "m", 4, "0xab", {"x": [1, 2]})],
    }
    back = audit_state._decode_all(audit_state.json_text(state))
    assert back == state


def test_spilled_references_find_the_same_duplicates_as_the_in_memory_set():
    rng = random.Random(3)
    pool = [rng.randbytes(32) for _ in range(300)]
    memory, spilled = audit_state.MemoryReferences(), audit_state.SpilledReferences()
    try:
        for batch in range(40):
            refs = [rng.choice(pool) for _ in range(rng.randrange(1, 30))]
            aid = bytes([batch % 3]) * 32
            assert spilled.add(refs, aid, batch * 100, f"0x{batch}", batch) == memory.add(
                refs, aid, batch * 100, f"0x{batch}", batch
            )
    finally:
        spilled.close()
