"""Deploy the contracts once per chain, or reuse the recorded deployment."""

from __future__ import annotations

from ledger.chain.deployment import DeploymentRecord, DeploymentStore
from ledger.chain.open import reusable
from ledger.chain.writer import LedgerWriter


def deploy_or_reuse(
    store: DeploymentStore,
    *,
    admin,
    platform,
    finance,
    sender,
    token_decimals: int | None = 6,
    aliases: dict[str, str] | None = None,
) -> tuple[LedgerWriter, DeploymentRecord, bool]:
    """The deployment for the connected chain: the recorded one if its code is still there, else a new
    one (recorded). Returns ``(ledger, record, reused)``."""
    chain_id, record = reusable(store)
    if record is not None:
        return LedgerWriter.at(record.ledger, record.token), record, True
    ledger = LedgerWriter.deploy(
        admin=admin, platform=platform, finance=finance, sender=sender, token_decimals=token_decimals
    )
    record = DeploymentRecord(
        chain_id=chain_id,
        ledger=ledger.address,
        token=ledger.token.address if ledger.token is not None else None,
        block=ledger.deployment_block,
        deployer=sender.address,
        admin=_address(admin),
        platform=_address(platform),
        finance=_address(finance),
        aliases=dict(aliases or {}),
    )
    store.save(record)
    return ledger, record, False


def _address(account) -> str:
    return account if isinstance(account, str) else account.address
