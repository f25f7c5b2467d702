"""An incremental local index of one deployment's logs, in SQLite (the standard library's ``sqlite3``).

Why: exactly-once settlement needs, for each reference in a file, whether (and how) it was settled
before; reports need every credit. Reading every log from the deployment block on every command grows
with the whole history. The index keeps what was read, per chain id and ledger address, under
``<data dir>/index/``, and each command reads only the logs of blocks after the last one it read.

It is never a source of truth:

* **Canonical check.** Every committed update records the hash of the block it read up to. Before
  reading on, the index asks the node for that block's hash; if it differs (a reorganisation,
  ``anvil_rollback``, or a local node restarted from its journal, which re-mines its blocks), it looks
  back through the hashes it recorded for the newest block that is still canonical, deletes everything
  after it and reads again from there; when none is, it starts over from the deployment block.
* **Damage.** A file SQLite cannot read, of another schema, or of another chain, ledger or deployment
  block is set aside and rebuilt (:meth:`LedgerIndex.sync` says so on stderr); a query on a file
  damaged later is refused with a one-line message naming ``ledger index rebuild``.
* **Atomic updates.** Each page of logs is written in one transaction together with the block it
  reaches and that block's hash; a process killed mid-update leaves the last committed page. Two
  processes updating at once take turns (``BEGIN IMMEDIATE``): each page is read under the write lock
  from the tip the other left.
* **Cursor check.** The settler compares, for each alliance it settles, the index's count of settled
  events with the contract's sequence cursor read before the update, and the reference rows it holds with
  the rows each batch kept when it was written (:meth:`LedgerIndex.check_cursors`): fewer in the index
  means it lost rows, and it is rebuilt. A row edited in place (another reference written over one) is
  not caught here; the audit reports the reference the chain then holds twice.

Layout: ``refs`` (one row per settled reference, revenue or reversal: its batch, position, amount and
period, and for a reversal the reference it reverses; the rowid is batch id * 65536 + position, so a
rewind deletes a range of the table), ``batches`` (one row per ``RevenueSettled`` or ``RevenueReversed``:
both move the one sequence cursor), ``events`` (every other event, and ``RevenueReversed`` again whole,
arguments as JSON), ``synced`` (the blocks read up to, with their hashes), ``meta``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from eth_utils import keccak

from ledger.chain.codec import Log
from ledger.chain.reader import LogReader
from ledger.errors import LedgerError, StorageUnwritable, storage_problem

SCHEMA_VERSION = "3"  # 2: reversals in `batches` and `refs`; 3: `batches.kept` (its rows in `refs`)
REF_STRIDE = 1 << 16  # refs.rowid = batch id * REF_STRIDE + position in the batch
KEEP_CHECKPOINTS = 256  # block hashes kept for finding the canonical ancestor after a reorganisation
PAGE_WEIGHT = 120_000  # per eth_getLogs page: 50 per log + 1 per settled reference (about 30 MB of JSON)
FIRST_PAGE = 256  # blocks in the first page; grown or shrunk by what each page held
MAX_PAGE = 50_000
LOOKUP_CHUNK = 500

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS synced(block INTEGER PRIMARY KEY, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches(
    id INTEGER PRIMARY KEY, agreement BLOB NOT NULL, version INTEGER NOT NULL, first_seq INTEGER NOT NULL,
    count INTEGER NOT NULL, block INTEGER NOT NULL, log_index INTEGER NOT NULL, tx TEXT NOT NULL,
    kept INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS batches_agreement ON batches(agreement);
CREATE INDEX IF NOT EXISTS batches_block ON batches(block);
CREATE TABLE IF NOT EXISTS refs(
    id INTEGER PRIMARY KEY, ref BLOB NOT NULL UNIQUE, amount TEXT NOT NULL, period INTEGER NOT NULL, reverses BLOB);
CREATE INDEX IF NOT EXISTS refs_reverses ON refs(reverses) WHERE reverses IS NOT NULL;
CREATE TABLE IF NOT EXISTS events(
    block INTEGER NOT NULL, log_index INTEGER NOT NULL, tx TEXT NOT NULL, name TEXT NOT NULL,
    agreement BLOB, args TEXT NOT NULL, PRIMARY KEY(block, log_index)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_name ON events(name, block);
"""


