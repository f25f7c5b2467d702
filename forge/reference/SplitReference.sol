// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title SplitReference
/// @notice An intentionally independent, plain copy of the ledger's money math, written from the rule
/// in {IAllianceLedger}'s NatSpec and `ledger/money.py` (not from SplitMath): one event at a time,
/// checked arithmetic, no assembly, no prefix sums kept across events. The fuzz tests and the invariant
/// handler hold the contract to it.
library SplitReference {
    uint256 internal constant BPS = 10_000;
    uint256 internal constant STRIDE = 6_181;

    /// @notice o = (seq * 6_181) mod 10_000.
    function offsetOf(uint256 seq) internal pure returns (uint256) {
        return (seq * STRIDE) % BPS;
    }

    /// @notice credit_i = floor((o + a*S_i)/BPS) - floor((o + a*S_(i-1))/BPS), S_0 = 0.
    function split(uint256 amount, uint16[] memory shares, uint256 offset)
        internal
        pure
        returns (uint256[] memory credits)
    {
        credits = new uint256[](shares.length);
        uint256 cumulative = 0;
        uint256 previousFloor = offset / BPS; // 0, as offset < BPS
        for (uint256 i = 0; i < shares.length; i++) {
            cumulative = cumulative + shares[i];
            uint256 currentFloor = (offset + amount * cumulative) / BPS;
            credits[i] = currentFloor - previousFloor;
            previousFloor = currentFloor;
        }
    }

    /// @notice The part of `amount` up to the period target (base) and the part above it (excess).
    function tierParts(uint256 periodRevenue, uint256 amount, uint256 target)
        internal
        pure
        returns (uint256 base, uint256 excess)
    {
        if (target == 0) return (amount, 0);
        uint256 room = periodRevenue >= target ? 0 : target - periodRevenue;
        base = amount < room ? amount : room;
        excess = amount - base;
    }

    /// @notice The part of a reversal of `amount` debited by the base table and the part debited by the
    /// excess table (docs/reversals.md): a reversal un-books the top of the period's revenue, so
    /// above = min(x, max(0, R - T)) (0 without a target) goes by the excess table, the rest by the base.
    function reversalParts(uint256 periodRevenue, uint256 amount, uint256 target)
        internal
        pure
        returns (uint256 base, uint256 excess)
    {
        if (target != 0 && periodRevenue > target) {
            excess = periodRevenue - target;
            if (excess > amount) excess = amount;
        }
        base = amount - excess;
    }

    /// @notice What one event credits each party: base and excess parts split with the same offset.
    function splitEvent(
        uint256 seq,
        uint256 amount,
        uint256 periodRevenue,
        uint16[] memory shares,
        uint256 target,
        uint16[] memory excessShares
    ) internal pure returns (uint256[] memory credits) {
        (uint256 base, uint256 excess) = tierParts(periodRevenue, amount, target);
        credits = splitParts(seq, base, excess, shares, excessShares);
    }

    /// @notice What one reversal debits each party: its base and excess parts (see `reversalParts`)
    /// split with the reversal's own offset.
    function splitReversal(
        uint256 seq,
        uint256 amount,
        uint256 periodRevenue,
        uint16[] memory shares,
        uint256 target,
        uint16[] memory excessShares
    ) internal pure returns (uint256[] memory debits) {
        (uint256 base, uint256 excess) = reversalParts(periodRevenue, amount, target);
        debits = splitParts(seq, base, excess, shares, excessShares);
    }

    function splitParts(uint256 seq, uint256 base, uint256 excess, uint16[] memory shares, uint16[] memory excessShares)
        internal
        pure
        returns (uint256[] memory amounts)
    {
        uint256 offset = offsetOf(seq);
        amounts = new uint256[](shares.length);
        if (base != 0) {
            uint256[] memory b = split(base, shares, offset);
            for (uint256 i = 0; i < b.length; i++) amounts[i] += b[i];
        }
        if (excess != 0) {
            uint256[] memory e = split(excess, excessShares, offset);
            for (uint256 i = 0; i < e.length; i++) amounts[i] += e[i];
        }
    }
}
