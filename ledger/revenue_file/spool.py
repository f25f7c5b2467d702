"""The events of a checked revenue file, held on disk by alliance (bounded memory for any size)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ledger.models import RevenueEvent


class SpooledEvents:
    """The events of a checked file, spooled to disk by alliance in file order, so that settling a file
    of any size holds one alliance's events in memory at a time. Rows are buffered and appended to each
    alliance's file in chunks (few file opens however the alliances interleave). A context manager: the
    spool (a temporary folder) is deleted on exit."""

    BUFFERED = 50_000  # rows held before they are appended to their alliance files

    def __init__(self, folder: Path | None = None):
        import tempfile

        self._tmp = tempfile.TemporaryDirectory(prefix="ledger-spool-", dir=folder)
        self._index: dict[str, int] = {}
        self._counts: dict[str, int] = {}
        self._buffers: dict[str, list[str]] = {}
        self._buffered = 0
        self.blank_rows: tuple[int, list[int]] = (0, [])  # empty rows skipped: count, the first row numbers

    def __enter__(self) -> SpooledEvents:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._buffers = {}
        self._tmp.cleanup()

    def _path(self, alliance: str) -> Path:
        return Path(self._tmp.name) / f"{self._index[alliance]}.tsv"

    def _flush(self) -> None:
        for alliance, lines in self._buffers.items():
            if lines:
                with open(self._path(alliance), "a", encoding="utf-8") as handle:
                    handle.writelines(lines)
                lines.clear()
        self._buffered = 0

    def add(
        self, alliance: str, row: int, reference: str, amount: int, period: int, reverses: str | None = None
    ) -> None:
        buffer = self._buffers.get(alliance)
        if buffer is None:
            self._index[alliance] = len(self._index)
            self._counts[alliance] = 0
            buffer = self._buffers[alliance] = []
        # The reference is the last field, so tabs in it are harmless; one with a line break (possible
        # in JSON lines) is written as JSON after a NUL, which no reference can contain.
        if "\n" in reference or "\r" in reference:
            reference = "\0" + json.dumps(reference)
        # The original's reference is written as JSON (no tab or line break survives that), or empty.
        original = json.dumps(reverses) if reverses is not None else ""
        buffer.append(f"{row}\t{amount}\t{period}\t{original}\t{reference}\n")
        self._counts[alliance] += 1
        self._buffered += 1
        if self._buffered >= self.BUFFERED:
            self._flush()

    def alliances(self) -> list[str]:
        return sorted(self._index)

    def count(self, alliance: str) -> int:
        return self._counts.get(alliance, 0)

    def __len__(self) -> int:
        return sum(self._counts.values())

    def rows(self, alliance: str) -> Iterator[tuple[int, int, int, str]]:
        """The alliance's (row, amount, period, reference) in file order, read back from the spool."""
        for row, amount, period, reference, _ in self.records(alliance):
            yield row, amount, period, reference

    def records(self, alliance: str) -> Iterator[tuple[int, int, int, str, str | None]]:
        """The alliance's (row, amount, period, reference, reverses) in file order."""
        if alliance not in self._index:
            return
        if self._buffered:
            self._flush()
        with open(self._path(alliance), encoding="utf-8") as lines:
            for line in lines:
                row, amount, period, original, reference = line.removesuffix("\n").split("\t", 4)
                if reference.startswith("\0"):
                    reference = json.loads(reference[1:])
                yield int(row), int(amount), int(period), reference, (json.loads(original) if original else None)

    def events(self, alliance: str) -> list[RevenueEvent]:
        """The alliance's events in file order (checked already: built without validating again)."""
        return [
            RevenueEvent.model_construct(
                reference=ref, alliance=alliance, amount=amount, period=period, row=row, reverses=original
            )
            for row, amount, period, ref, original in self.records(alliance)
        ]
