// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {SplitMath} from "../contracts/libraries/SplitMath.sol";
import {Test, bound, vm} from "./base/Test.sol";
import {SplitReference} from "./reference/SplitReference.sol";

/// @title SplitMathFuzz
/// @notice SplitMath (the contract's batched, assembly-accumulated split) against SplitReference (the
/// rule applied one event at a time in plain Solidity), and the documented properties of the rule.
contract SplitMathFuzz is Test {
    uint256 internal constant BPS = 10_000;

    function testFuzz_offset_matches_the_reference_for_every_sequence_number(uint64 seq) public pure {
        vm.assertEq(SplitMath.offsetOf(seq), SplitReference.offsetOf(seq), "offset");
        vm.assertTrue(SplitMath.offsetOf(seq) < BPS, "offset below 10,000");
    }

    function testFuzz_tier_parts_match_the_reference(uint128 revenue, uint128 amount, uint128 target) public pure {
        (uint256 base, uint256 excess) = SplitMath.tierParts(revenue, amount, target);
        (uint256 refBase, uint256 refExcess) = SplitReference.tierParts(revenue, amount, target);
        vm.assertEq(base, refBase, "base part");
        vm.assertEq(excess, refExcess, "excess part");
        vm.assertEq(base + excess, amount, "parts add up to the amount");
    }

    /// @notice A run of 1..12 events (amounts from 1 unit to 2**128 - 1) over 2..64 parties: the
    /// credits SplitMath takes once per run equal the reference's per-event credits summed.
    function testFuzz_a_run_credits_each_party_the_sum_of_its_per_event_reference_credits(
        uint256 seed,
        uint64 firstSeq
    ) public pure {
        uint256 n = bound(seed, 2, seed % 5 == 0 ? 64 : 6);
        uint16[] memory shares = _shares(uint256(keccak256(abi.encode(seed, "shares"))), n);
        uint256 events = bound(seed >> 8, 1, 12);
        vm.assume(uint256(firstSeq) + events < type(uint64).max);

        uint256[] memory prefix = _prefix(shares);
        uint256[] memory sums = new uint256[](n - 1);
        uint256[] memory expected = new uint256[](n);
        uint256 total;
        for (uint256 k; k < events; ++k) {
            total += _addEvent(uint256(keccak256(abi.encode(seed, k))), firstSeq + k, shares, prefix, sums, expected);
        }
        uint256[] memory credits = SplitMath.creditsOf(sums, total);
        uint256 sum;
        for (uint256 i; i < n; ++i) {
            vm.assertEq(credits[i], expected[i], "party credit == reference");
            sum += credits[i];
            vm.assertEq(i + 1 < n ? sums[i] : 0, 0, "creditsOf clears the sums");
        }
        vm.assertEq(sum, total, "the credits add up to the run's total");
    }

    /// @notice One event: the credits add up to the amount; each party receives floor(a * s / 10,000) or
    /// one unit more; a party with a zero share receives nothing.
    function testFuzz_one_event_adds_up_and_each_party_is_within_one_unit(uint256 seed, uint128 amount, uint64 seq)
        public
        pure
    {
        uint256 n = bound(seed, 2, 64);
        uint16[] memory shares = _shares(uint256(keccak256(abi.encode(seed, "shares"))), n);
        uint256[] memory prefix = _prefix(shares);
        uint256[] memory sums = new uint256[](n - 1);
        SplitMath.accumulate(amount, SplitMath.offsetOf(seq), prefix, sums);
        uint256[] memory credits = SplitMath.creditsOf(sums, amount);
        uint256 sum;
        for (uint256 i; i < n; ++i) {
            uint256 floor = uint256(amount) * shares[i] / BPS;
            vm.assertGe(credits[i], floor, "at least the floor");
            vm.assertLe(credits[i], shares[i] == 0 ? 0 : floor + 1, "at most one unit more; nothing on a zero share");
            sum += credits[i];
        }
        vm.assertEq(sum, amount, "the credits add up to the amount");
    }

    /// @notice The rounding rotates: over 10,000 consecutive one-unit events (any starting sequence
    /// number) every party receives exactly its share in units, so many tiny events favour nobody.
    /// forge-config: default.fuzz.runs = 8
    /// forge-config: long.fuzz.runs = 64
    function testFuzz_ten_thousand_one_unit_events_pay_each_party_exactly_its_share(uint256 seed, uint64 firstSeq)
        public
        pure
    {
        uint256 n = bound(seed, 2, 5);
        uint16[] memory shares = _shares(uint256(keccak256(abi.encode(seed, "shares"))), n);
        vm.assume(uint256(firstSeq) + BPS < type(uint64).max);
        uint256[] memory prefix = _prefix(shares);
        uint256[] memory sums = new uint256[](n - 1);
        for (uint256 k; k < BPS; ++k) {
            SplitMath.accumulate(1, SplitMath.offsetOf(firstSeq + k), prefix, sums);
        }
        uint256[] memory credits = SplitMath.creditsOf(sums, BPS);
        for (uint256 i; i < n; ++i) {
            vm.assertEq(credits[i], shares[i], "one unit per basis point over a full rotation");
        }
    }

    /// @dev One event of a run: accumulated by SplitMath, split by the reference into `expected`.
    function _addEvent(
        uint256 seed,
        uint256 seq,
        uint16[] memory shares,
        uint256[] memory prefix,
        uint256[] memory sums,
        uint256[] memory expected
    ) internal pure returns (uint256 amount) {
        amount = _amount(seed);
        SplitMath.accumulate(amount, SplitMath.offsetOf(seq), prefix, sums);
        uint256[] memory one = SplitReference.split(amount, shares, SplitReference.offsetOf(seq));
        for (uint256 i; i < one.length; ++i) {
            expected[i] += one[i];
        }
    }

    /// @dev S_1..S_(n-1), written out here (the contract's own is private to AllianceLedger).
    function _prefix(uint16[] memory shares) internal pure returns (uint256[] memory prefix) {
        prefix = new uint256[](shares.length - 1);
        uint256 running;
        for (uint256 i; i < prefix.length; ++i) {
            running += shares[i];
            prefix[i] = running;
        }
    }

    function _shares(uint256 seed, uint256 n) internal pure returns (uint16[] memory shares) {
        shares = new uint16[](n);
        uint256 left = BPS;
        for (uint256 i; i + 1 < n; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            uint256 share = r % 6 == 0 ? 0 : bound(r >> 3, 0, r % 3 == 0 ? left : left / (n - i));
            shares[i] = uint16(share);
            left -= share;
        }
        shares[n - 1] = uint16(left);
    }

    function _amount(uint256 seed) internal pure returns (uint256) {
        uint256 scale = seed % 4;
        uint256 max = scale == 0 ? 9 : scale == 1 ? 10_000 : scale == 2 ? 1e18 : type(uint128).max;
        return bound(seed >> 2, 1, max);
    }
}
