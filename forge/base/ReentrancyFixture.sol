// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {AllianceLedger} from "../../contracts/AllianceLedger.sol";
import {IAllianceLedger} from "../../contracts/interfaces/IAllianceLedger.sol";
import {ReentrantToken} from "../../contracts/test/ReentrantToken.sol";
import {Test, vm} from "./Test.sol";

/// @title ReentrancyFixture
/// @notice The reentrancy tests' ledger: a token that calls back into the ledger from inside its
/// transfers (ERC-777 style, `ReentrantToken`), two MEs whose agreement settles in it (60/40), this
/// contract holding every role and finance's tokens, and a first batch of 1,000,000 settled, so that ME 1
/// has a balance to try to withdraw mid-settlement. ME 1's payout is the token itself, so its callback
/// passes the payout check of `withdraw`.
abstract contract ReentrancyFixture is Test {
    AllianceLedger internal ledger;
    ReentrantToken internal token;
    IAllianceLedger.Terms internal terms;
    bytes32 internal id;
    uint64 internal nextSeq;

    /// @dev `recoup` 0 keeps the terms classic (the ledger's own path); a recoup sends their settlement
    /// through the module (by delegatecall).
    function _setUpLedger(bytes32 agreementId, uint256 key1, uint256 key2, uint128 recoup) internal {
        id = agreementId;
        ledger = new AllianceLedger(address(this), address(this), address(this));
        token = new ReentrantToken();
        ledger.registerME("hooked", address(token), vm.addr(key1), 0);
        ledger.registerME("plain", address(0xBEEF), vm.addr(key2), 0);
        uint32[] memory parties = new uint32[](2);
        (parties[0], parties[1]) = (1, 2);
        uint16[] memory shares = new uint16[](2);
        (shares[0], shares[1]) = (6_000, 4_000);
        terms.token = address(token);
        terms.parties = parties;
        terms.shares = shares;
        if (recoup != 0) {
            terms.recoup = recoup;
            terms.recoupShares = shares;
        }
        bytes32 digest = ledger.approvalDigest(agreementId, 1, ledger.hashTerms(terms));
        bytes[] memory sigs = new bytes[](2);
        sigs[0] = _sign(key1, digest);
        sigs[1] = _sign(key2, digest);
        ledger.createAgreement(agreementId, terms, sigs);
        token.mint(address(this), 1e24);
        token.approve(address(ledger), type(uint256).max);
        _settle(1_000_000);
    }

    /// @dev The token's callback fired once and the ledger's reentrancy guard refused it.
    function _assertRefusedByTheGuard(string memory what) internal view {
        vm.assertEq(token.attempts(), 1, "the callback fired");
        vm.assertTrue(!token.lastSuccess(), what);
        vm.assertEq(
            bytes32(bytes4(token.lastReturnData())),
            bytes32(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector),
            "refused by the reentrancy guard"
        );
    }

    function _settle(uint256 amount) internal {
        bytes32[] memory refs = new bytes32[](1);
        uint256[] memory entries = new uint256[](1);
        refs[0] = keccak256(abi.encode("ref", nextSeq));
        entries[0] = amount << 32 | 1;
        ledger.settle(id, 1, nextSeq, terms, refs, entries);
        nextSeq += 1;
    }

    function _sign(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }
}
