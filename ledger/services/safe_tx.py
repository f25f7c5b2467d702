"""Safe transactions signed on several machines: a file that travels from owner to owner.

A command that acts for a role held by a Safe (``--safe ops``) signs and sends at once when one
operator holds enough owner keys (:class:`ledger.services.safes.SafeActor`). When the owners sit on
different machines, the same command with ``--export FILE`` writes the Safe transactions it would send
(one per call or batch, at consecutive Safe nonces) to FILE, signed by the owners given with
``--account`` (none is fine). Each owner then adds a signature on their own machine with
``ledger safe sign FILE --account OWNER`` and, once the Safe's threshold is reached, anyone runs
``ledger safe exec FILE --account ACCOUNT`` (or the last signer, with ``sign --exec``).

The file (JSON, ``"format": "ledger-safe-tx/1"``)::

    {"format": "ledger-safe-tx/1", "chain_id": 31337, "ledger": "0x...", "safe": "0x...",
     "block": 120, "command": "me import mes.csv",
     "transactions": [{"to": "0x...", "value": "0", "data": "0x...", "operation": 0, "safeTxGas": "0",
                       "baseGas": "0", "gasPrice": "0", "gasToken": "0x00..", "refundReceiver": "0x00..",
                       "nonce": 7, "gas": 260000, "safeTxHash": "0x...",
                       "signatures": [{"owner": "0x...", "signature": "0x..."}]}]}

A file is anyone's text: everything in it is checked on reading, against itself and the chain, and
the first problem refuses the whole file with one line naming it (nothing is signed or sent): another
chain, ledger or Safe than this deployment's; a transaction that is not a plain call of one of the
ledger's functions (another contract, value, DELEGATECALL, refunds); a ``safeTxHash`` that its fields
do not give (a tampered transaction); a signature that does not recover to the owner it names (made
for another Safe, chain, nonce or content); an owner given twice; a signer that is not an owner of the
Safe now. ``command`` and the ``gas`` figures are hints: what owners see before signing is decoded from
the data itself.

Exactly once: a Safe runs each nonce once. ``exec`` skips a transaction whose nonce has been used by
this very transaction (its ``ExecutionSuccess`` log carries the ``safeTxHash``), so running it again
after a kill sends only the rest; a nonce taken by another Safe transaction makes the file void.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address

from ledger.chain import eip712
from ledger.chain import safe as safe_lib
from ledger.errors import InputError, LedgerError

if TYPE_CHECKING:
    from ledger.chain.reader import LedgerReader
    from ledger.chain.writer import LedgerWriter

FORMAT = "ledger-safe-tx/1"
EXECUTION_SUCCESS = "0x" + keccak(text="ExecutionSuccess(bytes32,uint256)").hex()
_TX_FIELDS = ("to", "value", "data", "operation", "safeTxGas", "baseGas", "gasPrice", "gasToken",
              "refundReceiver", "nonce", "gas", "safeTxHash", "signatures")  # fmt: skip


class Exported(Exception):  # noqa: N818 - control flow, not an error: the call was written, not sent
    """Raised by :meth:`SafeExporter.execute` once a single call is recorded (nothing is sent)."""


@dataclass
class PendingTx:
    tx: safe_lib.SafeTx
    gas: int  # the inner call's gas limit, as estimated when exported (a hint)
    signatures: dict[str, bytes] = field(default_factory=dict)  # owner (checksummed) -> 65 bytes

    def label(self, index: int) -> str:
        return f"transaction {index + 1} (Safe nonce {self.tx.nonce})"


@dataclass
class SafeTxFile:
    chain_id: int
    ledger: str
    safe: str
    block: int
    command: str
    transactions: list[PendingTx]
    me_count: int | None = None  # the ledger's ME count at export (registerMEs batches name parents by id)

    def to_json(self) -> dict:
        zero = safe_lib.ZERO
        return {
            "format": FORMAT, "chain_id": self.chain_id, "ledger": self.ledger, "safe": self.safe,
            "block": self.block, "command": self.command,
            **({"me_count": self.me_count} if self.me_count is not None else {}),
            "transactions": [
                {"to": p.tx.to, "value": str(p.tx.value), "data": "0x" + p.tx.data.hex(),
                 "operation": p.tx.operation, "safeTxGas": "0", "baseGas": "0", "gasPrice": "0",
                 "gasToken": zero, "refundReceiver": zero, "nonce": p.tx.nonce, "gas": p.gas,
                 "safeTxHash": "0x" + p.tx.hash(self.chain_id, self.safe).hex(),
                 "signatures": [{"owner": o, "signature": "0x" + s.hex()}
                                for o, s in sorted(p.signatures.items(), key=lambda i: int(i[0], 16))]}
                for p in self.transactions
            ],
        }  # fmt: skip

    def save(self, path: Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, path)

    def hashes(self) -> list[bytes]:
        return [p.tx.hash(self.chain_id, self.safe) for p in self.transactions]


# -- reading (every check that needs no chain) ----------------------------------------------------------


def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise InputError(f"the key {twice[0]!r} appears twice in one object")
    return dict(pairs)


def _address(value, what: str) -> str:
    if not isinstance(value, str) or len(value) != 42 or value[:2] != "0x":
        raise InputError(f"{what} is not an address")
    try:
        int(value, 16)
    except ValueError:
        raise InputError(f"{what} is not an address") from None
    return to_checksum_address(value)


def _int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InputError(f"{what} must be a whole number")
    try:
        number = int(value) if isinstance(value, int) else int(value, 10)
    except ValueError:
        raise InputError(f"{what} must be a whole number") from None
    if number < 0 or number >= 2**256:
        raise InputError(f"{what} is out of range")
    return number


def _hex(value, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str) or value[:2] != "0x":
        raise InputError(f"{what} must be 0x-prefixed hex")
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        raise InputError(f"{what} is not valid hex") from None
    if size is not None and len(raw) != size:
        raise InputError(f"{what} must be {size} bytes, got {len(raw)}")
    return raw


def parse(text: str) -> SafeTxFile:
    """A Safe transaction file, checked against itself: the fields, each ``safeTxHash`` against its
    fields, each signature against the owner it names, no owner twice. InputError names the first
    problem (without the file name: the caller adds it)."""
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except ValueError as err:
        raise InputError(f"not a Safe transaction file (not JSON: {err})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise InputError(f'not a Safe transaction file (no "format": "{FORMAT}")')
    extra = sorted(set(raw) - {"format", "chain_id", "ledger", "safe", "block", "command", "me_count", "transactions"})
    if extra:
        raise InputError(f"unknown field {extra[0]!r}")
    chain_id = _int(raw.get("chain_id"), "chain_id")
    ledger = _address(raw.get("ledger"), "ledger")
    safe = _address(raw.get("safe"), "safe")
    block = _int(raw.get("block", 0), "block")
    command = raw.get("command", "")
    if not isinstance(command, str):
        raise InputError("command must be text")
    items = raw.get("transactions")
    if not isinstance(items, list) or not items:
        raise InputError("no transactions")
    pending: list[PendingTx] = []
    for i, item in enumerate(items):
        where = f"transaction {i + 1}"
        if not isinstance(item, dict):
            raise InputError(f"{where} is not an object")
        unknown = sorted(set(item) - set(_TX_FIELDS))
        if unknown:
            raise InputError(f"{where}: unknown field {unknown[0]!r}")
        to = _address(item.get("to"), f"{where}: to")
        value = _int(item.get("value", "0"), f"{where}: value")
        data = _hex(item.get("data"), f"{where}: data")
        operation = _int(item.get("operation", 0), f"{where}: operation")
        nonce = _int(item.get("nonce"), f"{where}: nonce")
        where = f"transaction {i + 1} (Safe nonce {nonce})"
        if operation != 0:
            raise InputError(f"{where}: operation {operation} (DELEGATECALL) is refused: the ledger sends only calls")
        if value:
            raise InputError(f"{where}: value {value} is refused: the ledger's calls send no ether")
        for name in ("safeTxGas", "baseGas", "gasPrice"):
            if _int(item.get(name, "0"), f"{where}: {name}"):
                raise InputError(f"{where}: {name} must be 0 (the ledger's Safe transactions pay no refunds)")
        for name in ("gasToken", "refundReceiver"):
            if int(_address(item.get(name, safe_lib.ZERO), f"{where}: {name}"), 16):
                raise InputError(f"{where}: {name} must be the zero address (no refunds)")
        gas = _int(item.get("gas", 0), f"{where}: gas")
        tx = safe_lib.SafeTx(to=to, data=data, nonce=nonce)
        claimed = _hex(item.get("safeTxHash"), f"{where}: safeTxHash", 32)
        if claimed != tx.hash(chain_id, safe):
            raise InputError(
                f"{where}: its safeTxHash 0x{claimed.hex()} is not the hash of its fields for this Safe and "
                f"chain (the transaction was changed after it was exported)"
            )
        if pending and nonce != pending[-1].tx.nonce + 1:
            raise InputError(f"{where}: nonces must follow each other (the one before is {pending[-1].tx.nonce})")
        signable = tx.message(chain_id, safe)
        signatures: dict[str, bytes] = {}
        entries = item.get("signatures", [])
        if not isinstance(entries, list):
            raise InputError(f"{where}: signatures must be a list")
        for entry in entries:
            if not isinstance(entry, dict) or set(entry) != {"owner", "signature"}:
                raise InputError(f'{where}: each signature must be {{"owner": ..., "signature": ...}}')
            owner = _address(entry["owner"], f"{where}: owner")
            signature = _hex(entry["signature"], f"{where}: signature of {owner}", safe_lib.SIGNATURE_BYTES)
            if owner in signatures:
                raise InputError(f"{where}: owner {owner} signed twice (a duplicate owner)")
            recovered = safe_lib.recover(signable, signature)
            if recovered is None or recovered != owner:
                raise InputError(
                    f"{where}: the signature given for {owner} is not that owner's signature of this Safe "
                    f"transaction (made by {recovered or 'nobody'}: for another Safe, chain, nonce or content)"
                )
            signatures[owner] = signature
        pending.append(PendingTx(tx, gas, signatures))
    me_count = _int(raw["me_count"], "me_count") if "me_count" in raw else None
    return SafeTxFile(chain_id, ledger, safe, block, command, pending, me_count)


def load(path: Path) -> SafeTxFile:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"{path}: cannot read it ({err.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a Safe transaction file (not UTF-8 text)") from None
    try:
        return parse(text)
    except InputError as err:
        raise InputError(f"{path}: {err}") from None


def merge(files: list[tuple[Path, SafeTxFile]]) -> SafeTxFile:
    """Several copies of one file signed by different owners (in parallel): the union of their
    signatures. Copies of different transactions are refused."""
    (first_path, first), *rest = files
    for path, other in rest:
        same = (other.chain_id, other.ledger, other.safe, other.hashes()) == (
            first.chain_id, first.ledger, first.safe, first.hashes())  # fmt: skip
        if not same:
            raise InputError(f"{path}: not the same Safe transactions as {first_path}; give copies of one file")
        for mine, theirs in zip(first.transactions, other.transactions, strict=True):
            mine.signatures.update(theirs.signatures)
    return first


# -- checks against the chain ----------------------------------------------------------------------------


def check(chain: LedgerReader, record, f: SafeTxFile, safe) -> None:
    """``f`` belongs to this deployment and every signature is by a current owner of ``safe``."""
    if f.chain_id != chain.chain_id:
        raise InputError(f"the file is for chain {f.chain_id}; this chain is {chain.chain_id}")
    if f.ledger.lower() != record.ledger.lower():
        raise InputError(f"the file is for the ledger at {f.ledger}; this deployment's is {record.ledger}")
    selectors = {fn.selector: name for name, fn in chain.abi.functions.items()}
    for i, p in enumerate(f.transactions):
        if p.tx.to.lower() != record.ledger.lower():
            raise InputError(f"{p.label(i)}: it calls {p.tx.to}, not the ledger; refused")
        if p.tx.data[:4] not in selectors:
            raise InputError(f"{p.label(i)}: its data calls no function of the ledger (0x{p.tx.data[:4].hex()})")
        for owner in p.signatures:
            if not safe.is_owner(owner):
                raise InputError(f"{p.label(i)}: {owner} signed it but is not an owner of {safe.label()}")


def executed(chain: LedgerReader, f: SafeTxFile) -> set[bytes]:
    """The ``safeTxHash`` of every transaction of ``f`` the Safe has run (its ``ExecutionSuccess`` logs)."""
    mine = ["0x" + h.hex() for h in f.hashes()]
    head = int(chain.rpc.request("eth_blockNumber"), 16)
    start = min(f.block, head)  # the file's block is a hint: never past the chain's head
    logs = chain.rpc.request(
        "eth_getLogs",
        [{"address": f.safe, "topics": [EXECUTION_SUCCESS, mine], "fromBlock": hex(start), "toBlock": hex(head)}],
    )
    ran = set()
    for log in logs:
        topics = log.get("topics", [])
        if len(topics) > 1:  # Safe 1.4.1 indexes txHash
            ran.add(bytes.fromhex(topics[1][2:]))
        else:
            ran.add(bytes.fromhex(log["data"][2:66]))
    return ran & set(f.hashes())


def describe(chain: LedgerReader, record, p: PendingTx) -> str:
    """The call of ``p`` decoded from its data (never from the file's hints)."""
    target = "ledger"
    abi = chain.abi_json
    selector = p.tx.data[:4]
    for item in abi:
        if item.get("type") != "function":
            continue
        from ledger.chain.codec import canonical_type

        types = [canonical_type(i) for i in item["inputs"]]
        if keccak(text=f"{item['name']}({','.join(types)})")[:4] != selector:
            continue
        try:
            values = abi_decode(types, p.tx.data[4:])
        except Exception:  # noqa: BLE001 - data that does not decode is shown as such
            break
        args = ", ".join(
            f"{i['name'] or f'arg{n}'}={_show(v)}" for n, (i, v) in enumerate(zip(item["inputs"], values, strict=True))
        )
        return f"{target}.{item['name']}({args})"
    return f"{target}: unknown call 0x{p.tx.data.hex()[:64]}"


def _show(value) -> str:
    from ledger.names import shown

    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, str):
        if value[:2] == "0x" and len(value) == 42:
            return to_checksum_address(value)
        return shown(value, quote=True)
    return str(value)


