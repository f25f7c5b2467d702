"""The local chain's durable store: snapshots of Anvil's state and a journal of every block since.

No RPC and no processes here: only files, written so that a crash at any instant leaves a usable copy
(see docs/local-chain.md). The supervisor (:mod:`ledger.chain.supervisor`) writes; ``ledger chain
status`` reads.

Layout of ``<data>/node/store/``:

- ``snap-NNNNNN.gz``: one snapshot, the bytes of ``anvil_dumpState`` (gzipped JSON), and beside it
  ``snap-NNNNNN.json``: the block it holds (number, hash, timestamp), its SHA-256, its size and the
  first journal segment a restore from it reads. Each file is written aside (``.tmp``), fsync'd,
  renamed, and the folder fsync'd; the metadata goes last, so a snapshot without valid metadata, or
  whose bytes do not match its checksum, is skipped. The two newest valid snapshots are kept.
- ``journal-NNNNNN.log``: segments of an append-only journal. Each record is ``length (4 bytes LE) |
  CRC-32 of the payload (4 bytes LE) | payload`` with a compact JSON payload:

  * a block: ``{"t": "b", "n": number, "h": hash, "p": parent hash, "ts": timestamp, "bf": base fee,
    "w": wall-clock time it was seen, "tx": [raw signed transactions, hex]}``;
  * a truncation: ``{"t": "x", "n": N}``: blocks above N were reverted (``evm_revert``,
    ``anvil_rollback``, a reorganisation); what follows builds on block N. With ``"h"``, the chain was
    replaced below every snapshot and a new snapshot of block N (hash h) starts it again;
  * a clean stop: ``{"t": "s", "n": head}`` (``ledger chain down``): nothing was lost.

  A record cut short by a crash (bad length or CRC) ends the journal; the writer cuts such a tail off
  before it appends again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HEADER = struct.Struct("<II")
MAX_RECORD = 1 << 30
KEEP_SNAPSHOTS = 2
_FAULT_COUNTS: dict[str, int] = {}


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write aside, fsync, rename over ``path``, fsync the folder: ``path`` is the old bytes or the new."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        fault_point("snapshot-write", out, data)
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fault_point(where: str, out=None, data: bytes = b"") -> None:
    """A test hook: with ``LEDGER_STORE_FAULT=<where>[:N]`` (``snapshot-write``, ``journal-write``), at the
    N-th write there (default the first) the process writes half of ``data`` (so the file
    on disk is cut exactly as a crash mid-write leaves it) and then kills itself with SIGKILL. Off unless
    that variable names this point; nothing else reads it."""
    spec = os.environ.get("LEDGER_STORE_FAULT", "")
    name, _, nth = spec.partition(":")
    if name != where:
        return
    _FAULT_COUNTS[where] = _FAULT_COUNTS.get(where, 0) + 1
    if _FAULT_COUNTS[where] < int(nth or 1):
        return
    import signal

    if out is not None and data:
        out.write(data[: max(1, len(data) // 2)])
        out.flush()
        os.fsync(out.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def encode(record: dict) -> bytes:
    payload = json.dumps(record, separators=(",", ":")).encode()
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True)
class Snapshot:
    seq: int
    block: int
    hash: str
    timestamp: int
    sha256: str
    size: int
    journal_from: int
    created: float
    path: Path

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class View:
    """The chain the journal describes: for each block number, its record (blocks the journal holds) or
    at least its hash (parents named by those records); ``head`` is the last block, None if empty."""

    records: dict[int, dict] = field(default_factory=dict)
    hashes: dict[int, str] = field(default_factory=dict)
    head: int | None = None
    torn_tail: bool = False  # the last record was cut short by a crash (and is not counted)
    damaged_tail: tuple[str, int] | None = None  # (segment, byte): a bad record with whole records after it
    bad_segment: str | None = None  # a segment that is not the last ended in a bad record
    stopped_cleanly: bool = False  # the last record is a clean stop (`ledger chain down`)
    gap: tuple[int, int] | None = None  # set by after(): (first, last) block it could not give, in order

    def apply(self, record: dict) -> None:
        n = int(record["n"])
        self.stopped_cleanly = record.get("t") == "s"
        if record.get("t") == "s":  # a clean stop at block n: nothing to replay
            return
        if record.get("t") == "x":
            self._drop_above(n)
            if record.get("h"):  # the chain was replaced: block n is a new snapshot's
                self.records.clear()
                self.hashes = {n: record["h"]}
            self.head = n
            return
        self._drop_above(n - 1)
        self.records[n] = record
        self.hashes[n] = record["h"]
        self.hashes.setdefault(n - 1, record["p"])
        self.head = n

    def _drop_above(self, n: int) -> None:
        for k in [k for k in self.records if k > n]:
            del self.records[k]
        for k in [k for k in self.hashes if k > n]:
            del self.hashes[k]

    def continues(self, snap: Snapshot) -> bool:
        """Whether this journal builds on ``snap`` (the snapshot's block is on the journal's chain)."""
        if self.head is None:
            return True
        if self.head < snap.block:
            return False
        known = self.hashes.get(snap.block)
        return known is None or known == snap.hash

    def after(self, block: int) -> list[dict]:
        """The block records above ``block``, in order (the blocks a restore replays): the unbroken run of
        them, each naming the one before as its parent. A block missing (its segment damaged) or a record
        whose parent is not the block before ends the run; :attr:`gap` then says which blocks are left out."""
        self.gap = None
        if self.head is None:
            return []
        run, parent = [], self.hashes.get(block)
        for n in range(block + 1, self.head + 1):
            record = self.records.get(n)
            if record is None or (parent is not None and record["p"] != parent):
                self.gap = (n, self.head)
                break
            run.append(record)
            parent = record["h"]
        return run


class Store:
    def __init__(self, folder: Path):
        self.folder = folder

    def exists(self) -> bool:
        return self.folder.is_dir() and any(self.folder.iterdir())

    def drop_partial_files(self) -> list[str]:
        """Delete files left half-written by a crash (``*.tmp``: never the only copy of anything)."""
        dropped = []
        for path in self.folder.glob("*.tmp") if self.folder.is_dir() else []:
            path.unlink(missing_ok=True)
            dropped.append(path.name)
        return dropped

    # -- snapshots ----------------------------------------------------------------------------------

    def snapshots(self) -> list[Snapshot]:
        """Snapshots with readable metadata, newest first (their bytes are checked by :meth:`read`)."""
        found = []
        for meta in self.folder.glob("snap-*.json") if self.folder.is_dir() else []:
            try:
                info = json.loads(meta.read_text())
                found.append(
                    Snapshot(
                        seq=int(info["seq"]),
                        block=int(info["block"]),
                        hash=str(info["hash"]),
                        timestamp=int(info["timestamp"]),
                        sha256=str(info["sha256"]),
                        size=int(info["size"]),
                        journal_from=int(info["journal_from"]),
                        created=float(info["created"]),
                        path=meta.with_suffix(".gz"),
                    )  # fmt: skip
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return sorted(found, key=lambda s: s.seq, reverse=True)

    def read(self, snap: Snapshot) -> bytes | None:
        """The snapshot's bytes if they are whole (size and SHA-256 as recorded), else None."""
        try:
            data = snap.path.read_bytes()
        except OSError:
            return None
        if len(data) != snap.size or hashlib.sha256(data).hexdigest() != snap.sha256:
            return None
        return data

    def write_snapshot(self, data: bytes, *, block: int, hash: str, timestamp: int, journal_from: int) -> Snapshot:
        self.folder.mkdir(parents=True, exist_ok=True)
        seq = max((s.seq for s in self.snapshots()), default=0) + 1
        data_path = self.folder / f"snap-{seq:06d}.gz"
        write_atomic(data_path, data)
        info = {
            "seq": seq, "block": block, "hash": hash, "timestamp": timestamp,
            "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
            "journal_from": journal_from, "created": time.time(),
        }  # fmt: skip
        write_atomic(data_path.with_suffix(".json"), (json.dumps(info, indent=1) + "\n").encode())
        return self.snapshots()[0]

    def prune(self, keep: int = KEEP_SNAPSHOTS) -> None:
        """Keep the ``keep`` newest whole snapshots and the journal segments they need; drop the rest."""
        whole = [s for s in self.snapshots() if self.read(s) is not None]
        kept = whole[:keep]
        if len(kept) < keep:
            return  # too few whole snapshots: keep everything
        oldest_kept = min(s.seq for s in kept)
        for path in [*self.folder.glob("snap-*.json"), *self.folder.glob("snap-*.gz")]:
            with contextlib.suppress(ValueError):
                if int(path.stem.split("-")[1]) < oldest_kept:
                    path.unlink(missing_ok=True)
        oldest_needed = min(s.journal_from for s in kept)
        for seq, path in self.segments():
            if seq < oldest_needed:
                path.unlink(missing_ok=True)
        fsync_dir(self.folder)

    # -- journal ------------------------------------------------------------------------------------

    def segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.folder.glob("journal-*.log") if self.folder.is_dir() else []:
            with contextlib.suppress(ValueError):
                found.append((int(path.stem.split("-")[1]), path))
        return sorted(found)

    def view(self, from_seq: int = 0) -> View:
        view = View()
        segments = [(seq, path) for seq, path in self.segments() if seq >= from_seq]
        for i, (_, path) in enumerate(segments):
            for record, _end in read_segment(path):
                view.apply(record)
            if _torn(path):
                if i < len(segments) - 1:
                    view.bad_segment = path.name
                elif (offset := damage_at(path)) is not None:
                    view.damaged_tail = (path.name, offset)
                else:
                    view.torn_tail = True
        return view

    def last_block(self) -> dict | None:
        """The newest record of the journal (what is durable): a block, or a truncation. Reads only the
        record headers of the last segments, and the payload of the last whole record."""
        for _, path in reversed(self.segments()):
            record = last_record(path)
            if record is not None:
                return record
        return None

    def bytes_on_disk(self) -> int:
        """Space the store takes on disk (allocated blocks, not apparent sizes)."""
        total = 0
        for path in self.folder.iterdir() if self.folder.is_dir() else []:
            with contextlib.suppress(OSError):
                total += path.stat().st_blocks * 512
        return total


