// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IAllianceLedger} from "../contracts/interfaces/IAllianceLedger.sol";
import {Vm, vm} from "./base/Test.sol";
import {ShapesFixture} from "./base/ShapesFixture.sol";
import {ShapesReference, SplitReference} from "./reference/SplitReference.sol";

/// @title ShapesBehaviour
/// @notice What bands, recoup and nested alliances do: exact parts, per-period bands, a recoup reached
/// once across periods and versions, reversals from the top, inner alliances split by their own terms.
/// Every test also checks the ledger against the plain reference (ShapesReference) and conservation.
contract ShapesBehaviour is ShapesFixture {
    uint32 internal constant P1 = 202611;
    uint32 internal constant P2 = 202612;
    uint32 internal constant P3 = 202701;

    function _periods() internal pure returns (uint32[] memory p) {
        p = new uint32[](3);
        (p[0], p[1], p[2]) = (P1, P2, P3);
    }

    function _entries2(uint256 a, uint32 pa, uint256 b, uint32 pb) internal pure returns (uint256[] memory e) {
        e = new uint256[](2);
        (e[0], e[1]) = (_entry(a, pa), _entry(b, pb));
    }

    /// @dev The `credits` of the first log with `topic0` (PartiesCreditedByTier / PartiesDebitedByTier).
    function _tierCredits(Vm.Log[] memory logs, bytes32 topic0) internal pure returns (uint256[] memory credits) {
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics.length != 0 && logs[i].topics[0] == topic0) {
                (,,, credits) = abi.decode(logs[i].data, (uint32, uint64, uint64, uint256[]));
                return credits;
            }
        }
        revert("no such log");
    }

    function _count(Vm.Log[] memory logs, bytes32 topic0) internal pure returns (uint256 c) {
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics.length != 0 && logs[i].topics[0] == topic0) ++c;
        }
    }

    function _logs() internal returns (Vm.Log[] memory) {
        return vm.getRecordedLogs();
    }

    function _threeParties() internal view returns (IAllianceLedger.Terms memory terms) {
        terms = _flat(1, 3);
        (terms.shares[0], terms.shares[1], terms.shares[2]) = (5_000, 3_000, 2_000);
    }

    // ------------------------------------------------------------------------------------------------
    // Bands
    // ------------------------------------------------------------------------------------------------

    function test_an_event_crossing_band_edges_is_split_in_exact_parts_each_by_its_table() public {
        IAllianceLedger.Terms memory terms = _withBands(_threeParties(), _target1(1_000));
        IAllianceLedger.Band[] memory bands = new IAllianceLedger.Band[](2);
        bands[0] = terms.bands[0];
        bands[1] = _band(1_500, _all(3, 2));
        terms.bands = bands;
        _create("a", terms);
        _settleBoth("a", terms, _one(700, P1)); // base only
        vm.recordLogs();
        _settleBoth("a", terms, _one(1_333, P1)); // 300 base, 500 band 1, 533 band 2
        _assertCrossingCredits(terms, _tierCredits(_logs(), IAllianceLedger.PartiesCreditedByTier.selector));
        _assertMatchesReference("a", _periods());
    }

    function _assertCrossingCredits(IAllianceLedger.Terms memory terms, uint256[] memory credits) internal pure {
        vm.assertEq(credits.length, 9, "three tiers of three parties");
        uint256 offset = SplitReference.offsetOf(1);
        uint256[] memory base = SplitReference.split(300, terms.shares, offset);
        uint256[] memory band1 = SplitReference.split(500, terms.bands[0].shares, offset);
        uint256 sum;
        for (uint256 i; i < 3; ++i) {
            vm.assertEq(credits[i], base[i], "base part by the base table");
            vm.assertEq(credits[3 + i], band1[i], "band 1 part by band 1's table");
            sum += credits[i] + credits[3 + i] + credits[6 + i];
        }
        vm.assertEq(credits[6] + credits[7], 0, "band 2: nothing to parties 1 and 2");
        vm.assertEq(credits[8], 533, "band 2 part, all to party 3");
        vm.assertEq(sum, 1_333, "the parts' credits add up to the event");
    }

    function test_bands_restart_from_zero_every_period() public {
        // "a" (MEs 1..3) books the same revenue in two periods; "b" (MEs 4..6, same terms) in one.
        IAllianceLedger.Terms memory a = _withBands(_threeParties(), _targets(10_000, 20_000, 30_000));
        IAllianceLedger.Terms memory b = _withBands(_threeParties(), _targets(10_000, 20_000, 30_000));
        (b.parties[0], b.parties[1], b.parties[2]) = (4, 5, 6);
        _create("a", a);
        _create("b", b);
        _settleBoth("a", a, _entries2(20_000, P1, 20_000, P2));
        _settleBoth("a", a, _entries2(20_000, P1, 20_000, P2));
        _settleBoth("b", b, _entries2(20_000, P1, 20_000, P1));
        vm.assertEq(ledger.periodOf("a", P1).revenue, 40_000, "P1 revenue");
        vm.assertEq(ledger.periodOf("a", P2).revenue, 40_000, "P2 revenue: its own bands from zero");
        _assertMatchesReference("a", _periods());
        // Multiples of 10,000 split without rounding: each period paid "a" exactly what "b" got once.
        for (uint32 i; i < 3; ++i) {
            vm.assertEq(
                ledger.balanceOf(1 + i, address(token)), 2 * ledger.balanceOf(4 + i, address(token)), "two periods"
            );
        }
        vm.assertTrue(ledger.balanceOf(3, address(token)) != 2 * 40_000 * 2_000 / 10_000, "the bands' tables applied");
    }

    function test_one_band_terms_keep_the_classic_event_and_shaped_terms_emit_the_tier_event() public {
        IAllianceLedger.Terms memory one = _withBands(_threeParties(), _target1(1_000));
        _create("one", one);
        IAllianceLedger.Terms memory two = _withBands(_threeParties(), _targets(1_000, 2_000, 3_000));
        _create("two", two);
        vm.recordLogs();
        _settleBoth("one", one, _one(1_500, P1));
        Vm.Log[] memory logs = _logs();
        vm.assertEq(_count(logs, IAllianceLedger.PartiesCredited.selector), 1, "one band: PartiesCredited");
        vm.assertEq(_count(logs, IAllianceLedger.PartiesCreditedByTier.selector), 0, "one band: no tier event");
        _settleBoth("two", two, _one(1_500, P1));
        logs = _logs();
        vm.assertEq(_count(logs, IAllianceLedger.PartiesCredited.selector), 0, "three bands: no classic event");
        vm.assertEq(_count(logs, IAllianceLedger.PartiesCreditedByTier.selector), 1, "three bands: the tier event");
    }

    // ------------------------------------------------------------------------------------------------
    // Recoup
    // ------------------------------------------------------------------------------------------------

    function test_the_recoup_is_reached_exactly_once_across_periods_and_versions() public {
        IAllianceLedger.Terms memory v1 = _threeParties();
        v1.recoup = 1_000;
        v1.recoupShares = _all(3, 0);
        _create("a", v1);
        _settleBoth("a", v1, _one(600, P1)); // all recoup
        vm.assertEq(ledger.balanceOf(1, address(token)), 600, "the investor takes the recoup part");
        _settleBoth("a", v1, _entries2(600, P2, 500, P2)); // 400 recoup + 200 base, then 500 base
        vm.assertEq(ledger.agreementOf("a").recouped, 1_000, "recoup reached");
        vm.assertEq(ledger.periodOf("a", P1).recouped, 600, "P1's recouped part");
        vm.assertEq(ledger.periodOf("a", P2).recouped, 400, "P2's recouped part");
        _assertMatchesReference("a", _periods());

        // Version 2 raises the investment to 1,500: only the 500 not yet recouped goes first.
        IAllianceLedger.Terms memory v2 = _threeParties();
        v2.recoup = 1_500;
        v2.recoupShares = _all(3, 1);
        _amend("a", v2);
        _settleBoth("a", v2, _one(800, P3)); // 500 recoup (to party 2) + 300 base
        vm.assertEq(ledger.agreementOf("a").recouped, 1_500, "the recouped total never resets");
        _assertMatchesReference("a", _periods());

        // Version 3's recoup (1,200) is below what was recouped: nothing goes by its table.
        IAllianceLedger.Terms memory v3 = _threeParties();
        v3.recoup = 1_200;
        v3.recoupShares = _all(3, 2);
        _amend("a", v3);
        uint256 before = ledger.balanceOf(3, address(token));
        _settleBoth("a", v3, _one(10_000, P3));
        vm.assertEq(ledger.balanceOf(3, address(token)) - before, 2_000, "party 3 gets only its base share");
        vm.assertEq(ledger.agreementOf("a").recouped, 1_500, "reached once: no second recoup");
        _assertMatchesReference("a", _periods());
    }

    function test_revenue_that_recouped_does_not_count_toward_the_bands() public {
        IAllianceLedger.Terms memory terms = _withBands(_threeParties(), _targets(500, 900, 5_000));
        terms.recoup = 1_000;
        terms.recoupShares = _all(3, 0);
        _create("a", terms);
        _settleBoth("a", terms, _one(1_200, P1)); // 1,000 recoup, 200 base (banded 0 -> 200)
        _settleBoth("a", terms, _one(400, P1)); // 300 base, 100 band 1
        IAllianceLedger.Period memory p = ledger.periodOf("a", P1);
        vm.assertEq(p.revenue, 1_600, "whole revenue");
        vm.assertEq(p.recouped, 1_000, "recouped part");
        _assertMatchesReference("a", _periods());
    }

    function test_classic_terms_after_a_recoup_version_measure_their_band_on_banded_revenue() public {
        IAllianceLedger.Terms memory v1 = _withBands(_threeParties(), _targets(5_000, 6_000, 7_000));
        v1.recoup = 1_000;
        v1.recoupShares = _all(3, 0);
        _create("a", v1);
        _settleBoth("a", v1, _one(1_200, P1));
        IAllianceLedger.Terms memory v2 = _withBands(_threeParties(), _target1(500));
        _amend("a", v2);
        vm.recordLogs();
        _settleBoth("a", v2, _one(400, P1)); // banded 200 -> 600: 300 base, 100 band 1 (classic path)
        vm.assertEq(_count(_logs(), IAllianceLedger.PartiesCredited.selector), 1, "the classic path");
        IAllianceLedger.Period memory p = ledger.periodOf("a", P1);
        vm.assertEq(p.revenue, 1_600, "revenue");
        vm.assertEq(p.recouped, 1_000, "the classic path keeps the recouped part");
        _assertMatchesReference("a", _periods());
    }

    // ------------------------------------------------------------------------------------------------
    // Reversals
    // ------------------------------------------------------------------------------------------------

    function test_a_reversal_unwinds_the_top_band_first_then_the_recouped_part() public {
        IAllianceLedger.Terms memory terms = _withBands(_threeParties(), _targets(500, 1_000, 9_000));
        terms.recoup = 1_000;
        terms.recoupShares = _all(3, 0);
        _create("a", terms);
        _settleBoth("a", terms, _one(2_500, P1)); // recoup 1,000; base 500; band 1 500; band 2 500
        vm.recordLogs();
        _reverseBoth("a", terms, _one(1_800, P1)); // band 2 500, band 1 500, base 500, recoup 300
        uint256[] memory debits = _tierCredits(_logs(), IAllianceLedger.PartiesDebitedByTier.selector);
        vm.assertEq(debits.length, 15, "recoup, base and three bands of three parties");
        vm.assertEq(debits[0], 300, "the recouped part, back from the investor");
        uint256 sum;
        for (uint256 t; t < 15; ++t) {
            sum += debits[t];
        }
        vm.assertEq(sum, 1_800, "the debits add up to the reversal");
        IAllianceLedger.Period memory p = ledger.periodOf("a", P1);
        vm.assertEq(p.revenue, 700, "revenue after the reversal");
        vm.assertEq(p.recouped, 700, "recouped part after the reversal");
        vm.assertEq(ledger.agreementOf("a").recouped, 700, "the agreement's recouped total fell too");
        _assertMatchesReference("a", _periods());
        // The 300 not recouped any more goes first again.
        _settleBoth("a", terms, _one(500, P2));
        vm.assertEq(ledger.agreementOf("a").recouped, 1_000, "recouped again");
        _assertMatchesReference("a", _periods());
    }

    function test_a_classic_reversal_of_a_period_recouped_under_an_earlier_version_lowers_its_recouped_part() public {
        IAllianceLedger.Terms memory v1 = _threeParties();
        v1.recoup = 1_000;
        v1.recoupShares = _all(3, 0);
        _create("a", v1);
        _settleBoth("a", v1, _one(1_200, P1));
        IAllianceLedger.Terms memory v2 = _threeParties();
        _amend("a", v2);
        _settleBoth("a", v2, _one(10_000, P2)); // balances that cover the debits below
        _reverseBoth("a", v2, _one(500, P1)); // 200 banded, then 300 of the recouped part (base table)
        IAllianceLedger.Period memory p = ledger.periodOf("a", P1);
        vm.assertEq(p.revenue, 700, "revenue");
        vm.assertEq(p.recouped, 700, "recouped part never above revenue");
        _assertMatchesReference("a", _periods());
    }

    function test_a_reversal_beyond_the_period_revenue_splits_the_base_table_once() public {
        // Classic terms: the banded piece (1) and the piece beyond the revenue are one base part, as before
        // issue 18; split separately they would round differently (found by tests/test_stateful.py).
        IAllianceLedger.Terms memory terms = _flat(1, 3);
        (terms.shares[0], terms.shares[1], terms.shares[2]) = (989, 4_011, 5_000);
        _create("a", terms);
        _settle("a", terms, _one(1, P1));
        uint256 x = 10_203_623_751_552_236;
        vm.recordLogs();
        _reverse("a", terms, _one(x, P1));
        Vm.Log[] memory logs = _logs();
        uint256[] memory expectedDebits = SplitReference.split(x, terms.shares, SplitReference.offsetOf(1));
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] == IAllianceLedger.PartiesDebited.selector) {
                (,,, uint256[] memory base,) = abi.decode(logs[i].data, (uint32, uint64, uint64, uint256[], uint256[]));
                for (uint256 p; p < 3; ++p) {
                    vm.assertEq(base[p], expectedDebits[p], "one base part");
                }
                return;
            }
        }
        revert("no PartiesDebited");
    }

    function test_a_reversal_takes_the_single_unit_above_a_band_edge_by_that_band_s_table() public {
        // Banded revenue one unit above band 1's target: a reversal reaching below the edge takes that unit
        // by band 1's table (all to party 2) and the rest by the base table (all to party 1).
        IAllianceLedger.Terms memory terms = _flat(1, 2);
        terms.shares = _all(2, 0);
        terms.bands = new IAllianceLedger.Band[](2);
        terms.bands[0] = _band(1_000, _all(2, 1));
        terms.bands[1] = _band(5_000, _all(2, 0));
        _create("edge", terms);
        _settle("edge", terms, _one(1_001, P1));
        vm.assertEq(ledger.balanceOf(1, address(token)), 1_000, "base part");
        vm.assertEq(ledger.balanceOf(2, address(token)), 1, "the unit above the edge");
        _reverse("edge", terms, _one(1_001, P1));
        for (uint32 me = 1; me <= 2; ++me) {
            vm.assertEq(ledger.balanceOf(me, address(token)), 0, "each tier unwound by its own table");
            vm.assertEq(ledger.debtOf(me, address(token)), 0, "no debt");
        }
    }

    // ------------------------------------------------------------------------------------------------
    // Nested alliances
    // ------------------------------------------------------------------------------------------------

    function test_the_inner_alliance_credits_equal_its_own_terms_applied_to_what_the_outer_credited() public {
        // Inner (MEs 9..12): a recoup and two bands. Outer (MEs 1..5): ME 5 is the inner alliance.
        IAllianceLedger.Terms memory innerTerms = _withBands(_flat(9, 4), _targets(300, 700, 9_000));
        innerTerms.recoup = 250;
        innerTerms.recoupShares = _all(4, 3);
        _create("inner", innerTerms);
        IAllianceLedger.Terms memory outer = _withBands(_flat(1, 5), _target1(2_000));
        outer.nested = new bytes32[](5);
        outer.nested[4] = "inner";
        _create("outer", outer);
        IAllianceLedger.InnerTerms[] memory list = new IAllianceLedger.InnerTerms[](1);
        list[0] = _inner("inner", innerTerms);

        uint256[] memory entries = new uint256[](4);
        (entries[0], entries[1], entries[2], entries[3]) =
        (_entry(1_001, P1), _entry(1_777, P1), _entry(333, P2), _entry(4_999, P2));
        uint256 total = 1_001 + 1_777 + 333 + 4_999;
        vm.recordLogs();
        uint256 paidIn = _settleNested("outer", outer, entries, list);
        Vm.Log[] memory logs = _logs();
        vm.assertEq(paidIn, total, "finance pays the outer total once");

        // The outer split by the reference, run by run; the nested party's run credit goes inward.
        uint256[2] memory forwarded;
        for (uint256 k; k < 4; ++k) {
            uint256[] memory credits = _refEvent("outer", outer, uint64(k), entries[k]);
            forwarded[k < 2 ? 0 : 1] += credits[4];
        }
        expected[5] = 0; // ME 5 is an alliance: its credit is not its balance
        vm.assertEq(ledger.balanceOf(5, address(token)), 0, "the nested ME's balance does not move");
        vm.assertEq(_count(logs, IAllianceLedger.NestedSettled.selector), 2, "one inner event per outer run");
        vm.assertEq(ledger.agreementOf("inner").nextSeq, 2, "the inner cursor advanced by two");
        // The inner alliance's own terms applied to each forwarded amount, at its own sequence numbers.
        _refEvent("inner", innerTerms, 0, _entry(forwarded[0], P1));
        _refEvent("inner", innerTerms, 1, _entry(forwarded[1], P2));
        _assertMatchesReference("inner", _periods());
        vm.assertEq(ledger.agreementOf("inner").recouped, 250, "the inner recoup was reached");

        // The inner event's reference is derived from the outer run.
        _assertInnerEvent(logs, keccak256(abi.encode(bytes32("outer"), uint64(0), uint32(5))), forwarded[0]);
    }

    function _assertInnerEvent(Vm.Log[] memory logs, bytes32 ref, uint256 amount) internal pure {
        bool found;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].topics[0] == IAllianceLedger.RevenueSettled.selector && logs[i].topics[1] == bytes32("inner")) {
                (uint64 firstSeq, bytes32[] memory refs, uint256[] memory innerEntries) =
                    abi.decode(logs[i].data, (uint64, bytes32[], uint256[]));
                if (firstSeq == 0) found = refs[0] == ref && innerEntries[0] == _entry(amount, P1);
            }
        }
        vm.assertTrue(found, "inner RevenueSettled carries the derived reference and the forwarded amount");
    }

    function test_nested_settlement_nets_an_inner_party_debt_and_finance_pays_in_only_the_rest() public {
        IAllianceLedger.Terms memory innerTerms = _flat(9, 2);
        _create("inner", innerTerms);
        _settle("inner", innerTerms, _one(1_000, P1)); // 500 each
        for (uint32 me = 9; me <= 10; ++me) {
            vm.prank(vm.addr(_payoutKey(me)));
            ledger.withdraw(me, address(token));
        }
        _reverse("inner", innerTerms, _one(1_000, P1)); // nothing left to cover it: 500 debt each
        vm.assertEq(ledger.debtOf(9, address(token)), 500, "debt");
        IAllianceLedger.Terms memory outer = _flat(1, 2);
        outer.nested = new bytes32[](2);
        outer.nested[1] = "inner";
        _create("outer", outer);
        IAllianceLedger.InnerTerms[] memory list = new IAllianceLedger.InnerTerms[](1);
        list[0] = _inner("inner", innerTerms);
        uint256 paidIn = _settleNested("outer", outer, _one(2_000, P2), list);
        vm.assertEq(paidIn, 1_000, "the inner parties' 1,000 repaid their debts: finance pays in the rest");
        vm.assertEq(ledger.debtOf(9, address(token)) + ledger.debtOf(10, address(token)), 0, "debts repaid");
        vm.assertEq(ledger.totalDebt(address(token)), 0, "total debt");
        vm.assertEq(ledger.balanceOf(1, address(token)), 1_000, "the outer party is paid");
        _assertConservation();
    }

    function test_two_levels_of_nesting_settle_in_one_transaction_down_to_the_innermost_alliance() public {
        // outer (MEs 1, 2) -> middle (MEs 3, 4) through ME 2 -> inner (MEs 5, 6) through ME 4: the limit.
        IAllianceLedger.Terms memory innerTerms = _flat(5, 2);
        _create("inner", innerTerms);
        IAllianceLedger.Terms memory middle = _flat(3, 2);
        middle.nested = new bytes32[](2);
        middle.nested[1] = "inner";
        _create("middle", middle);
        IAllianceLedger.Terms memory outer = _flat(1, 2);
        outer.nested = new bytes32[](2);
        outer.nested[1] = "middle";
        _create("outer", outer);
        IAllianceLedger.InnerTerms[] memory list = new IAllianceLedger.InnerTerms[](2);
        list[0] = _inner("inner", innerTerms); // any order
        list[1] = _inner("middle", middle);
        vm.recordLogs();
        uint256 paidIn = _settleNested("outer", outer, _one(4_000, P1), list);
        vm.assertEq(paidIn, 4_000, "paid in once");
        vm.assertEq(_count(_logs(), IAllianceLedger.NestedSettled.selector), 2, "two forwarded credits");
        vm.assertEq(ledger.balanceOf(1, address(token)), 2_000, "outer party");
        vm.assertEq(ledger.balanceOf(3, address(token)), 1_000, "middle party");
        vm.assertEq(ledger.balanceOf(5, address(token)) + ledger.balanceOf(6, address(token)), 1_000, "inner");
        vm.assertEq(ledger.balanceOf(2, address(token)) + ledger.balanceOf(4, address(token)), 0, "alliance MEs");
        vm.assertEq(ledger.agreementOf("inner").nextSeq, 1, "the innermost alliance booked one event");
        _assertConservation();
    }
}