@dataclass
class Status:
    done: list[int]  # indexes already run by the Safe
    todo: list[int]
    valid: dict[int, dict[str, bytes]]  # index -> current owners' signatures
    void: str = ""  # why the file can no longer run (a nonce taken by another transaction)


def status(chain: LedgerReader, f: SafeTxFile, safe) -> Status:
    ran = executed(chain, f)
    hashes = f.hashes()
    done, todo = [], []
    void = ""
    for i, p in enumerate(f.transactions):
        if hashes[i] in ran:
            done.append(i)
        elif p.tx.nonce < safe.nonce:
            void = (f"{p.label(i)}: the Safe's nonce is {safe.nonce}; nonce {p.tx.nonce} was used by another "
                    f"Safe transaction, so this file can no longer run (export it again)")  # fmt: skip
            todo.append(i)
        else:
            todo.append(i)
    valid = {i: {o: s for o, s in p.signatures.items() if safe.is_owner(o)} for i, p in enumerate(f.transactions)}
    return Status(done, todo, valid, void)


def sign(chain: LedgerReader, f: SafeTxFile, safe, account) -> int:
    """Add ``account``'s signature (an owner of ``safe``) to every transaction not yet run; how many."""
    if not safe.is_owner(account.address):
        raise InputError(
            f"--account {account.address} is not an owner of {safe.label()} (owners: {', '.join(safe.owners)})"
        )
    st = status(chain, f, safe)
    if st.void:
        raise LedgerError(st.void)
    if not st.todo:
        raise LedgerError("every transaction of the file has run already; nothing to sign")
    added = 0
    for i in st.todo:
        p = f.transactions[i]
        owner = to_checksum_address(account.address)
        if owner in p.signatures:
            continue
        p.signatures[owner] = eip712.sign(account, p.tx.message(f.chain_id, f.safe))
        added += 1
    return added


