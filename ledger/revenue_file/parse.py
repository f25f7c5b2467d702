"""Reading a revenue file's rows: the CSV and JSON-lines formats (described in
:mod:`ledger.revenue_file`), each row checked field by field, then converted to events with each
alliance's token decimals. Every problem is kept by row (up to ``MAX_PROBLEMS``)."""

from __future__ import annotations

import csv
import json
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ledger.errors import InputError, LedgerError
from ledger.models import RevenueEvent, text_to_bytes32
from ledger.money import MAX_EVENT_AMOUNT, MAX_PERIOD, AmountError, parse_amount

COLUMNS = ("reference", "alliance", "amount", "period")
OPTIONAL_COLUMNS = ("reverses",)
MAX_PROBLEMS = 1_000


@dataclass(frozen=True)
class RawRow:
    row: int
    reference: str
    alliance: str
    amount: str
    period: int
    reverses: str | None = None  # the reference of the settled event this row reverses


class Problems(list):
    """Problems found, the first ``MAX_PROBLEMS`` kept (a file of garbage stays small in memory); also
    the empty rows skipped (their count, and the first few row numbers)."""

    total = 0
    blank_count = 0
    blank_rows: list[int]

    def blank(self, row: int) -> None:
        if not self.blank_count:
            self.blank_rows = []
        self.blank_count += 1
        if len(self.blank_rows) < 6:
            self.blank_rows.append(row)

    def add(self, text: str) -> None:
        self.append(text)

    def append(self, text: str) -> None:  # what `Converter` appends counts too
        self.total += 1
        if len(self) < MAX_PROBLEMS:
            super().append(text)


def detect_format(path: Path, first_line: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".txt"):
        return "csv"
    return "jsonl" if first_line.lstrip().startswith("{") else "csv"


