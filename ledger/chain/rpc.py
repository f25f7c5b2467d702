"""A small JSON-RPC client over HTTP with the standard library: the audit's only line to the chain.

The same client also runs over an in-process transport (Ape's provider, for py-evm): see ``HttpRpc``.

The audit must run on an auditor's own machine against any endpoint, without Ape or the project's
compiled artifacts, so it talks to the node directly: single calls, and batches (one HTTP round trip
for many ``eth_call``s) where the node supports them.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from ledger.errors import ChainUnavailable, LedgerError

# Development-node methods. The ledger and its tests name them as Anvil does; Hardhat's node has the same
# methods under ``hardhat_*`` names. ``evm_mine``, ``evm_snapshot``, ``evm_revert``, ``evm_setAutomine`` and
# ``evm_setIntervalMining`` are the same on both. ``anvil_rollback``, ``anvil_reorg`` and
# ``anvil_dumpState``/``anvil_loadState`` have no Hardhat counterpart.
HARDHAT_METHODS = {
    "anvil_mine": "hardhat_mine",
    "anvil_setStorageAt": "hardhat_setStorageAt",
    "anvil_setBalance": "hardhat_setBalance",
    "anvil_setCode": "hardhat_setCode",
    "anvil_setNonce": "hardhat_setNonce",
    "anvil_dropTransaction": "hardhat_dropTransaction",
    "anvil_impersonateAccount": "hardhat_impersonateAccount",
    "anvil_stopImpersonatingAccount": "hardhat_stopImpersonatingAccount",
    "anvil_setNextBlockBaseFeePerGas": "hardhat_setNextBlockBaseFeePerGas",
}


class RpcError(LedgerError):
    """The node answered with a JSON-RPC error (a refused request, not a dead node)."""

    def __init__(self, method: str, error: Any):
        self.method = method
        self.code = error.get("code") if isinstance(error, dict) else None
        self.data = error.get("data") if isinstance(error, dict) else None  # revert data, when a call reverted
        detail = error.get("message", error) if isinstance(error, dict) else error
        super().__init__(f"{method} failed: {detail}")


class HttpRpc:
    """The project's one JSON-RPC client. Over HTTP (``url``), or over another ``transport``: a callable
    that takes the JSON-RPC payload (one request, or a batch as a list) and returns the node's reply, as
    :meth:`over_provider` does for a node running inside the process (py-evm, Ape's
    ``ethereum:local:test``)."""

    def __init__(self, url: str, *, timeout: float = 60.0, transport: Callable[[Any], Any] | None = None):
        self.url = url
        self.timeout = timeout
        self._id = 0
        self.calls = 0  # round trips (HTTP requests, or transport calls), for the audit's summary and tests
        self._client: str | None = None
        self._transport = transport

    @classmethod
    def over_provider(cls, provider) -> HttpRpc:
        """A client that sends through an Ape provider that has no HTTP endpoint (in process)."""
        from ledger.chain._inprocess import ProviderTransport

        return cls(f"in-process:{provider.name}", transport=ProviderTransport(provider))

    @property
    def client(self) -> str:
        """The node's implementation, from ``web3_clientVersion``: "anvil", "hardhat" or "other"."""
        if self._client is None:
            version = str(self.request("web3_clientVersion")).lower()
            self._client = next((name for name in ("anvil", "hardhat") if name in version), "other")
        return self._client

    def dev_request(self, method: str, params: list | None = None) -> Any:
        """A development-node call named as on Anvil (``anvil_mine``, ``anvil_setStorageAt``, ...), sent
        under the name this node uses. ``txpool_content`` is answered from the pending block on Hardhat
        (pending transactions only: Hardhat queues none for later nonces here)."""
        if self.client != "hardhat":
            return self.request(method, params)
        if method == "txpool_content":
            block = self.request("eth_getBlockByNumber", ["pending", True]) or {}
            pending: dict[str, dict[str, Any]] = {}
            for tx in block.get("transactions", []):
                pending.setdefault(tx["from"], {})[str(int(tx["nonce"], 16))] = tx
            return {"pending": pending, "queued": {}}
        return self.request(HARDHAT_METHODS.get(method, method), params)

    def _post(self, payload: Any) -> Any:
        if self._transport is not None:
            self.calls += 1
            return self._transport(payload)
        body = json.dumps(payload).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        self.calls += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            # Some providers answer a refused request with HTTP 4xx/5xx and a JSON-RPC error body.
            try:
                return json.loads(err.read())
            except ValueError:
                raise RpcError(_method_of(payload), {"code": err.code, "message": f"HTTP {err.code}"}) from None
        except (OSError, ValueError) as err:
            raise ChainUnavailable(f"no JSON-RPC node answers at {self.url} ({_reason(err)})") from None

    def request(self, method: str, params: list | None = None) -> Any:
        for attempt in range(TRANSIENT_RETRIES + 1):
            self._id += 1
            reply = self._post({"jsonrpc": "2.0", "id": self._id, "method": method, "params": params or []})
            if isinstance(reply, list):  # pragma: no cover - a proxy that always batches
                reply = reply[0]
            if "error" not in reply:
                return reply["result"]
            if not _transient(reply["error"]) or attempt == TRANSIENT_RETRIES:
                raise RpcError(method, reply["error"])
            time.sleep(0.01 * (attempt + 1))

    def chain_id(self) -> int:
        """The node's chain id."""
        return int(self.request("eth_chainId"), 16)

    def has_code(self, address: str, block: str = "latest") -> bool:
        """Whether a contract is deployed at ``address`` (a fresh chain has none where a record says)."""
        return self.request("eth_getCode", [address, block]) not in ("0x", "0x0", "", None)

    def batch(self, calls: list[tuple[str, list]], *, size: int = 500) -> list[Any]:
        """Results of many calls, in order, sent ``size`` at a time (one at a time if batches are refused)."""
        results: list[Any] = []
        for start in range(0, len(calls), size):
            chunk = calls[start : start + size]
            payload = [{"jsonrpc": "2.0", "id": start + i, "method": m, "params": p} for i, (m, p) in enumerate(chunk)]
            replies = self._post(payload) if len(chunk) > 1 else None
            if not isinstance(replies, list):  # batches unsupported (or one call): one request each
                results.extend(self.request(m, p) for m, p in chunk)
                continue
            by_id = {reply.get("id"): reply for reply in replies}
            for i, (method, params) in enumerate(chunk):
                reply = by_id.get(start + i)
                if reply is not None and "error" in reply and _transient(reply["error"]):
                    results.append(self.request(method, params))  # once more on its own
                    continue
                if reply is None or "error" in reply:
                    raise RpcError(method, (reply or {}).get("error", "no reply in the batch"))
                results.append(reply["result"])
        return results


# Errors that say nothing about the request, only that the node was busy with a new block: Anvil with
# --prune-history answers a call at "latest" that races with mining with "BlockOutOfRangeError: block
# height is N but requested was N-1". Asked again, the call succeeds.
TRANSIENT = ("BlockOutOfRangeError", "header not found")
TRANSIENT_RETRIES = 5


def _transient(error: Any) -> bool:
    text = str(error.get("message", "") if isinstance(error, dict) else error)
    return any(marker in text for marker in TRANSIENT)


def _method_of(payload: Any) -> str:
    if isinstance(payload, list):
        return payload[0]["method"] if payload else "batch"
    return payload.get("method", "request")


def _reason(err: Exception) -> str:
    reason = getattr(err, "reason", None) or err
    return str(reason).strip() or err.__class__.__name__
