"""Safes on the ledger's chain: create one (deploying the Safe contracts once per chain), name it,
read its owners and threshold, and act through it.

Names live in ``<data dir>/safes.json`` per chain id, next to the Safe contracts' addresses on that
chain, so ``--signer NAME``/``--safe NAME`` accept a Safe's name wherever an address is asked for.
Everything a Safe accepts is checked here first, offline (:func:`ledger.chain.safe.verify`), so the CLI
refuses a short or wrong set of signatures before anything is sent.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.chain import eip712
from ledger.chain import safe as safe_lib
from ledger.chain.codec import ContractAbi
from ledger.errors import InputError, LedgerError, NotFoundError

if TYPE_CHECKING:
    from ledger.chain.reader import LedgerReader
    from ledger.chain.writer import LedgerWriter

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


class SafeStore:
    """``<data dir>/safes.json``: ``{chain id: {"contracts": {...}, "safes": {name: address}}}``."""

    def __init__(self, data_dir: Path):
        self.path = safe_lib.store_path(data_dir)

    def load(self) -> dict:
        if not self.path.exists():
            return {}
        try:
            return json.loads(self.path.read_text())
        except ValueError:
            raise LedgerError(f"Safe names file {self.path} is unreadable; move it away") from None

    def save(self, data: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.path)

    def contracts(self, chain_id: int) -> dict[str, str]:
        return self.load().get(str(chain_id), {}).get("contracts", {})

    def set_contracts(self, chain_id: int, contracts: dict[str, str]) -> None:
        data = self.load()
        data.setdefault(str(chain_id), {})["contracts"] = contracts
        self.save(data)

    def safes(self, chain_id: int | None = None) -> dict[str, str]:
        data = self.load()
        if chain_id is not None:
            return dict(data.get(str(chain_id), {}).get("safes", {}))
        merged: dict[str, str] = {}
        for entry in data.values():
            merged.update(entry.get("safes", {}))
        return merged

    def put(self, chain_id: int, name: str, address: str) -> None:
        data = self.load()
        data.setdefault(str(chain_id), {}).setdefault("safes", {})[name] = address
        self.save(data)

    def address(self, name: str, chain_id: int | None = None) -> str | None:
        return self.safes(chain_id).get(name)


@dataclass(frozen=True)
class SafeInfo:
    name: str | None
    address: str
    owners: tuple[str, ...]
    threshold: int
    nonce: int

    def is_owner(self, address: str) -> bool:
        return address.lower() in {o.lower() for o in self.owners}

    def label(self) -> str:
        return f"Safe {self.name!r} ({self.address})" if self.name else f"Safe {self.address}"


_SAFE_ABI: ContractAbi | None = None


def safe_abi() -> ContractAbi:
    global _SAFE_ABI
    if _SAFE_ABI is None:
        _SAFE_ABI = ContractAbi(safe_lib.abi_of("Safe"))
    return _SAFE_ABI


def is_contract(chain: LedgerReader, address: str) -> bool:
    return chain.rpc.has_code(address)


def info(chain: LedgerReader, address: str, name: str | None = None) -> SafeInfo:
    """The Safe at ``address`` as it is now; a clear error when it is not a Safe."""
    abi = safe_abi()
    try:
        owners, threshold, nonce = chain.calls(
            [(address, abi["getOwners"], ()), (address, abi["getThreshold"], ()), (address, abi["nonce"], ())]
        )
    except LedgerError:
        raise LedgerError(f"{address} is not a Safe (it does not answer getOwners/getThreshold)") from None
    return SafeInfo(name, address, tuple(owners), int(threshold), int(nonce))


def safe_or_none(chain: LedgerReader, address: str) -> SafeInfo | None:
    """The Safe at ``address`` when it is one (a signer with code that answers as a Safe), else None."""
    if not is_contract(chain, address):
        return None
    try:
        return info(chain, address)
    except LedgerError:
        return None


def check_name(name: str) -> None:
    if not name or len(name) > 64 or set(name) - NAME_CHARS or name.startswith("0x") or name[:3] == "dev":
        raise InputError(
            f"Safe name {name!r}: use 1 to 64 lowercase letters, digits, '-' or '_' (not starting with 0x or dev)"
        )


def ensure_contracts(chain: LedgerWriter, store: SafeStore, sender) -> dict[str, str]:
    """The Safe singleton, proxy factory and fallback handler on this chain: recorded, or deployed now."""
    recorded = store.contracts(chain.chain_id)
    if recorded and all(is_contract(chain, a) for a in recorded.values()):
        return recorded
    from ledger.chain.writer import contract_container

    deployed = {}
    names = (("singleton", "Safe"), ("factory", "SafeProxyFactory"), ("handler", "CompatibilityFallbackHandler"))
    for key, name in names:
        deployed[key] = str(contract_container(safe_lib.contract_type(name)).deploy(sender=sender).address)
    store.set_contracts(chain.chain_id, deployed)
    return deployed


def create(chain: LedgerWriter, store: SafeStore, name: str, owners: list[str], threshold: int, *, sender) -> SafeInfo:
    """Deploy a Safe proxy of ``owners`` with ``threshold`` and record it as ``name``."""
    check_name(name)
    problems = []
    if len({o.lower() for o in owners}) != len(owners):
        problems.append("--owner: an owner is given twice")
    if not owners:
        problems.append("--owner: give at least one owner")
    if not 1 <= threshold <= max(1, len(owners)):
        problems.append(f"--threshold {threshold}: must be from 1 to the number of owners ({len(owners)})")
    if problems:
        raise InputError(problems)
    existing = store.address(name, chain.chain_id)
    if existing and is_contract(chain, existing):
        raise LedgerError(f"a Safe named {name!r} already exists on this chain at {existing}")
    contracts = ensure_contracts(chain, store, sender)
    from ledger.chain.writer import contract_container

    safe_abi_json = ContractAbi(safe_lib.abi_of("Safe"))
    initializer = safe_abi_json["setup"].encode(
        owners, threshold, safe_lib.ZERO, b"", contracts["handler"], safe_lib.ZERO, 0, safe_lib.ZERO
    )
    factory = contract_container(safe_lib.contract_type("SafeProxyFactory")).at(contracts["factory"])
    salt = int.from_bytes(os.urandom(8), "big")
    receipt = chain.transact(factory.createProxyWithNonce, contracts["singleton"], initializer, salt, sender=sender)
    topic = "0x" + safe_lib.keccak(text="ProxyCreation(address,address)").hex()
    address = None
    for log in receipt.logs:
        topics = [t if isinstance(t, str) else "0x" + bytes(t).hex() for t in log["topics"]]
        if topics and topics[0] == topic:
            address = safe_lib.checksum("0x" + topics[1][-40:])
    if address is None:
        raise LedgerError("the Safe proxy factory created no Safe")
    store.put(chain.chain_id, name, address)
    return info(chain, address, name)


def resolve(chain: LedgerReader, store: SafeStore, value: str, option: str = "--safe") -> SafeInfo:
    """``--safe ADDRESS|NAME``: a Safe on this chain."""
    if value[:2] in ("0x", "0X"):
        from ledger.chain.connect import checked_address

        address = checked_address(value, option)
        name = next((n for n, a in store.safes(chain.chain_id).items() if a.lower() == address.lower()), None)
    else:
        address = store.address(value, chain.chain_id)
        name = value
        if address is None:
            known = ", ".join(sorted(store.safes(chain.chain_id))) or "none"
            raise NotFoundError(f"{option} {value!r}: no Safe of that name on this chain (known: {known})")
    if not is_contract(chain, address):
        raise LedgerError(f"{option} {value}: no contract at {address} on this chain (a fresh chain?)")
    found = info(chain, address, name)
    return found


# ---------------------------------------------------------------------------------------------------
# Signing a message as a Safe (ERC-1271: approvals, terminations, ME-update consents)
# ---------------------------------------------------------------------------------------------------


def owner_signature(chain: LedgerReader, safe: SafeInfo, digest: bytes, account) -> bytes:
    """``account``'s signature of the Safe's ``SafeMessage`` over the ledger's ``digest``."""
    if not safe.is_owner(account.address):
        raise LedgerError(
            f"account {account.address} is not an owner of {safe.label()} (owners: {', '.join(safe.owners)})"
        )
    return eip712.sign(account, safe_lib.message(chain.chain_id, safe.address, digest))


