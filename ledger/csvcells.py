"""CSV cells that are safe to open in a spreadsheet and read back exactly: the one owner of how every
CSV the ledger writes encodes its cells (``ledger payouts --format csv``, the statement finance hands
to MEs) and of how ``ledger audit --statement`` decodes them.

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return
before one) as a formula: an ME named ``=HYPERLINK("http://x","y")`` would put a link, or worse, in
the file finance sends. The usual rule (OWASP, "CSV injection") is a leading apostrophe, which makes the
cell text. Here a cell is written **encoded**: an apostrophe, then the text with every backslash
doubled, every control or invisible character (``ESC``, tab, CR, LF, U+202E ...) as ``\\xNN``,
``\\uNNNN`` or ``\\UNNNNNNNN``, and a space at either end as ``\\x20``, when its text

- starts with ``=``, ``+``, ``-``, ``@`` or an apostrophe (so an apostrophe of the name itself survives
  the round trip), and is not a plain number;
- or contains a control or invisible character;
- or starts or ends with a space.

Every other cell is written as it is: numbers (``12.50``, ``202611``, ``-3``), addresses and ordinary
names never change. Decoding is the exact inverse: a cell that starts with an apostrophe is encoded,
any other is literal. A reader may strip the spaces a person typed around a cell first: an encoded cell
has none of its own at either end.
"""

from __future__ import annotations

import csv
import io
import re

from ledger.names import escape_hidden

_FORMULA_START = ("=", "+", "-", "@", "'")
_FAST_START = frozenset("=+-@' ")
_PLAIN_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_ESCAPE = re.compile(r"\\(\\|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})")


def needs_encoding(text: str) -> bool:
    if not text:
        return False
    if text.startswith(_FORMULA_START) and not _PLAIN_NUMBER.fullmatch(text):
        return True
    return text != text.strip(" ") or escape_hidden(text) != text


def encode(value) -> str:
    """The cell for ``value`` (ints and plain numbers as they are)."""
    text = value if isinstance(value, str) else str(value)
    if not text or (text.isascii() and text.isprintable() and text[0] not in _FAST_START and text[-1] != " "):
        return text  # the common cell (printable ASCII, no formula start, no space at an end), checked fast
    if not needs_encoding(text):
        return text
    body = escape_hidden(text.replace("\\", "\\\\"))
    stripped = body.lstrip(" ")
    body = "\\x20" * (len(body) - len(stripped)) + stripped
    stripped = body.rstrip(" ")
    body = stripped + "\\x20" * (len(body) - len(stripped))
    return "'" + body


def decode(cell: str) -> str:
    """The text a cell written by :func:`encode` stands for (a cell without the apostrophe is literal)."""
    if not cell.startswith("'"):
        return cell

    def one(match: re.Match) -> str:
        code = match.group(1)
        return "\\" if code == "\\" else chr(int(code[1:], 16))

    return _ESCAPE.sub(one, cell[1:])


def to_csv(headers: list[str], rows: list[list]) -> str:
    """A whole CSV document (LF line ends), every cell encoded."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([encode(h) for h in headers])
    writer.writerows([encode(cell) for cell in row] for row in rows)
    return buffer.getvalue()
