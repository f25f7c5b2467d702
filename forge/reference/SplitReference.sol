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
}

/// @title ShapesReference
/// @notice An intentionally independent, plain statement of the extended rounding rule of issue 18 (bands,
/// recoup first), written from {IAllianceLedger}'s NatSpec and not from the contract: each tier's part is
/// the overlap of the event's interval of banded revenue with the tier's interval (no cursor), one event
/// at a time, checked arithmetic. The shapes fuzz tests and the invariant handler hold the contract to it.
library ShapesReference {
    /// @notice The terms as plain arrays: base table, band targets and tables, recoup amount and table.
    struct Shape {
        uint16[] shares;
        uint128[] targets;
        uint16[][] bandShares;
        uint256 recoup;
        uint16[] recoupShares;
    }

    /// @notice The state the split of an event depends on.
    struct State {
        uint256 periodRevenue; // the period's whole revenue before the event
        uint256 periodRecouped; // the part of it that went by the recoup table
        uint256 recouped; // the agreement's recouped total (all periods, all versions)
    }

    function _add(uint256[] memory credits, uint256 part, uint16[] memory shares, uint256 offset) private pure {
        if (part == 0) return;
        uint256[] memory split = SplitReference.split(part, shares, offset);
        for (uint256 i = 0; i < split.length; i++) {
            credits[i] += split[i];
        }
    }

    function _min(uint256 a, uint256 b) private pure returns (uint256) {
        return a < b ? a : b;
    }

    function _max(uint256 a, uint256 b) private pure returns (uint256) {
        return a > b ? a : b;
    }

    /// @notice Tier j's interval of banded revenue: [low, high) (j = 0: base; j >= 1: band j).
    function tierInterval(Shape memory s, uint256 j) internal pure returns (uint256 low, uint256 high) {
        low = j == 0 ? 0 : s.targets[j - 1];
        high = j < s.targets.length ? s.targets[j] : type(uint256).max;
    }

    function tierTable(Shape memory s, uint256 j) internal pure returns (uint16[] memory) {
        return j == 0 ? s.shares : s.bandShares[j - 1];
    }

    /// @notice Each tier's part of one event (index 0: recoup part; 1 + j: banded tier j), and the new state.
    function eventParts(Shape memory s, State memory st, uint256 amount)
        internal
        pure
        returns (uint256[] memory parts, State memory next)
    {
        parts = new uint256[](s.targets.length + 2);
        uint256 rest = amount;
        if (s.recoup > st.recouped) {
            parts[0] = _min(rest, s.recoup - st.recouped);
            rest -= parts[0];
        }
        uint256 banded = st.periodRevenue - st.periodRecouped;
        _bandedParts(s, banded, banded + rest, parts);
        next.periodRevenue = st.periodRevenue + amount;
        next.periodRecouped = st.periodRecouped + parts[0];
        next.recouped = st.recouped + parts[0];
    }

    /// @notice What one event credits each party: each part split with the event's one offset.
    function splitEvent(Shape memory s, State memory st, uint256 seq, uint256 amount)
        internal
        pure
        returns (uint256[] memory credits, State memory next)
    {
        uint256[] memory parts;
        (parts, next) = eventParts(s, st, amount);
        credits = splitParts(s, parts, seq);
    }

    /// @notice Each tier's part of one reversal (index 0: recoup tier; 1 + j: banded tier j): the banded
    /// interval [banded - min(amount, banded), banded) per tier, the recouped part (recoup tier, or the base
    /// tier without a recoup table), what exceeds the revenue (base tier). One part per tier.
    function reversalParts(Shape memory s, State memory st, uint256 amount)
        internal
        pure
        returns (uint256[] memory parts, State memory next)
    {
        parts = new uint256[](s.targets.length + 2);
        uint256 banded = st.periodRevenue - st.periodRecouped;
        uint256 fromBanded = _min(amount, banded);
        _bandedParts(s, banded - fromBanded, banded, parts);
        uint256 rest = amount - fromBanded;
        uint256 fromRecouped = _min(rest, st.periodRecouped);
        if (s.recoup != 0) parts[0] = fromRecouped;
        else parts[1] += fromRecouped;
        parts[1] += rest - fromRecouped;
        next.periodRecouped = st.periodRecouped - fromRecouped;
        next.recouped = st.recouped - fromRecouped;
        next.periodRevenue = st.periodRevenue - _min(amount, st.periodRevenue);
    }

    /// @notice What one reversal debits each party: the period's banded revenue from the top, then its
    /// recouped part (by the recoup table, or the base table when the version has none), then what exceeds
    /// the period's revenue by the base table; one part per tier, each split with the reversal's offset.
    function splitReversal(Shape memory s, State memory st, uint256 seq, uint256 amount)
        internal
        pure
        returns (uint256[] memory debits, State memory next)
    {
        uint256[] memory parts;
        (parts, next) = reversalParts(s, st, amount);
        debits = splitParts(s, parts, seq);
    }

    /// @notice Each party's amount of the tier parts `parts` (as `eventParts` and `reversalParts` give
    /// them) of the event or reversal `seq`: each part split by its tier's table with the one offset.
    function splitParts(Shape memory s, uint256[] memory parts, uint256 seq)
        internal
        pure
        returns (uint256[] memory amounts)
    {
        uint256 offset = SplitReference.offsetOf(seq);
        amounts = new uint256[](s.shares.length);
        _add(amounts, parts[0], s.recoupShares, offset);
        for (uint256 j = 0; j <= s.targets.length; j++) {
            _add(amounts, parts[1 + j], tierTable(s, j), offset);
        }
    }

    /// @dev The banded interval [from, to) cut along the tiers: parts[1 + j] = its overlap with tier j.
    function _bandedParts(Shape memory s, uint256 from, uint256 to, uint256[] memory parts) private pure {
        for (uint256 j = 0; j <= s.targets.length; j++) {
            (uint256 low, uint256 high) = tierInterval(s, j);
            uint256 start = _max(from, low);
            uint256 end = _min(to, high);
            if (end > start) parts[1 + j] = end - start;
        }
    }
}
