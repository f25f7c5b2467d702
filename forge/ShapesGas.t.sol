// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IAllianceLedger} from "../contracts/interfaces/IAllianceLedger.sol";
import {vm} from "./base/Test.sol";
import {ShapesFixture} from "./base/ShapesFixture.sol";

/// @title ShapesGasBase
/// @notice Gas of the shapes of issue 18 measured the way scripts/bench.py does (a warm-up batch of 10
/// events, then ONE batch of 1,000 events in one period, amounts 1.00 to 5,000.00 units at 6 decimals),
/// but inside forge: `exec` is the gasleft() delta of the call, `tx` adds the intrinsic gas the receipt
/// would show (21,000 + 16 per non-zero and 4 per zero calldata byte of the same call). The figures are
/// logged (`forge test --match-contract ShapesGas -vv`); the authoritative table is bench/results.json.
/// The `tx` estimate of main's contract for n5_k1000, measured by this same method (forge 1.7.1, the same
/// calldata) was 2,541 gas per event against 2,414.7 in bench/results.json: the method reads
/// METHOD_OFFSET = 126 gas per event high (the bench's Anvil and its own amounts). Each test asserts its
/// issue-18 target on `tx - METHOD_OFFSET`, so a regression fails here first.
abstract contract ShapesGasBase is ShapesFixture {
    event log_named_uint(string key, uint256 val);

    uint256 internal constant UNIT = 1e6;
    uint256 internal constant EVENTS = 1000;
    uint256 internal constant WARMUP = 10;
    uint256 internal constant METHOD_OFFSET = 126;

    /// @dev The bench's amounts: whole cents from 1.00 to 5,000.00 units, seeded per case.
    function _amounts(string memory seed, uint256 count) internal pure returns (uint256[] memory amounts) {
        amounts = new uint256[](count);
        for (uint256 k; k < count; ++k) {
            uint256 cents = 100 + uint256(keccak256(abi.encode(seed, k))) % (500_000 - 100 + 1);
            amounts[k] = cents * UNIT / 100;
        }
    }

    function _entries(uint256[] memory amounts) internal pure returns (uint256[] memory entries) {
        entries = new uint256[](amounts.length);
        for (uint256 k; k < amounts.length; ++k) {
            entries[k] = _entry(amounts[k], PERIOD);
        }
    }

    /// @dev References like the bench's (18 ASCII bytes of a bytes32).
    function _benchRefs(uint256 count) internal returns (bytes32[] memory refs) {
        refs = new bytes32[](count);
        for (uint256 k; k < count; ++k) {
            refs[k] = bytes32(abi.encodePacked("INV-2026-11-", _six(++refCounter)));
        }
    }

    function _six(uint256 x) internal pure returns (bytes memory out) {
        out = new bytes(6);
        for (uint256 i; i < 6; ++i) {
            out[5 - i] = bytes1(uint8(48 + x % 10));
            x /= 10;
        }
    }

    function _sum(uint256[] memory amounts) internal pure returns (uint256 total) {
        for (uint256 k; k < amounts.length; ++k) {
            total += amounts[k];
        }
    }

    function _intrinsic(bytes memory data) internal pure returns (uint256 gas) {
        gas = 21_000;
        for (uint256 i; i < data.length; ++i) {
            gas += data[i] == 0 ? 4 : 16;
        }
    }

    /// @dev Settles `amounts` as one batch (plain `settle`, or `settleNested` when `inner` is not empty)
    /// and returns the receipt-equivalent gas per event.
    function _measure(
        string memory key,
        bytes32 id,
        IAllianceLedger.Terms memory terms,
        uint256[] memory amounts,
        IAllianceLedger.InnerTerms[] memory inner
    ) internal returns (uint256 perEvent) {
        IAllianceLedger.Agreement memory a = ledger.agreementOf(id);
        bytes32[] memory refs = _benchRefs(amounts.length);
        uint256[] memory entries = _entries(amounts);
        bytes memory data = inner.length == 0
            ? abi.encodeCall(ledger.settle, (id, a.activeVersion, a.nextSeq, terms, refs, entries))
            : abi.encodeCall(ledger.settleNested, (id, a.activeVersion, a.nextSeq, terms, refs, entries, inner));
        // A new transaction in the bench: the warm-up's storage and accounts are cold again.
        vm.cool(address(ledger));
        vm.cool(address(token));
        uint256 before = gasleft();
        (bool ok,) = address(ledger).call(data);
        uint256 exec = before - gasleft();
        vm.assertTrue(ok, "the measured batch settles");
        uint256 txGas = exec + _intrinsic(data);
        emit log_named_uint(string.concat(key, " exec/event"), exec / amounts.length);
        emit log_named_uint(string.concat(key, " tx/event"), txGas / amounts.length);
        perEvent = txGas / amounts.length - METHOD_OFFSET;
        emit log_named_uint(string.concat(key, " bench-equivalent/event"), perEvent);
    }

    function _warm(bytes32 id, IAllianceLedger.Terms memory terms, IAllianceLedger.InnerTerms[] memory inner) internal {
        uint256[] memory warm = _entries(_amounts("warm-up", WARMUP));
        if (inner.length == 0) _settle(id, terms, warm);
        else _settleNested(id, terms, warm, inner);
    }

    function _noInner() internal pure returns (IAllianceLedger.InnerTerms[] memory) {}
}

