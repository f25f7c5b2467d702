// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ReentrantToken} from "../contracts/test/ReentrantToken.sol";
import {ReentrancyFixture} from "./base/ReentrancyFixture.sol";
import {vm} from "./base/Test.sol";

/// @title ReentrancyTest
/// @notice A token that calls back into the ledger from inside `transferFrom` (ERC-777 style): the
/// ledger's guard must refuse the nested call, and settlement then goes through with the books whole.
/// The invariant handler's tokens never call back, so these tests are what holds `nonReentrant` in place.
contract ReentrancyTest is ReentrancyFixture {
    function setUp() public {
        _setUpLedger(keccak256("reentrancy"), 0x5161, 0x5162, 0);
    }

    function test_a_withdrawal_reentering_settlement_is_refused_by_the_guard_and_the_books_stay_whole() public {
        token.arm(ReentrantToken.Hook.OnTransferFrom, address(ledger), abi.encodeCall(ledger.withdraw, (1, address(token))), false);
        _settle(500_000);
        _assertRefusedByTheGuard("the nested withdraw was refused");
        vm.assertEq(ledger.balanceOf(1, address(token)), 900_000, "ME 1 keeps 60% of both batches");
        vm.assertEq(token.balanceOf(address(ledger)), ledger.totalOwed(address(token)), "conservation");
        vm.assertEq(ledger.totalOwed(address(token)), 1_500_000, "owed == settled");
    }

    function test_a_settlement_reentering_settlement_is_refused_by_the_guard() public {
        ledger.grantRole(ledger.FINANCE_ROLE(), address(token)); // the token could even hold the role
        token.mint(address(token), 1e24);
        token.execute(address(token), abi.encodeCall(token.approve, (address(ledger), type(uint256).max)));
        bytes32[] memory refs = new bytes32[](1);
        uint256[] memory entries = new uint256[](1);
        refs[0] = keccak256("nested");
        entries[0] = uint256(777) << 32 | 1;
        token.arm(
            ReentrantToken.Hook.OnTransferFrom,
            address(ledger),
            abi.encodeCall(ledger.settle, (id, 1, nextSeq + 1, terms, refs, entries)),
            false
        );
        _settle(500_000);
        _assertRefusedByTheGuard("the nested settle was refused");
        vm.assertEq(ledger.agreementOf(id).nextSeq, nextSeq, "only the outer batch moved the cursor");
        vm.assertEq(token.balanceOf(address(ledger)), ledger.totalOwed(address(token)), "conservation");
    }
}
