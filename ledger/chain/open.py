"""Opening a deployment: the only code that reads the deployment records (one per chain id, in
``<data>/deployments/``, :mod:`ledger.chain.deployment`) and checks them against the chain: which chain
it is, and whether the recorded ledger's code is still there (a fresh local chain has none).

- :func:`open_deployment` through Ape's connected network (commands that send transactions);
- :func:`open_over_rpc` straight over JSON-RPC, without Ape (read-only commands on the local chain);
- :func:`recorded` only the record of a chain id (``ledger audit``, which checks the code itself);
- :func:`reusable` the connected chain's record if its ledger is still there (``deploy_or_reuse``).

Every way says the same thing when there is nothing to open, and what to do about it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ledger.chain.deployment import DeploymentRecord, DeploymentStore
from ledger.errors import ChainUnavailable

if TYPE_CHECKING:
    from ledger.chain.node import LocalNode
    from ledger.chain.writer import LedgerWriter

DEPLOY_FIRST = "deploy first"


def recorded(store: DeploymentStore, chain_id: int, *, remedy: str = DEPLOY_FIRST) -> DeploymentRecord:
    """The record of ``chain_id``; without one, :class:`ChainUnavailable` ending with ``remedy``."""
    record = store.load(chain_id)
    if record is None:
        raise ChainUnavailable(f"no deployment recorded for chain {chain_id} in {store.folder}; {remedy}")
    return record


def open_deployment(store: DeploymentStore) -> tuple[LedgerWriter, DeploymentRecord]:
    """The recorded deployment of the chain Ape is connected to, or a clear error saying how to make one."""
    from ledger.chain.writer import LedgerWriter, connected_chain_id, has_code

    record = _with_code(store, connected_chain_id(), has_code)
    return LedgerWriter.at(record.ledger, record.token), record


def open_over_rpc(
    store: DeploymentStore, url: str, *, node: LocalNode | None = None
) -> tuple[LedgerWriter, DeploymentRecord]:
    """The recorded deployment of the chain at ``url``, read-only over JSON-RPC (Ape is not started).
    With ``node`` (the local chain), wait for it first: "not running", or "busy" after a wait."""
    from ledger.chain.rpc import HttpRpc
    from ledger.chain.writer import LedgerWriter

    if node is not None and not node.answers(timeout=2.0):
        node.wait_until_answering()
    rpc = HttpRpc(url)
    record = _with_code(store, rpc.chain_id(), rpc.has_code)
    return LedgerWriter.over_rpc(record.ledger, url), record


def reusable(store: DeploymentStore) -> tuple[int, DeploymentRecord | None]:
    """The chain id Ape is connected to, and its record if the recorded ledger's code is still there."""
    from ledger.chain.writer import connected_chain_id, has_code

    chain_id = connected_chain_id()
    record = store.load(chain_id)
    return chain_id, (record if record is not None and has_code(record.ledger) else None)


def _with_code(store: DeploymentStore, chain_id: int, has_code: Callable[[str], bool]) -> DeploymentRecord:
    record = recorded(store, chain_id)
    if not has_code(record.ledger):
        raise ChainUnavailable(f"chain {chain_id} has no contract at {record.ledger} (a fresh chain?); deploy again")
    return record