class IndexDamaged(LedgerError):
    """The index file cannot be used as it is (unreadable, another schema, another deployment)."""


@dataclass
class SyncReport:
    """What one :meth:`LedgerIndex.sync` did."""

    from_block: int = 0  # first block read (0 when nothing was read)
    to_block: int = 0  # the block the index now reaches
    logs: int = 0
    references: int = 0
    pages: int = 0
    rewound_to: int | None = None  # set when a reorganisation was found: the canonical block kept
    rebuilt: str | None = None  # why the index was started over, if it was
    seconds: float = 0.0
    notices: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Settled:
    """A settled reference as the index holds it."""

    agreement_id: bytes
    amount: int
    period: int
    seq: int
    block: int
    reverses: bytes | None = None  # a reversal: the reference (bytes32) of the event it reverses


def index_path(data_dir: Path, chain_id: int, ledger: str) -> Path:
    return Path(data_dir) / "index" / str(chain_id) / f"{ledger.lower()}.sqlite3"


def _abi_fingerprint(abi: list[dict]) -> str:
    """The events the index was built from: each one's signature and which arguments are indexed."""
    from ledger.chain.codec import EventSpec

    specs = [EventSpec.from_abi(item) for item in abi if item.get("type") == "event"]
    events = sorted(f"{spec.topic0.hex()}:{[name for name, _ in spec.indexed]}" for spec in specs)
    return keccak(text="\n".join(events)).hex()[:16]


# -- JSON for log arguments (bytes tagged, tuples as lists) -------------------------------------------