def valid_owner_signatures(
    chain: LedgerReader, safe: SafeInfo, digest: bytes, stored: dict[str, bytes]
) -> dict[str, bytes]:
    """The stored owner signatures that are by a current owner of ``safe`` over ``digest`` for this Safe."""
    signable = safe_lib.message(chain.chain_id, safe.address, digest)
    valid = {}
    for owner, sig in stored.items():
        recovered = safe_lib.recover(signable, sig)
        if recovered and recovered.lower() == owner.lower() and safe.is_owner(owner):
            valid[recovered] = sig
    return valid


def packed_or_why(
    chain: LedgerReader, safe: SafeInfo, digest: bytes, stored: dict[str, bytes]
) -> tuple[bytes | None, str]:
    """The Safe's signature (threshold owner signatures, packed) or why there is none yet."""
    valid = valid_owner_signatures(chain, safe, digest, stored)
    if len(valid) < safe.threshold:
        stale = len(stored) - len(valid)
        plural = "s" if stale != 1 else ""
        note = f" ({stale} stored signature{plural} no longer count: not by a current owner)" if stale else ""
        return None, f"{len(valid)} of {safe.threshold} owner signatures of {safe.label()}{note}"
    chosen = dict(sorted(valid.items(), key=lambda item: int(item[0], 16))[: safe.threshold])
    packed = safe_lib.pack(chosen)
    signable = safe_lib.message(chain.chain_id, safe.address, digest)
    why = safe_lib.verify(signable, packed, list(safe.owners), safe.threshold)
    if why:  # pragma: no cover - the selection above only keeps signatures verify accepts
        return None, why
    return packed, ""


