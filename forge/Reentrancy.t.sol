// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {AllianceLedger} from "../contracts/AllianceLedger.sol";
import {IAllianceLedger} from "../contracts/interfaces/IAllianceLedger.sol";
import {ReentrantToken} from "../contracts/test/ReentrantToken.sol";
import {Test, vm} from "./base/Test.sol";

/// @title ReentrancyTest
/// @notice A token that calls back into the ledger from inside `transferFrom` (ERC-777 style): the
/// ledger's guard must refuse the nested call, and settlement then goes through with the books whole.
/// The invariant handler's tokens never call back, so these tests are what holds `nonReentrant` in place.
contract ReentrancyTest is Test {
    AllianceLedger internal ledger;
    ReentrantToken internal token;
    bytes32 internal constant ID = keccak256("reentrancy");
    uint256 internal constant KEY_1 = 0x5161;
    uint256 internal constant KEY_2 = 0x5162;
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
        bytes32 digest = ledger.approvalDigest(ID, 1, ledger.hashTerms(terms));
        bytes[] memory sigs = new bytes[](2);
        sigs[0] = _sign(KEY_1, digest);
        sigs[1] = _sign(KEY_2, digest);
        ledger.createAgreement(ID, terms, sigs);
        token.mint(address(this), 1e24);
        token.approve(address(ledger), type(uint256).max);
        _settle(1_000_000); // ME 1 now has a balance to try to withdraw mid-settlement
    }

    function test_a_withdrawal_reentering_settlement_is_refused_by_the_guard_and_the_books_stay_whole() public {
        token.arm(ReentrantToken.Hook.OnTransferFrom, address(ledger), abi.encodeCall(ledger.withdraw, (1, address(token))), false);
        _settle(500_000);
        vm.assertEq(token.attempts(), 1, "the callback fired");
        vm.assertTrue(!token.lastSuccess(), "the nested withdraw was refused");
        vm.assertEq(
            bytes32(bytes4(token.lastReturnData())),
            bytes32(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector),
            "refused by the reentrancy guard"
        );
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
            abi.encodeCall(ledger.settle, (ID, 1, nextSeq + 1, terms, refs, entries)),
            false
        );
        _settle(500_000);
        vm.assertTrue(!token.lastSuccess(), "the nested settle was refused");
        vm.assertEq(
            bytes32(bytes4(token.lastReturnData())),
            bytes32(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector),
            "refused by the reentrancy guard"
        );
        vm.assertEq(ledger.agreementOf(ID).nextSeq, nextSeq, "only the outer batch moved the cursor");
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
