// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ReentrantToken} from "../contracts/test/ReentrantToken.sol";
import {ReentrancyFixture} from "./base/ReentrancyFixture.sol";
import {vm} from "./base/Test.sol";

/// @title ShapesReentrancy
/// @notice Settlement of shaped terms runs in the module by delegatecall, inside the ledger's
/// `nonReentrant` frame: a token callback that re-enters the ledger during the module's transfer
/// (settlement's pull, a reversal's pay-back) is refused by the ledger's guard, and the books stay whole.
contract ShapesReentrancy is ReentrancyFixture {
    function setUp() public {
        // A recoup: these terms settle in the module.
        _setUpLedger(keccak256("shaped-reentrancy"), 0x7161, 0x7162, 100_000);
    }

    function test_a_withdrawal_reentering_a_shaped_settlement_is_refused_by_the_guard() public {
        token.arm(
            ReentrantToken.Hook.OnTransferFrom,
            address(ledger),
            abi.encodeCall(ledger.withdraw, (1, address(token))),
            false
        );
        _settle(500_000);
        _assertRefusedByTheGuard("the nested withdraw was refused");
        vm.assertEq(ledger.balanceOf(1, address(token)), 900_000, "ME 1 keeps 60% of both batches");
        vm.assertEq(token.balanceOf(address(ledger)), ledger.totalOwed(address(token)), "conservation");
    }

    function test_a_withdrawal_reentering_a_shaped_reversal_pay_back_is_refused_by_the_guard() public {
        token.arm(
            ReentrantToken.Hook.OnTransfer, address(ledger), abi.encodeCall(ledger.withdraw, (1, address(token))), false
        );
        bytes32[] memory refs = new bytes32[](1);
        bytes32[] memory originals = new bytes32[](1);
        uint256[] memory entries = new uint256[](1);
        (refs[0], originals[0], entries[0]) =
        (keccak256("reversal"), keccak256(abi.encode("ref", 0)), 200_000 << 32 | 1);
        ledger.settleReversals(id, 1, nextSeq, terms, refs, entries, originals);
        _assertRefusedByTheGuard("the nested withdraw was refused");
        vm.assertEq(ledger.balanceOf(1, address(token)), 480_000, "ME 1 keeps 60% of 800,000");
        vm.assertEq(token.balanceOf(address(ledger)), ledger.totalOwed(address(token)), "conservation");
    }
}