def missing(f: SafeTxFile, st: Status, safe) -> str:
    """Why the transactions left cannot run yet (too few current owners' signatures), or ""."""
    for i in st.todo:
        have = len(st.valid[i])
        if have < safe.threshold:
            signed = ", ".join(st.valid[i]) or "none"
            return (f"{f.transactions[i].label(i)}: {have} of {safe.threshold} owner signatures of {safe.label()} "
                    f"(signed: {signed}); more owners run `ledger safe sign FILE --account OWNER`")  # fmt: skip
    return ""


def execute(chain: LedgerWriter, record, f: SafeTxFile, safe, sender, progress=None) -> list[tuple[int, object]]:
    """Run every transaction of ``f`` not yet run, in nonce order, sent by ``sender`` (any account).
    Everything is checked before the first is sent: the threshold of current owners' signatures for
    each, the Safe's nonce, and the first call simulated from the Safe. Returns (index, receipt)."""
    st = status(chain, f, safe)
    if st.void:
        raise LedgerError(st.void)
    if not st.todo:
        return []
    why = missing(f, st, safe)
    if why:
        raise LedgerError(why)
    first = f.transactions[st.todo[0]]
    if first.tx.nonce != safe.nonce:
        raise LedgerError(
            f"{first.label(st.todo[0])}: the Safe's nonce is {safe.nonce}; the Safe transactions before nonce "
            f"{first.tx.nonce} must run first"
        )
    from ledger.chain.writer import contract_container

    contract = contract_container(safe_lib.contract_type("Safe")).at(safe.address)
    done: list[tuple[int, object]] = []
    try:
        for i in st.todo:
            _execute_one(chain, f, safe, st, i, contract, sender, done, progress)
    except LedgerError as err:
        if not done:
            raise
        ran = ", ".join(str(f.transactions[i].tx.nonce) for i, _ in done)
        raise LedgerError(
            f"ran Safe nonce{'s' if len(done) != 1 else ''} {ran}, then {f.transactions[i].label(i)} was refused: "
            f"{err}; nothing more sent (`ledger safe exec` again skips what ran)"
        ) from None
    return done


