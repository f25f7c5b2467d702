// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {AllianceLedgerShapes} from "../contracts/AllianceLedgerShapes.sol";
import {IAllianceLedger} from "../contracts/interfaces/IAllianceLedger.sol";
import {LedgerTestToken} from "../contracts/tokens/LedgerTestToken.sol";
import {vm} from "./base/Test.sol";
import {ShapesFixture} from "./base/ShapesFixture.sol";

/// @title ShapesReverts
/// @notice Every refusal of issue 18 (bands, recoup, nested alliances), each asserted with its custom
/// error and arguments.
contract ShapesReverts is ShapesFixture {
    function _expect(bytes memory err) internal {
        vm.expectRevert(err);
    }

    function _propose(bytes32 id, IAllianceLedger.Terms memory terms) internal {
        ledger.proposeAgreement(id, terms, _none());
    }

    function _nest(IAllianceLedger.Terms memory terms, uint256 index, bytes32 inner)
        internal
        pure
        returns (IAllianceLedger.Terms memory)
    {
        if (terms.nested.length == 0) terms.nested = new bytes32[](terms.parties.length);
        terms.nested[index] = inner;
        return terms;
    }

    // ------------------------------------------------------------------------------------------------
    // Bands
    // ------------------------------------------------------------------------------------------------

    function test_more_than_four_bands_are_refused_with_the_count_and_the_cap() public {
        uint128[] memory targets = new uint128[](5);
        for (uint256 j; j < 5; ++j) {
            targets[j] = uint128(100 * (j + 1));
        }
        IAllianceLedger.Terms memory terms = _withBands(_flat(1, 3), targets);
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementBandCount.selector, 5, 4));
        _propose("a", terms);
    }

    function test_four_bands_are_accepted() public {
        uint128[] memory targets = new uint128[](4);
        for (uint256 j; j < 4; ++j) {
            targets[j] = uint128(100 * (j + 1));
        }
        _propose("a", _withBands(_flat(1, 3), targets));
        vm.assertEq(ledger.agreementOf("a").latestVersion, 1, "proposed");
    }

    function test_a_band_target_of_zero_is_refused_naming_band_one() public {
        IAllianceLedger.Terms memory terms = _withBands(_flat(1, 3), _targets(0, 10, 20));
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementBandTarget.selector, 1, 0, 0));
        _propose("a", terms);
    }

    function test_band_targets_must_rise_strictly_naming_the_band_and_both_targets() public {
        IAllianceLedger.Terms memory terms = _withBands(_flat(1, 3), _targets(10, 20, 20));
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementBandTarget.selector, 3, 20, 20));
        _propose("a", terms);
        terms = _withBands(_flat(1, 3), _targets(10, 5, 20));
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementBandTarget.selector, 2, 10, 5));
        _propose("a", terms);
    }

    function test_a_band_table_of_the_wrong_length_is_refused_naming_the_band() public {
        IAllianceLedger.Terms memory terms = _withBands(_flat(1, 3), _targets(10, 20, 30));
        terms.bands[1].shares = _table2(5_000, 5_000);
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementBandTableLength.selector, 2, 3, 2));
        _propose("a", terms);
    }

    function test_a_band_table_not_summing_to_ten_thousand_is_refused_with_its_sum() public {
        IAllianceLedger.Terms memory terms = _withBands(_flat(1, 3), _targets(10, 20, 30));
        terms.bands[2].shares[0] -= 1;
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementBandSharesSum.selector, 3, 9_999));
        _propose("a", terms);
    }

    function test_the_base_table_keeps_its_errors() public {
        IAllianceLedger.Terms memory terms = _flat(1, 3);
        terms.shares[0] += 1;
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementSharesSum.selector, false, 10_001));
        _propose("a", terms);
        terms.shares = _table2(5_000, 5_000);
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementTableLength.selector, 3, 2));
        _propose("a", terms);
    }

    // ------------------------------------------------------------------------------------------------
    // Recoup
    // ------------------------------------------------------------------------------------------------

    function test_a_recoup_above_two_to_the_120_minus_one_is_refused() public {
        IAllianceLedger.Terms memory terms = _flat(1, 2);
        terms.recoup = uint128(type(uint120).max) + 1;
        terms.recoupShares = _table2(10_000, 0);
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementRecoupInvalid.selector, terms.recoup, 2));
        _propose("a", terms);
        terms.recoup = type(uint120).max;
        _propose("a", terms);
        vm.assertEq(ledger.agreementOf("a").latestVersion, 1, "2**120 - 1 is accepted");
    }

    function test_recoup_shares_without_a_recoup_are_refused() public {
        IAllianceLedger.Terms memory terms = _flat(1, 2);
        terms.recoupShares = _table2(10_000, 0);
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementRecoupInvalid.selector, 0, 2));
        _propose("a", terms);
    }

    function test_a_recoup_needs_a_table_of_one_entry_per_party() public {
        IAllianceLedger.Terms memory terms = _flat(1, 3);
        terms.recoup = 1_000;
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementRecoupInvalid.selector, 1_000, 0));
        _propose("a", terms);
        terms.recoupShares = _table2(10_000, 0);
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementRecoupInvalid.selector, 1_000, 2));
        _propose("a", terms);
    }

    function test_a_recoup_table_not_summing_to_ten_thousand_is_refused_with_its_sum() public {
        IAllianceLedger.Terms memory terms = _flat(1, 2);
        terms.recoup = 1_000;
        terms.recoupShares = _table2(7_000, 2_000);
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementRecoupSharesSum.selector, 9_000));
        _propose("a", terms);
    }

    // ------------------------------------------------------------------------------------------------
    // Nesting at proposal and activation
    // ------------------------------------------------------------------------------------------------

    function test_a_nested_list_of_the_wrong_length_is_refused() public {
        IAllianceLedger.Terms memory terms = _flat(1, 3);
        terms.nested = new bytes32[](2);
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementNestedLength.selector, 3, 2));
        _propose("a", terms);
    }

    function test_nesting_an_unknown_agreement_is_refused() public {
        IAllianceLedger.Terms memory terms = _nest(_flat(1, 2), 1, "nowhere");
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementNestedUnknown.selector, bytes32("nowhere")));
        _propose("a", terms);
    }

    function test_nesting_an_agreement_in_another_token_is_refused_naming_its_token() public {
        LedgerTestToken other = new LedgerTestToken("Other", "OTH", 6, address(this), address(this));
        IAllianceLedger.Terms memory innerTerms = _flat(3, 2);
        innerTerms.token = address(other);
        _create("inner", innerTerms);
        IAllianceLedger.Terms memory terms = _nest(_flat(1, 2), 1, "inner");
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementNestedToken.selector, bytes32("inner"), address(other)));
        _propose("a", terms);
    }

    function test_an_agreement_nesting_itself_is_a_cycle() public {
        _create("a", _flat(1, 2));
        IAllianceLedger.Terms memory terms = _nest(_flat(1, 2), 0, "a");
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementNestingCycle.selector, bytes32("a"), bytes32("a")));
        _propose("a", terms);
    }

    function test_a_cycle_is_refused_at_proposal() public {
        _create("a", _flat(1, 2));
        _create("b", _nest(_flat(3, 2), 0, "a"));
        IAllianceLedger.Terms memory terms = _nest(_flat(1, 2), 1, "b");
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementNestingCycle.selector, bytes32("a"), bytes32("b")));
        _propose("a", terms);
    }

    function test_a_cycle_formed_between_proposal_and_activation_is_refused_at_activation() public {
        _create("a", _flat(1, 2));
        IAllianceLedger.Terms memory b = _nest(_flat(3, 2), 0, "a");
        _propose("b", b); // b is not active yet: nothing to walk below it
        IAllianceLedger.Terms memory a2 = _nest(_flat(1, 2), 1, "b");
        _propose("a", a2); // version 2
        ledger.activateAgreement("b", 1, b, _signatures("b", 1, b)); // b -> a, while a v1 nests nothing
        bytes[] memory sigs = _signatures("a", 2, a2);
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementNestingCycle.selector, bytes32("a"), bytes32("b")));
        ledger.activateAgreement("a", 2, a2, sigs);
    }

    function test_nesting_three_levels_deep_is_refused_at_proposal() public {
        _create("c", _flat(5, 2));
        _create("b", _nest(_flat(3, 2), 0, "c"));
        _create("a", _nest(_flat(1, 2), 0, "b")); // a -> b -> c: two levels, the limit
        IAllianceLedger.Terms memory d = _nest(_flat(7, 2), 0, "a");
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementNestingTooDeep.selector, bytes32("d"), 3));
        _propose("d", d);
    }

    function test_nesting_made_too_deep_between_proposal_and_activation_is_refused_at_activation() public {
        _create("c", _flat(5, 2));
        _create("b", _nest(_flat(3, 2), 0, "c"));
        _create("a", _flat(1, 2));
        IAllianceLedger.Terms memory d = _nest(_flat(7, 2), 0, "a");
        _propose("d", d); // d -> a: one level
        _amend("a", _nest(_flat(1, 2), 0, "b")); // now a -> b -> c
        bytes[] memory sigs = _signatures("d", 1, d);
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementNestingTooDeep.selector, bytes32("d"), 3));
        ledger.activateAgreement("d", 1, d, sigs);
    }

    // ------------------------------------------------------------------------------------------------
    // Nested settlement
    // ------------------------------------------------------------------------------------------------

    /// @dev inner (MEs 9, 10) and outer (MEs 1, 2, 3; ME 3 is the inner alliance), both active.
    function _nestedPair()
        internal
        returns (IAllianceLedger.Terms memory outer, IAllianceLedger.Terms memory innerTerms)
    {
        innerTerms = _flat(9, 2);
        _create("inner", innerTerms);
        outer = _nest(_flat(1, 3), 2, "inner");
        _create("outer", outer);
    }

    function _innerList(IAllianceLedger.Terms memory innerTerms)
        internal
        view
        returns (IAllianceLedger.InnerTerms[] memory list)
    {
        list = new IAllianceLedger.InnerTerms[](1);
        list[0] = _inner("inner", innerTerms);
    }

    function _settleCall(
        IAllianceLedger.Terms memory outer,
        uint256 amount,
        uint32 period,
        IAllianceLedger.InnerTerms[] memory list
    ) internal returns (bytes memory) {
        IAllianceLedger.Agreement memory a = ledger.agreementOf("outer");
        return abi.encodeCall(
            ledger.settleNested,
            (bytes32("outer"), a.activeVersion, a.nextSeq, outer, _refs(1), _one(amount, period), list)
        );
    }

    function _callExpecting(bytes memory data, bytes memory err) internal {
        (bool ok, bytes memory ret) = address(ledger).call(data);
        vm.assertTrue(!ok, "refused");
        vm.assertEq(keccak256(ret), keccak256(err), "the expected error and arguments");
    }

    function test_settle_refuses_terms_with_nested_parties() public {
        (IAllianceLedger.Terms memory outer,) = _nestedPair();
        uint256[] memory entries = _one(1_000, PERIOD);
        bytes32[] memory refs = _refs(1);
        _expect(abi.encodeWithSelector(IAllianceLedger.AgreementNestedTermsRequired.selector, bytes32("outer")));
        ledger.settle("outer", 1, 0, outer, refs, entries);
    }

    function test_settle_nested_without_the_inner_terms_is_refused_naming_the_inner_alliance() public {
        (IAllianceLedger.Terms memory outer,) = _nestedPair();
        bytes memory data = _settleCall(outer, 1_000, PERIOD, new IAllianceLedger.InnerTerms[](0));
        _callExpecting(
            data, abi.encodeWithSelector(IAllianceLedger.SettlementInnerTermsMissing.selector, bytes32("inner"))
        );
    }

    function test_settle_nested_with_inner_terms_that_do_not_match_is_refused() public {
        (IAllianceLedger.Terms memory outer, IAllianceLedger.Terms memory innerTerms) = _nestedPair();
        IAllianceLedger.InnerTerms[] memory list = _innerList(innerTerms);
        list[0].terms.shares[0] += 1;
        list[0].terms.shares[1] -= 1;
        _callExpecting(
            _settleCall(outer, 1_000, PERIOD, list),
            abi.encodeWithSelector(IAllianceLedger.AgreementTermsMismatch.selector, bytes32("inner"), 1)
        );
    }

    function test_settle_nested_with_a_stale_inner_version_is_refused() public {
        (IAllianceLedger.Terms memory outer, IAllianceLedger.Terms memory innerTerms) = _nestedPair();
        IAllianceLedger.InnerTerms[] memory list = _innerList(innerTerms);
        IAllianceLedger.Terms memory inner2 = _flat(9, 2);
        (inner2.shares[0], inner2.shares[1]) = (9_000, 1_000);
        _amend("inner", inner2);
        _callExpecting(
            _settleCall(outer, 1_000, PERIOD, list),
            abi.encodeWithSelector(IAllianceLedger.AgreementVersionNotActive.selector, bytes32("inner"), 1, 2)
        );
    }

    function test_a_dissolved_party_of_the_inner_alliance_blocks_the_outer_settlement() public {
        (IAllianceLedger.Terms memory outer, IAllianceLedger.Terms memory innerTerms) = _nestedPair();
        ledger.dissolveME(10);
        _callExpecting(
            _settleCall(outer, 1_000, PERIOD, _innerList(innerTerms)),
            abi.encodeWithSelector(IAllianceLedger.AgreementPartyDissolved.selector, bytes32("inner"), uint32(10))
        );
        vm.assertEq(ledger.agreementOf("outer").nextSeq, 0, "nothing settled");
    }

    function test_a_closed_period_of_the_inner_alliance_blocks_the_outer_settlement() public {
        (IAllianceLedger.Terms memory outer, IAllianceLedger.Terms memory innerTerms) = _nestedPair();
        ledger.closePeriod("inner", PERIOD);
        _callExpecting(
            _settleCall(outer, 1_000, PERIOD, _innerList(innerTerms)),
            abi.encodeWithSelector(IAllianceLedger.PeriodAlreadyClosed.selector, bytes32("inner"), PERIOD)
        );
        // Another period of the inner alliance is open: that settlement goes through.
        (bool ok,) = address(ledger).call(_settleCall(outer, 1_000, PERIOD + 1, _innerList(innerTerms)));
        vm.assertTrue(ok, "an open inner period settles");
    }

    function test_a_terminated_inner_alliance_blocks_the_outer_settlement() public {
        (IAllianceLedger.Terms memory outer, IAllianceLedger.Terms memory innerTerms) = _nestedPair();
        bytes32 digest = ledger.terminationDigest("inner", 1);
        bytes[] memory sigs = new bytes[](2);
        for (uint256 i; i < 2; ++i) {
            (uint8 v, bytes32 r, bytes32 s) = vm.sign(_key(9 + i), digest);
            sigs[i] = abi.encodePacked(r, s, v);
        }
        ledger.terminateAgreement("inner", innerTerms, sigs);
        _callExpecting(
            _settleCall(outer, 1_000, PERIOD, _innerList(innerTerms)),
            abi.encodeWithSelector(
                IAllianceLedger.AgreementNotActive.selector,
                bytes32("inner"),
                IAllianceLedger.AgreementStatus.Terminated
            )
        );
    }

    function test_an_inner_alliance_re_nested_too_deep_after_activation_is_refused_at_settlement() public {
        IAllianceLedger.Terms memory c = _flat(5, 2);
        _create("c", c);
        IAllianceLedger.Terms memory b = _nest(_flat(3, 2), 0, "c");
        _create("b", b);
        IAllianceLedger.Terms memory a = _nest(_flat(1, 2), 0, "b"); // a -> b -> c
        _create("a", a);
        _create("e", _flat(7, 2));
        IAllianceLedger.Terms memory c2 = _nest(_flat(5, 2), 0, "e");
        _amend("c", c2); // c -> e is one level for c, but a -> b -> c -> e is three
        IAllianceLedger.InnerTerms[] memory list = new IAllianceLedger.InnerTerms[](3);
        list[0] = _inner("b", b);
        list[1] = _inner("c", c2);
        list[2] = _inner("e", _flat(7, 2));
        bytes32[] memory refs = _refs(1);
        uint256[] memory entries = _one(10_000, PERIOD);
        _expect(abi.encodeWithSelector(IAllianceLedger.SettlementNestingTooDeep.selector, bytes32("a")));
        ledger.settleNested("a", 1, 0, a, refs, entries, list);
    }

    function test_reversals_of_an_agreement_with_nested_parties_are_refused() public {
        (IAllianceLedger.Terms memory outer, IAllianceLedger.Terms memory innerTerms) = _nestedPair();
        _settleNested("outer", outer, _one(1_000, PERIOD), _innerList(innerTerms));
        bytes32[] memory refs = _refs(1);
        bytes32[] memory originals = _refs(1);
        uint256[] memory entries = _one(100, PERIOD);
        _expect(abi.encodeWithSelector(IAllianceLedger.ReversalNestedUnsupported.selector, bytes32("outer")));
        ledger.settleReversals("outer", 1, 1, outer, refs, entries, originals);
    }

    function test_the_settlement_module_refuses_a_direct_call() public {
        // The ledger's first CREATE (nonce 1) deployed the module.
        address module = address(
            uint160(uint256(keccak256(abi.encodePacked(bytes1(0xd6), bytes1(0x94), address(ledger), bytes1(0x01)))))
        );
        vm.assertTrue(module.code.length != 0, "the module is deployed at the ledger's first CREATE address");
        IAllianceLedger.Terms memory terms = _withBands(_flat(1, 2), _targets(10, 20, 30));
        _create("a", terms);
        bytes32[] memory refs = _refs(1);
        uint256[] memory entries = _one(100, PERIOD);
        _expect(abi.encodeWithSelector(AllianceLedgerShapes.LedgerModuleDirectCall.selector));
        AllianceLedgerShapes(module).settle("a", 1, 0, terms, refs, entries);
    }
}
