"""Checking a whole revenue file in one streaming pass: the rows (:mod:`.parse`), the references
repeated inside it (:mod:`.duplicates`) and, for settlement, its sound rows spooled to disk
(:mod:`.spool`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ledger.revenue_file.duplicates import DuplicateFinder
from ledger.revenue_file.parse import Converter, Problems, iter_rows, problem_row
from ledger.revenue_file.spool import SpooledEvents


def check_file(
    path: Path,
    decimals_of: Callable[[str], int],
    *,
    spill_dir: Path | None = None,
    spool: SpooledEvents | None = None,
) -> tuple[list[str], int]:
    """The file's problems, by row (the first ``MAX_PROBLEMS`` of them), and how many there are in all,
    reading it once as a stream: memory stays bounded whatever its size. References repeated inside the
    file are found with :class:`DuplicateFinder`, which moves to disk past ``IN_MEMORY`` references.
    With ``spool``, every sound row is also written to it (settlement reads the events from there, one
    alliance at a time, when the file has no problem)."""
    problems = Problems()
    converter = Converter(decimals_of)
    with DuplicateFinder(spill_dir) as duplicates:
        for raw in iter_rows(path, problems):
            # The row's other fields were checked by iter_rows; the event model would add nothing.
            amount = converter.amount(raw, problems)
            if amount is not None or raw.alliance in converter.unknown:
                duplicates.add(raw.reference, raw.row)
            if spool is not None and amount is not None and not problems.total:
                spool.add(raw.alliance, raw.row, raw.reference, amount, raw.period, raw.reverses)
        if spool is not None and problems.blank_count:
            spool.blank_rows = (problems.blank_count, list(problems.blank_rows))
        for problem in duplicates.repeats():
            problems.add(problem)
    for problem in converter.unknown_problems():
        problems.add(problem)
    return sorted(problems, key=problem_row), problems.total
