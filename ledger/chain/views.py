"""Read-only contract calls in bulk: many ``eth_call``s per JSON-RPC batch, decoded with eth-abi.

One HTTP round trip carries up to 500 calls (:meth:`ledger.chain.rpc.HttpRpc.batch`), so reading a view
for every ME or alliance of a large ledger costs a handful of requests instead of one per call. Nothing
here signs or sends a transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.chain.abi import ERC20_ABI, ContractAbi


class BatchViews:
    """Calls view functions of contracts whose ABIs it was given, many per request, at one block."""

    def __init__(self, rpc, abi: list[dict]):
        self.rpc = rpc
        self.specs = dict(ContractAbi(abi).functions)
        self.specs.update({f"erc20.{name}": fn for name, fn in ContractAbi(ERC20_ABI).functions.items()})

    def call(self, calls: Sequence[tuple[str, str, Sequence[Any]]], *, block: int | str = "latest") -> list[Any]:
        """``[(address, function name, args), ...]`` -> the decoded results, in order (a reverted call raises
        :class:`ledger.chain.rpc.RpcError`)."""
        tag = hex(block) if isinstance(block, int) else block
        requests = [
            ("eth_call", [{"to": to, "data": "0x" + self.specs[name].encode(*args).hex()}, tag])
            for to, name, args in calls
        ]
        results = self.rpc.batch(requests) if requests else []
        return [self.specs[name].decode_values(raw) for (_, name, _), raw in zip(calls, results, strict=True)]

    def block_timestamps(self, blocks: Sequence[int]) -> dict[int, int]:
        """Unix time of each block, one batch for all of them."""
        wanted = sorted(set(blocks))
        replies = self.rpc.batch([("eth_getBlockByNumber", [hex(b), False]) for b in wanted]) if wanted else []
        return {b: int(reply["timestamp"], 16) for b, reply in zip(wanted, replies, strict=True) if reply}
