"""Printing: aligned text tables, JSON, CSV. Amounts arrive as strings already in token units.

Names come from the chain, where anyone who bypasses this CLI (or registered before its name rules) may
have put control or bidi characters: every table cell goes through :func:`ledger.names.shown`, and CSV
cells through :mod:`ledger.csvcells` (spreadsheet-safe, read back exactly by the audit)."""

from __future__ import annotations

import json

import click

from ledger.money import percent as pct  # noqa: F401 - basis points as a percentage, exactly
from ledger.names import shown

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")  # a reading command's --json


def table(headers: list[str], rows: list[list], *, right: set[int] | None = None) -> str:
    """A plain aligned table; columns in ``right`` (by index) are right-aligned (numbers)."""
    right = right or set()
    cells = [[shown(str(c)) for c in headers]] + [[shown(str(c)) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row):
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def echo_listing(as_json: bool, data, headers: list[str], rows: list[list], *, empty: str, right: set[int]) -> None:
    """A list command's output: ``data`` as JSON, else ``rows`` as a table (``empty`` when there are none)."""
    if as_json:
        echo_json(data)
    elif not rows:
        click.echo(empty)
    else:
        click.echo(table(headers, rows, right=right))


def to_csv(headers: list[str], rows: list[list]) -> str:
    """CSV with every cell spreadsheet-safe (see :mod:`ledger.csvcells`)."""
    from ledger.csvcells import to_csv as encoded_csv

    return encoded_csv(headers, rows)
