"""Read-only contract calls in bulk: many ``eth_call``s per JSON-RPC batch, decoded with eth-abi.

One HTTP round trip carries up to 500 calls (:meth:`ledger.chain.rpc.HttpRpc.batch`), so reading a view
for every ME or alliance of a large ledger costs a handful of requests instead of one per call. Nothing
here signs or sends a transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak

from ledger.chain.logs import _checksummed, canonical_type

# ERC-20 views of settlement tokens, called as "erc20.decimals", "erc20.symbol", "erc20.balanceOf".
ERC20_VIEWS = [
    {"type": "function", "name": "decimals", "inputs": [], "outputs": [{"type": "uint8", "name": ""}]},
    {"type": "function", "name": "symbol", "inputs": [], "outputs": [{"type": "string", "name": ""}]},
    {"type": "function", "name": "balanceOf", "inputs": [{"type": "address", "name": "holder"}],
     "outputs": [{"type": "uint256", "name": ""}]},
]  # fmt: skip


class ViewSpec:
    """One view function: selector, input types, output types."""

    def __init__(self, abi: dict):
        self.name = abi["name"]
        self.inputs = [canonical_type(i) for i in abi["inputs"]]
        self.outputs = [canonical_type(o) for o in abi["outputs"]]
        self.selector = keccak(text=f"{self.name}({','.join(self.inputs)})")[:4]

    def data(self, args: Sequence[Any]) -> str:
        return "0x" + (self.selector + abi_encode(self.inputs, list(args))).hex()

    def decode(self, result: str) -> Any:
        """The call's result: one value for one output (a struct comes back as a tuple)."""
        values = abi_decode(self.outputs, bytes.fromhex(result[2:] if result.startswith("0x") else result))
        values = tuple(_checksummed(kind, value) for kind, value in zip(self.outputs, values, strict=True))
        return values[0] if len(values) == 1 else values


class BatchViews:
    """Calls view functions of contracts whose ABIs it was given, many per request, at one block."""

    def __init__(self, rpc, abi: list[dict]):
        self.rpc = rpc
        self.specs = {item["name"]: ViewSpec(item) for item in abi if item.get("type") == "function"}
        self.specs.update({f"erc20.{item['name']}": ViewSpec(item) for item in ERC20_VIEWS})

    def call(self, calls: Sequence[tuple[str, str, Sequence[Any]]], *, block: int | str = "latest") -> list[Any]:
        """``[(address, function name, args), ...]`` -> the decoded results, in order (a reverted call raises
        :class:`ledger.chain.rpc.RpcError`)."""
        tag = hex(block) if isinstance(block, int) else block
        requests = [("eth_call", [{"to": to, "data": self.specs[name].data(args)}, tag]) for to, name, args in calls]
        results = self.rpc.batch(requests) if requests else []
        return [self.specs[name].decode(raw) for (_, name, _), raw in zip(calls, results, strict=True)]

    def block_timestamps(self, blocks: Sequence[int]) -> dict[int, int]:
        """Unix time of each block, one batch for all of them."""
        wanted = sorted(set(blocks))
        replies = self.rpc.batch([("eth_getBlockByNumber", [hex(b), False]) for b in wanted]) if wanted else []
        return {b: int(reply["timestamp"], 16) for b, reply in zip(wanted, replies, strict=True) if reply}
