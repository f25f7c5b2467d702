// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {PaymentSplitter} from "@openzeppelin/contracts-4/finance/PaymentSplitter.sol";

/// @title OZPaymentSplitter
/// @notice Benchmark baseline only: OpenZeppelin 4.9.6's PaymentSplitter (removed in 5.x) as deployed,
/// so `scripts/bench.py` can compare its per-payment gas with the ledger's per-event settlement gas.
contract OZPaymentSplitter is PaymentSplitter {
    constructor(address[] memory payees, uint256[] memory shares_) PaymentSplitter(payees, shares_) {}
}
