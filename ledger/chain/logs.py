"""Fast, paged event-log reading: raw ``eth_getLogs`` decoded with eth-abi.

Decoding through per-event objects (web3's or Ape's) is 5-20x slower than this; the ledger's reports and
the audit read every settlement log, so this is the path they use. Ranges are fetched in pages of at
most ``page_size`` blocks, so providers that cap ``eth_getLogs`` ranges work; a page the node refuses
(a JSON-RPC error, as providers answer "range too large" or "too many results") is halved and retried,
down to a single block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi.grammar import TupleType
from eth_abi.grammar import parse as parse_abi_type
from eth_utils import keccak, to_checksum_address

DEFAULT_PAGE_SIZE = 50_000
FIRST_PAGE = 128  # blocks of the first page when pages are sized by what they hold (``weight``)
AUDIT_PAGE_WEIGHT = 200_000  # about 100 settlement batches of 1,000 events (some 25 MB of JSON) per page


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
            values[name] = word(topic) if word is not None and len(topic) == 32 else _checksummed(
                kind, abi_decode([kind], topic)[0])  # fmt: skip
        if self.data:
            fast = _fast_decode(self.data, data) if self.simple else None
            if fast is not None:
                values.update(fast)
                return values
            decoded = abi_decode([kind for _, kind in self.data], data)
            for (name, kind), value in zip(self.data, decoded, strict=True):
                values[name] = _checksummed(kind, value)
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


def _checksummed(kind: str, value: Any) -> Any:
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


def _hex_to_bytes(value: str | bytes) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return bytes.fromhex(value[2:] if value.startswith("0x") else value)


class LogReader:
    """Reads a contract's events by name with raw RPC calls."""

    def __init__(self, request: Callable[[str, list], Any], address: str, abi: list[dict]):
        self._request = request
        self.address = address
        self.pages = 0  # eth_getLogs requests answered
        self.refused = 0  # pages the node refused (then halved)
        self.specs = {item["name"]: EventSpec.from_abi(item) for item in abi if item.get("type") == "event"}
        self._by_topic = {spec.topic0: spec for spec in self.specs.values()}

    def topic(self, name: str) -> bytes:
        return self.specs[name].topic0

    def read(
        self,
        names: list[str],
        from_block: int,
        to_block: int,
        *,
        topic1: list[bytes] | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        weight: int | None = None,
    ) -> Iterator[Log]:
        """Every log of the named events in ``[from_block, to_block]``, in chain order.

        ``weight``: bound each response by what it holds, not only by blocks: pages start at
        ``FIRST_PAGE`` blocks and are resized after each so that one holds about ``weight`` units (50
        per log plus one per array item: a settlement batch of 1,000 events is about 2,050), never more
        than ``page_size`` blocks. Without it, pages are ``page_size`` blocks (halved when refused)."""
        topics: list[Any] = [["0x" + self.specs[n].topic0.hex() for n in names]]
        if topic1:
            topics.append(["0x" + t.hex() for t in topic1])
        from ledger.chain.rpc import RpcError

        start = from_block
        page = max(1, page_size if weight is None else min(page_size, FIRST_PAGE))
        while start <= to_block:
            end = min(to_block, start + page - 1)
            try:
                raw = self._request(
                    "eth_getLogs",
                    [{"address": self.address, "fromBlock": hex(start), "toBlock": hex(end), "topics": topics}],
                )
            except RpcError:
                if end == start:
                    raise
                self.refused += 1
                page = max(1, (end - start + 1) // 2)
                continue
            self.pages += 1
            held = 0
            for item in raw:
                log = None if item.get("removed") else self.decode(item)
                if log is not None:
                    if weight is not None:
                        held += 50 + sum(len(v) for v in log.args.values() if isinstance(v, tuple | list))
                    yield log
            start = end + 1
            if weight is not None:
                if held > weight:
                    page = max(1, page * weight // held)
                elif held < weight // 4:
                    page = min(max(1, page_size), page * 2)

    def decode(self, item: dict) -> Log | None:
        """One raw log (from ``eth_getLogs`` or a receipt) of this contract's known events, or None."""
        if not item.get("topics") or item.get("address", self.address).lower() != self.address.lower():
            return None
        topic_bytes = [_hex_to_bytes(t) for t in item["topics"]]
        spec = self._by_topic.get(topic_bytes[0])
        if spec is None:
            return None
        return Log(
            event=spec.name,
            block=int(item["blockNumber"], 16) if isinstance(item["blockNumber"], str) else item["blockNumber"],
            tx=item["transactionHash"]
            if isinstance(item["transactionHash"], str)
            else "0x" + bytes(item["transactionHash"]).hex(),
            index=int(item["logIndex"], 16) if isinstance(item["logIndex"], str) else item["logIndex"],
            args=spec.decode(topic_bytes, _hex_to_bytes(item["data"])),
        )