# ---------------------------------------------------------------------------------------------------
# Acting as a Safe (a role held by a Safe): SafeTx signed by owners, executed by the last one
# ---------------------------------------------------------------------------------------------------


def exec_transaction(chain: LedgerWriter, safe: SafeInfo, to: str, data: bytes, owners: list):
    """Sign ``to.call(data)`` as a Safe transaction with ``owners`` (Ape accounts; at least the
    threshold) and execute it, sent by the last owner. Returns the receipt."""
    return SafeActor(chain, safe, owners).execute(to, data)


# Gas an ``execTransaction`` adds around the call it makes: the Safe's checks, one ecrecover per owner
# signature, the nonce write and the calldata of the signatures (measured on Safe 1.4.1, with margin).
EXEC_OVERHEAD_GAS = 60_000
EXEC_GAS_PER_OWNER = 8_000


class SafeActor:
    """A role held by a Safe, acting through ``owners`` (Ape accounts, at least the threshold): every
    call becomes a Safe transaction the owners sign and the last of them sends (``execTransaction``).
    Stands in for an account where a service takes one (``.address`` is the Safe's)."""

    def __init__(self, chain: LedgerWriter, safe: SafeInfo, owners: list):
        problems = [
            f"--account {a.address} is not an owner of {safe.label()}" for a in owners if not safe.is_owner(a.address)
        ]
        unique = list({a.address.lower(): a for a in owners}.values())
        if not problems and len(unique) < safe.threshold:
            problems.append(
                f"{len(unique)} owner account{'s' if len(unique) != 1 else ''} given; {safe.label()} needs "
                f"{safe.threshold} of its owners ({', '.join(safe.owners)}): repeat --account"
            )
        if problems:
            raise InputError(problems)
        self.chain = chain
        self.safe = safe
        self.owners = unique[: safe.threshold]
        self.sender = owners[-1]

    @property
    def address(self) -> str:
        return self.safe.address

    def nonce(self) -> int:
        return int(self.chain.call(self.safe.address, safe_abi()["nonce"]))

    def exec_data(self, to: str, data: bytes, nonce: int) -> bytes:
        """``execTransaction`` calldata of ``to.call(data)`` at Safe nonce ``nonce``, signed by the owners."""
        tx = safe_lib.SafeTx(to=to, data=bytes(data), nonce=nonce)
        signable = tx.message(self.chain.chain_id, self.safe.address)
        packed = safe_lib.pack({a.address: eip712.sign(a, signable) for a in self.owners})
        return safe_abi()["execTransaction"].encode(*tx.exec_args(packed))

    def execute(self, to: str, data: bytes):
        """Run ``to.call(data)`` as the Safe: simulated from the Safe first (a revert is decoded and
        nothing is sent), then one ``execTransaction``. Returns the receipt."""
        self.chain.transactor.simulate({"from": self.safe.address, "to": to, "data": "0x" + bytes(data).hex()})
        raw = self.exec_data(to, data, self.nonce())
        from ledger.chain.writer import contract_container

        contract = contract_container(safe_lib.contract_type("Safe")).at(self.safe.address)
        return self.chain.transact(contract.execTransaction, *_decode_exec(raw), sender=self.sender)

    def pipeline(self, chain: LedgerWriter, window: int | None = None):
        return SafePipeline(self, chain.pipeline(self.sender, window))

    def gas(self, inner: int) -> int:
        return inner + EXEC_OVERHEAD_GAS + EXEC_GAS_PER_OWNER * len(self.owners)


def _decode_exec(data: bytes) -> tuple:
    from eth_abi import decode

    types = ["address", "uint256", "bytes", "uint8", "uint256", "uint256", "uint256", "address", "address", "bytes"]
    return tuple(decode(types, bytes(data[4:])))


class SafePipeline:
    """:class:`ledger.chain.transact.Pipeline` for a Safe: each submitted call becomes one Safe
    transaction (``execTransaction`` from the sending owner) at the next Safe nonce. Safe nonces are
    counted here while transactions are in flight and read from the chain again whenever none is (a
    reverted ``execTransaction`` does not use its Safe nonce, so the ones after it revert too and the
    settlement re-reads the chain, as after any failed batch)."""

    def __init__(self, actor: SafeActor, pipeline):
        self.actor = actor
        self.pipeline = pipeline
        self._safe_nonce: int | None = None

    @property
    def inflight(self):
        return self.pipeline.inflight

    def submit(self, key, to: str, data: bytes, gas: int):
        if self._safe_nonce is None or not self.pipeline.inflight:
            self._safe_nonce = self.actor.nonce()
        exec_data = self.actor.exec_data(to, data, self._safe_nonce)
        done = self.pipeline.submit(key, self.actor.address, exec_data, self.actor.gas(gas))
        self._safe_nonce += 1
        return done

    def poll(self, *, wait: bool):
        return self.pipeline.poll(wait=wait)

    def drain(self):
        return self.pipeline.drain()

    def reset_nonce(self) -> None:
        self.pipeline.reset_nonce()
        self._safe_nonce = None
