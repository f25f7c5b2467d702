// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {AllianceLedger} from "../contracts/AllianceLedger.sol";
import {BlocklistToken} from "../contracts/test/BlocklistToken.sol";
import {Test, vm} from "./base/Test.sol";
import {LedgerHandler} from "./handlers/LedgerHandler.sol";

/// @title AllianceLedgerInvariants
/// @notice forge calls the handler's actions in random sequences (runs x depth calls, set in
/// foundry.toml) and checks the invariants after each call. One invariant function
/// runs every check, so the call budget is spent once rather than once per invariant; the checks live
/// in the handler next to the ghost state (see `LedgerHandler.check*`) and name themselves on failure.
contract AllianceLedgerInvariants is Test {
    LedgerHandler internal handler;
    AllianceLedger internal ledger;

    function setUp() public {
        handler = new LedgerHandler();
        ledger = handler.ledger();
        targetContract(address(handler));
    }

    /// @notice The full checks read every ME's balance in every token and every period (about a hundred
    /// calls into the ledger), which would dominate the campaign's time after every call; they run every
    /// FULL_CHECK_EVERY calls, at the end of each sequence (`afterInvariant`) and whenever a cheap check
    /// fails. The cheap ones (outcomes, token balance == owed + donations, cursors, roles) run after
    /// every call. Accounting errors persist once made, so a broken sum is still caught.
    uint256 internal constant FULL_CHECK_EVERY = 10;

    function invariant_ledger() public view {
        handler.checkOutcomes();
        handler.checkConservation();
        handler.checkAgreements();
        handler.checkRoles();
        if (handler.calls() % FULL_CHECK_EVERY == 0) _fullChecks();
    }

    function _fullChecks() internal view {
        handler.checkOwedIsSumOfBalances();
        handler.checkBalancesAndRounding();
        handler.checkPeriods();
        handler.checkRegistry();
    }

    /// @notice After each sequence every ME withdraws everything (the blocklist token's blocks lifted
    /// first): the ledger then owes nothing and holds exactly the tokens donated to it, whatever debts
    /// remain; no payout address or signer ever gained a role.
    function afterInvariant() public {
        invariant_ledger();
        _fullChecks();
        uint256 meCount = handler.meCount();
        for (uint32 meId = 1; meId <= meCount; ++meId) {
            BlocklistToken(handler.blockToken()).setBlocked(handler.payoutOf(meId), false);
        }
        for (uint256 t; t < handler.tokenCount(); ++t) {
            address token = handler.tokens(t);
            for (uint32 meId = 1; meId <= meCount; ++meId) {
                if (ledger.balanceOf(meId, token) == 0) continue;
                vm.prank(handler.payoutOf(meId));
                ledger.withdraw(meId, token);
            }
            vm.assertEq(ledger.totalOwed(token), 0, "after withdrawing everything, nothing is owed");
            vm.assertEq(
                IERC20(token).balanceOf(address(ledger)),
                handler.donated(token),
                "after withdrawing everything, the ledger holds only donations"
            );
        }
        bytes32[3] memory roles = [ledger.DEFAULT_ADMIN_ROLE(), ledger.PLATFORM_ROLE(), ledger.FINANCE_ROLE()];
        for (uint32 meId = 1; meId <= meCount; ++meId) {
            for (uint256 r; r < roles.length; ++r) {
                vm.assertTrue(!ledger.hasRole(roles[r], handler.payoutOf(meId)), "no role escalation: payout");
                vm.assertTrue(!ledger.hasRole(roles[r], handler.signerOf(meId)), "no role escalation: signer");
            }
        }
    }
}
