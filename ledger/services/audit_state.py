"""What the audit keeps on disk: the set of settled references (for the duplicate check) and the
checkpoint of an incremental audit.

* :class:`SpilledReferences`: references in a SQLite table instead of a dictionary, so a full audit's
  memory does not grow with the history (a temporary file, deleted afterwards).
* :class:`Checkpoint`: on the auditor's machine (``<data dir>/audit/<chain id>/<ledger>.sqlite3``), the
  replayed state at a block with that block's hash, and the references up to it. The next audit
  checks that the block is still canonical (else the checkpoint is dropped and the audit starts over
  from the deployment block), replays only the blocks after it, and saves the new state together with
  the references it added, in one transaction: an interrupted audit leaves the previous checkpoint.

The state is written as JSON with tagged bytes, tuples, sets and the audit's own record types (never
pickle: a file on disk must not be able to run code).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import tempfile
from collections import defaultdict
from pathlib import Path

from ledger.errors import LedgerError

STATE_VERSION = "2"


class MemoryReferences:
    """References in a dictionary (small histories, tests)."""

    def __init__(self):
        self._seen: dict[bytes, tuple[bytes, int, str, int]] = {}

    def add(self, refs, aid: bytes, first_seq: int, tx: str, block: int) -> list[tuple[int, tuple]]:
        """Record a batch's references; returns (position, first sighting) of those seen before."""
        seen, dups = self._seen, []
        for k, ref in enumerate(refs):
            first = seen.get(ref)
            if first is None:
                seen[ref] = (aid, first_seq + k, tx, block)
            else:
                dups.append((k, first))
        return dups

    def close(self) -> None:
        pass


class SpilledReferences:
    """References in SQLite (``conn``'s database, or a temporary file): bounded memory at any size. A
    reference row is the reference and a key of its batch (batch id * 65536 + position); the batch's
    agreement, first sequence number, transaction and block are stored once per batch."""

    def __init__(self, conn: sqlite3.Connection | None = None):
        self._tmp = None
        if conn is None:
            handle, self._tmp = tempfile.mkstemp(prefix="audit-refs-", suffix=".sqlite3")
            os.close(handle)
            conn = sqlite3.connect(self._tmp, isolation_level=None)
            conn.execute("PRAGMA journal_mode = OFF")
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute("BEGIN")
        conn.execute("PRAGMA cache_size = -65536")  # 64 MB: the reference tree of a few million events
        conn.execute("CREATE TABLE IF NOT EXISTS refs(ref BLOB PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS ref_batches(id INTEGER PRIMARY KEY, aid BLOB NOT NULL,"
            " first_seq INTEGER NOT NULL, tx TEXT NOT NULL, block INTEGER NOT NULL)"
        )
        self.conn = conn

    def add(self, refs, aid: bytes, first_seq: int, tx: str, block: int) -> list[tuple[int, tuple]]:
        conn = self.conn
        batch = conn.execute(
            "INSERT INTO ref_batches(aid, first_seq, tx, block) VALUES (?, ?, ?, ?)", (aid, first_seq, tx, block)
        ).lastrowid
        base = batch * 65536
        before = conn.total_changes
        conn.executemany(
            "INSERT OR IGNORE INTO refs(ref, at) VALUES (?, ?)", [(r, base + k) for k, r in enumerate(refs)]
        )
        if conn.total_changes - before == len(refs):
            return []
        dups = []
        for k, ref in enumerate(refs):
            stored = conn.execute(
                "SELECT b.aid, b.first_seq + r.at % 65536, b.tx, b.block, r.at FROM refs r "
                "JOIN ref_batches b ON b.id = r.at / 65536 WHERE r.ref = ?", (bytes(ref),)
            ).fetchone()  # fmt: skip
            if stored is not None and stored[4] != base + k:
                dups.append((k, (bytes(stored[0]), stored[1], stored[2], stored[3])))
        return dups

    def close(self) -> None:
        if self._tmp is not None:
            self.conn.close()
            Path(self._tmp).unlink(missing_ok=True)


# -- the checkpoint -------------------------------------------------------------------------------------


def checkpoint_path(data_dir: Path, chain_id: int, ledger: str, from_block: int) -> Path:
    return Path(data_dir) / "audit" / str(chain_id) / f"{ledger.lower()}-from-{from_block}.sqlite3"


class Checkpoint:
    """The incremental audit's checkpoint file (one per chain id, ledger and first block)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("BEGIN IMMEDIATE")  # one audit at a time; committed by save()
            self.conn.execute("CREATE TABLE IF NOT EXISTS state(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self.references = SpilledReferences(self.conn)
        except sqlite3.DatabaseError as err:
            raise LedgerError(
                f"the audit checkpoint {self.path} is unreadable ({err}); delete it or run `ledger audit --full`"
            ) from None

    def load(self) -> dict | None:
        """The stored state ({"block", "hash", "key", "state"}) or None."""
        try:
            rows = dict(self.conn.execute("SELECT key, value FROM state").fetchall())
        except sqlite3.DatabaseError:
            return None
        if rows.get("version") != STATE_VERSION or "state" not in rows:
            return None
        try:
            return {"block": int(rows["block"]), "hash": rows["hash"], "key": rows["key"],
                    "state": _decode_all(rows["state"])}  # fmt: skip
        except (ValueError, KeyError, TypeError):
            return None

    def drop(self) -> None:
        """Forget the state and every reference (inside the open transaction)."""
        self.conn.execute("DELETE FROM state")
        self.conn.execute("DELETE FROM refs")
        self.conn.execute("DELETE FROM ref_batches")

    def save(self, key: str, block: int, block_hash: str, text: str) -> None:
        """Store the state (:func:`json_text`) at ``block`` and commit it with the references added."""
        self.conn.execute("DELETE FROM state")
        self.conn.executemany(
            "INSERT INTO state(key, value) VALUES (?, ?)",
            [("version", STATE_VERSION), ("key", key), ("block", str(block)), ("hash", block_hash), ("state", text)],
        )
        self.conn.execute("COMMIT")

    def close(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self.conn.close()


def json_text(state: dict) -> str:
    return json.dumps(_encode(state), separators=(",", ":"))


def _decode_all(text: str):
    return json.loads(text, object_hook=_decode)


def _types() -> dict[str, type]:
    from ledger.services import audit

    return {cls.__name__: cls for cls in (audit._ME, audit._Agreement, audit._Terms, audit.TokenTotals, audit.Finding)}


def _encode(value):
    if isinstance(value, bytes | bytearray):
        return {"$b": bytes(value).hex()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"$c": type(value).__name__, "f": {f.name: _encode(getattr(value, f.name))
                                                    for f in dataclasses.fields(value)}}  # fmt: skip
    if isinstance(value, dict):
        return {"$d": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"$t": [_encode(v) for v in value]}
    if isinstance(value, set | frozenset):
        return {"$s": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _decode(obj: dict):
    if "$b" in obj:
        return bytes.fromhex(obj["$b"])
    if "$t" in obj:
        return tuple(_freeze(v) for v in obj["$t"])
    if "$s" in obj:
        return {_freeze(v) for v in obj["$s"]}
    if "$d" in obj:
        return {_freeze(k): v for k, v in obj["$d"]}
    if "$c" in obj:
        cls = _types().get(obj["$c"])
        if cls is None:
            raise ValueError(f"unknown record {obj['$c']!r}")
        return cls(**obj["f"])
    return obj


def _freeze(value):
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


def as_defaultdict(factory, mapping: dict) -> defaultdict:
    out = defaultdict(factory)
    out.update(mapping)
    return out