def _execute_one(
    chain: LedgerWriter, f: SafeTxFile, safe, st: Status, i: int, contract, sender, done: list, progress
) -> None:
    """Check, simulate from the Safe and send one Safe transaction of ``f`` (index ``i``)."""
    p = f.transactions[i]
    _check_me_count(chain, f, i)
    chain.transactor.simulate({"from": safe.address, "to": p.tx.to, "data": "0x" + p.tx.data.hex()})
    chosen = dict(sorted(st.valid[i].items(), key=lambda item: int(item[0], 16))[: safe.threshold])
    packed = safe_lib.pack(chosen)
    why = safe_lib.verify(p.tx.message(f.chain_id, f.safe), packed, list(safe.owners), safe.threshold)
    if why:  # pragma: no cover - status() keeps only current owners' signatures that recover
        raise LedgerError(f"{p.label(i)}: {why}")
    receipt = chain.transact(contract.execTransaction, *p.tx.exec_args(packed), sender=sender)
    done.append((i, receipt))
    if progress:
        progress(i, receipt)


def _check_me_count(chain: LedgerReader, f: SafeTxFile, index: int) -> None:
    """A ``registerMEs`` batch names the parents of earlier rows by the ids they were to get: refuse it
    when the ledger's ME count is not what the export expected (another ME registered since: those ids
    would point at other MEs)."""
    register = chain.abi["registerMEs"]
    p = f.transactions[index]
    if p.tx.data[:4] != register.selector:
        return
    expected = f.me_count
    if expected is None:
        raise LedgerError(f"{p.label(index)}: registers MEs but the file has no me_count; export it again")
    for earlier in f.transactions[:index]:
        if earlier.tx.data[:4] == register.selector:
            expected += len(abi_decode(list(register.inputs), earlier.tx.data[4:])[0])
    count = chain.me_count()
    if count != expected:
        raise LedgerError(
            f"{p.label(index)}: the ledger has {count} MEs, the export expected {expected} at this point (MEs "
            f"registered since would shift the parent ids in the file); export the import again"
        )


