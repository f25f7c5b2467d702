// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @notice The few Foundry cheatcodes the suite uses (the address is forge's fixed cheatcode address).
/// forge-std is not used: its npm copy does not build, and this is all the suite needs.
interface Vm {
    struct Log {
        bytes32[] topics;
        bytes data;
        address emitter;
    }

    function recordLogs() external;
    function getRecordedLogs() external returns (Log[] memory);
    function addr(uint256 privateKey) external pure returns (address);
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function prank(address msgSender) external;
    function startPrank(address msgSender) external;
    function stopPrank() external;
    function assume(bool condition) external pure;
    function cool(address target) external;
    function expectRevert(bytes calldata revertData) external;
    function label(address account, string calldata newLabel) external;
    function envOr(string calldata name, uint256 defaultValue) external view returns (uint256 value);
    function toString(uint256 value) external pure returns (string memory);
    function toString(bytes32 value) external pure returns (string memory);
    function assertTrue(bool condition, string calldata error) external pure;
    function assertEq(uint256 left, uint256 right, string calldata error) external pure;
    function assertEq(bytes32 left, bytes32 right, string calldata error) external pure;
    function assertEq(bool left, bool right, string calldata error) external pure;
    function assertLe(uint256 left, uint256 right, string calldata error) external pure;
    function assertGe(uint256 left, uint256 right, string calldata error) external pure;
}

Vm constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

/// @notice Maps a fuzzed `x` into [min, max] (inclusive) without discarding the input.
function bound(uint256 x, uint256 min, uint256 max) pure returns (uint256) {
    require(min <= max, "bound: min > max");
    uint256 size = max - min;
    if (size == type(uint256).max) return x;
    return min + (x % (size + 1));
}

/// @notice What forge reads from an invariant test to choose the contracts and functions it calls.
struct FuzzSelector {
    address addr;
    bytes4[] selectors;
}

/// @notice The test base: forge finds `test*`, `testFuzz*` and `invariant*` functions on any contract;
/// invariant tests name their targets through `targetContracts` / `targetSelectors`.
abstract contract Test {
    address[] private _targetContracts;
    FuzzSelector[] private _targetSelectors;
    address[] private _excludeSenders;

    function targetContract(address target) internal {
        _targetContracts.push(target);
    }

    function targetSelector(FuzzSelector memory selector) internal {
        _targetSelectors.push(selector);
    }

    function excludeSender(address sender) internal {
        _excludeSenders.push(sender);
    }

    function targetContracts() public view returns (address[] memory) {
        return _targetContracts;
    }

    function targetSelectors() public view returns (FuzzSelector[] memory) {
        return _targetSelectors;
    }

    function excludeSenders() public view returns (address[] memory) {
        return _excludeSenders;
    }
}
