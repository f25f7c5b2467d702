"""References repeated inside a revenue file, found with bounded memory (spilling to disk past
``DuplicateFinder.IN_MEMORY`` references)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


class DuplicateFinder:
    """Finds references repeated inside a file, with bounded memory. Rows arrive in file order. Up to
    ``IN_MEMORY`` references are kept in a dict; past that, every reference is written to one of
    ``BUCKETS`` files by hash, and each bucket is checked on its own at the end."""

    IN_MEMORY = 200_000
    BUCKETS = 256

    def __init__(self, spill_dir: Path | None = None):
        self.spill_dir = spill_dir
        self.first: dict[str, int] = {}
        self.found: list[str] = []
        self.buckets: list | None = None
        self._tmp = None

    def __enter__(self) -> DuplicateFinder:
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.buckets or ():
            handle.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def add(self, reference: str, row: int) -> None:
        if self.buckets is not None:
            self.buckets[hash(reference) % self.BUCKETS].write(f"{row}\t{reference}\n")
        elif reference in self.first:
            self.found.append(_repeat(row, reference, self.first[reference]))
        else:
            self.first[reference] = row
            if len(self.first) > self.IN_MEMORY:
                self._spill()

    def _spill(self) -> None:
        import tempfile

        self._tmp = tempfile.TemporaryDirectory(prefix="ledger-refs-", dir=self.spill_dir)
        folder = Path(self._tmp.name)
        self.buckets = [open(folder / f"{i}.txt", "w+", encoding="utf-8") for i in range(self.BUCKETS)]  # noqa: SIM115
        for reference, row in self.first.items():
            self.add(reference, row)
        self.first = {}

    def repeats(self) -> Iterator[str]:
        yield from self.found
        for handle in self.buckets or ():
            handle.flush()
            handle.seek(0)
            entries = []
            for line in handle:
                row, _, reference = line.rstrip("\n").partition("\t")
                entries.append((int(row), reference))
            first: dict[str, int] = {}
            for row, reference in sorted(entries):
                if reference in first:
                    yield _repeat(row, reference, first[reference])
                else:
                    first[reference] = row


def _repeat(row: int, reference: str, first: int) -> str:
    return f"row {row}: reference {reference!r} repeats row {first}"
