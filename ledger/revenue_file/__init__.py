"""Revenue event files: CSV or JSON lines, read without touching the chain.

CSV: a header row naming exactly the columns ``reference,alliance,amount,period`` (any order, any
case), then one event per row. UTF-8 with or without a BOM; LF or CRLF line ends.

A row whose fields are all empty (``,,,``: spreadsheets export them after the last row) is skipped
and counted (:attr:`SpooledEvents.blank_rows`); a UTF-16 file (what "Unicode text" means to Excel) is
refused with how to save it as UTF-8.

References are Unicode NFC: a reference typed in another form (``e`` + U+0301 for ``é``) is the same
reference as its NFC form, and is settled (and compared with what was settled before) as that form;
see docs/input-rules.md. Alliance names must match the alliance's name exactly.

JSON lines: one object per line with the keys ``reference``, ``alliance``, ``amount`` and ``period``.
Amounts are decimal strings (``"12.50"``): a JSON number with a fraction is refused, because it would
pass through a float. Blank lines are skipped.

Both formats take an optional ``reverses`` column (key): the reference of a settled event the row
reverses (a return or correction, see docs/reversals.md). Empty (or null, or absent) for revenue.

Rows are numbered as lines of the file (the CSV header is row 1), so "row 48211" is line 48211 in any
editor. Reading happens in two steps: :func:`read_rows` checks the shape of every row; :func:`to_events`
converts amounts with each alliance's token decimals. Every problem found is kept (up to
``MAX_PROBLEMS``) so one run of the command lists them all.

One module per job; this package's names are their public surface:
- :mod:`.parse`: the formats, each row checked, amounts converted (:func:`read_rows`, :func:`to_events`)
- :mod:`.duplicates`: references repeated inside a file, in bounded memory (:class:`DuplicateFinder`)
- :mod:`.spool`: a checked file's events on disk by alliance, for settlement (:class:`SpooledEvents`)
- :mod:`.check`: the whole file in one streaming pass, using the three above (:func:`check_file`)
"""

from ledger.revenue_file.check import check_file
from ledger.revenue_file.duplicates import DuplicateFinder
from ledger.revenue_file.parse import (
    COLUMNS,
    MAX_PROBLEMS,
    OPTIONAL_COLUMNS,
    RawRow,
    check_start,
    detect_format,
    iter_rows,
    problem_row,
    read_rows,
    to_events,
)
from ledger.revenue_file.spool import SpooledEvents

__all__ = [
    "COLUMNS",
    "MAX_PROBLEMS",
    "OPTIONAL_COLUMNS",
    "DuplicateFinder",
    "RawRow",
    "SpooledEvents",
    "check_file",
    "check_start",
    "detect_format",
    "iter_rows",
    "problem_row",
    "read_rows",
    "to_events",
]