/// @title ShapesGas
/// @notice The settlement and creation targets of issue 18 (see ShapesGasBase for the method).
contract ShapesGas is ShapesGasBase {
    function test_gas_n5_k1000_classic_terms_stay_on_the_hot_path() public {
        bytes32 id = "n5";
        IAllianceLedger.Terms memory terms = _flat(1, 5);
        _create(id, terms);
        _warm(id, terms, _noInner());
        uint256 perEvent = _measure("n5_k1000", id, terms, _amounts("n5_k1000", EVENTS), _noInner());
        // The receipt figure of main is 2,414.7 (bench/results.json); +2% = 2,463.
        vm.assertLe(perEvent, 2_463, "n5_k1000 at most 2% above 2,414.7");
    }

    function test_gas_n5_three_bands_k1000_crossing_two_band_edges() public {
        bytes32 id = "bands";
        uint256[] memory amounts = _amounts("n5_bands_k1000", EVENTS);
        uint256 warm = _sum(_amounts("warm-up", WARMUP));
        uint256 total = _sum(amounts);
        // Band 1 starts inside the warm-up; the batch crosses the edges of bands 2 and 3.
        IAllianceLedger.Terms memory terms = _withBands(
            _flat(1, 5), _targets(uint128(warm / 2), uint128(warm + total / 3), uint128(warm + 2 * total / 3))
        );
        _create(id, terms);
        _warm(id, terms, _noInner());
        uint256 perEvent = _measure("n5_bands3_k1000", id, terms, amounts, _noInner());
        vm.assertLe(perEvent, 2_750, "3 bands crossing two edges: at most 2,750 gas per event");
    }

    function test_gas_n5_recoup_reached_inside_the_batch() public {
        bytes32 id = "recoup";
        uint256[] memory amounts = _amounts("n5_recoup_k1000", EVENTS);
        uint256 warm = _sum(_amounts("warm-up", WARMUP));
        IAllianceLedger.Terms memory terms = _withBands(_flat(1, 5), _target1(uint128(warm + _sum(amounts))));
        terms.recoup = uint128(warm + _sum(amounts) / 2);
        terms.recoupShares = _equal(5);
        (terms.recoupShares[0], terms.recoupShares[1]) = (7_000, 3_000);
        (terms.recoupShares[2], terms.recoupShares[3], terms.recoupShares[4]) = (0, 0, 0);
        _create(id, terms);
        _warm(id, terms, _noInner());
        uint256 perEvent = _measure("n5_recoup_k1000", id, terms, amounts, _noInner());
        vm.assertEq(ledger.agreementOf(id).recouped, terms.recoup, "the recoup was reached in the batch");
        vm.assertLe(perEvent, 2_800, "recoup reached inside the batch: at most 2,800 gas per event");
    }

    function test_gas_n5_recoup_and_three_bands_reached_inside_the_batch() public {
        bytes32 id = "recoup-bands";
        uint256[] memory amounts = _amounts("n5_recoup_bands_k1000", EVENTS);
        uint256 total = _sum(amounts);
        IAllianceLedger.Terms memory terms =
            _withBands(_flat(1, 5), _targets(uint128(total / 8), uint128(total / 4), uint128(total * 2)));
        terms.recoup = uint128(total / 2);
        terms.recoupShares = _all(5, 0);
        _create(id, terms);
        _warm(id, terms, _noInner());
        uint256 perEvent = _measure("n5_recoup_bands3_k1000", id, terms, amounts, _noInner());
        vm.assertLe(perEvent, 2_800, "recoup and bands: at most 2,800 gas per event");
    }

    function test_gas_nested_outer_five_with_an_inner_four_is_at_most_twice_a_flat_eight() public {
        uint256[] memory amounts = _amounts("nested_k1000", EVENTS);
        // Flat 8-party alliance (MEs 1..8).
        IAllianceLedger.Terms memory flat = _flat(1, 8);
        _create("flat8", flat);
        _warm("flat8", flat, _noInner());
        uint256 flatGas = _measure("flat_n8_k1000", "flat8", flat, amounts, _noInner());

        // Inner 4-party alliance (MEs 9..12); outer 5 parties (MEs 1..5), party 5 is the inner alliance.
        IAllianceLedger.Terms memory innerTerms = _flat(9, 4);
        _create("inner4", innerTerms);
        IAllianceLedger.Terms memory outer = _flat(1, 5);
        outer.nested = new bytes32[](5);
        outer.nested[4] = "inner4";
        _create("outer5", outer);
        IAllianceLedger.InnerTerms[] memory inner = new IAllianceLedger.InnerTerms[](1);
        inner[0] = _inner("inner4", innerTerms);
        _warm("outer5", outer, inner);
        uint256 nestedGas = _measure("nested_n5_inner4_k1000", "outer5", outer, amounts, inner);
        emit log_named_uint("nested / flat8 (x1000)", nestedGas * 1000 / flatGas);
        vm.assertLe(nestedGas, 2 * flatGas, "nested at most 2x a flat 8-party alliance per outer event");
    }

    function _createGas(bytes32 id, IAllianceLedger.Terms memory terms) internal returns (uint256) {
        bytes memory data = abi.encodeCall(ledger.createAgreement, (id, terms, _signatures(id, 1, terms)));
        vm.cool(address(ledger));
        uint256 before = gasleft();
        (bool ok,) = address(ledger).call(data);
        uint256 exec = before - gasleft();
        vm.assertTrue(ok, "created");
        // One transaction: no per-event method offset applies.
        return exec + _intrinsic(data);
    }

    function test_gas_create_agreement_with_five_parties_and_three_bands() public {
        uint256 plain = _createGas("create-plain", _flat(1, 5));
        emit log_named_uint("createAgreement n5 tx", plain);
        // bench.py's own target for a plain 5-party createAgreement (149,065 there on this branch).
        vm.assertLe(plain, 150_000, "createAgreement n5 stays within the bench target");
        uint256 banded = _createGas("create", _withBands(_flat(1, 5), _targets(1e12, 2e12, 3e12)));
        emit log_named_uint("createAgreement n5 bands3 tx", banded);
        vm.assertLe(banded, 200_000, "createAgreement with 5 parties and 3 bands at most 200,000 gas");
    }
}
