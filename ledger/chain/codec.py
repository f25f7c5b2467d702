"""The one codec of the chain layer: ABI encoding and decoding with eth-abi, events, revert data,
checksummed addresses. Pure functions and small value objects: nothing here talks to a node or to Ape.

- :class:`Function` / :class:`ContractAbi`: calls encoded and decoded straight from a contract's ABI JSON.
  Ape builds a full transaction model, checks the address has code and validates every argument with
  pydantic on each call: about 40 ms per view call and 20 ms per transaction built, which dominated a
  settlement run (1,500 view calls and 200 transactions for a 20,000-event file).
- :class:`EventSpec` / :class:`Log`: events decoded from raw logs (words and arrays of words by slicing,
  5-10x faster than eth-abi's general decoder on a settlement batch's long arrays).
- :func:`revert_data`, :func:`decode_revert`, :func:`refusal`: a contract's custom error out of a node's
  answer, as :class:`ledger.errors.ContractRevert`.

The ``Terms`` of an ``AgreementProposed`` log are decoded by :mod:`ledger.terms` (``Terms.from_abi``),
which owns the terms.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_abi.grammar import TupleType
from eth_abi.grammar import parse as parse_abi_type
from eth_utils import keccak, to_checksum_address

from ledger.errors import ContractRevert

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def canonical_type(param: dict) -> str:
    """The canonical ABI type string of a JSON ABI parameter (tuples spelled out)."""
    kind = param["type"]
    if kind.startswith("tuple"):
        inner = ",".join(canonical_type(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


@dataclass(frozen=True)
class EventSpec:
    name: str
    topic0: bytes
    indexed: list[tuple[str, str]]  # (name, canonical type)
    data: list[tuple[str, str]]

    @classmethod
    def from_abi(cls, abi: dict) -> EventSpec:
        inputs = abi["inputs"]
        signature = f"{abi['name']}({','.join(canonical_type(i) for i in inputs)})"
        return cls(
            name=abi["name"],
            topic0=keccak(text=signature),
            indexed=[(i["name"], canonical_type(i)) for i in inputs if i.get("indexed")],
            data=[(i["name"], canonical_type(i)) for i in inputs if not i.get("indexed")],
        )

    def decode(self, topics: list[bytes], data: bytes) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for (name, kind), topic in zip(self.indexed, topics[1:], strict=True):
            word = _WORD.get(kind)
            values[name] = word(topic) if word is not None and len(topic) == 32 else checksummed(
                kind, abi_decode([kind], topic)[0])  # fmt: skip
        if self.data:
            fast = _fast_decode(self.data, data) if self.simple else None
            if fast is not None:
                values.update(fast)
                return values
            decoded = abi_decode([kind for _, kind in self.data], data)
            for (name, kind), value in zip(self.data, decoded, strict=True):
                values[name] = checksummed(kind, value)
        return values

    @property
    def simple(self) -> bool:
        """Every data field a 32-byte word type or a one-dimensional array of them (decoded by slicing)."""
        return all(_WORD.get(kind[:-2] if kind.endswith("[]") else kind) for _, kind in self.data)


def _uint(word: bytes) -> int:
    return int.from_bytes(word, "big")


def _address(word: bytes) -> str:
    return to_checksum_address(word[12:])


def _bytes32(word: bytes) -> bytes:
    return bytes(word)


def _bool(word: bytes) -> bool:
    return word != b"\0" * 32


# The word types the events use, decoded by slicing (eth-abi's general decoder is 5-10x slower on the
# long uint256[]/bytes32[] arrays of a settlement batch). Signed ints and other sizes go through eth-abi.
_WORD = {**{f"uint{n}": _uint for n in range(8, 257, 8)}, "address": _address, "bytes32": _bytes32, "bool": _bool}


def _fast_decode(fields: list[tuple[str, str]], data: bytes) -> dict[str, Any] | None:
    """ABI-decode words and arrays of words; None when the data is not laid out as expected (then the
    caller uses eth-abi, which raises on malformed data)."""
    out: dict[str, Any] = {}
    size = len(data)
    if size < 32 * len(fields):
        return None
    for i, (name, kind) in enumerate(fields):
        head = data[32 * i : 32 * i + 32]
        if not kind.endswith("[]"):
            out[name] = _WORD[kind](head)
            continue
        offset = int.from_bytes(head, "big")
        if offset % 32 or offset + 32 > size:
            return None
        length = int.from_bytes(data[offset : offset + 32], "big")
        start = offset + 32
        if start + 32 * length > size:
            return None
        word = _WORD[kind[:-2]]
        if word is _uint:
            out[name] = tuple(int.from_bytes(data[j : j + 32], "big") for j in range(start, start + 32 * length, 32))
        else:
            out[name] = tuple(word(data[j : j + 32]) for j in range(start, start + 32 * length, 32))
    return out


def checksummed(kind: str, value: Any) -> Any:
    """Addresses (also inside tuples and arrays) as checksummed strings, as Ape and web3 return them."""
    if "address" not in kind:
        return value
    return _fix_addresses(parse_abi_type(kind), value)


def _fix_addresses(node: Any, value: Any) -> Any:
    if node.arrlist:
        inner = node.item_type
        return tuple(_fix_addresses(inner, v) for v in value)
    if isinstance(node, TupleType):
        return tuple(_fix_addresses(c, v) for c, v in zip(node.components, value, strict=True))
    return to_checksum_address(value) if node.base == "address" else value


@dataclass(frozen=True)
class Log:
    event: str
    block: int
    tx: str
    index: int
    args: dict[str, Any]


def hex_to_bytes(value: str | bytes) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return bytes.fromhex(value[2:] if value.startswith("0x") else value)


def _named(item: dict, value: Any) -> Any:
    """A decoded value with structs as dicts (by component name) and addresses checksummed."""
    kind = item["type"]
    if kind.startswith("tuple"):
        if kind.endswith("]"):
            inner = {**item, "type": kind[: kind.rindex("[")]}
            return [_named(inner, v) for v in value]
        return {c["name"]: _named(c, v) for c, v in zip(item["components"], value, strict=True)}
    if kind == "address":
        return to_checksum_address(value)
    if kind == "address[]":
        return [to_checksum_address(v) for v in value]
    return value


@dataclass(frozen=True)
class Function:
    name: str
    selector: bytes
    inputs: tuple[str, ...]
    outputs: tuple[dict, ...]

    @classmethod
    def from_signature(cls, signature: str, output: str) -> Function:
        """A function known by its signature and one output type (``"decimals()"``, ``"uint8"``), for
        contracts whose ABI JSON the caller does not hold."""
        inputs = signature[signature.index("(") + 1 : -1]
        return cls(signature[: signature.index("(")], keccak(text=signature)[:4],
                   tuple(inputs.split(",")) if inputs else (), ({"type": output, "name": ""},))  # fmt: skip

    def encode(self, *args) -> bytes:
        return self.selector + abi_encode(list(self.inputs), list(args))

    def decode(self, data: bytes | str) -> Any:
        """The return value: a single output unwrapped, several as a tuple; structs as dicts."""
        if isinstance(data, str):
            data = bytes.fromhex(data.removeprefix("0x"))
        values = abi_decode([canonical_type(o) for o in self.outputs], data)
        named = [_named(o, v) for o, v in zip(self.outputs, values, strict=True)]
        return named[0] if len(named) == 1 else tuple(named)

    def decode_values(self, data: bytes | str) -> Any:
        """The return value as eth-abi gives it (structs as tuples), addresses checksummed."""
        if isinstance(data, str):
            data = bytes.fromhex(data.removeprefix("0x"))
        kinds = [canonical_type(o) for o in self.outputs]
        values = tuple(checksummed(k, v) for k, v in zip(kinds, abi_decode(kinds, data), strict=True))
        return values[0] if len(values) == 1 else values


class ContractAbi:
    def __init__(self, abi: list[dict]):
        self.functions: dict[str, Function] = {}
        for item in abi:
            if item.get("type") != "function" or item["name"] in self.functions:
                continue
            inputs = tuple(canonical_type(i) for i in item["inputs"])
            selector = keccak(text=f"{item['name']}({','.join(inputs)})")[:4]
            self.functions[item["name"]] = Function(item["name"], selector, inputs, tuple(item.get("outputs", ())))

    def __getitem__(self, name: str) -> Function:
        return self.functions[name]


# The ERC-20 surface the ledger reads from any settlement token.
ERC20_ABI = [
    {"type": "function", "name": name, "inputs": [{"type": t, "name": f"a{i}"} for i, t in enumerate(ins)],
     "outputs": [{"type": out, "name": ""}], "stateMutability": "view"}
    for name, ins, out in (
        ("balanceOf", ["address"], "uint256"),
        ("allowance", ["address", "address"], "uint256"),
        ("decimals", [], "uint8"),
        ("symbol", [], "string"),
        ("approve", ["address", "uint256"], "bool"),
    )
]  # fmt: skip

ERC20 = ContractAbi(ERC20_ABI)


# -- compiled artifacts and reverts ------------------------------------------------------------------


def compiled_abi(name: str) -> list:
    """A contract's ABI from the project's compiled artifacts, read without starting Ape (compiled through
    Ape's project, :func:`ledger.chain.writer.project_abi`, only when the artifacts are missing)."""
    manifest = PROJECT_ROOT / ".build" / "__local__.json"
    try:
        return json.loads(manifest.read_text())["contractTypes"][name]["abi"]
    except (OSError, ValueError, KeyError):
        from ledger.chain.writer import project_abi

        return project_abi(name)


_ERRORS: dict[bytes, dict] | None = None
_LEADING_HEX = re.compile(r"0x([0-9a-fA-F]*)")


def _error_registry() -> dict[bytes, dict]:
    """Custom errors of every compiled contract by selector, to decode reverts that bubble up."""
    registry: dict[bytes, dict] = {}
    for name in ("AllianceLedger", "LedgerTestToken"):
        for item in compiled_abi(name):
            if item.get("type") == "error":
                types = ",".join(i["type"] for i in item["inputs"])
                registry[keccak(text=f"{item['name']}({types})")[:4]] = item
    return registry


def decode_revert(data: bytes) -> tuple[str, dict] | None:
    """The custom error (name and arguments) in a revert's data, or None when it is none of ours."""
    global _ERRORS
    if len(data) < 4:
        return None
    if _ERRORS is None:
        _ERRORS = _error_registry()
    item = _ERRORS.get(bytes(data[:4]))
    if item is None:
        return None
    types = [i["type"] for i in item["inputs"]]
    values = [checksummed(kind, value) for kind, value in zip(types, abi_decode(types, bytes(data[4:])), strict=True)]
    return item["name"], dict(zip((i["name"] for i in item["inputs"]), values, strict=True))


def revert_data(data: Any) -> bytes | None:
    """The revert data in a JSON-RPC error's ``data``: a hex string on Anvil, nested on Hardhat
    (``{"data": "0x...", "message": ...}``). None when there is none."""
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    return None


def refusal(err: Exception) -> ContractRevert | None:
    """The contract's custom error in a refused JSON-RPC call (:class:`ledger.chain.rpc.RpcError`), or
    None when its data holds none of ours."""
    data = revert_data(getattr(err, "data", None))
    decoded = decode_revert(data) if data else None
    return ContractRevert(*decoded) if decoded else None


def revert_data_in_message(err: Exception) -> bytes | None:
    """The revert data a provider left in the error's message: the whole message on Anvil; on Hardhat 2
    (a custom error surfaces as ContractLogicError) the hex leads the message, followed by the rest of
    the node's error text (``0x8ead4fcd...)', 'txHash': ...``)."""
    message = str(getattr(err, "message", "") or err)
    match = _LEADING_HEX.match(message)
    if match and len(match.group(1)) % 2 == 0:
        return bytes.fromhex(match.group(1))
    return None
