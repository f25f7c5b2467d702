"""EIP-712 typed data for the ledger's signatures, built off-chain so signers can sign without a node.

The domain is ``MEAllianceLedger`` version ``1`` with the chain id and the ledger's address, so a
signature is valid on one chain, for one deployment, for one agreement version only.
"""

from __future__ import annotations

from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data

from ledger.terms import EIP712_TYPES, Terms

DOMAIN_NAME = "MEAllianceLedger"
DOMAIN_VERSION = "1"

_DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


def _typed(primary: str, fields: list[dict], message: dict, chain_id: int, ledger: str, **types) -> SignableMessage:
    """The typed data of one ``primary`` struct (``fields``) in the ledger's domain; ``types``: the
    structs it refers to."""
    return encode_typed_data(
        full_message={
            "types": {"EIP712Domain": _DOMAIN_FIELDS, primary: fields, **types},
            "primaryType": primary,
            "domain": {
                "name": DOMAIN_NAME,
                "version": DOMAIN_VERSION,
                "chainId": chain_id,
                "verifyingContract": ledger,
            },  # fmt: skip
            "message": message,
        }
    )


_AGREEMENT_VERSION = [{"name": "agreementId", "type": "bytes32"}, {"name": "version", "type": "uint32"}]


def approval_message(chain_id: int, ledger: str, agreement_id: bytes, version: int, terms: Terms) -> SignableMessage:
    """What every party's signer signs to approve ``version`` of an agreement."""
    fields = [*_AGREEMENT_VERSION, {"name": "terms", "type": "Terms"}]
    message = {"agreementId": agreement_id, "version": version, "terms": terms.eip712_message()}
    return _typed("Approval", fields, message, chain_id, ledger, **EIP712_TYPES)


def termination_message(chain_id: int, ledger: str, agreement_id: bytes, version: int) -> SignableMessage:
    """What every party's signer signs to end an agreement whose version in force is ``version``."""
    message = {"agreementId": agreement_id, "version": version}
    return _typed("Termination", _AGREEMENT_VERSION, message, chain_id, ledger)


def me_update_message(chain_id: int, ledger: str, me_id: int, payout: str, signer: str, nonce: int) -> SignableMessage:
    """The consent of an ME's current signer to a new payout and signer."""
    fields = [
        {"name": "meId", "type": "uint32"},
        {"name": "payout", "type": "address"},
        {"name": "signer", "type": "address"},
        {"name": "nonce", "type": "uint32"},
    ]
    message = {"meId": me_id, "payout": payout, "signer": signer, "nonce": nonce}
    return _typed("MEUpdate", fields, message, chain_id, ledger)


def digest(message: SignableMessage) -> bytes:
    """The 32-byte hash that is signed (``_hashTypedDataV4`` on the contract side)."""
    from eth_utils import keccak

    return keccak(b"\x19" + message.version + message.header + message.body)


def sign(account, message: SignableMessage) -> bytes:
    """Sign with an Ape account (the key stays in Ape's account store); 65 bytes ``r || s || v``."""
    signature = account.sign_message(message)
    if signature is None:
        from ledger.errors import LedgerError

        raise LedgerError(f"account {account.address} declined to sign")
    # Ape keeps r and s as minimal big-endian bytes: pad them, or 1 signature in 128 comes out short.
    return bytes(signature.r).rjust(32, b"\0") + bytes(signature.s).rjust(32, b"\0") + bytes([signature.v])


def recover(message: SignableMessage, signature: bytes) -> str | None:
    """The address that made ``signature`` over ``message``, or None for a malformed signature."""
    try:
        return Account.recover_message(message, signature=signature)
    except Exception:  # noqa: BLE001 - any malformed signature recovers to nobody
        return None
