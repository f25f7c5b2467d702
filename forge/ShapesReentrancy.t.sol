// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {AllianceLedger} from "../contracts/AllianceLedger.sol";
import {IAllianceLedger} from "../contracts/interfaces/IAllianceLedger.sol";
import {ReentrantToken} from "../contracts/test/ReentrantToken.sol";
import {Test, vm} from "./base/Test.sol";

/// @title ShapesReentrancy
/// @notice Settlement of shaped terms runs in the module by delegatecall, inside the ledger's
/// `nonReentrant` frame: a token callback that re-enters the ledger during the module's transfer
/// (settlement's pull, a reversal's pay-back) is refused by the ledger's guard, and the books stay whole.
contract ShapesReentrancy is Test {
    AllianceLedger internal ledger;
    ReentrantToken internal token;
    bytes32 internal constant ID = keccak256("shaped-reentrancy");
    uint256 internal constant KEY_1 = 0x7161;
    uint256 internal constant KEY_2 = 0x7162;
    IAllianceLedger.Terms internal terms;
    uint64 internal nextSeq;

    function setUp() public {
        ledger = new AllianceLedger(address(this), address(this), address(this));
        token = new ReentrantToken();
        // ME 1's payout is the token itself, so its callback passes the payout check of `withdraw`.
        ledger.registerME("hooked", address(token), vm.addr(KEY_1), 0);
        ledger.registerME("plain", address(0xBEEF), vm.addr(KEY_2), 0);
        uint32[] memory parties = new uint32[](2);
        (parties[0], parties[1]) = (1, 2);
        uint16[] memory shares = new uint16[](2);
        (shares[0], shares[1]) = (6_000, 4_000);
        terms.token = address(token);
        terms.parties = parties;
        terms.shares = shares;
        // A recoup: these terms settle in the module.
        terms.recoup = 100_000;
        terms.recoupShares = shares;
        bytes32 digest = ledger.approvalDigest(ID, 1, ledger.hashTerms(terms));
        bytes[] memory sigs = new bytes[](2);
        sigs[0] = _sign(KEY_1, digest);
        sigs[1] = _sign(KEY_2, digest);
        ledger.createAgreement(ID, terms, sigs);
        token.mint(address(this), 1e24);
        token.approve(address(ledger), type(uint256).max);
        _settle(1_000_000); // ME 1 has a balance to try to withdraw mid-settlement
    }

    function test_a_withdrawal_reentering_a_shaped_settlement_is_refused_by_the_guard() public {
        token.arm(
            ReentrantToken.Hook.OnTransferFrom,
            address(ledger),
            abi.encodeCall(ledger.withdraw, (1, address(token))),
            false
        );
        _settle(500_000);
        vm.assertEq(token.attempts(), 1, "the callback fired");
        vm.assertTrue(!token.lastSuccess(), "the nested withdraw was refused");
        vm.assertEq(
            bytes32(bytes4(token.lastReturnData())),
            bytes32(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector),
            "refused by the ledger's guard"
        );
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
        ledger.settleReversals(ID, 1, nextSeq, terms, refs, entries, originals);
        vm.assertEq(token.attempts(), 1, "the callback fired");
        vm.assertTrue(!token.lastSuccess(), "the nested withdraw was refused");
        vm.assertEq(
            bytes32(bytes4(token.lastReturnData())),
            bytes32(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector),
            "refused by the ledger's guard"
        );
        vm.assertEq(ledger.balanceOf(1, address(token)), 480_000, "ME 1 keeps 60% of 800,000");
        vm.assertEq(token.balanceOf(address(ledger)), ledger.totalOwed(address(token)), "conservation");
    }

    function _settle(uint256 amount) internal {
        bytes32[] memory refs = new bytes32[](1);
        uint256[] memory entries = new uint256[](1);
        refs[0] = keccak256(abi.encode("ref", nextSeq));
        entries[0] = amount << 32 | 1;
        ledger.settle(ID, 1, nextSeq, terms, refs, entries);
        nextSeq += 1;
    }

    function _sign(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }
}
