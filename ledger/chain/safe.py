"""Safe (Gnosis Safe) multisigs: what their owners sign, how the Safe wants the signatures, and the
contracts from the pinned npm package ``@safe-global/safe-contracts`` 1.4.1.

Two things an ME or a role holder does through a Safe:

* **A message for ERC-1271** (an ME whose signer is a Safe approves an agreement, ends one, consents to
  an ME update). The ledger asks the Safe ``isValidSignature(digest, signature)``; the Safe's
  ``CompatibilityFallbackHandler`` hashes ``digest`` as the EIP-712 ``SafeMessage(bytes message)`` with
  ``message = abi.encode(digest)`` under the Safe's own domain ``EIP712Domain(uint256 chainId,address
  verifyingContract)`` and checks the owners' signatures of that hash (:func:`message_hash`).
* **A transaction** (the platform or finance role held by a Safe): owners sign the EIP-712 ``SafeTx``
  (:func:`tx_hash`) and one of them sends ``execTransaction`` with the signatures.

Either way the Safe reads its ``threshold`` signatures of 65 bytes each, sorted by owner address
ascending (:func:`pack`). Owners sign typed data here (v = 27/28), never ``eth_sign``.

This module is pure (no Ape, no node): the CLI and the audit share it. ``SafeContracts`` (bottom) deploys
and reads through Ape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import SignableMessage
from eth_utils import keccak, to_checksum_address

from ledger.config import PROJECT_ROOT

SAFE_PACKAGE = "@safe-global/safe-contracts"
SAFE_VERSION = "1.4.1"
ARTIFACTS = PROJECT_ROOT / "node_modules" / SAFE_PACKAGE / "build" / "artifacts" / "contracts"
ZERO = "0x" + "00" * 20

DOMAIN_TYPEHASH = keccak(text="EIP712Domain(uint256 chainId,address verifyingContract)")
SAFE_MSG_TYPEHASH = keccak(text="SafeMessage(bytes message)")
SAFE_TX_TYPEHASH = keccak(
    text="SafeTx(address to,uint256 value,bytes data,uint8 operation,uint256 safeTxGas,uint256 baseGas,"
    "uint256 gasPrice,address gasToken,address refundReceiver,uint256 nonce)"
)
SIGNATURE_BYTES = 65


def domain_separator(chain_id: int, safe: str) -> bytes:
    return keccak(abi_encode(["bytes32", "uint256", "address"], [DOMAIN_TYPEHASH, chain_id, safe]))


def _signable(chain_id: int, safe: str, struct_hash: bytes) -> SignableMessage:
    """EIP-712 ``0x19 0x01 || domainSeparator || structHash`` as eth-account's SignableMessage."""
    return SignableMessage(version=b"\x01", header=domain_separator(chain_id, safe), body=struct_hash)


def message(chain_id: int, safe: str, digest: bytes) -> SignableMessage:
    """What each owner signs so that ``safe`` accepts ``digest`` through ERC-1271 (``SafeMessage``)."""
    struct_hash = keccak(abi_encode(["bytes32", "bytes32"], [SAFE_MSG_TYPEHASH, keccak(bytes(digest))]))
    return _signable(chain_id, safe, struct_hash)


def message_hash(chain_id: int, safe: str, digest: bytes) -> bytes:
    m = message(chain_id, safe, digest)
    return keccak(b"\x19" + m.version + m.header + m.body)


@dataclass(frozen=True)
class SafeTx:
    """A Safe transaction as ``execTransaction`` takes it (no refunds: gas settings all zero)."""

    to: str
    data: bytes
    nonce: int
    value: int = 0
    operation: int = 0  # CALL

    def message(self, chain_id: int, safe: str) -> SignableMessage:
        struct_hash = keccak(
            abi_encode(
                [
                    "bytes32",
                    "address",
                    "uint256",
                    "bytes32",
                    "uint8",
                    "uint256",
                    "uint256",
                    "uint256",
                    "address",
                    "address",
                    "uint256",
                ],
                [
                    SAFE_TX_TYPEHASH,
                    self.to,
                    self.value,
                    keccak(self.data),
                    self.operation,
                    0,
                    0,
                    0,
                    ZERO,
                    ZERO,
                    self.nonce,
                ],
            )  # fmt: skip
        )
        return _signable(chain_id, safe, struct_hash)

    def hash(self, chain_id: int, safe: str) -> bytes:
        """The ``safeTxHash`` (what the Safe's ``getTransactionHash`` returns and owners sign)."""
        m = self.message(chain_id, safe)
        return keccak(b"\x19" + m.version + m.header + m.body)

    def exec_args(self, signatures: bytes) -> tuple:
        """The arguments of ``execTransaction``."""
        return (self.to, self.value, self.data, self.operation, 0, 0, 0, ZERO, ZERO, signatures)


