// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title SplitMath
/// @notice The ledger's money math: the period tier split and the rotating systematic rounding rule
/// (stated in {IAllianceLedger}).
///
/// Extended rule (bands and recoup, issue 18). An event of amount `a` with offset o = offsetOf(seq) is cut
/// into parts: first the recoup part min(a, R - recouped) while the version's recoup R is not reached,
/// then the rest across the tiers base, band 1, ..., band k by the period's banded revenue before the
/// event (the period's revenue less its recouped part; bands restart every period, the recouped total
/// never resets): the part below band 1's target by the base table, between band j's and band j+1's
/// targets by band j's table, above band k's target by band k's table. Every part is split by
/// `accumulate` with the same offset o, so each part's credits add up to the part and the parts to `a`:
/// an event's credits add up to its amount to the last unit. `tierParts` is the one-band case.
/// `ledger/money.py` is the same math in Python (previews and the auditor's independent recomputation);
/// tests check the two against each other.
library SplitMath {
    uint256 internal constant BPS = 10_000;
    /// @dev Offset step per sequence number: 10,000 x (golden ratio - 1) = 6,180.3, rounded to the
    /// nearest integer coprime with 10,000, so the offsets of consecutive events spread evenly over
    /// [0, 10,000) and visit every value once per 10,000 events.
    uint256 internal constant ROUNDING_STRIDE = 6_181;

    /// @notice The rounding offset of the event with sequence number `seq`.
    function offsetOf(uint256 seq) internal pure returns (uint256) {
        // seq < 2**64, so seq * 6_181 < 2**77: no overflow.
        unchecked {
            return (seq * ROUNDING_STRIDE) % BPS;
        }
    }

    /// @notice Adds floor((offset + amount * prefix[i]) / BPS) to sums[i] for every i.
    /// @dev `prefix` holds the running share sums S_1..S_(n-1) of a table. Over a run of events, party
    /// i's credit under the rotating rule is sums[i] - sums[i-1] (see `creditsOf`).
    function accumulate(uint256 amount, uint256 offset, uint256[] memory prefix, uint256[] memory sums)
        internal
        pure
    {
        // amount < 2**128 and prefix[i] <= BPS, so each term is below 2**142 and the sums of a batch
        // below 2**206: no overflow. Both arrays have the same length (made so by the caller), so every
        // address below stays inside them.
        assembly ("memory-safe") {
            let p := add(prefix, 0x20)
            let end := add(p, shl(5, mload(prefix)))
            let delta := sub(sums, prefix)
            for {} lt(p, end) { p := add(p, 0x20) } {
                let slot := add(p, delta)
                mstore(slot, add(mload(slot), div(add(offset, mul(amount, mload(p))), BPS)))
            }
        }
    }

    /// @notice Each party's credit from the sums of `accumulate` over a run whose parts total `total`.
    /// credit_0 = sums[0], credit_i = sums[i] - sums[i-1], credit_(n-1) = total - sums[n-2]; the credits
    /// add up to `total`. Clears `sums` for the next run.
    function creditsOf(uint256[] memory sums, uint256 total) internal pure returns (uint256[] memory credits) {
        uint256 m = sums.length;
        credits = new uint256[](m + 1);
        uint256 previous; // slither uninitialized-local (accepted): the cursor starts at 0
        // Per event the floors are non-decreasing in i and the last is the part itself, so every
        // difference is a sum of non-negative per-event credits: no underflow.
        unchecked {
            for (uint256 i; i < m; ++i) {
                uint256 current = sums[i];
                credits[i] = current - previous;
                previous = current;
                sums[i] = 0;
            }
            credits[m] = total - previous;
        }
    }

    /// @notice Splits `amount` at the period target: the part that brings the period's cumulative
    /// revenue up to `target` is `base`, the rest is `excess`. With `target == 0` everything is base.
    function tierParts(uint256 periodRevenue, uint256 amount, uint256 target)
        internal
        pure
        returns (uint256 base, uint256 excess)
    {
        if (target == 0 || periodRevenue + amount <= target) return (amount, 0);
        if (periodRevenue >= target) return (0, amount);
        base = target - periodRevenue;
        excess = amount - base;
    }
}