# -- exporting instead of sending ------------------------------------------------------------------------


class SafeExporter:
    """A role held by a Safe whose calls are written to a file instead of sent (``--export FILE``):
    stands in for an account where a service takes one, like :class:`ledger.services.safes.SafeActor`.
    A single call (``execute``) is simulated from the Safe, recorded, and :class:`Exported` raised; a
    pipeline records every batch at consecutive Safe nonces. :meth:`write` signs with the owners given
    and writes the file."""

    def __init__(self, chain: LedgerWriter, record, safe, owners: list, path: Path, command: str):
        problems = [
            f"--account {a.address} is not an owner of {safe.label()}" for a in owners if not safe.is_owner(a.address)
        ]
        if problems:
            raise InputError(problems)
        self.chain = chain
        self.record = record
        self.safe = safe
        self.owners = list({a.address.lower(): a for a in owners}.values())
        self.path = Path(path)
        self.command = command
        self.calls: list[tuple[str, bytes, int]] = []
        self.block = int(chain.rpc.request("eth_blockNumber"), 16)
        self.me_count = chain.me_count()

    @property
    def address(self) -> str:
        return self.safe.address

    def execute(self, to: str, data: bytes):
        self.chain.transactor.simulate({"from": self.safe.address, "to": to, "data": "0x" + bytes(data).hex()})
        self.calls.append((to, bytes(data), 0))
        raise Exported()

    def pipeline(self, chain: LedgerWriter, window: int | None = None):
        return _RecordingPipeline(self)

    def write(self) -> SafeTxFile:
        nonce = self.safe.nonce
        pending = [PendingTx(safe_lib.SafeTx(to=to, data=data, nonce=nonce + k), gas)
                   for k, (to, data, gas) in enumerate(self.calls)]  # fmt: skip
        f = SafeTxFile(self.chain.chain_id, self.record.ledger, self.safe.address, self.block, self.command,
                       pending, self.me_count)  # fmt: skip
        for owner in self.owners:
            for p in pending:
                p.signatures[to_checksum_address(owner.address)] = eip712.sign(owner, p.tx.message(f.chain_id, f.safe))
        f.save(self.path)
        return f


class _RecordingPipeline:
    """Stands in for :class:`ledger.chain.transact.Pipeline`: records, sends nothing, nothing in flight."""

    def __init__(self, exporter: SafeExporter):
        self.exporter = exporter
        self.inflight: dict = {}

    def submit(self, key, to: str, data: bytes, gas: int):
        self.exporter.calls.append((to, bytes(data), gas))
        return []

    def poll(self, *, wait: bool):
        return []

    def drain(self):
        return []

    def reset_nonce(self) -> None:
        pass