def recover(signable: SignableMessage, signature: bytes) -> str | None:
    """The owner behind one 65-byte typed-data signature (v = 27/28), or None."""
    if len(signature) != SIGNATURE_BYTES or signature[64] not in (27, 28):
        return None
    try:
        return Account.recover_message(signable, signature=signature)
    except Exception:  # noqa: BLE001 - any malformed signature recovers to nobody
        return None


def pack(signatures: dict[str, bytes]) -> bytes:
    """Owner -> signature, concatenated in ascending owner order (what ``checkSignatures`` expects)."""
    return b"".join(sig for _, sig in sorted(signatures.items(), key=lambda item: int(item[0], 16)))


def verify(signable: SignableMessage, packed: bytes, owners: list[str], threshold: int) -> str | None:
    """Check ``packed`` offline as Safe 1.4.1's ``checkNSignatures`` does for typed-data signatures:
    the first ``threshold`` 65-byte signatures, each by a current owner, owners strictly ascending.
    Returns None when valid, else why not. Contract signatures (v = 0), pre-approved hashes (v = 1) and
    ``eth_sign`` signatures (v > 30) are not made by this tool and are reported as not verifiable here."""
    if threshold < 1:
        return "the Safe has no threshold (not set up)"
    if len(packed) < threshold * SIGNATURE_BYTES:
        have = len(packed) // SIGNATURE_BYTES
        return f"{have} owner signature{'s' if have != 1 else ''}, the Safe's threshold is {threshold}"
    members = {o.lower() for o in owners}
    last = 0
    for i in range(threshold):
        sig = packed[i * SIGNATURE_BYTES : (i + 1) * SIGNATURE_BYTES]
        if sig[64] not in (27, 28):
            return f"signature {i + 1} is of Safe type v={sig[64]}, which is not checked offline"
        owner = recover(signable, sig)
        if owner is None:
            return f"signature {i + 1} is malformed"
        if owner.lower() not in members:
            return f"signature {i + 1} is by {owner}, not an owner of the Safe"
        if int(owner, 16) <= last:
            return "the owners' signatures are not in ascending owner order (or one owner signed twice)"
        last = int(owner, 16)
    return None


# ---------------------------------------------------------------------------------------------------
# The contracts (deployment and reads go through Ape; the artifacts are the npm package's build output)
# ---------------------------------------------------------------------------------------------------

_ARTIFACT_PATHS = {
    "Safe": "Safe.sol/Safe.json",
    "SafeProxyFactory": "proxies/SafeProxyFactory.sol/SafeProxyFactory.json",
    "CompatibilityFallbackHandler": "handler/CompatibilityFallbackHandler.sol/CompatibilityFallbackHandler.json",
}


def artifact(name: str) -> dict:
    """The Hardhat build artifact (``abi``, ``bytecode``) of one Safe contract from node_modules."""
    from ledger.errors import LedgerError

    path = ARTIFACTS / _ARTIFACT_PATHS[name]
    try:
        return json.loads(path.read_text())
    except OSError:
        raise LedgerError(
            f"{SAFE_PACKAGE} {SAFE_VERSION} is not installed ({path} is missing); run `make node_modules`"
        ) from None


def contract_type(name: str):
    from ethpm_types import ContractType

    art = artifact(name)
    return ContractType.model_validate(
        {"contractName": name, "abi": art["abi"], "deploymentBytecode": {"bytecode": art["bytecode"]}}
    )


def abi_of(name: str) -> list:
    return artifact(name)["abi"]


def checksum(address: str) -> str:
    return to_checksum_address(address)


def store_path(data_dir: Path) -> Path:
    return Path(data_dir) / "safes.json"
