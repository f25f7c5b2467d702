// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @notice Test-only USDT-style token: `transfer`, `transferFrom` and `approve` return nothing (not
/// even `bool`), and the owner can switch on a fee on transfers (USDT's `basisPointsRate`), burnt here.
/// Plain `IERC20(token).transfer(...)` would revert decoding the missing return value; SafeERC20 accepts
/// it. Written by hand because OpenZeppelin's ERC20 returns `bool`.
contract NoReturnToken {
    string public name = "No Return Tether";
    string public symbol = "NRT";
    uint8 public immutable decimals;
    uint256 public totalSupply;
    uint256 public feeBps;
    address public immutable owner;

    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    constructor(uint8 decimals_) {
        decimals = decimals_;
        owner = msg.sender;
    }

    function mint(address to, uint256 amount) external {
        totalSupply += amount;
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
    }

    function setFee(uint256 bps) external {
        require(msg.sender == owner, "owner");
        require(bps <= 10_000, "fee");
        feeBps = bps;
    }

    function approve(address spender, uint256 value) external {
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
    }

    function transfer(address to, uint256 value) external {
        _move(msg.sender, to, value);
    }

    function transferFrom(address from, address to, uint256 value) external {
        uint256 allowed = allowance[from][msg.sender];
        require(allowed >= value, "allowance");
        if (allowed != type(uint256).max) allowance[from][msg.sender] = allowed - value;
        _move(from, to, value);
    }

    function _move(address from, address to, uint256 value) private {
        require(balanceOf[from] >= value, "balance");
        uint256 fee = (value * feeBps) / 10_000;
        balanceOf[from] -= value;
        balanceOf[to] += value - fee;
        totalSupply -= fee;
        emit Transfer(from, to, value - fee);
        if (fee != 0) emit Transfer(from, address(0), fee);
    }
}

/// @notice Test-only token that, while `failing` is on, answers `transfer`/`transferFrom` with `false`
/// instead of reverting, and moves nothing (old ERC-20s such as ZRX, BAT did so). SafeERC20 must refuse.
contract FalseReturnToken {
    string public name = "False Return Token";
    string public symbol = "FRT";
    uint8 public constant decimals = 18;
    uint256 public totalSupply;
    bool public failing;

    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    function mint(address to, uint256 amount) external {
        totalSupply += amount;
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
    }

    function setFailing(bool on) external {
        failing = on;
    }

    function approve(address spender, uint256 value) external returns (bool) {
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    function transfer(address to, uint256 value) external returns (bool) {
        if (failing || balanceOf[msg.sender] < value) return false;
        _move(msg.sender, to, value);
        return true;
    }

    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        if (failing || balanceOf[from] < value || allowance[from][msg.sender] < value) return false;
        allowance[from][msg.sender] -= value;
        _move(from, to, value);
        return true;
    }

    function _move(address from, address to, uint256 value) private {
        balanceOf[from] -= value;
        balanceOf[to] += value;
        emit Transfer(from, to, value);
    }
}
