// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice What an ERC-777 / ERC-1363 style token calls on a contract that receives tokens.
interface ITokenReceivedHook {
    function onTokenReceived(address token, address from, uint256 amount) external;
}

/// @notice Test-only ERC-20 that calls back into a target (the ledger) from inside `transfer` or
/// `transferFrom`, after moving the balance: the reentrancy attack on settlement and withdrawal.
/// It can also notify contract recipients of `transfer` (`onTokenReceived`), the hook that ERC-777 and
/// ERC-1363 tokens give a malicious payout receiver. The callback fires once per `arm`; its outcome is
/// recorded (`lastSuccess`, `lastReturnData`), and with `bubble` a failed callback reverts the transfer
/// with the callee's revert data.
contract ReentrantToken is ERC20 {
    enum Hook {
        None,
        OnTransferFrom,
        OnTransfer
    }

    Hook public hook;
    address public hookTarget;
    bytes public hookData;
    bool public bubble;
    bool public notifyReceivers;

    uint256 public attempts;
    bool public lastSuccess;
    bytes public lastReturnData;

    constructor() ERC20("Reentrant Token", "REE") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Arms a one-shot callback: `target.call(data)` from inside the next matching transfer.
    function arm(Hook hook_, address target, bytes calldata data, bool bubble_) external {
        hook = hook_;
        hookTarget = target;
        hookData = data;
        bubble = bubble_;
    }

    function setNotifyReceivers(bool on) external {
        notifyReceivers = on;
    }

    /// @notice Lets the token itself be an ME's payout (or hold a role) and call the ledger.
    function execute(address target, bytes calldata data) external returns (bytes memory) {
        (bool ok, bytes memory ret) = target.call(data);
        if (!ok) _revertWith(ret);
        return ret;
    }

    function transfer(address to, uint256 value) public override returns (bool) {
        super.transfer(to, value);
        if (hook == Hook.OnTransfer) _fire();
        if (notifyReceivers && to.code.length != 0) {
            ITokenReceivedHook(to).onTokenReceived(address(this), msg.sender, value);
        }
        return true;
    }

    function transferFrom(address from, address to, uint256 value) public override returns (bool) {
        super.transferFrom(from, to, value);
        if (hook == Hook.OnTransferFrom) _fire();
        return true;
    }

    function _fire() private {
        hook = Hook.None;
        ++attempts;
        (bool ok, bytes memory ret) = hookTarget.call(hookData);
        lastSuccess = ok;
        lastReturnData = ret;
        if (!ok && bubble) _revertWith(ret);
    }

    function _revertWith(bytes memory ret) private pure {
        assembly ("memory-safe") {
            revert(add(ret, 0x20), mload(ret))
        }
    }
}

/// @notice Test-only malicious payout receiver: registered as an ME's payout, it withdraws from the
/// ledger and, when the token notifies it of the payment, calls the ledger again (`reentryData`).
contract ReentrantReceiver is ITokenReceivedHook {
    address public immutable ledger;

    bytes public reentryData;
    bool public bubble;
    bool private _armed;

    uint256 public notifications;
    uint256 public attempts;
    bool public lastSuccess;
    bytes public lastReturnData;

    constructor(address ledger_) {
        ledger = ledger_;
    }

    function setReentry(bytes calldata data, bool bubble_) external {
        reentryData = data;
        bubble = bubble_;
        _armed = data.length != 0;
    }

    /// @notice Calls the ledger as this contract (e.g. `withdraw` as the ME's payout).
    function callLedger(bytes calldata data) external returns (bytes memory) {
        (bool ok, bytes memory ret) = ledger.call(data);
        if (!ok) _revertWith(ret);
        return ret;
    }

    function onTokenReceived(address, address, uint256) external {
        ++notifications;
        if (!_armed) return;
        _armed = false;
        ++attempts;
        (bool ok, bytes memory ret) = ledger.call(reentryData);
        lastSuccess = ok;
        lastReturnData = ret;
        if (!ok && bubble) _revertWith(ret);
    }

    function _revertWith(bytes memory ret) private pure {
        assembly ("memory-safe") {
            revert(add(ret, 0x20), mload(ret))
        }
    }
}