def read_segment(path: Path) -> Iterator[tuple[dict, int]]:
    """Each whole record of a segment with the offset just after it; stops at the first bad one."""
    try:
        data = path.read_bytes()
    except OSError:
        return
    pos = 0
    while pos + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + length
        if length > MAX_RECORD or end > len(data):
            return
        payload = data[pos + HEADER.size : end]
        if zlib.crc32(payload) != crc:
            return
        try:
            record = json.loads(payload)
        except ValueError:
            return
        pos = end
        yield record, pos


def last_record(path: Path) -> dict | None:
    offsets = []
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            pos = 0
            while pos + HEADER.size <= size:
                f.seek(pos)
                length, _crc = HEADER.unpack(f.read(HEADER.size))
                if length > MAX_RECORD or pos + HEADER.size + length > size:
                    break
                offsets.append(pos)
                pos += HEADER.size + length
            for start in reversed(offsets):
                f.seek(start)
                length, crc = HEADER.unpack(f.read(HEADER.size))
                payload = f.read(length)
                if zlib.crc32(payload) == crc:
                    with contextlib.suppress(ValueError):
                        return json.loads(payload)
    except OSError:
        return None
    return None


def valid_length(path: Path) -> int:
    """The length of the segment's whole records (a torn tail is what lies beyond)."""
    return max((end for _record, end in read_segment(path)), default=0)