def _to_json(value):
    if isinstance(value, bytes | bytearray):
        return {"b": bytes(value).hex()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


def _from_json(obj):
    if len(obj) == 1 and "b" in obj and isinstance(obj["b"], str):
        return bytes.fromhex(obj["b"])
    return obj


def _dumps(args: dict) -> str:
    return json.dumps(_to_json(args), separators=(",", ":"))


def _loads(text: str) -> dict:
    return json.loads(text, object_hook=_from_json)


# -----------------------------------------------------------------------------------------------------


class LedgerIndex:
    """The index of one deployment (chain id, ledger address, deployment block)."""

    def __init__(self, path: Path, *, chain_id: int, ledger: str, from_block: int, abi: list[dict],
                 notice: Callable[[str], None] | None = None):  # fmt: skip
        self.path = Path(path)
        self.chain_id = int(chain_id)
        self.ledger = ledger
        self.from_block = int(from_block)
        self.abi = abi
        self.notice = notice or (lambda text: None)
        self._conn: sqlite3.Connection | None = None
        self.last_sync: SyncReport | None = None

    # -- opening ------------------------------------------------------------------------------------

    def _expected_meta(self) -> dict[str, str]:
        return {
            "schema": SCHEMA_VERSION,
            "chain_id": str(self.chain_id),
            "ledger": self.ledger.lower(),
            "from_block": str(self.from_block),
            "events": _abi_fingerprint(self.abi),
        }

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One user at a time, but not always the thread that opened it (the dashboard's server thread).
        conn = sqlite3.connect(self.path, timeout=120, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 120000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA cache_size = -32768")  # 32 MB
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection, the file checked (schema and deployment); raises :class:`IndexDamaged`."""
        if self._conn is not None:
            return self._conn
        try:
            conn = self._connect()
            with _write_transaction(conn):
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                found = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                expected = self._expected_meta()
                if not found:
                    conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", expected.items())
        except sqlite3.DatabaseError as err:
            raise _problem(self.path, err, "is unreadable") from None
        differing = [k for k, v in expected.items() if found and found.get(k) != v]
        if differing:
            conn.close()
            what = {"schema": "schema version", "chain_id": "chain id", "ledger": "ledger", "from_block":
                    "deployment block", "events": "set of events"}  # fmt: skip
            raise IndexDamaged(f"the index {self.path} was made for another {', '.join(what[k] for k in differing)}")
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _set_aside(self, reason: str) -> None:
        """Move a damaged file (and its WAL) out of the way; the next use starts a new one."""
        self.close()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            source = Path(str(self.path) + suffix)
            if source.exists():
                os.replace(source, Path(f"{self.path}.damaged-{stamp}{suffix}"))
        self.notice(f"index: {reason}; set aside, rebuilding it from the chain")

    def _query(self, sql: str, params: Iterable = ()) -> list:
        try:
            return self.conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.DatabaseError as err:
            raise _problem(self.path, err, "is damaged", hint=True) from None

    # -- state ----------------------------------------------------------------------------------------

    def tip(self) -> tuple[int, str] | None:
        """(block, hash) the index reaches, or None when nothing was read yet."""
        row = self._query("SELECT block, hash FROM synced ORDER BY block DESC LIMIT 1")
        return (row[0][0], row[0][1]) if row else None

    @property
    def tip_block(self) -> int:
        tip = self.tip()
        return tip[0] if tip else self.from_block - 1

    def status(self) -> dict:
        tip = self.tip()
        counts = {
            "references": self._query("SELECT count(*) FROM refs")[0][0],
            "batches": self._query("SELECT count(*) FROM batches")[0][0],
            "other_events": self._query("SELECT count(*) FROM events")[0][0],
        }
        return {
            "path": str(self.path),
            "bytes": sum(
                Path(str(self.path) + s).stat().st_size for s in ("", "-wal") if Path(str(self.path) + s).exists()
            ),  # fmt: skip
            "chain_id": self.chain_id,
            "ledger": self.ledger,
            "from_block": self.from_block,
            "block": tip[0] if tip else None,
            "hash": tip[1] if tip else None,
            **counts,
        }

    # -- bringing it up to date ----------------------------------------------------------------------

    def sync(self, rpc, *, to_block: int | None = None) -> SyncReport:
        """Read the logs of the blocks after the tip up to ``to_block`` (default: the head), after
        checking that the tip is still canonical. A damaged file is set aside and rebuilt."""
        try:
            return self._sync(rpc, to_block)
        except IndexDamaged as err:
            self._set_aside(str(err))
            report = self._sync(rpc, to_block)
            report.rebuilt = str(err)
            return report

    def rebuild(self, rpc) -> SyncReport:
        """Start over from the deployment block, in place: every row deleted in one transaction, then
        read again page by page. Another process meanwhile is safe: every user brings the index up to
        the head (under the write lock) before it reads it, so it never decides on a partial index."""
        try:
            with _write_transaction(self.conn):
                self._rewind(self.from_block - 1)
        except sqlite3.DatabaseError as err:
            self._set_aside(str(_problem(self.path, err, "is damaged")))
        except IndexDamaged as err:
            self._set_aside(str(err))
        report = self._sync(rpc, None)
        report.rebuilt = "asked for"
        return report

    def _sync(self, rpc, to_block: int | None) -> SyncReport:
        started = time.perf_counter()
        report = SyncReport()
        reader = LogReader(rpc.request, self.ledger, self.abi)
        names = list(reader.specs)
        conn = self.conn
        fixed = int(os.environ.get("LEDGER_INDEX_PAGE_BLOCKS", "0"))  # a fixed page size (tests, tuning)
        page = fixed or FIRST_PAGE
        try:
            while True:
                conn.execute("BEGIN IMMEDIATE")  # one writer at a time; readers go on (WAL)
                try:
                    head = int(rpc.request("eth_blockNumber"), 16) if to_block is None else to_block
                    start = self._canonical_start(rpc, report)
                    if start > head:
                        conn.execute("COMMIT")
                        break
                    end = min(head, start + page - 1)
                    before = _block_hash(rpc, end)
                    weight = 0
                    logs = list(reader.read(names, start, end, page_size=end - start + 1))
                    check = [self.tip()] if start > self.from_block and self.tip() else []
                    after = _block_hashes(rpc, [end] + [t[0] for t in check])
                    if before is None or after[0] != before or any(h != t[1] for h, t in
                                                                   zip(after[1:], check, strict=True)):  # fmt: skip
                        conn.execute("ROLLBACK")  # the chain changed under the read: read it again
                        continue
                    for log in logs:
                        weight += 50 + len(log.args.get("refs", ()))
                    refs = self._write(logs)
                    conn.execute("INSERT OR REPLACE INTO synced(block, hash) VALUES (?, ?)", (end, before))
                    conn.execute(
                        "DELETE FROM synced WHERE block < (SELECT block FROM synced ORDER BY block DESC "
                        "LIMIT 1 OFFSET ?)", (KEEP_CHECKPOINTS,)
                    )  # fmt: skip
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                report.from_block = report.from_block or start
                report.to_block = end
                report.logs += len(logs)
                report.references += refs
                report.pages += 1
                if fixed:
                    pass
                elif weight > PAGE_WEIGHT:
                    page = max(1, page * PAGE_WEIGHT // weight)
                elif weight < PAGE_WEIGHT // 4:
                    page = min(MAX_PAGE, page * 2)
        except sqlite3.DatabaseError as err:
            raise _problem(self.path, err, "is damaged") from None
        report.to_block = self.tip_block
        report.seconds = time.perf_counter() - started
        self.last_sync = report
        for text in report.notices:
            self.notice(text)
        return report

    def _canonical_start(self, rpc, report: SyncReport) -> int:
        """The first block to read: after the tip if it is canonical; else after the newest recorded
        block that still is (everything after it deleted); else the deployment block (all deleted)."""
        tip = self.tip()
        if tip is None:
            return self.from_block
        recorded = self._query("SELECT block, hash FROM synced ORDER BY block DESC")
        for chunk_start in range(0, len(recorded), 32):
            chunk = recorded[chunk_start : chunk_start + 32]
            hashes = _block_hashes(rpc, [block for block, _ in chunk])
            for (block, stored), now in zip(chunk, hashes, strict=True):
                if now == stored:
                    if block != tip[0]:
                        self._rewind(block)
                        report.rewound_to = block
                        report.notices.append(
                            f"index: block {tip[0]} is no longer canonical (a reorganisation or a restarted "
                            f"node); read again from block {block + 1}"
                        )
                    return block + 1
        self._rewind(self.from_block - 1)
        report.rewound_to = self.from_block - 1
        report.rebuilt = "no recorded block is canonical any more"
        report.notices.append(
            f"index: none of the blocks it read up to is canonical any more (a restarted node or a deep "
            f"reorganisation); reading again from the deployment block {self.from_block}"
        )
        return self.from_block

    def _rewind(self, block: int) -> None:
        """Delete everything read from blocks after ``block`` (inside the caller's transaction)."""
        conn = self.conn
        first = conn.execute("SELECT min(id) FROM batches WHERE block > ?", (block,)).fetchone()[0]
        if first is not None:
            conn.execute("DELETE FROM refs WHERE id >= ?", (first * REF_STRIDE,))
            conn.execute("DELETE FROM batches WHERE id >= ?", (first,))
        conn.execute("DELETE FROM events WHERE block > ?", (block,))
        conn.execute("DELETE FROM synced WHERE block > ?", (block,))

    def _write(self, logs: list[Log]) -> int:
        conn = self.conn
        refs = 0
        other = []
        for log in logs:
            args = log.args
            if log.event in ("RevenueSettled", "RevenueReversed"):
                cursor = conn.execute(
                    "INSERT INTO batches(agreement, version, first_seq, count, block, log_index, tx) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (bytes(args["agreementId"]), args["version"], args["firstSeq"], len(args["entries"]),
                     log.block, log.index, log.tx),
                )  # fmt: skip
                batch = cursor.lastrowid
                base = batch * REF_STRIDE
                originals = args.get("originals") or [None] * len(args["refs"])
                before = conn.total_changes
                conn.executemany(
                    "INSERT OR IGNORE INTO refs(id, ref, amount, period, reverses) VALUES (?, ?, ?, ?, ?)",
                    [(base + k, bytes(ref), str(entry >> 32), entry & 0xFFFFFFFF,
                      bytes(original) if original is not None else None)
                     for k, (ref, entry, original) in enumerate(zip(args["refs"], args["entries"], originals,
                                                                    strict=False))],
                )  # fmt: skip
                # The rows this batch kept: fewer than its events only when the chain itself holds a
                # reference twice (the first one stays); the cursor check compares against it.
                conn.execute("UPDATE batches SET kept = ? WHERE id = ?", (conn.total_changes - before, batch))
                refs += len(args["refs"])
            if log.event != "RevenueSettled":  # reversals kept whole too: reports and the audit read them
                agreement = args.get("agreementId")
                other.append((log.block, log.index, log.tx, log.event,
                              bytes(agreement) if agreement is not None else None, _dumps(args)))  # fmt: skip
        if other:
            conn.executemany(
                "INSERT OR REPLACE INTO events(block, log_index, tx, name, agreement, args) VALUES (?, ?, ?, ?, ?, ?)",
                other,
            )
        return refs

    # -- reading --------------------------------------------------------------------------------------

    def settled(self, references: Iterable[bytes]) -> dict[bytes, Settled]:
        """The settled ones among ``references`` (bytes32), as first settled in chain order."""
        wanted = list(dict.fromkeys(bytes(r) for r in references))
        found: dict[bytes, Settled] = {}
        for start in range(0, len(wanted), LOOKUP_CHUNK):
            chunk = wanted[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._query(
                f"SELECT r.ref, b.agreement, r.amount, r.period, b.first_seq + (r.id % {REF_STRIDE}), b.block, "
                f"r.reverses FROM refs r JOIN batches b ON b.id = r.id / {REF_STRIDE} WHERE r.ref IN ({marks})",
                chunk,
            )
            for ref, agreement, amount, period, seq, block, reverses in rows:
                found[bytes(ref)] = Settled(bytes(agreement), int(amount), period, seq, block,
                                            bytes(reverses) if reverses is not None else None)  # fmt: skip
        return found

    def reversed_totals(self, originals: Iterable[bytes]) -> dict[bytes, int]:
        """Original reference (bytes32) -> the total of its settled reversals, for those of ``originals``
        reversed at least once. Summed here, exactly (amounts are text: they can exceed 2**63)."""
        wanted = list(dict.fromkeys(bytes(r) for r in originals))
        totals: dict[bytes, int] = {}
        for start in range(0, len(wanted), LOOKUP_CHUNK):
            chunk = wanted[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            for original, amount in self._query(
                f"SELECT reverses, amount FROM refs WHERE reverses IN ({marks})", chunk
            ):  # fmt: skip
                key = bytes(original)
                totals[key] = totals.get(key, 0) + int(amount)
        return totals

    def check_cursors(self, cursors: dict[bytes, int]) -> list[bytes]:
        """The agreements whose rows the index lacks: fewer settled events in its batches than the
        contract's cursor (read before the index was brought up to date) counts, or fewer reference rows
        than its batches kept (a row deleted or lost from the file). Either way the index cannot say
        which references are settled, so the settler rebuilds it before trusting it."""
        short = []
        for aid in cursors:
            key = bytes(aid)
            (events, kept), = self._query(
                "SELECT coalesce(sum(count), 0), coalesce(sum(kept), 0) FROM batches WHERE agreement = ?", (key,)
            )  # fmt: skip
            if events < cursors[aid]:
                short.append(aid)
                continue
            (rows,) = self._query(
                f"SELECT count(*) FROM batches b JOIN refs r ON r.id >= b.id * {REF_STRIDE} "
                f"AND r.id < b.id * {REF_STRIDE} + b.count WHERE b.agreement = ?",
                (key,),
            )[0]
            if rows < kept:
                short.append(aid)
        return short

    def logs(self, names: list[str], from_block: int, to_block: int,
             topic1: list[bytes] | None = None) -> Iterator[Log]:  # fmt: skip
        """Logs of the named events (every kind but ``RevenueSettled``) in ``[from_block, to_block]``,
        in chain order, as :class:`ledger.chain.reader.LogReader` returns them."""
        if "RevenueSettled" in names:
            raise ValueError("RevenueSettled logs are not kept whole in the index")
        marks = ",".join("?" * len(names))
        sql = (f"SELECT block, log_index, tx, name, args FROM events WHERE name IN ({marks}) "
               f"AND block BETWEEN ? AND ?")  # fmt: skip
        params: list = [*names, from_block, to_block]
        if topic1:
            sql += f" AND agreement IN ({','.join('?' * len(topic1))})"
            params += [bytes(t) for t in topic1]
        sql += " ORDER BY block, log_index"
        try:
            cursor = self.conn.execute(sql, params)
            for block, index, tx, name, args in cursor:
                yield Log(event=name, block=block, tx=tx, index=index, args=_loads(args))
        except sqlite3.DatabaseError as err:
            raise _problem(self.path, err, "is damaged", hint=True) from None

    def read(self, reader: LogReader, names: list[str], from_block: int, to_block: int, *,
             topic1: list[bytes] | None = None, page_size: int) -> Iterator[Log]:  # fmt: skip
        """Logs as :meth:`LogReader.read` returns them: from the index up to its tip, then from the node
        for the blocks after it (if ``to_block`` is past the tip)."""
        tip = self.tip_block
        if from_block <= min(tip, to_block):
            yield from self.logs(names, from_block, min(tip, to_block), topic1)
        if to_block > tip:
            yield from reader.read(names, max(from_block, tip + 1), to_block, topic1=topic1, page_size=page_size)


@contextmanager
def _write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` (the write lock: one writer at a time), the body, ``COMMIT``; on any exception
    (an interrupt included) ``ROLLBACK``, so nothing of the body is kept."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _problem(path: Path, err: sqlite3.DatabaseError, what: str, *, hint: bool = False) -> LedgerError:
    """A damaged file (:class:`IndexDamaged`: SQLite cannot read it, or tables are missing), or an index
    that cannot be used now (locked, disk full): a plain :class:`LedgerError`, the file left alone."""
    text = str(err)
    if storage_problem(err) is not None:  # a read-only folder or a full disk: the file is fine
        return StorageUnwritable(f"the index {path} cannot be written ({text})")
    damaged = not isinstance(err, sqlite3.OperationalError) or text.startswith(("no such table", "no such column"))
    if damaged:
        tail = "; run `ledger index rebuild`" if hint else ""
        return IndexDamaged(f"the index {path} {what} ({text}){tail}")
    return LedgerError(f"the index {path} cannot be used now ({text}); run the command again")


def _block_hash(rpc, number: int) -> str | None:
    block = rpc.request("eth_getBlockByNumber", [hex(number), False])
    return block.get("hash") if block else None


def _block_hashes(rpc, numbers: list[int]) -> list[str | None]:
    if not numbers:
        return []
    replies = rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
    return [(reply or {}).get("hash") for reply in replies]
