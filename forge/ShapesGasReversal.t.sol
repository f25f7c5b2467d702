// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IAllianceLedger} from "../contracts/interfaces/IAllianceLedger.sol";
import {vm} from "./base/Test.sol";
import {ShapesGasBase} from "./ShapesGas.t.sol";

/// @title ShapesGasReversal
/// @notice Gas of a 1,000-reversal batch (each a third of one of 1,000 settled events), as the bench's
/// gas_per_reversal (information: the bench's target is a ratio <= 2.5 to a settled event).
contract ShapesGasReversal is ShapesGasBase {
    function _reversalGas(string memory key, bytes32 id, IAllianceLedger.Terms memory terms) internal {
        _create(id, terms);
        uint256[] memory amounts = _amounts("n5_k1000", EVENTS);
        _measure(key, id, terms, amounts, _noInner());
        uint256[] memory entries = new uint256[](EVENTS);
        for (uint256 k; k < EVENTS; ++k) {
            entries[k] = _entry(amounts[k] / 3, PERIOD);
        }
        IAllianceLedger.Agreement memory a = ledger.agreementOf(id);
        bytes memory data = abi.encodeCall(
            ledger.settleReversals,
            (id, a.activeVersion, a.nextSeq, terms, _benchRefs(EVENTS), entries, _benchRefs(EVENTS))
        );
        vm.cool(address(ledger));
        vm.cool(address(token));
        uint256 before = gasleft();
        (bool ok,) = address(ledger).call(data);
        uint256 exec = before - gasleft();
        vm.assertTrue(ok, "reversed");
        emit log_named_uint(string.concat(key, " reversal exec/event"), exec / EVENTS);
        emit log_named_uint(
            string.concat(key, " reversal bench-equivalent/event"), (exec + _intrinsic(data)) / EVENTS - METHOD_OFFSET
        );
    }

    function test_gas_reversal_n5_k1000_classic() public {
        _reversalGas("classic", "rev", _flat(1, 5));
    }

    function test_gas_reversal_n5_k1000_three_bands() public {
        _reversalGas("bands3", "rev3", _withBands(_flat(1, 5), _targets(1e12, 2e12, 3e12)));
    }
}
