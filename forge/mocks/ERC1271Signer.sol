// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @title ERC1271Signer
/// @notice A contract signer for the forge handler, the shape of a one-owner Safe: it accepts a digest
/// signed by its owner's key (ERC-1271 `isValidSignature`), until its controller revokes it (a Safe whose
/// owners changed, or a wallet that disowns what it signed); a revoked signer refuses every signature.
contract ERC1271Signer {
    bytes4 internal constant MAGIC = 0x1626ba7e;

    address public immutable owner;
    address public immutable controller;
    bool public revoked;

    error ERC1271SignerNotController(address caller);

    constructor(address owner_) {
        owner = owner_;
        controller = msg.sender;
    }

    function setRevoked(bool on) external {
        if (msg.sender != controller) revert ERC1271SignerNotController(msg.sender);
        revoked = on;
    }

    function isValidSignature(bytes32 digest, bytes calldata signature) external view returns (bytes4) {
        if (revoked) return 0xffffffff;
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, signature);
        return err == ECDSA.RecoverError.NoError && recovered == owner ? MAGIC : bytes4(0xffffffff);
    }
}
