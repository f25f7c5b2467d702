"""The local index: what the chain holds about one deployment, kept in SQLite under the data folder and
brought up to date from the logs of new blocks only (:mod:`ledger.index.store`)."""

from ledger.index.store import IndexDamaged, LedgerIndex, SyncReport, index_path

__all__ = ["IndexDamaged", "LedgerIndex", "SyncReport", "index_path"]
