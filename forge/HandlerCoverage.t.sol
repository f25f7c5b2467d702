// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Test, vm} from "./base/Test.sol";
import {LedgerHandler} from "./handlers/LedgerHandler.sol";

/// @title HandlerCoverage
/// @notice The invariant campaign proves little if the handler's calls are all refused, or never reach a
/// path: this walk drives the handler through 12 sequences of 250 actions chosen from fixed seeds (every
/// action of the campaign, settlement and reversals drawn twice as often) and requires every kind of call
/// to have been accepted at least once, every check to pass after each sequence, and no violation.
contract HandlerCoverage is Test {
    string[22] internal kinds = [
        "registerME",
        "registerMEs",
        "updateME",
        "dissolveME",
        "createAgreement",
        "proposeAgreement",
        "proposeAgreements",
        "proposeAmendment",
        "activateAgreement",
        "terminateAgreement",
        "settle",
        "settleReversals",
        "closePeriod",
        "withdraw",
        "payout",
        "settleNested",
        "nestedForward",
        "settleBanded",
        "settleRecoup",
        "reverseBanded",
        "reverseRecoup",
        "nestingRefused"
    ];

    function test_a_fixed_walk_gets_every_kind_of_call_accepted_and_keeps_every_invariant() public {
        uint256[22] memory total;
        for (uint256 run; run < 12; ++run) {
            LedgerHandler h = new LedgerHandler();
            for (uint256 i = run * 1000; i < run * 1000 + 250; ++i) {
                _step(h, i);
                h.checkOutcomes();
            }
            h.checkConservation();
            h.checkOwedIsSumOfBalances();
            h.checkBalancesAndRounding();
            h.checkAgreements();
            h.checkPeriods();
            h.checkRoles();
            h.checkRegistry();
            for (uint256 j; j < kinds.length; ++j) {
                total[j] += h.accepted(kinds[j]);
            }
        }
        for (uint256 j; j < kinds.length; ++j) {
            vm.assertTrue(total[j] != 0, string.concat("no ", kinds[j], " was accepted in the walk"));
        }
    }

    function _step(LedgerHandler h, uint256 i) internal virtual {
        uint256 r = uint256(keccak256(abi.encode(i)));
        uint256 a = uint256(keccak256(abi.encode(i, 1)));
        uint256 b = uint256(keccak256(abi.encode(i, 2)));
        uint256 c = uint256(keccak256(abi.encode(i, 3)));
        uint256 k = r % 24;
        if (k == 0) h.actActivateLatest(a, b);
        else if (k == 1) h.actBlockPayout(a, b);
        else if (k == 2) h.actClosePeriod(a, b);
        else if (k == 3) h.actCreateAgreement(a);
        else if (k == 4) h.actDissolveME(a);
        else if (k == 5) h.actDonate(a, b);
        else if (k == 6) h.actPayoutRun(a, b, c);
        else if (k == 7) h.actProposeAgreements(a, b);
        else if (k == 8) h.actProposeAmendment(a, b);
        else if (k == 9) h.actRegisterME(a);
        else if (k == 10) h.actRegisterMEs(a, b);
        else if (k == 11) h.actReplayConsent();
        else if (k == 12) h.actRetryLastBatch();
        else if (k == 13) h.actRevokeSigner(a);
        else if (k == 14 || k == 21) h.actSettle(a, b, c, r);
        else if (k == 15) h.actSettleMalformed(a, b);
        else if (k == 16 || k == 20) h.actSettleReversals(a, b, c, r);
        else if (k == 17) h.actSettleStaleCursor(a, b, c);
        else if (k == 18) h.actTerminate(a, b);
        else if (k == 19) h.actUnauthorised(a, b);
        else if (k == 22) h.actUpdateME(a, b);
        else h.actWithdraw(a, b);
    }
}
