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

    /// @notice The full checks read every ME's balance and debt in every token and every period (about
    /// two hundred calls into the ledger), which would dominate the campaign's time after every call;
    /// they run every `fullCheckEvery` calls, at the end of each sequence (`afterInvariant`). The cheap
    /// ones (token balance == owed + donations, cursors and statuses, roles) run every `checkEvery`
    /// calls, and the outcome check (one read) after every call. Accounting errors and violations
    /// persist once made, so a broken sum is still caught, at the latest at the sequence's end.
    /// `make test` checks cheaply after every call and fully every 10th (LEDGER_FORGE_CHECK_EVERY=1,
    /// LEDGER_FORGE_FULL_CHECK_EVERY=10, the defaults); the long campaign (`make test-forge-long`) every
    /// 10th and 50th, which makes its 2,000,000 calls fit in about a third of the time (see
    /// docs/verification.md).
    uint256 internal checkEvery;
    uint256 internal fullCheckEvery;

    function setUp() public {
        handler = new LedgerHandler();
        ledger = handler.ledger();
        targetContract(address(handler));
        checkEvery = vm.envOr("LEDGER_FORGE_CHECK_EVERY", uint256(1));
        fullCheckEvery = vm.envOr("LEDGER_FORGE_FULL_CHECK_EVERY", uint256(10));
    }

    function invariant_ledger() public view {
        handler.checkOutcomes();
        uint256 calls = handler.calls();
        if (calls % checkEvery == 0) _cheapChecks();
        if (calls % fullCheckEvery == 0) _fullChecks();
    }

    function _cheapChecks() internal view {
        handler.checkConservation();
        handler.checkAgreements();
        handler.checkRoles();
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
        handler.checkOutcomes();
        _cheapChecks();
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
