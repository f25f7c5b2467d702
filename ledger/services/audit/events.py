"""The ledger's events written out for the audit, and the selectors it reads transaction input with.

The audit depends on the chain alone: these signatures are not read from the compiled artifacts (tests
compare them with the compiled ABI). :func:`event_abi` turns them into the JSON ABI that
:class:`ledger.chain.reader.LogReader` decodes logs with.
"""

from __future__ import annotations

from eth_abi import decode as abi_decode
from eth_utils import keccak

# The ledger's events, written out so the audit depends on the chain alone (tests compare them with
# the compiled ABI). Tuple types are spelled as ``(...)``.
EVENT_SIGNATURES = [
    "MERegistered(uint32 indexed meId, string name, address payout, address signer, uint32 parent)",
    "MEUpdated(uint32 indexed meId, address payout, address signer, uint32 nonce)",
    "MEDissolved(uint32 indexed meId)",
    "AgreementProposed(bytes32 indexed agreementId, uint32 indexed version, bytes32 termsHash,"
    " (address,uint32[],uint16[],(uint128,uint16[])[],uint128,uint16[],bytes32[]) terms, address proposer)",
    "AgreementActivated(bytes32 indexed agreementId, uint32 indexed version, bytes[] signatures)",
    "AgreementEnded(bytes32 indexed agreementId, uint32 indexed version, bytes[] signatures)",
    "RevenueSettled(bytes32 indexed agreementId, uint32 indexed version, uint64 firstSeq, bytes32[] refs,"
    " uint256[] entries)",
    "PartiesCredited(bytes32 indexed agreementId, uint32 indexed period, uint32 version, uint64 firstSeq,"
    " uint64 count, uint256[] baseCredits, uint256[] excessCredits)",
    "PartiesCreditedByTier(bytes32 indexed agreementId, uint32 indexed period, uint32 version, uint64 firstSeq,"
    " uint64 count, uint256[] credits)",
    "NestedSettled(bytes32 indexed agreementId, uint64 firstSeq, uint32 indexed meId, bytes32 indexed inner,"
    " uint64 innerSeq, uint256 amount)",
    "RevenueReversed(bytes32 indexed agreementId, uint32 indexed version, uint64 firstSeq, bytes32[] refs,"
    " uint256[] entries, bytes32[] originals)",
    "PartiesDebited(bytes32 indexed agreementId, uint32 indexed period, uint32 version, uint64 firstSeq,"
    " uint64 count, uint256[] baseDebits, uint256[] excessDebits)",
    "PartiesDebitedByTier(bytes32 indexed agreementId, uint32 indexed period, uint32 version, uint64 firstSeq,"
    " uint64 count, uint256[] debits)",
    "DebtIncurred(uint32 indexed meId, address indexed token, uint256 amount)",
    "DebtNetted(uint32 indexed meId, address indexed token, uint256 amount)",
    "PeriodClosed(bytes32 indexed agreementId, uint32 indexed period, uint128 revenue)",
    "Withdrawn(uint32 indexed meId, address indexed token, address to, uint256 amount)",
    "PayoutSkipped(uint32 indexed meId, address indexed token, address payout, uint256 amount)",
    "RoleGranted(bytes32 indexed role, address indexed account, address indexed sender)",
    "RoleRevoked(bytes32 indexed role, address indexed account, address indexed sender)",
]

UPDATE_ME_SELECTOR = keccak(text="updateME(uint32,address,address,bytes)")[:4]
ROLE_NAMES = {
    b"\0" * 32: "admin",
    keccak(text="PLATFORM_ROLE"): "platform",
    keccak(text="FINANCE_ROLE"): "finance",
}


def event_abi() -> list[dict]:
    """The JSON ABI of :data:`EVENT_SIGNATURES`, for :class:`ledger.chain.reader.LogReader`."""
    abi = []
    for signature in EVENT_SIGNATURES:
        name, _, rest = signature.partition("(")
        inputs = []
        for param in _split_params(rest[:-1]):
            words = param.split()
            inputs.append({"type": words[0], "name": words[-1], "indexed": "indexed" in words[1:-1]})
        abi.append({"type": "event", "name": name, "inputs": inputs, "anonymous": False})
    return abi


def _split_params(text: str) -> list[str]:
    params, depth, current = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            params.append(current.strip())
            current = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        current += ch
    if current.strip():
        params.append(current.strip())
    return params


SAFE_EXEC_SELECTOR = keccak(
    text="execTransaction(address,uint256,bytes,uint8,uint256,uint256,uint256,address,address,bytes)"
)[:4]


def _through_safe(data: bytes, ledger: str) -> bytes:
    """The call a Safe's ``execTransaction`` made to the ledger (the platform role held by a Safe), else
    ``data`` as it is. The Safe call ran: the ledger's log of it is what proves it; this only finds the
    consent's bytes in the transaction's input."""
    if data[:4] != SAFE_EXEC_SELECTOR:
        return data
    try:
        to, _, inner, operation, *_ = abi_decode(
            ["address", "uint256", "bytes", "uint8", "uint256", "uint256", "uint256", "address", "address", "bytes"],
            data[4:],
        )
    except Exception:  # noqa: BLE001 - not a well-formed execTransaction: left as it is
        return data
    return bytes(inner) if operation == 0 and to.lower() == ledger.lower() else data
