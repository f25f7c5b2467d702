"""What the audit keeps on disk: the set of settled references (for the duplicate check, and for each
revenue event its alliance, amount and the total reversed of it: the reversal links) and the checkpoint
of an incremental audit.

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

from ledger.errors import LedgerError, StorageUnwritable, storage_problem

STATE_VERSION = "3"  # 3: reversal links in the references, debts in the state


class MemoryReferences:
    """References in a dictionary (small histories, tests)."""

    def __init__(self):
        self._seen: dict[bytes, tuple[bytes, int, str, int]] = {}
        self._links: dict[bytes, list] = {}  # revenue reference -> [agreement id, amount, reversed so far]

    def add(self, refs, aid: bytes, first_seq: int, tx: str, block: int,
            amounts: list[int | None] | None = None) -> list[tuple[int, tuple]]:  # fmt: skip
        """Record a batch's references; returns (position, first sighting) of those seen before.
        ``amounts``: for a batch of revenue events, each event's amount (None: a batch of reversals)."""
        seen, links, dups = self._seen, self._links, []
        for k, ref in enumerate(refs):
            first = seen.get(ref)
            if first is None:
                seen[ref] = (aid, first_seq + k, tx, block)
                if amounts is not None and amounts[k] is not None:
                    links[ref] = [aid, amounts[k], 0]
            else:
                dups.append((k, first))
        return dups

    def link(self, ref: bytes) -> tuple[bytes, int | None, int] | None:
        """(agreement id, amount, reversed so far) of a settled reference; amount None for one that is
        not a revenue event (a reversal); None for a reference never settled."""
        found = self._links.get(ref)
        if found is not None:
            return found[0], found[1], found[2]
        first = self._seen.get(ref)
        return None if first is None else (first[0], None, 0)

    def add_reversed(self, ref: bytes, amount: int) -> int:
        """Add ``amount`` to what was reversed of the revenue event ``ref``; returns the new total."""
        found = self._links[ref]
        found[2] += amount
        return found[2]

    def close(self) -> None:
        pass


class SpilledReferences:
    """References in SQLite (``conn``'s database, or a temporary file): bounded memory at any size. A
    reference row is the reference and a key of its batch (batch id * 65536 + position); the batch's
    agreement, first sequence number, transaction and block are stored once per batch. A revenue event's
    row has its amount and the total reversed of it (decimal text: amounts can exceed 2**63; NULL
    reversed is 0); a reversal's has no amount."""

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
        columns = [row[1] for row in conn.execute("PRAGMA table_info(refs)")]
        if columns and "amount" not in columns:  # a checkpoint of an older state version: started over
            conn.execute("DROP TABLE refs")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS refs(ref BLOB PRIMARY KEY, at INTEGER NOT NULL, amount TEXT, reversed TEXT)"
            " WITHOUT ROWID"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS ref_batches(id INTEGER PRIMARY KEY, aid BLOB NOT NULL,"
            " first_seq INTEGER NOT NULL, tx TEXT NOT NULL, block INTEGER NOT NULL)"
        )
        self.conn = conn

    def add(self, refs, aid: bytes, first_seq: int, tx: str, block: int,
            amounts: list[int | None] | None = None) -> list[tuple[int, tuple]]:  # fmt: skip
        conn = self.conn
        batch = conn.execute(
            "INSERT INTO ref_batches(aid, first_seq, tx, block) VALUES (?, ?, ?, ?)", (aid, first_seq, tx, block)
        ).lastrowid
        base = batch * 65536
        before = conn.total_changes
        if amounts is None:
            rows = [(r, base + k, None) for k, r in enumerate(refs)]
        else:
            rows = [
                (r, base + k, None if a is None else str(a)) for k, (r, a) in enumerate(zip(refs, amounts, strict=True))
            ]
        conn.executemany("INSERT OR IGNORE INTO refs(ref, at, amount) VALUES (?, ?, ?)", rows)
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

    def link(self, ref: bytes) -> tuple[bytes, int | None, int] | None:
        row = self.conn.execute(
            "SELECT b.aid, r.amount, r.reversed FROM refs r JOIN ref_batches b ON b.id = r.at / 65536 WHERE r.ref = ?",
            (bytes(ref),),
        ).fetchone()
        if row is None:
            return None
        return bytes(row[0]), None if row[1] is None else int(row[1]), int(row[2] or 0)

    def add_reversed(self, ref: bytes, amount: int) -> int:
        (reversed_,) = self.conn.execute("SELECT reversed FROM refs WHERE ref = ?", (bytes(ref),)).fetchone()
        total = int(reversed_ or 0) + amount
        self.conn.execute("UPDATE refs SET reversed = ? WHERE ref = ?", (str(total), bytes(ref)))
        return total

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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("BEGIN IMMEDIATE")  # one audit at a time; committed by save()
            self.conn.execute("CREATE TABLE IF NOT EXISTS state(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self.references = SpilledReferences(self.conn)
        except (OSError, sqlite3.DatabaseError) as err:
            if (reason := storage_problem(err)) is not None:  # a read-only folder, a full disk: not damage
                raise StorageUnwritable(f"the audit checkpoint {self.path} cannot be written ({reason})") from None
            if isinstance(err, OSError):
                raise
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
    from ledger.services.audit.findings import Finding, TokenTotals
    from ledger.services.audit.recompute import _Terms
    from ledger.services.audit.replay import _ME, _Agreement

    return {cls.__name__: cls for cls in (_ME, _Agreement, _Terms, TokenTotals, Finding)}


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
