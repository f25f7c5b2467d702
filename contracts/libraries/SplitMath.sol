// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title SplitMath
/// @notice The ledger's money math: the period tier split and the rotating systematic rounding rule.
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

    /// @notice Adds the split of `amount` over `shares` (basis points, summing to 10,000) to `credits`.
    /// credit_i = floor((offset + amount * S_i) / BPS) - floor((offset + amount * S_(i-1)) / BPS).
    /// The credits added sum to `amount` exactly because S_n = BPS and offset < BPS.
    function addSplit(uint256 amount, uint256 offset, uint256[] memory shares, uint256[] memory credits)
        internal
        pure
    {
        // amount < 2**128 and the running sum stays below offset + amount * BPS < 2**142: no overflow.
        // The quotients are non-decreasing, so `q - previous` cannot underflow. Both arrays have the
        // same length (checked once per batch by the caller), so the unchecked indexing is in bounds.
        assembly ("memory-safe") {
            let n := mload(shares)
            let s := add(shares, 0x20)
            let c := add(credits, 0x20)
            let running := offset
            let previous := 0
            for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                let o := shl(5, i)
                running := add(running, mul(amount, mload(add(s, o))))
                let q := div(running, BPS)
                let slot := add(c, o)
                mstore(slot, add(mload(slot), sub(q, previous)))
                previous := q
            }
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
