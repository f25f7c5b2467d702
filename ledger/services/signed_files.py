"""The local files that keep signatures until they are submitted: one small JSON file per agreement or
ME under ``<folder>/<chain id>/<ledger address>/``, each replaced whole (written aside, then renamed), so
a crash leaves the old file or the new one. They hold signatures only (public once submitted), never keys.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ledger.errors import LedgerError


class SignedFiles:
    """The folder of one deployment's files; a subclass names its files (``_path``) and itself (``what``,
    for the message when a file is unreadable)."""

    what = "signature store"

    def __init__(self, folder: Path, chain_id: int, ledger: str):
        self.folder = Path(folder) / str(chain_id) / ledger

    def _path(self, key) -> Path:
        raise NotImplementedError

    def _load(self, key) -> dict:
        path = self._path(key)
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except ValueError:
            raise LedgerError(f"{self.what} {path} is unreadable; move it away and sign again") from None

    def _write(self, key, data: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
