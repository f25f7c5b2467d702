"""The in-process transport of :class:`ledger.chain.rpc.HttpRpc`: JSON-RPC over Ape's provider.

Ape's ``ethereum:local:test`` network runs py-evm (through eth-tester) inside the Python process: no
HTTP endpoint, so the client sends each request through the provider's web3 request manager instead of
a socket, and turns the answers into what a JSON-RPC node sends over the wire (quantities and bytes as
``0x`` hex), so every caller reads them exactly as it reads Anvil's or Hardhat's answers. What
eth-tester does differently is smoothed over here:

- ``eth_getLogs`` wants the address filter as a list;
- a reverted ``eth_call`` raises ``TransactionFailed`` (revert data as the text of a bytes literal)
  instead of answering with a JSON-RPC error; it becomes the error Anvil sends (code 3, the revert data
  in ``data``), so custom errors decode the same way;
- a successful ``evm_revert`` answers null; Anvil and Hardhat answer true;
- ``eth_call`` validates the call as a transaction: its sender must afford gas x base fee, where Anvil,
  Hardhat and geth run a call from any address (a Safe simulating its own call holds no ETH). Such a call
  is run inside a snapshot in which a funded test account first sends the sender 1 ETH, and the
  snapshot is reverted, so the chain is left exactly as it was.
"""

from __future__ import annotations

import ast
from typing import Any


class ProviderTransport:
    """``transport(payload) -> reply`` for :class:`ledger.chain.rpc.HttpRpc`, over an Ape provider with a
    web3 instance (``provider.web3``); a batch is answered one request at a time."""

    def __init__(self, provider):
        self.provider = provider

    def __call__(self, payload: Any) -> Any:
        if isinstance(payload, list):
            return [self._one(item) for item in payload]
        return self._one(payload)

    def _one(self, request: dict) -> dict:
        method, params, rid = request["method"], list(request.get("params") or []), request.get("id")
        if method == "eth_getLogs" and params and isinstance(params[0].get("address"), str):
            params[0] = {**params[0], "address": [params[0]["address"]]}
        try:
            result = self.provider.web3.manager.request_blocking(method, params)
        except Exception as err:  # noqa: BLE001 - every failure becomes a JSON-RPC error reply
            if method != "eth_call" or "cannot afford txn gas" not in str(err):
                return {"jsonrpc": "2.0", "id": rid, "error": _error(err)}
            try:
                result = self._funded_call(params)
            except Exception as again:  # noqa: BLE001
                return {"jsonrpc": "2.0", "id": rid, "error": _error(again)}
        if method == "evm_revert" and result is None:
            result = True  # eth-tester answers a successful revert with null; Anvil and Hardhat with true
        return {"jsonrpc": "2.0", "id": rid, "result": _jsonify(result)}

    def _funded_call(self, params: list) -> Any:
        """``eth_call`` whose sender holds too little ETH for eth-tester: run it in a snapshot in which a
        funded account sent the sender 1 ETH first; the snapshot is reverted whatever happens."""
        request = self.provider.web3.manager.request_blocking
        snapshot = request("evm_snapshot", [])
        try:
            funder = request("eth_accounts", [])[0]
            request("eth_sendTransaction", [{"from": funder, "to": params[0]["from"], "value": hex(10**18)}])
            return request("eth_call", params)
        finally:
            request("evm_revert", [snapshot])


def _jsonify(value: Any) -> Any:
    """Python values from eth-tester as a JSON-RPC node writes them: ints and bytes as 0x hex."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict) or hasattr(value, "items"):
        return {key: _jsonify(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonify(item) for item in value]
    return value


def _error(err: Exception) -> dict:
    rpc_error = getattr(err, "rpc_response", None)
    if isinstance(rpc_error, dict) and isinstance(rpc_error.get("error"), dict):
        return rpc_error["error"]
    data = _revert_data(err)
    if data is not None:
        return {"code": 3, "message": "execution reverted", "data": "0x" + data.hex()}
    return {"code": -32000, "message": str(err)}


def _revert_data(err: Exception) -> bytes | None:
    """The revert data of eth-tester's ``TransactionFailed`` (here or in the exception it replaced)."""
    if type(err).__name__ != "TransactionFailed":
        return None
    for candidate in (err.__context__, err):
        arg = candidate.args[0] if candidate is not None and candidate.args else None
        if isinstance(arg, Exception):
            arg = arg.args[0] if arg.args else None
        if isinstance(arg, (bytes, bytearray)):
            return bytes(arg)
        if isinstance(arg, str):
            text = arg.removeprefix("execution reverted: ").strip()
            if text.startswith(("b'", 'b"')):
                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    continue
                if isinstance(value, bytes):
                    return value
    return None
