"""Reconcile a payout statement (the CSV ``ledger payouts --format csv`` writes, or one a person edited)
line by line against the credits the audit replayed from the chain.

A line is keyed by (alliance, period, ME, tier). Each line's amount is compared with the chain: from
``amount_base_units`` when the column is there, else from ``amount`` in token units (both, when both
are there). Chain payouts inside the scope (``--me``/``--alliance``/``--period``: the filters the
statement was written with) that no line covers are *missing*; lines the chain has no payout for, or
that repeat a line, or fall outside the scope are *extra*.

Cells are read back with :func:`ledger.csvcells.decode`, the inverse of how ``ledger payouts`` wrote
them (an apostrophe before a formula-like or escaped cell), after stripping the spaces a person may
have typed around them: a name with its own spaces, tabs or control characters at either end is
encoded without any, so it reads back exactly and matches the chain.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from ledger.csvcells import decode
from ledger.errors import LedgerError
from ledger.money import AmountError, format_amount, parse_amount
from ledger.services.audit import AuditReport, Finding

TIERS = ("recoup", "base", "excess", "reversal")  # a reversal line is negative: what the ME was debited


def _known_tier(tier: str) -> bool:
    """A tier a payout line can carry: those of TIERS, or ``band N`` (N from 1 to MAX_BANDS)."""
    from ledger.terms import MAX_BANDS

    return tier in TIERS or tier in {f"band {j}" for j in range(1, MAX_BANDS + 1)}


class StatementUnreadable(LedgerError):
    """The statement cannot be reconciled at all (no such file, not a CSV statement): the audit cannot run."""

    exit_code = 2


@dataclass(frozen=True)
class Scope:
    me: str | None = None
    alliance: str | None = None
    period: int | None = None

    def covers(self, alliance: str, period: int, me: str) -> bool:
        return (
            (self.alliance is None or alliance == self.alliance)
            and (self.period is None or period == self.period)
            and (self.me is None or me == self.me)
        )

    def describe(self) -> str:
        parts = [f"--{k} {v}" for k, v in (("me", self.me), ("alliance", self.alliance), ("period", self.period)) if v]
        return " ".join(parts) or "the whole ledger"


def read_statement(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and ``(line number, row)`` pairs; raises :class:`StatementUnreadable`."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise StatementUnreadable(f"statement {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise StatementUnreadable(f"statement {path}: not UTF-8 text (byte {err.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [decode(h.strip()).lower() for h in next(reader)]
    except StopIteration:
        raise StatementUnreadable(f"statement {path}: the file is empty") from None
    except csv.Error as err:
        raise StatementUnreadable(f"statement {path}: line 1: {err}") from None
    needed = [c for c in ("alliance", "period", "tier") if c not in header]
    if "me" not in header and "me_id" not in header:
        needed.append("me")
    if "amount" not in header and "amount_base_units" not in header:
        needed.append("amount")
    if needed:
        raise StatementUnreadable(
            f"statement {path}: the header lacks {', '.join(needed)}; expected the columns of "
            f"`ledger payouts --format csv` (alliance,period,me_id,me,tier,token,symbol,amount,amount_base_units)"
        )
    rows = []
    try:
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            rows.append(
                (reader.line_num, {k: (decode(row[i].strip()) if i < len(row) else "") for i, k in enumerate(header)})
            )
    except csv.Error as err:
        raise StatementUnreadable(f"statement {path}: line {reader.line_num}: {err}") from None
    return header, rows


def reconcile(path: Path, report: AuditReport, scope: Scope = Scope()) -> dict[str, int]:
    """Append a finding for every line that differs, is missing or is extra; returns the line counts."""
    _, rows = read_statement(path)
    name = path.name
    ids_by_name = {me: me_id for me_id, me in report.me_names.items()}
    chain = report.payouts
    matched: set[tuple[str, int, int, str]] = set()
    counts = {"statement_lines": len(rows), "statement_lines_matching": 0}

    def finding(kind: str, line: int | None, message: str, **values) -> None:
        where = f"{name} line {line}: " if line else f"{name}: "
        report.findings.append(Finding(kind, where + message, values={"line": line, **values}))

    for line, row in rows:
        alliance = row.get("alliance", "")
        tier = row.get("tier", "").lower()
        try:
            period = int(row.get("period", ""))
        except ValueError:
            finding("statement-extra", line, f"period {row.get('period')!r} is not a whole number")
            continue
        me_id, problem = _me_of(row, report.me_names, ids_by_name)
        if problem:
            finding("statement-extra", line, problem)
            continue
        me = report.me_names[me_id]
        if not _known_tier(tier):
            finding(
                "statement-extra",
                line,
                f"tier {row.get('tier')!r} is not 'recoup', 'base', 'excess', 'band N' or 'reversal'",
            )
            continue
        if alliance not in report.alliance_tokens:
            finding("statement-extra", line, f"alliance {alliance!r} does not exist on the chain")
            continue
        key = (alliance, period, me_id, tier)
        label = f"{alliance} {period} {me} {tier}"
        if not scope.covers(alliance, period, me):
            finding("statement-extra", line, f"{label} is outside the statement's scope ({scope.describe()})")
            continue
        if key in matched:
            finding("statement-extra", line, f"{label} repeats an earlier line")
            continue
        actual = chain.get(key)
        if actual is None:
            finding("statement-extra", line, f"{label}: the chain credited nothing", alliance=alliance,
                    period=period, me=me, tier=tier)  # fmt: skip
            continue
        matched.add(key)
        token = report.token(report.alliance_tokens[alliance])
        decimals, symbol = (token.decimals, token.symbol) if token else (0, "")
        stated, problem = _amount_of(row, decimals)
        if problem:
            finding("statement-differs", line, f"{label}: {problem}", chain=format_amount(actual, decimals))
            continue
        if row.get("token") and token and row["token"].lower() != token.token.lower():
            finding("statement-differs", line, f"{label}: token {row['token']}, the alliance settles in {token.token}")
            continue
        if stated != actual:
            finding(
                "statement-differs",
                line,
                f"{label}: {format_amount(stated, decimals)} {symbol} stated, the chain credited "
                f"{format_amount(actual, decimals)} {symbol}",
                alliance=alliance, period=period, me=me, tier=tier, stated=str(stated), chain=str(actual),
            )  # fmt: skip
            continue
        counts["statement_lines_matching"] += 1

    for (alliance, period, me_id, tier), amount in sorted(chain.items()):
        me = report.me_names.get(me_id, str(me_id))
        if (alliance, period, me_id, tier) in matched or not amount or not scope.covers(alliance, period, me):
            continue
        token = report.token(report.alliance_tokens.get(alliance, ""))
        decimals, symbol = (token.decimals, token.symbol) if token else (0, "")
        finding(
            "statement-missing",
            None,
            f"no line for {alliance} {period} {me} {tier}: the chain credited "
            f"{format_amount(amount, decimals)} {symbol}",
            alliance=alliance, period=period, me=me, tier=tier, chain=str(amount),
        )  # fmt: skip
    return counts


def _me_of(row: dict[str, str], names: dict[int, str], ids: dict[str, int]) -> tuple[int | None, str | None]:
    raw_id, name = row.get("me_id", ""), row.get("me", "")
    if raw_id:
        try:
            me_id = int(raw_id)
        except ValueError:
            return None, f"me_id {raw_id!r} is not a whole number"
        if me_id not in names:
            return None, f"ME id {me_id} does not exist on the chain"
        if name and names[me_id] != name:
            return None, f"me_id {me_id} is {names[me_id]!r} on the chain, the line says {name!r}"
        return me_id, None
    if name not in ids:
        return None, f"ME {name!r} does not exist on the chain"
    return ids[name], None


def _amount_of(row: dict[str, str], decimals: int) -> tuple[int | None, str | None]:
    units_text, amount_text = row.get("amount_base_units", ""), row.get("amount", "")
    units = amount = None
    if units_text:
        reversal = row.get("tier", "").lower() == "reversal"  # reversal lines are negative
        digits = units_text.removeprefix("-") if reversal else units_text
        if not (digits.isascii() and digits.isdigit()):
            return None, f"amount_base_units {units_text!r} is not a whole number"
        units = int(units_text)
    if amount_text:
        negative = row.get("tier", "").lower() == "reversal" and amount_text.strip().startswith("-")
        try:
            text = amount_text.strip()[1:] if negative else amount_text
            amount = parse_amount(text, decimals) * (-1 if negative else 1)
        except AmountError as err:
            return None, f"amount {err}"
    if units is None and amount is None:
        return None, "the line has no amount"
    if units is not None and amount is not None and units != amount:
        return None, (
            f"amount {amount_text} and amount_base_units {units_text} disagree "
            f"({format_amount(units, decimals)} in token units)"
        )
    return (units if units is not None else amount), None
