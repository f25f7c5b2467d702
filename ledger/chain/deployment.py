"""Deployment records: one JSON file per chain id, so every command finds the same contracts.

A record is reused only while the chain still has code at its addresses (a restarted local chain
without its state file has none, and gets a fresh deployment).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from ledger.errors import LedgerError


class DeploymentRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    chain_id: int
    ledger: str
    token: str | None = None  # the local test token, when one was deployed
    block: int  # the ledger's deployment block: logs are read from here on
    deployer: str
    admin: str
    platform: str
    finance: str
    aliases: dict[str, str] = {}  # role -> Ape account alias used at deployment (CLI defaults)


class DeploymentStore:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, chain_id: int) -> Path:
        return self.folder / f"{chain_id}.json"

    def load(self, chain_id: int) -> DeploymentRecord | None:
        path = self.path(chain_id)
        if not path.exists():
            return None
        try:
            return DeploymentRecord.model_validate_json(path.read_text())
        except ValueError as err:
            raise LedgerError(
                f"deployment record {path} is unreadable ({err.__class__.__name__}); move it away and deploy again"
            ) from None

    def listing(self) -> list[dict]:
        """Every record in the folder, for display (``ledger chain status``); a file that is not a whole
        record (not JSON, or fields missing) is listed as ``{"file": ..., "error": "unreadable"}``."""
        records = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.exists() else []:
            try:
                records.append(DeploymentRecord.model_validate_json(path.read_text()).model_dump())
            except ValueError:
                records.append({"file": str(path), "error": "unreadable"})
        return records

    def save(self, record: DeploymentRecord) -> Path:
        """Write atomically (temp file + rename), so a crash never leaves half a record."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(record.chain_id)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record.model_dump(), indent=2) + "\n")
        os.replace(tmp, path)
        return path
