// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IAllianceLedger} from "../contracts/interfaces/IAllianceLedger.sol";
import {bound, vm} from "./base/Test.sol";
import {ShapesFixture} from "./base/ShapesFixture.sol";

/// @title ShapesFuzz
/// @notice Random bands, recoup amounts and tables, amounts, periods, versions and reversals against the
/// plain reference (ShapesReference, one event at a time): every balance, debt, period revenue and
/// recouped part, the agreement's recouped total, and conservation (held == owed) after every batch.
/// Nested: an inner alliance's credits equal its own terms applied to what the outer alliance credited.
contract ShapesFuzz is ShapesFixture {
    uint32 internal constant P1 = 202611;
    uint32 internal constant P2 = 202612;
    uint32 internal constant P3 = 202701;

    function _allPeriods() internal pure returns (uint32[] memory p) {
        p = new uint32[](3);
        (p[0], p[1], p[2]) = (P1, P2, P3);
    }

    function _rand(uint256 seed, string memory tag) internal pure returns (uint256) {
        return uint256(keccak256(abi.encode(seed, tag)));
    }

    /// @dev Random shares summing to 10,000, zero shares included.
    function _randomShares(uint256 seed, uint256 n) internal pure returns (uint16[] memory shares) {
        shares = new uint16[](n);
        uint256 left = BPS;
        for (uint256 i; i + 1 < n; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            uint256 share = r % 6 == 0 ? 0 : bound(r >> 8, 0, left);
            shares[i] = uint16(share);
            left -= share;
        }
        shares[n - 1] = uint16(left);
    }

    /// @dev Random terms over MEs first..first+n-1: 0..4 bands at `scale`, a recoup two times in three.
    function _randomTerms(uint256 seed, uint32 first, uint256 n, uint256 scale)
        internal
        view
        returns (IAllianceLedger.Terms memory terms)
    {
        terms = _flat(first, n);
        terms.shares = _randomShares(_rand(seed, "base"), n);
        uint256 k = bound(_rand(seed, "k"), 0, 4);
        terms.bands = new IAllianceLedger.Band[](k);
        uint256 target;
        for (uint256 j; j < k; ++j) {
            target += bound(_rand(seed, string.concat("t", vm.toString(j))), 1, scale);
            terms.bands[j] = _band(uint128(target), _randomShares(_rand(seed, string.concat("b", vm.toString(j))), n));
        }
        if (_rand(seed, "recoup?") % 3 != 0) {
            terms.recoup = uint128(bound(_rand(seed, "recoup"), 1, 3 * scale));
            terms.recoupShares = _randomShares(_rand(seed, "recoupShares"), n);
        }
    }

    /// @dev 1..8 events over the three periods; amounts mostly near `scale`, sometimes 1 unit or huge.
    function _randomEntries(uint256 seed, uint256 scale) internal pure returns (uint256[] memory entries) {
        uint256 count = bound(_rand(seed, "count"), 1, 8);
        entries = new uint256[](count);
        for (uint256 k; k < count; ++k) {
            uint256 r = uint256(keccak256(abi.encode(seed, "event", k)));
            uint256 amount = r % 10 == 0 ? 1 : r % 10 == 1 ? bound(r >> 8, 1, 2 ** 100) : bound(r >> 8, 1, 2 * scale);
            uint32 period = (r >> 200) % 3 == 0 ? P1 : (r >> 200) % 3 == 1 ? P2 : P3;
            entries[k] = _entry(amount, period);
        }
    }

    /// @notice Batches of random shaped events, amendments to random shapes and reversals, compared with
    /// the reference after every step.
    /// forge-config: default.fuzz.runs = 300
    /// forge-config: long.fuzz.runs = 10000
    function testFuzz_shaped_batches_versions_and_reversals_match_the_reference(uint256 seed) public {
        uint256 n = bound(seed, 2, 6);
        uint256 scale = 10 ** bound(_rand(seed, "scale"), 1, 12);
        IAllianceLedger.Terms memory terms = _randomTerms(seed, 1, n, scale);
        _create("a", terms);
        uint256 steps = bound(_rand(seed, "steps"), 2, 6);
        for (uint256 step; step < steps; ++step) {
            uint256 s = _rand(seed, string.concat("step", vm.toString(step)));
            uint256 action = s % 10;
            if (action < 6) {
                _settleBoth("a", terms, _randomEntries(s, scale));
            } else if (action < 8) {
                uint256[] memory entries = _randomEntries(s, scale);
                for (uint256 k; k < entries.length; ++k) {
                    // Mostly within the revenue booked, sometimes beyond it.
                    entries[k] = _entry(bound(entries[k] >> 32, 1, 3 * scale), uint32(entries[k]));
                }
                _reverseBoth("a", terms, entries);
            } else {
                terms = _randomTerms(s, 1, n, scale);
                _amend("a", terms);
            }
            _assertMatchesReference("a", _allPeriods());
        }
    }

    /// @notice An outer alliance (MEs 1..5) with one random party nested to an inner alliance (MEs 9..12),
    /// both with random shapes: the inner alliance's balances equal its own terms applied, at its own
    /// sequence numbers, to each run credit the outer alliance gave the nested party; that ME's balance
    /// stays zero; every unit is accounted for.
    /// forge-config: default.fuzz.runs = 200
    /// forge-config: long.fuzz.runs = 5000
    function testFuzz_nested_inner_credits_match_the_inner_reference(uint256 seed) public {
        uint256 scale = 10 ** bound(_rand(seed, "scale"), 1, 9);
        IAllianceLedger.Terms memory innerTerms = _randomTerms(_rand(seed, "inner"), 9, bound(seed, 2, 4), scale);
        _create("inner", innerTerms);
        uint256 n = bound(seed >> 8, 2, 5);
        IAllianceLedger.Terms memory outer = _randomTerms(_rand(seed, "outer"), 1, n, scale);
        uint256 nestedIndex = bound(seed >> 16, 0, n - 1);
        outer.nested = new bytes32[](n);
        outer.nested[nestedIndex] = "inner";
        _create("outer", outer);
        IAllianceLedger.InnerTerms[] memory list = new IAllianceLedger.InnerTerms[](1);
        list[0] = _inner("inner", innerTerms);
        uint32 nestedMe = outer.parties[nestedIndex];

        uint64 outerSeq;
        uint64 innerSeq;
        uint256 paid;
        uint256 booked;
        for (uint256 batch; batch < 3; ++batch) {
            // One period per batch: one run, so one inner event (when the nested party is credited).
            uint256[] memory entries = _randomEntries(_rand(seed, string.concat("batch", vm.toString(batch))), scale);
            uint32 period = batch == 0 ? P1 : batch == 1 ? P2 : P1;
            uint256 forwarded;
            for (uint256 k; k < entries.length; ++k) {
                entries[k] = _entry(entries[k] >> 32, period);
                forwarded += _refEvent("outer", outer, outerSeq + uint64(k), entries[k])[nestedIndex];
                booked += entries[k] >> 32;
            }
            expected[nestedMe] = 0;
            paid += _settleNested("outer", outer, entries, list);
            outerSeq += uint64(entries.length);
            if (forwarded != 0) _refEvent("inner", innerTerms, innerSeq++, _entry(forwarded, period));
            vm.assertEq(ledger.agreementOf("inner").nextSeq, innerSeq, "one inner event per credited run");
            _assertMatchesReference("inner", _allPeriods());
            _assertMatchesReference("outer", _allPeriods());
        }
        vm.assertEq(paid, booked, "finance paid in exactly the outer revenue");
        vm.assertEq(ledger.balanceOf(nestedMe, address(token)), 0, "the nested ME is never credited itself");
    }
}