def numbered_lines(path: Path, problems: Problems, *, header: bool = True) -> Iterator[tuple[int, str]]:
    """Decoded lines with their numbers; a line that is not UTF-8 becomes a problem and is skipped (a
    header that is not UTF-8 stops the reading: nothing after it can be read correctly)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the `with` below, after the error mapping
    except OSError as err:
        raise LedgerError(f"cannot read {path}: {err.strerror}") from None
    seen_text = False
    with handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            elif number == 1 and (raw.startswith((b"\xff\xfe", b"\xfe\xff")) or raw[:2].count(b"\0") == 1):
                raise InputError(
                    'row 1: the file is UTF-16 text (Excel\'s "Unicode Text"), not UTF-8; save it as UTF-8 '
                    '(Excel: Save As "CSV UTF-8"; LibreOffice: character set "Unicode (UTF-8)") and run again'
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                problem = f"row {number}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
                if header and not seen_text:
                    raise InputError(problem) from None
                problems.add(problem)
                continue
            seen_text = seen_text or bool(text.strip())
            text = text.rstrip("\r\n")
            if "\r" in text:
                problem = f"row {number}: a carriage return inside the line; save the file with LF or CRLF line ends"
                if number == 1:
                    raise InputError(problem)
                problems.add(problem)
                continue
            yield number, text


class _FractionalNumber(str):
    """Marks a JSON number with a fraction or exponent (kept as text so no float is ever made)."""


def _period(value, row: int, problems: Problems) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        problems.add(f"row {row}: period must be a whole number like 202611, got {type(value).__name__}")
        return None
    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or len(text) > 10 or not 0 < int(text) <= MAX_PERIOD:
        problems.add(f"row {row}: period {text!r} must be a whole number from 1 to {MAX_PERIOD}, like 202611")
        return None
    return int(text)


def _reverses(row: int, value, reference, problems: Problems) -> tuple[bool, str | None]:
    """The optional ``reverses`` field: (ok, the original's reference or None)."""
    if value is None:
        return True, None
    if not isinstance(value, str) or isinstance(value, _FractionalNumber):
        problems.add(f"row {row}: reverses must be text (the reference of a settled event), got {type(value).__name__}")
        return False, None
    text = value.strip()
    if not text:
        return True, None
    try:
        text = _nfc(text)  # named in NFC, the form its original was settled in
        text_to_bytes32(text, "reverses")
    except UnicodeEncodeError:
        problems.add(f"row {row}: reverses is not valid Unicode text (a lone surrogate)")
        return False, None
    except ValueError as err:
        problems.add(f"row {row}: {err}")
        return False, None
    if isinstance(reference, str) and text == _nfc(reference.strip()):
        problems.add(f"row {row}: reference {text!r} reverses itself")
        return False, None
    return True, text


def _check(row: int, reference, alliance, amount, period, problems: Problems, reverses=None) -> RawRow | None:
    if reverses is not None:
        ok, original = _reverses(row, reverses, reference, problems)
        raw = _check(row, reference, alliance, amount, period, problems)
        if not ok or raw is None:
            return None
        return RawRow(raw.row, raw.reference, raw.alliance, raw.amount, raw.period, original)
    if type(reference) is str and type(alliance) is str and type(amount) is str and type(period) is str:
        # The common case (every CSV row), checked in a few operations; anything odd takes the long way
        # below, which names the problem.
        ref, name, when = reference.strip(), alliance.strip(), period.strip()
        if (
            ref.isascii()
            and name.isascii()
            and 0 < len(ref.encode()) <= 32
            and 0 < len(name.encode()) <= 32
            and "\0" not in ref
            and "\0" not in name
            and 0 < len(when) <= 10
            and when.isascii()
            and when.isdigit()
            and 0 < int(when) <= MAX_PERIOD
        ):
            return RawRow(row, ref, name, amount.strip(), int(when))
    ok = True
    for field, value in (("reference", reference), ("alliance", alliance)):
        if not isinstance(value, str) or isinstance(value, _FractionalNumber):
            problems.add(f"row {row}: {field} must be text, got {type(value).__name__}")
            ok = False
            continue
        try:
            text_to_bytes32(_nfc(value.strip()) if field == "reference" else value.strip(), field)
        except UnicodeEncodeError:
            problems.add(f"row {row}: {field} is not valid Unicode text (a lone surrogate)")
            ok = False
        except ValueError as err:
            problems.add(f"row {row}: {err}")
            ok = False
    if isinstance(amount, bool) or not isinstance(amount, str | int) or isinstance(amount, _FractionalNumber):
        problems.add(f'row {row}: amount must be a decimal string like "12.50", got {type(amount).__name__}')
        ok = False
    period_value = _period(period, row, problems)
    if not ok or period_value is None:
        return None
    return RawRow(row, _nfc(reference.strip()), alliance.strip(), str(amount).strip(), period_value)


def _nfc(reference: str) -> str:
    """A reference in Unicode NFC (the one form a reference is settled and compared in)."""
    return reference if reference.isascii() else unicodedata.normalize("NFC", reference)


def _read_csv(lines: Iterator[tuple[int, str]], first: tuple[int, str], problems: Problems) -> Iterator[RawRow]:
    header_row, header_text = first
    header = [h.strip().lower() for h in next(csv.reader([header_text]))]
    missing = [c for c in COLUMNS if c not in header]
    extra = [h for h in header if h not in COLUMNS + OPTIONAL_COLUMNS]
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if missing or extra or duplicated:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            parts.append(f"unknown column(s) {', '.join(repr(e) for e in extra)}")
        if duplicated:
            parts.append(f"repeated column(s) {', '.join(duplicated)}")
        raise InputError(f"row {header_row}: header {'; '.join(parts)}; expected {','.join(COLUMNS)}")
    index = {name: header.index(name) for name in COLUMNS + OPTIONAL_COLUMNS if name in header}
    for number, text in lines:
        if not text.strip():
            continue
        if '"' in text:
            try:
                fields = next(csv.reader([text]))
            except csv.Error as err:
                problems.add(f"row {number}: not a CSV row ({err})")
                continue
        else:  # no quoting: a CSV row is its text split at the commas
            fields = text.split(",")
        if not any(field.strip() for field in fields):  # ",,,": an empty row a spreadsheet exported
            problems.blank(number)
            continue
        if len(fields) != len(header):
            problems.add(f"row {number}: {len(fields)} fields, the header has {len(header)}")
            continue
        values = {name: fields[i] for name, i in index.items()}
        row = _check(number, values["reference"], values["alliance"], values["amount"], values["period"], problems,
                     values.get("reverses"))  # fmt: skip
        if row is not None:
            yield row


def json_lines(lines: Iterable[tuple[int, str]], problems: Problems, **options) -> Iterator[tuple[int, object]]:
    """(number, decoded value) of the JSON lines in ``lines`` (``json.loads`` ``options``); blank lines are
    skipped, a line that is not JSON becomes a problem (with the reason) and is skipped."""
    for number, text in lines:
        if not text.strip():
            continue
        try:
            value = json.loads(text, **options)
        except ValueError as err:  # JSONDecodeError, or an integer too long to convert (no .msg)
            detail = f"{err.msg} at column {err.colno}" if isinstance(err, json.JSONDecodeError) else str(err)[:80]
            problems.add(f"row {number}: not a JSON object ({detail})")
            continue
        yield number, value


def _read_jsonl(lines: Iterator[tuple[int, str]], first: tuple[int, str], problems: Problems) -> Iterator[RawRow]:
    def chain_first():
        yield first
        yield from lines

    numbers = _FractionalNumber
    for number, obj in json_lines(chain_first(), problems, parse_float=numbers, parse_constant=numbers):
        if not isinstance(obj, dict):
            problems.add(f"row {number}: expected a JSON object, got {type(obj).__name__}")
            continue
        missing = [c for c in COLUMNS if c not in obj]
        extra = [k for k in obj if k not in COLUMNS + OPTIONAL_COLUMNS]
        if missing or extra:
            detail = "; ".join(
                ([f"missing {', '.join(missing)}"] if missing else [])
                + ([f"unknown key(s) {', '.join(repr(e) for e in extra)}"] if extra else [])
            )
            problems.add(f"row {number}: {detail}")
            continue
        if isinstance(obj["amount"], _FractionalNumber):
            problems.add(
                f'row {number}: amount {obj["amount"]} is a JSON number; write it as a string, "{obj["amount"]}"'
            )
            continue
        row = _check(number, obj["reference"], obj["alliance"], obj["amount"], obj["period"], problems,
                     obj.get("reverses"))  # fmt: skip
        if row is not None:
            yield row


def iter_rows(path: Path, problems: list[str]) -> Iterator[RawRow]:
    """The well-formed rows of the file one at a time (constant memory); a problem per malformed one is
    added to ``problems``. Raises :class:`InputError` for a file that cannot be read at all."""
    path = Path(path)
    lines = numbered_lines(path, problems, header=detect_format(path, "") == "csv")
    first = next(((n, t) for n, t in lines if t.strip()), None)
    if first is None:
        raise InputError(problems or ["the file is empty; expected a header row reference,alliance,amount,period"])
    kind = detect_format(path, first[1])
    reader = _read_csv if kind == "csv" else _read_jsonl
    count = 0
    for row in reader(lines, first, problems):
        count += 1
        yield row
    if count == 0 and not problems:
        raise InputError("the file has no revenue events" + (" after the header" if kind == "csv" else ""))


def check_start(path: Path) -> None:
    """Raise :class:`InputError` for a file that is unreadable, empty, header-only or has a bad header,
    reading only as far as its first event (so before any connection is made)."""
    next(iter_rows(path, Problems()), None)


def read_rows(path: Path) -> tuple[list[RawRow], list[str]]:
    """Every well-formed row of the file, and a problem per malformed one (by row and field)."""
    problems = Problems()
    rows = list(iter_rows(path, problems))
    return rows, list(problems)


class Converter:
    """Turns rows into events with each alliance's token decimals (looked up once per alliance)."""

    def __init__(self, decimals_of: Callable[[str], int]):
        self.decimals_of = decimals_of
        self.decimals: dict[str, int | None] = {}
        self.unknown: dict[str, list[int]] = {}  # alliance -> its first rows (at most 6 kept)

    def event(self, raw: RawRow, problems: list[str]) -> RevenueEvent | None:
        amount = self.amount(raw, problems)
        if amount is None:
            return None
        try:
            return RevenueEvent(
                reference=raw.reference,
                alliance=raw.alliance,
                amount=amount,
                period=raw.period,
                row=raw.row,
                reverses=raw.reverses,
            )
        except ValueError as err:
            first = err.errors()[0] if hasattr(err, "errors") else {"loc": ("value",), "msg": str(err)}
            field = ".".join(str(x) for x in first["loc"]) or "value"
            problems.append(f"row {raw.row}: {field} {first['msg'].removeprefix('Value error, ')}")
            return None

    def amount(self, raw: RawRow, problems: list[str]) -> int | None:
        """The row's amount in base units, or None (with the problem added)."""
        if raw.alliance not in self.decimals:
            try:
                self.decimals[raw.alliance] = self.decimals_of(raw.alliance)
            except LedgerError:
                self.decimals[raw.alliance] = None
        places = self.decimals[raw.alliance]
        if places is None:
            rows = self.unknown.setdefault(raw.alliance, [])
            if len(rows) < 6:
                rows.append(raw.row)
            return None
        try:
            amount = parse_amount(raw.amount, places)
        except AmountError as err:
            problems.append(f"row {raw.row}: amount {err}")
            return None
        if amount > MAX_EVENT_AMOUNT:
            problems.append(
                f"row {raw.row}: amount {raw.amount!r} is beyond the largest event amount (2^128-1 base units)"
            )
            return None
        if amount == 0:
            problems.append(f"row {raw.row}: amount {raw.amount!r} is zero; revenue events must be above 0")
            return None
        return amount

    def unknown_problems(self) -> list[str]:
        problems = []
        for name, where in self.unknown.items():
            shown = ", ".join(str(r) for r in where[:5]) + (" ..." if len(where) > 5 else "")
            problems.append(f"row{'s' if len(where) > 1 else ''} {shown}: no alliance named {name!r}")
        return problems


def to_events(rows: list[RawRow], decimals_of: Callable[[str], int], problems: list[str]) -> list[RevenueEvent]:
    """Rows with amounts in base units; ``decimals_of(alliance)`` raises LedgerError for an unknown one
    (reported once per alliance, with the rows that name it)."""
    converter = Converter(decimals_of)
    events = [event for raw in rows if (event := converter.event(raw, problems)) is not None]
    problems.extend(converter.unknown_problems())
    return events


def problem_row(problem: str) -> int:
    """The first row number a problem names (for sorting), or 0."""
    words = problem.split(":", 1)[0].replace(",", " ").split()
    numbers = [int(w) for w in words if w.isdigit()]
    return numbers[0] if numbers else 0