def damage_at(path: Path) -> int | None:
    """The offset of the first bad record of a segment if whole records follow it (damage: bit rot, a
    bad sector, an edit), or None (the file is whole, or ends in a crash's torn tail: a record cut short
    is always the last thing in the file). Whole records start with a header and ``{"t":``."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    good = max((end for _record, end in read_segment(path)), default=0)
    if good == len(data):
        return None
    found = data.find(b'{"t":', good + HEADER.size + 1)
    while found != -1:
        start = found - HEADER.size
        length, crc = HEADER.unpack_from(data, start)
        payload = data[found : found + length]
        if len(payload) == length and zlib.crc32(payload) == crc:
            with contextlib.suppress(ValueError):
                if isinstance(json.loads(payload), dict):
                    return good
        found = data.find(b'{"t":', found + 1)
    return None


def _torn(path: Path) -> bool:
    try:
        return valid_length(path) != path.stat().st_size
    except OSError:
        return False


class JournalWriter:
    """Appends records to the newest segment (a torn tail cut off first); :meth:`sync` makes them durable."""

    def __init__(self, store: Store):
        self.store = store
        store.folder.mkdir(parents=True, exist_ok=True)
        segments = store.segments()
        self.kept_aside: Path | None = None  # a damaged segment's copy, kept before its bad tail is cut
        if segments:
            self.seq, path = segments[-1]
            good = valid_length(path)
            if good != path.stat().st_size:
                if damage_at(path) is not None:  # not a torn tail: keep every byte before cutting
                    self.kept_aside = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
                    shutil.copyfile(path, self.kept_aside)
                    with open(self.kept_aside, "rb") as copy:
                        os.fsync(copy.fileno())
                with open(path, "r+b") as f:
                    f.truncate(good)
                    os.fsync(f.fileno())
        else:
            self.seq, path = 1, store.folder / "journal-000001.log"
        self._file = open(path, "ab")  # noqa: SIM115 - kept open for the life of the writer
        fsync_dir(store.folder)
        self.unsynced_since: float | None = None
        self.bytes_written = 0

    def append(self, record: dict) -> None:
        data = encode(record)
        fault_point("journal-write", self._file, data)
        self._file.write(data)
        self.bytes_written += len(data)
        if self.unsynced_since is None:
            self.unsynced_since = time.monotonic()

    def sync(self) -> None:
        if self.unsynced_since is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self.unsynced_since = None

    def rotate(self) -> int:
        """Start a new segment (after a snapshot, so older segments can be dropped); its number."""
        self.sync()
        self._file.close()
        self.seq += 1
        self._file = open(self.store.folder / f"journal-{self.seq:06d}.log", "ab")  # noqa: SIM115
        fsync_dir(self.store.folder)
        return self.seq

    def close(self) -> None:
        self.sync()
        self._file.close()
