// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

import {AllianceLedgerState} from "./AllianceLedgerState.sol";
import {IAllianceLedger} from "./interfaces/IAllianceLedger.sol";
import {SplitMath} from "./libraries/SplitMath.sol";

/// @title AllianceLedgerShapes
/// @notice The ledger's settlement of the agreement shapes of issue 18: two or more bands, a recoup
/// amount, nested alliances (`settle`, `settleReversals` and `settleNested` of {IAllianceLedger} for
/// such terms). The ledger deploys it in its constructor and runs it by delegatecall after its role and
/// reentrancy checks, so it works in the ledger's storage and emits the ledger's events; called
/// directly it refuses (`LedgerModuleDirectCall`). Terms with at most one band, no recoup and no
/// nesting never come here: the ledger settles them on its own (classic) path.
/// @dev Rounding: every part of an event (recoup part, then the banded parts tier by tier) is split by
/// SplitMath's rotating cumulative floors with the event's one offset; see {IAllianceLedger}.
contract AllianceLedgerShapes is AllianceLedgerState {
    using SafeERC20 for IERC20;

    /// @notice The module was called directly instead of through the ledger's delegatecall.
    error LedgerModuleDirectCall();

    /// @dev Working state of one agreement's batch (or of one inner alliance's forwarded event).
    /// Tiers: 0 is the recoup tier when the terms have a recoup; then base, band 1, ..., band k.
    struct Tiers {
        bytes32 agreementId;
        uint32 version;
        bool classic; // at most one band and no recoup: today's IAllianceLedger.PartiesCredited / PartiesDebited
        uint256 baseTier; // 1 with a recoup, else 0
        uint256 top; // the last tier's index
        uint256[] lows; // lows[t]: the period's banded revenue where banded tier t starts (0 for base)
        uint256[][] prefix; // per tier: S_1..S_(n-1) of its table
        uint256[][] sums; // per tier: the run's accumulated floors (see SplitMath)
        uint256[] parts; // per tier: the run's parts, summed
        uint32 period; // the current run's period
        uint64 runFirstSeq;
        uint256 banded; // the period's banded revenue (revenue - recouped), including the run
        uint256 periodRecouped; // the period's recouped part, including the run
        uint256 recoup; // the version's recoup amount R (0: none)
        uint256 recouped; // the agreement's recouped total, including the run
        uint256 tier; // settlement cursor: the tier the next banded unit falls in
        uint256 high; // the banded revenue where `tier` ends (type(uint256).max for the top tier)
    }

    /// @dev What a whole settlement (every nesting level) accumulates.
    struct Totals {
        bytes32 rootId; // the agreement being settled
        uint256 netted; // debts repaid from credits (finance does not pay them in)
        uint256 incurred; // debits the balances did not cover (new debt)
    }

    /// @dev One forwarded credit: a nested party's credit settled as an event of its inner alliance.
    struct Forward {
        bytes32 outerId;
        uint64 runFirstSeq;
        uint32 meId;
        bytes32 inner;
        uint32 period;
        uint256 amount;
        uint256 depth; // the inner alliance's level below the settled agreement
    }

    address private immutable _self = address(this);

    modifier onlyDelegated() {
        if (address(this) == _self) revert LedgerModuleDirectCall();
        _;
    }

    // ================================================================================================
    // Entry points (delegatecalled by the ledger with its own calldata)
    // ================================================================================================

    /// @notice {IAllianceLedger-settle} for terms with two or more bands or a recoup.
    function settle(
        bytes32 agreementId,
        uint32 version,
        uint64 firstSeq,
        IAllianceLedger.Terms calldata terms,
        bytes32[] calldata refs,
        uint256[] calldata entries
    ) external onlyDelegated returns (uint256 paidIn) {
        if (terms.nested.length != 0) {
            _checkBatch(agreementId, version, firstSeq, terms, refs, entries.length);
            revert IAllianceLedger.AgreementNestedTermsRequired(agreementId);
        }
        IAllianceLedger.InnerTerms[] calldata none;
        // An empty calldata array: `terms.nested` is empty, so it is never read.
        assembly ("memory-safe") {
            none.offset := 0
            none.length := 0
        }
        Tiers memory t = _open(agreementId, version, firstSeq, terms, refs, entries);
        paidIn = _settleTiers(t, terms, firstSeq, entries, none);
    }

    /// @notice {IAllianceLedger-settleNested}.
    function settleNested(
        bytes32 agreementId,
        uint32 version,
        uint64 firstSeq,
        IAllianceLedger.Terms calldata terms,
        bytes32[] calldata refs,
        uint256[] calldata entries,
        IAllianceLedger.InnerTerms[] calldata inner
    ) external onlyDelegated returns (uint256 paidIn) {
        Tiers memory t = _open(agreementId, version, firstSeq, terms, refs, entries);
        paidIn = _settleTiers(t, terms, firstSeq, entries, inner);
    }

    /// @notice {IAllianceLedger-settleReversals} for terms with two or more bands or a recoup.
    function settleReversals(
        bytes32 agreementId,
        uint32 version,
        uint64 firstSeq,
        IAllianceLedger.Terms calldata terms,
        bytes32[] calldata refs,
        uint256[] calldata entries,
        bytes32[] calldata originals
    ) external onlyDelegated returns (uint256 returned) {
        IAllianceLedger.Agreement storage agreement =
            _checkBatch(agreementId, version, firstSeq, terms, refs, entries.length);
        if (originals.length != refs.length) {
            revert IAllianceLedger.ReversalBatchInvalid(agreementId, refs.length, originals.length);
        }
        for (uint256 j; j < originals.length; ++j) {
            if (originals[j] == bytes32(0)) {
                revert IAllianceLedger.ReversalOriginalEmpty(agreementId, firstSeq + uint64(j));
            }
        }
        if (terms.nested.length != 0) revert IAllianceLedger.ReversalNestedUnsupported(agreementId);

        // Effects. A batch has far fewer than 2**64 - firstSeq events (calldata bounds it).
        agreement.nextSeq = firstSeq + uint64(entries.length);
        emit IAllianceLedger.RevenueReversed(agreementId, version, firstSeq, refs, entries, originals);
        Tiers memory t = _newTiers(agreementId, version, terms, agreement.recouped);
        Totals memory totals;
        totals.rootId = agreementId;
        uint256 total = _reverseRuns(t, terms, firstSeq, entries, totals);
        // Reversals may lower the recouped total under any terms (see `_addReversal`); same slot as nextSeq.
        agreement.recouped = uint128(t.recouped);
        address token = terms.token;
        uint256 incurred = totals.incurred;
        returned = total - incurred;
        _totalOwed[token] -= returned;
        if (incurred != 0) _totalDebt[token] += incurred;

        // Interaction.
        if (returned != 0) IERC20(token).safeTransfer(msg.sender, returned);
    }

    /// @notice The nesting rules for `terms.nested` (one entry per party, checked by the ledger) of
    /// `agreementId`: every nested id exists and settles in the same token (at proposal), no cycle, at
    /// most MAX_NESTING_DEPTH levels below; when `activate`, also records the inner alliances in force.
    function checkNesting(bytes32 agreementId, IAllianceLedger.Terms calldata terms, bool activate)
        external
        onlyDelegated
    {
        bytes32[] calldata nested = terms.nested;
        if (!activate) {
            for (uint256 i; i < nested.length; ++i) {
                bytes32 inner = nested[i];
                if (inner == bytes32(0)) continue;
                IAllianceLedger.Agreement storage x = _agreements[inner];
                if (x.status == IAllianceLedger.AgreementStatus.None) {
                    revert IAllianceLedger.AgreementNestedUnknown(inner);
                }
                if (x.token != terms.token) revert IAllianceLedger.AgreementNestedToken(inner, x.token);
            }
        }
        _checkNesting(agreementId, nested);
        if (activate) _setInner(agreementId, nested);
    }

    /// @dev Records the distinct non-zero ids of `nested` as the inner alliances in force, writing only
    /// when they differ from the stored ones.
    function _setInner(bytes32 agreementId, bytes32[] calldata nested) private {
        bytes32[] memory ids = new bytes32[](nested.length);
        uint256 count;
        for (uint256 i; i < nested.length; ++i) {
            bytes32 id = nested[i];
            if (id == bytes32(0)) continue;
            bool seen;
            for (uint256 j; j < count; ++j) {
                if (ids[j] == id) {
                    seen = true;
                    break;
                }
            }
            if (!seen) ids[count++] = id;
        }
        bytes32[] storage stored = _innerOf[agreementId];
        bool same = stored.length == count;
        for (uint256 j; same && j < count; ++j) {
            same = stored[j] == ids[j];
        }
        if (same) return;
        delete _innerOf[agreementId];
        for (uint256 j; j < count; ++j) {
            stored.push(ids[j]);
        }
    }

    /// @dev No cycle and at most MAX_NESTING_DEPTH levels below `agreementId` when it nests `nested`
    /// (the other agreements' inner alliances as in force now). The graph of the versions in force is
    /// acyclic (each activation checks the cycles through the agreement it activates), so the walk ends.
    function _checkNesting(bytes32 agreementId, bytes32[] calldata nested) private view {
        for (uint256 i; i < nested.length; ++i) {
            bytes32 inner = nested[i];
            if (inner == bytes32(0)) continue;
            if (inner == agreementId) revert IAllianceLedger.AgreementNestingCycle(agreementId, inner);
            _walkNesting(agreementId, inner, inner, 1);
        }
    }

    /// @dev `id` sits `level` levels below `root` (reached through root's nested `inner`).
    function _walkNesting(bytes32 root, bytes32 inner, bytes32 id, uint256 level) private view {
        bytes32[] storage below = _innerOf[id];
        uint256 count = below.length;
        if (count == 0) return;
        for (uint256 j; j < count; ++j) {
            if (below[j] == root) revert IAllianceLedger.AgreementNestingCycle(root, inner);
        }
        if (level + 1 > MAX_NESTING_DEPTH) revert IAllianceLedger.AgreementNestingTooDeep(root, level + 1);
        for (uint256 j; j < count; ++j) {
            _walkNesting(root, inner, below[j], level + 1);
        }
    }

    // ================================================================================================
    // Settlement
    // ================================================================================================

    /// @dev The checks of a settlement batch, its effects on the cursor, `RevenueSettled`, and the tiers.
    function _open(
        bytes32 agreementId,
        uint32 version,
        uint64 firstSeq,
        IAllianceLedger.Terms calldata terms,
        bytes32[] calldata refs,
        uint256[] calldata entries
    ) private returns (Tiers memory t) {
        IAllianceLedger.Agreement storage agreement =
            _checkBatch(agreementId, version, firstSeq, terms, refs, entries.length);
        // Effects. A batch has far fewer than 2**64 - firstSeq events (calldata bounds it).
        agreement.nextSeq = firstSeq + uint64(entries.length);
        emit IAllianceLedger.RevenueSettled(agreementId, version, firstSeq, refs, entries);
        t = _newTiers(agreementId, version, terms, agreement.recouped);
    }

    /// @dev Splits and credits the batch, records the recouped total and pulls the money in.
    function _settleTiers(
        Tiers memory t,
        IAllianceLedger.Terms calldata terms,
        uint64 firstSeq,
        uint256[] calldata entries,
        IAllianceLedger.InnerTerms[] calldata inner
    ) private returns (uint256 paidIn) {
        Totals memory totals;
        totals.rootId = t.agreementId;
        uint256 total = _settleRuns(t, terms, firstSeq, entries, inner, totals);
        if (t.recoup != 0) _agreements[t.agreementId].recouped = uint128(t.recouped);
        address token = terms.token;
        // The netted part of the credits (at every level) repaid debts owed to finance: not paid in.
        uint256 netted = totals.netted;
        paidIn = total - netted;
        _totalOwed[token] += paidIn;
        if (netted != 0) _totalDebt[token] -= netted;

        // Interaction: pull exactly `paidIn`; a token that delivers less (fee on transfer) is refused.
        if (paidIn != 0) {
            IERC20 erc20 = IERC20(token);
            uint256 before = erc20.balanceOf(address(this));
            erc20.safeTransferFrom(msg.sender, address(this), paidIn);
            uint256 received = erc20.balanceOf(address(this)) - before;
            if (received != paidIn) revert IAllianceLedger.TokenTransferShortfall(token, paidIn, received);
        }
    }

    /// @dev Settles the batch one run of consecutive same-period events at a time; returns its total.
    function _settleRuns(
        Tiers memory t,
        IAllianceLedger.Terms calldata terms,
        uint64 firstSeq,
        uint256[] calldata entries,
        IAllianceLedger.InnerTerms[] calldata inner,
        Totals memory totals
    ) private returns (uint256 total) {
        uint256 k;
        while (k < entries.length) {
            uint64 seq = firstSeq + uint64(k);
            _startRun(t, uint32(entries[k]), seq);
            k = _scan(t, firstSeq, k, entries, _addEvent);
            total += _endRun(t, terms, uint64(k) + firstSeq - seq, inner, totals, 0);
        }
    }

    /// @dev Reverses the batch one run of consecutive same-period reversals at a time; returns its total.
    function _reverseRuns(
        Tiers memory t,
        IAllianceLedger.Terms calldata terms,
        uint64 firstSeq,
        uint256[] calldata entries,
        Totals memory totals
    ) private returns (uint256 total) {
        uint256 k;
        while (k < entries.length) {
            uint64 seq = firstSeq + uint64(k);
            _startRun(t, uint32(entries[k]), seq);
            k = _scan(t, firstSeq, k, entries, _addReversal);
            total += _endReversalRun(t, terms, uint64(k) + firstSeq - seq, totals);
        }
    }

    /// @dev The tiers of `terms`: their tables' prefix sums and band edges.
    function _newTiers(bytes32 agreementId, uint32 version, IAllianceLedger.Terms calldata terms, uint256 recouped)
        private
        pure
        returns (Tiers memory t)
    {
        IAllianceLedger.Band[] calldata bands = terms.bands;
        uint256 k = bands.length;
        uint256 baseTier = terms.recoup != 0 ? 1 : 0;
        uint256 count = baseTier + 1 + k;
        uint256 m = terms.parties.length - 1;
        t.agreementId = agreementId;
        t.version = version;
        t.classic = k <= 1 && baseTier == 0;
        t.baseTier = baseTier;
        t.top = count - 1;
        t.lows = new uint256[](count);
        t.prefix = new uint256[][](count);
        t.sums = new uint256[][](count);
        t.parts = new uint256[](count);
        t.recoup = terms.recoup;
        t.recouped = recouped;
        if (baseTier == 1) t.prefix[0] = _prefixSums(terms.recoupShares);
        t.prefix[baseTier] = _prefixSums(terms.shares);
        for (uint256 j; j < k; ++j) {
            t.prefix[baseTier + 1 + j] = _prefixSums(bands[j].shares);
            t.lows[baseTier + 1 + j] = bands[j].target;
        }
        for (uint256 i; i < count; ++i) {
            t.sums[i] = new uint256[](m);
        }
    }

    /// @dev Starts a run for `period` at `seq`: checks the period, loads its revenue and recouped part,
    /// and places the tier cursor.
    function _startRun(Tiers memory t, uint32 period, uint64 seq) private view {
        if (period == 0) revert IAllianceLedger.PeriodInvalid(t.agreementId, seq);
        IAllianceLedger.Period storage p = _periods[t.agreementId][period];
        (uint256 revenue, bool closed, uint256 recouped) = (p.revenue, p.closed, p.recouped);
        if (closed) revert IAllianceLedger.PeriodAlreadyClosed(t.agreementId, period);
        t.period = period;
        t.runFirstSeq = seq;
        // The recouped part is a part of the revenue.
        uint256 banded = revenue - recouped;
        t.banded = banded;
        t.periodRecouped = recouped;
        uint256 tier = t.baseTier;
        uint256 top = t.top;
        while (tier < top && banded >= t.lows[tier + 1]) {
            ++tier;
        }
        t.tier = tier;
        t.high = tier < top ? t.lows[tier + 1] : type(uint256).max;
    }

    /// @dev Accumulates the events (`add` = `_addEvent`) or the reversals (`_addReversal`) from index `k`
    /// while they stay in the run's period; returns the index of the first one of the next run (or the
    /// batch size). One scanner for both: `add` is a function pointer, about 6 gas per entry more than
    /// two copies of the loop with direct calls (a flag tested per entry cost about 20).
    function _scan(
        Tiers memory t,
        uint64 firstSeq,
        uint256 k,
        uint256[] calldata entries,
        function(Tiers memory, uint256, uint256) pure add
    ) private pure returns (uint256) {
        uint256 period = t.period;
        // k < 2**64 (calldata bounds the batch).
        unchecked {
            for (; k < entries.length; ++k) {
                uint256 entry = entries[k];
                if (uint32(entry) != period) break;
                uint256 amount = entry >> 32;
                if (amount == 0 || amount > type(uint128).max) {
                    revert IAllianceLedger.RevenueAmountInvalid(t.agreementId, firstSeq + uint64(k), amount);
                }
                add(t, amount, SplitMath.offsetOf(firstSeq + k));
            }
        }
        return k;
    }

    /// @dev Cuts one event into its parts (recoup part, then the banded parts tier by tier) and
    /// accumulates each with the event's offset.
    function _addEvent(Tiers memory t, uint256 amount, uint256 offset) private pure {
        // Amounts are below 2**128 and a batch has far fewer than 2**64 events, so every running total
        // stays below 2**192; `part <= recoup - recouped` and `room = high - banded > 0` are kept by the
        // code below (banded < high always).
        unchecked {
            uint256 recoup = t.recoup;
            if (recoup != 0) {
                uint256 recouped = t.recouped;
                if (recouped < recoup) {
                    uint256 part = recoup - recouped;
                    if (part > amount) part = amount;
                    SplitMath.accumulate(part, offset, t.prefix[0], t.sums[0]);
                    t.parts[0] += part;
                    t.recouped = recouped + part;
                    t.periodRecouped += part;
                    amount -= part;
                    if (amount == 0) return;
                }
            }
            uint256 banded = t.banded;
            uint256 tier = t.tier;
            uint256 room = t.high - banded;
            if (amount < room) {
                // The common case: the event stays inside its tier.
                SplitMath.accumulate(amount, offset, t.prefix[tier], t.sums[tier]);
                t.parts[tier] += amount;
                t.banded = banded + amount;
                return;
            }
            while (true) {
                // amount >= room: fill the tier to its edge and move to the next one (the top tier never
                // ends, so amount >= room happens only below it).
                SplitMath.accumulate(room, offset, t.prefix[tier], t.sums[tier]);
                t.parts[tier] += room;
                banded += room;
                amount -= room;
                ++tier;
                uint256 high = tier < t.top ? t.lows[tier + 1] : type(uint256).max;
                room = high - banded;
                if (amount < room) {
                    if (amount != 0) {
                        SplitMath.accumulate(amount, offset, t.prefix[tier], t.sums[tier]);
                        t.parts[tier] += amount;
                        banded += amount;
                    }
                    t.banded = banded;
                    t.tier = tier;
                    t.high = high;
                    return;
                }
            }
        }
    }

    /// @dev Books a run of `count` events: the period, the credits (`PartiesCredited` for classic
    /// terms, else `PartiesCreditedByTier`), each party's account, or, for a nested party, its inner
    /// alliance's event. Returns the run's total and clears the run's sums.
    function _endRun(
        Tiers memory t,
        IAllianceLedger.Terms calldata terms,
        uint64 count,
        IAllianceLedger.InnerTerms[] calldata inner,
        Totals memory totals,
        uint256 depth
    ) private returns (uint256 runTotal) {
        _storePeriod(t);
        (uint256[][] memory credits, uint256[] memory perParty, uint256 total) = _takeCredits(t, terms.parties.length);
        runTotal = total;
        if (t.classic) {
            emit IAllianceLedger.PartiesCredited(
                t.agreementId,
                t.period,
                t.version,
                t.runFirstSeq,
                count,
                credits[0],
                credits.length > 1 ? credits[1] : new uint256[](perParty.length)
            );
        } else {
            emit IAllianceLedger.PartiesCreditedByTier(
                t.agreementId, t.period, t.version, t.runFirstSeq, count, _flatten(credits)
            );
        }
        _pay(t, terms, perParty, inner, totals, depth);
    }

    /// @dev Credits each party its run total, or settles it in the party's inner alliance.
    function _pay(
        Tiers memory t,
        IAllianceLedger.Terms calldata terms,
        uint256[] memory perParty,
        IAllianceLedger.InnerTerms[] calldata inner,
        Totals memory totals,
        uint256 depth
    ) private {
        address token = terms.token;
        uint32[] calldata parties = terms.parties;
        bytes32[] calldata nested = terms.nested;
        for (uint256 i; i < parties.length; ++i) {
            uint256 credit = perParty[i];
            if (credit == 0) continue;
            if (nested.length != 0 && nested[i] != bytes32(0)) {
                _settleInner(_forwardOf(t, parties[i], nested[i], credit, depth + 1), inner, totals);
            } else {
                totals.netted += _creditAccount(parties[i], token, credit);
            }
        }
    }

    function _forwardOf(Tiers memory t, uint32 meId, bytes32 innerId, uint256 amount, uint256 depth)
        private
        pure
        returns (Forward memory)
    {
        return Forward({
            outerId: t.agreementId,
            runFirstSeq: t.runFirstSeq,
            meId: meId,
            inner: innerId,
            period: t.period,
            amount: amount,
            depth: depth
        });
    }

    /// @dev Writes the run's period: revenue = banded + recouped (checked to fit 128 bits), recouped.
    function _storePeriod(Tiers memory t) private {
        uint256 recouped = t.periodRecouped;
        uint256 revenue = t.banded + recouped;
        if (revenue > type(uint128).max) {
            revert IAllianceLedger.RevenueAmountInvalid(t.agreementId, t.runFirstSeq, revenue);
        }
        // recouped <= the agreement's recouped total <= a recoup amount < 2**120; the period is open.
        _periods[t.agreementId][t.period] =
            IAllianceLedger.Period({revenue: uint128(revenue), closed: false, recouped: uint120(recouped)});
    }

    /// @dev Each tier's credits of the run, each party's total over the tiers and the run's total;
    /// clears the run's sums and parts.
    function _takeCredits(Tiers memory t, uint256 n)
        private
        pure
        returns (uint256[][] memory credits, uint256[] memory perParty, uint256 total)
    {
        uint256 count = t.top + 1;
        credits = new uint256[][](count);
        perParty = new uint256[](n);
        for (uint256 tier; tier < count; ++tier) {
            uint256 part = t.parts[tier];
            credits[tier] = SplitMath.creditsOf(t.sums[tier], part);
            t.parts[tier] = 0;
            total += part;
            for (uint256 i; i < n; ++i) {
                perParty[i] += credits[tier][i];
            }
        }
    }

    /// @dev credits[t][i] laid out as flat[t * n + i].
    function _flatten(uint256[][] memory credits) private pure returns (uint256[] memory flat) {
        uint256 n = credits[0].length;
        flat = new uint256[](credits.length * n);
        for (uint256 tier; tier < credits.length; ++tier) {
            for (uint256 i; i < n; ++i) {
                flat[tier * n + i] = credits[tier][i];
            }
        }
    }

    // ================================================================================================
    // Nested alliances
    // ================================================================================================

    /// @dev Settles a nested party's credit as one event of its inner alliance `f.inner`: next sequence
    /// number, derived reference, the inner alliance's active terms (recursively).
    function _settleInner(Forward memory f, IAllianceLedger.InnerTerms[] calldata inner, Totals memory totals) private {
        if (f.depth > MAX_NESTING_DEPTH) revert IAllianceLedger.SettlementNestingTooDeep(totals.rootId);
        IAllianceLedger.InnerTerms calldata it = _innerTermsOf(inner, f.inner);
        Tiers memory t = _openInner(f, it);
        _addEvent(t, f.amount, SplitMath.offsetOf(t.runFirstSeq));
        _endRun(t, it.terms, 1, inner, totals, f.depth);
        if (t.recoup != 0) _agreements[f.inner].recouped = uint128(t.recouped);
        emit IAllianceLedger.NestedSettled(f.outerId, f.runFirstSeq, f.meId, f.inner, t.runFirstSeq, f.amount);
    }

    /// @dev The inner alliance's checks, its cursor, its `RevenueSettled` and its tiers with the run
    /// started (`t.runFirstSeq` is the inner event's sequence number).
    function _openInner(Forward memory f, IAllianceLedger.InnerTerms calldata it) private returns (Tiers memory t) {
        IAllianceLedger.Terms calldata terms = it.terms;
        IAllianceLedger.Agreement storage agreement = _checkInner(f.inner, it.version, terms);
        uint64 seq = agreement.nextSeq;
        agreement.nextSeq = seq + 1;
        bytes32[] memory refs = new bytes32[](1);
        refs[0] = keccak256(abi.encode(f.outerId, f.runFirstSeq, f.meId));
        uint256[] memory entries = new uint256[](1);
        // amount <= the outer run's total < 2**128 (the outer period's revenue fits 128 bits).
        entries[0] = f.amount << 32 | f.period;
        emit IAllianceLedger.RevenueSettled(f.inner, it.version, seq, refs, entries);
        t = _newTiers(f.inner, it.version, terms, agreement.recouped);
        _startRun(t, f.period, seq);
    }

    /// @dev The `InnerTerms` for `innerId` (the first with that id).
    function _innerTermsOf(IAllianceLedger.InnerTerms[] calldata inner, bytes32 innerId)
        private
        pure
        returns (IAllianceLedger.InnerTerms calldata)
    {
        for (uint256 j; j < inner.length; ++j) {
            if (inner[j].agreementId == innerId) return inner[j];
        }
        revert IAllianceLedger.SettlementInnerTermsMissing(innerId);
    }

    /// @dev An inner alliance can take a forwarded event: active, `version` in force, `terms` its
    /// terms, every party active.
    function _checkInner(bytes32 innerId, uint32 version, IAllianceLedger.Terms calldata terms)
        private
        view
        returns (IAllianceLedger.Agreement storage agreement)
    {
        agreement = _agreements[innerId];
        if (agreement.status != IAllianceLedger.AgreementStatus.Active) {
            revert IAllianceLedger.AgreementNotActive(innerId, agreement.status);
        }
        uint32 active = agreement.activeVersion;
        if (version != active) revert IAllianceLedger.AgreementVersionNotActive(innerId, version, active);
        _checkTerms(innerId, version, terms);
        uint32[] calldata parties = terms.parties;
        for (uint256 i; i < parties.length; ++i) {
            if (_mes[parties[i]].status != IAllianceLedger.MEStatus.Active) {
                revert IAllianceLedger.AgreementPartyDissolved(innerId, parties[i]);
            }
        }
    }

    // ================================================================================================
    // Reversals
    // ================================================================================================

    /// @dev Cuts one reversal into parts: the period's banded revenue from the top (highest band
    /// first), then its recouped part (recoup table, or base table without one; lowering the recouped
    /// totals, so a period's recouped part never exceeds its revenue), then what exceeds the period's
    /// revenue (base table). One part per tier: the base table's pieces are added up first and split
    /// once, like every other tier's; each part is accumulated with the reversal's offset.
    function _addReversal(Tiers memory t, uint256 amount, uint256 offset) private pure {
        uint256 banded = t.banded;
        uint256 baseTier = t.baseTier;
        // Each piece is at most what is left of the amount and of the quantity it is taken from.
        unchecked {
            // The common case: the reversal lies within the tier of the period's last banded unit (the
            // cursor `t.tier`: lows[tier] <= banded), so it is one part of that tier.
            uint256 cursor = t.tier;
            if (banded >= t.lows[cursor] + amount) {
                SplitMath.accumulate(amount, offset, t.prefix[cursor], t.sums[cursor]);
                t.parts[cursor] += amount;
                t.banded = banded - amount;
                return;
            }
            for (uint256 tier = t.top; tier > baseTier && amount != 0 && banded != 0; --tier) {
                uint256 low = t.lows[tier];
                if (banded > low) {
                    uint256 part = banded - low;
                    if (part > amount) part = amount;
                    SplitMath.accumulate(part, offset, t.prefix[tier], t.sums[tier]);
                    t.parts[tier] += part;
                    banded -= part;
                    amount -= part;
                }
            }
            // The banded revenue left is below band 1's target: the base table's piece.
            uint256 basePart = banded < amount ? banded : amount;
            t.banded = banded - basePart;
            amount -= basePart;
            // The cursor follows the banded revenue down (here it is below band 1's target, or the loop
            // stopped inside a band with nothing left to reverse).
            while (cursor > baseTier && banded - basePart < t.lows[cursor]) {
                --cursor;
            }
            t.tier = cursor;
            if (amount != 0) {
                uint256 recouped = t.periodRecouped;
                if (recouped != 0) {
                    uint256 part = recouped < amount ? recouped : amount;
                    t.periodRecouped = recouped - part;
                    // The agreement's recouped total is the sum of its periods' recouped parts.
                    t.recouped -= part;
                    amount -= part;
                    if (baseTier == 1) {
                        SplitMath.accumulate(part, offset, t.prefix[0], t.sums[0]);
                        t.parts[0] += part;
                    } else {
                        // No recoup table in this version (the recoup was an earlier version's).
                        basePart += part;
                    }
                }
            }
            // What exceeds the period's revenue goes by the base table too.
            basePart += amount;
            if (basePart != 0) {
                SplitMath.accumulate(basePart, offset, t.prefix[baseTier], t.sums[baseTier]);
                t.parts[baseTier] += basePart;
            }
        }
    }

    /// @dev Books a run of `count` reversals: the period, each party's debit, `PartiesDebitedByTier`
    /// (or `PartiesDebited` for classic terms). Returns the run's total and clears the run's sums.
    function _endReversalRun(Tiers memory t, IAllianceLedger.Terms calldata terms, uint64 count, Totals memory totals)
        private
        returns (uint256 runTotal)
    {
        _storePeriod(t);
        (uint256[][] memory debits, uint256[] memory perParty, uint256 total) = _takeCredits(t, terms.parties.length);
        runTotal = total;
        if (t.classic) {
            emit IAllianceLedger.PartiesDebited(
                t.agreementId,
                t.period,
                t.version,
                t.runFirstSeq,
                count,
                debits[0],
                debits.length > 1 ? debits[1] : new uint256[](perParty.length)
            );
        } else {
            emit IAllianceLedger.PartiesDebitedByTier(
                t.agreementId, t.period, t.version, t.runFirstSeq, count, _flatten(debits)
            );
        }
        address token = terms.token;
        uint32[] calldata parties = terms.parties;
        for (uint256 i; i < parties.length; ++i) {
            uint256 debit = perParty[i];
            if (debit != 0) totals.incurred += _debitAccount(parties[i], token, debit);
        }
    }
}
