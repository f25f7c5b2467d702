"""Revenue event files (CSV and JSON lines): shapes, row numbers, amounts, periods, names, every problem.

No chain here: files are written as bytes into ``tmp_path`` and token decimals come from a plain dict.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.errors import InputError, LedgerError
from ledger.money import MAX_EVENT_AMOUNT, MAX_PERIOD, format_amount, parse_amount
from ledger.revenue_file import (
    COLUMNS,
    MAX_PROBLEMS,
    RawRow,
    detect_format,
    problem_row,
    read_rows,
    to_events,
)

HEADER = "reference,alliance,amount,period"
BOM = b"\xef\xbb\xbf"


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def csv_bytes(*lines: str, eol: str = "\n") -> bytes:
    return "".join(line + eol for line in lines).encode("utf-8")


def csv_file(tmp_path: Path, *lines: str, name: str = "events.csv") -> Path:
    return write(tmp_path, name, csv_bytes(*lines))


def jsonl_file(tmp_path: Path, *objects, name: str = "events.jsonl") -> Path:
    """One line per item: dicts are dumped as JSON, strings are written as they are."""
    text = "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects)
    return write(tmp_path, name, text.encode("utf-8"))


def decimals_from(table: dict[str, int]):
    """A ``decimals_of`` callable that raises LedgerError for an alliance not in ``table``."""

    def decimals_of(name: str) -> int:
        if name not in table:
            raise LedgerError(f"no alliance named {name!r}")
        return table[name]

    return decimals_of


def events_of(path: Path, table: dict[str, int] | None = None):
    """read_rows then to_events; returns (events, problems)."""
    rows, problems = read_rows(path)
    events = to_events(rows, decimals_from(table if table is not None else {"kitchen": 2}), problems)
    return events, problems


def one_row(tmp_path: Path, reference="inv-1", alliance="kitchen", amount="12.50", period="202611"):
    return csv_file(tmp_path, HEADER, f"{reference},{alliance},{amount},{period}")


def input_error_of(path: Path) -> InputError:
    with pytest.raises(InputError) as info:
        read_rows(path)
    return info.value


def raw(row=2, reference="inv-1", alliance="kitchen", amount="1", period=202611) -> RawRow:
    return RawRow(row=row, reference=reference, alliance=alliance, amount=amount, period=period)


# ---------------------------------------------------------------------------------------------------
# CSV shapes
# ---------------------------------------------------------------------------------------------------


def test_a_valid_csv_file_gives_one_event_per_row_in_base_units(tmp_path):
    path = csv_file(tmp_path, HEADER, "inv-1,kitchen,12.50,202611", "inv-2,kitchen,0.01,202612", "inv-3,bar,7,1")
    rows, problems = read_rows(path)
    assert problems == []
    assert rows == [
        RawRow(2, "inv-1", "kitchen", "12.50", 202611),
        RawRow(3, "inv-2", "kitchen", "0.01", 202612),
        RawRow(4, "inv-3", "bar", "7", 1),
    ]
    events = to_events(rows, decimals_from({"kitchen": 2, "bar": 6}), problems)
    assert problems == []
    assert [(e.reference, e.alliance, e.amount, e.period, e.row) for e in events] == [
        ("inv-1", "kitchen", 1250, 202611, 2),
        ("inv-2", "kitchen", 1, 202612, 3),
        ("inv-3", "bar", 7_000_000, 1, 4),
    ]
    assert all(type(e.amount) is int for e in events)


def test_the_path_may_be_given_as_a_string(tmp_path):
    path = one_row(tmp_path)
    rows, problems = read_rows(str(path))
    assert problems == [] and [r.reference for r in rows] == ["inv-1"]


def test_a_bom_is_skipped_before_the_header(tmp_path):
    path = write(tmp_path, "events.csv", BOM + csv_bytes(HEADER, "inv-1,kitchen,1,202611"))
    rows, problems = read_rows(path)
    assert problems == []
    assert rows == [RawRow(2, "inv-1", "kitchen", "1", 202611)]


def test_crlf_line_ends_are_accepted_and_not_kept_in_the_last_field(tmp_path):
    path = write(tmp_path, "events.csv", csv_bytes(HEADER, "inv-1,kitchen,1,202611", "inv-2,kitchen,2,7", eol="\r\n"))
    rows, problems = read_rows(path)
    assert problems == []
    assert [(r.row, r.reference, r.period) for r in rows] == [(2, "inv-1", 202611), (3, "inv-2", 7)]


def test_a_bom_and_crlf_line_ends_are_accepted_together(tmp_path):
    path = write(tmp_path, "events.csv", BOM + csv_bytes(HEADER, "inv-1,kitchen,1,202611", eol="\r\n"))
    events, problems = events_of(path)
    assert problems == []
    assert [(e.reference, e.amount, e.period) for e in events] == [("inv-1", 100, 202611)]


def test_a_last_line_without_a_line_end_is_read(tmp_path):
    path = write(tmp_path, "events.csv", f"{HEADER}\ninv-1,kitchen,1,202611".encode())
    rows, problems = read_rows(path)
    assert problems == [] and rows == [RawRow(2, "inv-1", "kitchen", "1", 202611)]


def test_columns_in_another_order_and_in_upper_case_are_matched_by_name(tmp_path):
    path = csv_file(tmp_path, " PERIOD , Amount,ALLIANCE,Reference", "202611,3.25,kitchen,inv-9")
    events, problems = events_of(path)
    assert problems == []
    assert [(e.reference, e.alliance, e.amount, e.period, e.row) for e in events] == [
        ("inv-9", "kitchen", 325, 202611, 2)
    ]


def test_blank_lines_are_skipped_but_still_counted_as_rows(tmp_path):
    path = csv_file(tmp_path, "", HEADER, "", "inv-1,kitchen,1,202611", "   ", "\t", "inv-2,kitchen,2,202611", "")
    rows, problems = read_rows(path)
    assert problems == []
    assert [(r.row, r.reference) for r in rows] == [(4, "inv-1"), (7, "inv-2")]


def test_a_header_below_blank_lines_is_named_by_its_own_line_number(tmp_path):
    path = csv_file(tmp_path, "", "", "reference,alliance,amount")
    assert input_error_of(path).problems[0].startswith("row 3: header missing column(s) period")


def test_quoted_fields_may_hold_commas_and_quotes(tmp_path):
    path = csv_file(tmp_path, HEADER, '"inv-1, part ""a""",kitchen,"12.50","202611"')
    rows, problems = read_rows(path)
    assert problems == []
    assert rows == [RawRow(2, 'inv-1, part "a"', "kitchen", "12.50", 202611)]


def test_spaces_around_values_are_trimmed(tmp_path):
    path = csv_file(tmp_path, HEADER, "  inv-1 ,\tkitchen ,  1.5 , 202611  ")
    events, problems = events_of(path)
    assert problems == []
    assert [(e.reference, e.alliance, e.amount, e.period) for e in events] == [("inv-1", "kitchen", 150, 202611)]


def test_a_quoted_field_spanning_two_lines_is_refused_with_a_problem(tmp_path):
    # Rows are lines: a line break inside quotes is not supported, but the file must not pass clean.
    path = csv_file(tmp_path, HEADER, '"inv\n1",kitchen,1,202611')
    _rows, problems = read_rows(path)
    assert "row 2: 1 fields, the header has 4" in problems


# ---------------------------------------------------------------------------------------------------
# Files with nothing in them, bad headers, bad rows
# ---------------------------------------------------------------------------------------------------


def test_an_empty_file_is_refused_as_empty(tmp_path):
    err = input_error_of(write(tmp_path, "events.csv", b""))
    assert err.problems == ["the file is empty; expected a header row reference,alliance,amount,period"]


def test_a_file_of_only_whitespace_is_refused_as_empty(tmp_path):
    err = input_error_of(write(tmp_path, "events.csv", b"\n   \r\n\t\n\n"))
    assert err.problems == ["the file is empty; expected a header row reference,alliance,amount,period"]


def test_a_file_of_only_a_bom_is_refused_as_empty(tmp_path):
    err = input_error_of(write(tmp_path, "events.csv", BOM))
    assert err.problems[0].startswith("the file is empty")


def test_a_jsonl_file_of_only_whitespace_is_refused_as_empty(tmp_path):
    err = input_error_of(write(tmp_path, "events.jsonl", b"\n \n"))
    assert err.problems[0].startswith("the file is empty")


def test_a_header_with_no_rows_is_refused_as_having_no_events(tmp_path):
    err = input_error_of(csv_file(tmp_path, HEADER, "", ""))
    assert err.problems == ["the file has no revenue events after the header"]


def test_a_file_that_cannot_be_opened_is_a_ledger_error(tmp_path):
    with pytest.raises(LedgerError, match="cannot read"):
        read_rows(tmp_path / "missing.csv")


def test_a_header_missing_a_column_is_refused_naming_it(tmp_path):
    err = input_error_of(csv_file(tmp_path, "reference,alliance,amount", "inv-1,kitchen,1"))
    assert err.problems == ["row 1: header missing column(s) period; expected reference,alliance,amount,period"]


def test_a_header_with_an_extra_column_is_refused_naming_it(tmp_path):
    err = input_error_of(csv_file(tmp_path, HEADER + ",note", "inv-1,kitchen,1,202611,hi"))
    assert err.problems == ["row 1: header unknown column(s) 'note'; expected reference,alliance,amount,period"]


def test_a_header_with_a_trailing_comma_is_refused_as_an_empty_column(tmp_path):
    err = input_error_of(csv_file(tmp_path, HEADER + ",", "inv-1,kitchen,1,202611,"))
    assert "unknown column(s) ''" in err.problems[0]


def test_a_header_with_a_repeated_column_is_refused_naming_it(tmp_path):
    err = input_error_of(csv_file(tmp_path, HEADER + ",Amount", "inv-1,kitchen,1,202611,2"))
    assert err.problems == ["row 1: header repeated column(s) amount; expected reference,alliance,amount,period"]


def test_a_header_with_several_faults_names_them_all(tmp_path):
    err = input_error_of(csv_file(tmp_path, "reference,reference,amount,memo", "a,b,1,x"))
    (text,) = err.problems
    assert "missing column(s) alliance, period" in text
    assert "unknown column(s) 'memo'" in text
    assert "repeated column(s) reference" in text


def test_a_row_with_too_many_fields_is_a_problem_and_the_others_are_read(tmp_path):
    path = csv_file(tmp_path, HEADER, "inv-1,kitchen,1,202611,extra", "inv-2,kitchen,1,202611")
    rows, problems = read_rows(path)
    assert problems == ["row 2: 5 fields, the header has 4"]
    assert [r.row for r in rows] == [3]


def test_a_row_with_too_few_fields_is_a_problem_and_the_others_are_read(tmp_path):
    path = csv_file(tmp_path, HEADER, "inv-1,kitchen,202611", "inv-2,kitchen,1,202611")
    rows, problems = read_rows(path)
    assert problems == ["row 2: 3 fields, the header has 4"]
    assert [r.row for r in rows] == [3]


def test_an_amount_with_a_thousands_comma_left_unquoted_is_a_field_count_problem(tmp_path):
    path = csv_file(tmp_path, HEADER, "inv-1,kitchen,1,000,202611")
    _rows, problems = read_rows(path)
    assert problems == ["row 2: 5 fields, the header has 4"]


def test_non_utf8_bytes_in_a_row_are_a_problem_naming_that_row_and_the_others_are_read(tmp_path):
    data = csv_bytes(HEADER, "inv-1,kitchen,1,202611") + b"caf\xe9,kitchen,1,202611\n" + csv_bytes("inv-3,kitchen,3,7")
    rows, problems = read_rows(write(tmp_path, "events.csv", data))
    assert problems == ["row 3: not UTF-8 text (byte 0xe9 at column 4)"]
    assert [(r.row, r.reference) for r in rows] == [(2, "inv-1"), (4, "inv-3")]


def test_a_file_whose_only_row_is_not_utf8_returns_the_problem_instead_of_raising(tmp_path):
    rows, problems = read_rows(write(tmp_path, "events.csv", csv_bytes(HEADER) + b"\xff,kitchen,1,202611\n"))
    assert rows == []
    assert problems == ["row 2: not UTF-8 text (byte 0xff at column 1)"]


def test_row_numbers_are_file_line_numbers_with_the_header_as_row_1(tmp_path):
    lines = [
        HEADER,  # 1
        "inv-1,kitchen,1,202611",  # 2
        "",  # 3
        "inv-3,kitchen,1,0",  # 4: bad period
        "inv-4,kitchen,1,202611",  # 5
        "",  # 6
        "",  # 7
        "inv-8,kitchen,1",  # 8: too few fields
        "inv-9,kitchen,-1,202611",  # 9: bad amount (found by to_events)
        "inv-10,kitchen,1,202611",  # 10
    ]
    events, problems = events_of(csv_file(tmp_path, *lines))
    assert [e.row for e in events] == [2, 5, 10]
    assert [e.reference for e in events] == ["inv-1", "inv-4", "inv-10"]
    assert sorted(problem_row(p) for p in problems) == [4, 8, 9]


# ---------------------------------------------------------------------------------------------------
# Amounts
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "words"),
    [
        ("-5", "'-5' has a sign; amounts are positive numbers like 12.50"),
        ("+5", "'+5' has a sign; amounts are positive numbers like 12.50"),
        ("1e5", "'1e5' is not a plain decimal number like 12.50"),
        ('"1,000"', "'1,000' is not a plain decimal number like 12.50"),
        ("1_000", "'1_000' is not a plain decimal number like 12.50"),
        ("1.2.3", "'1.2.3' is not a plain decimal number like 12.50"),
        (".", "'.' is not a plain decimal number like 12.50"),
        ("", "is empty"),
        ("12.345", "'12.345' has 3 decimals; the token has 2"),
        ("12.500", "'12.500' has 3 decimals; the token has 2"),
    ],
    ids=[
        "negative",
        "plus-sign",
        "exponent",
        "thousands-comma",
        "underscore",
        "two-points",
        "point",
        "empty",
        "too-many-decimals",
        "too-many-decimals-even-zeros",
    ],
)
def test_an_amount_that_is_not_a_plain_positive_decimal_within_the_tokens_decimals_is_a_problem(
    tmp_path, amount, words
):
    events, problems = events_of(one_row(tmp_path, amount=amount))
    assert events == []
    assert problems == [f"row 2: amount {words}"]


@pytest.mark.parametrize("amount", ["0", "0.00", "000", ".0"])
def test_a_zero_amount_is_a_problem(tmp_path, amount):
    events, problems = events_of(one_row(tmp_path, amount=amount))
    assert events == []
    assert problems == [f"row 2: amount {amount!r} is zero; revenue events must be above 0"]


@pytest.mark.parametrize(
    ("amount", "units"),
    [("12.34", 1234), ("12.3", 1230), ("12", 1200), ("0.01", 1), (".5", 50), ("007.10", 710)],
)
def test_an_amount_with_up_to_the_tokens_decimals_is_converted_exactly(tmp_path, amount, units):
    events, problems = events_of(one_row(tmp_path, amount=amount))
    assert problems == []
    assert [e.amount for e in events] == [units]


def test_an_amount_of_exactly_the_largest_event_amount_is_accepted(tmp_path):
    events, problems = events_of(one_row(tmp_path, amount=str(MAX_EVENT_AMOUNT)), {"kitchen": 0})
    assert problems == []
    assert [e.amount for e in events] == [2**128 - 1]


def test_an_amount_above_2_128_minus_1_base_units_is_a_problem(tmp_path):
    text = format_amount(MAX_EVENT_AMOUNT + 1, 6)
    events, problems = events_of(one_row(tmp_path, amount=text), {"kitchen": 6})
    assert events == []
    assert problems == [f"row 2: amount {text!r} is beyond the largest event amount (2^128-1 base units)"]


def test_a_zero_decimals_token_takes_whole_numbers_only(tmp_path):
    path = csv_file(tmp_path, HEADER, "inv-1,kitchen,42,202611", "inv-2,kitchen,42.5,202611", "inv-3,kitchen,4.0,7")
    events, problems = events_of(path, {"kitchen": 0})
    assert [(e.row, e.amount) for e in events] == [(2, 42)]
    assert problems == [
        "row 3: amount '42.5' has 1 decimals; the token has 0",
        "row 4: amount '4.0' has 1 decimals; the token has 0",
    ]


def test_an_18_decimals_token_converts_the_largest_amount_exactly_past_decimal_precision(tmp_path):
    units = MAX_EVENT_AMOUNT  # 39 digits: more than Decimal's default 28 and more than a float holds
    text = format_amount(units, 18)
    assert text == "340282366920938463463.374607431768211455"
    events, problems = events_of(one_row(tmp_path, amount=text), {"kitchen": 18})
    assert problems == []
    assert [e.amount for e in events] == [340282366920938463463 * 10**18 + 374607431768211455]


def test_an_18_decimals_78_digit_amount_is_kept_exactly_and_refused_as_beyond_the_event_limit(tmp_path):
    whole, fraction = "9" * 30 + "1" * 30, "123456789012345678"
    text = f"{whole}.{fraction}"
    assert len(whole + fraction) == 78
    exact = int(whole) * 10**18 + int(fraction)
    rows, problems = read_rows(one_row(tmp_path, amount=text))
    assert [r.amount for r in rows] == [text]  # the text is kept as is, never through a float
    assert parse_amount(rows[0].amount, 18) == exact
    assert exact > MAX_EVENT_AMOUNT
    assert to_events(rows, decimals_from({"kitchen": 18}), problems) == []
    assert problems == [f"row 2: amount {text!r} is beyond the largest event amount (2^128-1 base units)"]


def test_an_18_decimals_amount_of_one_base_unit_is_converted_exactly(tmp_path):
    events, problems = events_of(one_row(tmp_path, amount="0.000000000000000001"), {"kitchen": 18})
    assert problems == []
    assert [e.amount for e in events] == [1]


# ---------------------------------------------------------------------------------------------------
# Periods
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "period",
    [
        "0",
        "-1",
        "-202611",
        "abc",
        "2026-11",
        "2026.11",
        "202611.0",
        "+202611",
        "",
        "4294967296",
        "1e6",
        "\u0662\u0660\u0662",
    ],
    ids=[
        "zero",
        "minus-one",
        "negative",
        "letters",
        "dash",
        "point",
        "point-zero",
        "plus",
        "empty",
        "above-2-32-1",
        "exponent",
        "arabic-indic-digits",
    ],
)
def test_a_period_that_is_not_a_whole_number_from_1_to_2_32_minus_1_is_a_problem(tmp_path, period):
    rows, problems = read_rows(one_row(tmp_path, period=period))
    assert rows == []
    assert problems == [f"row 2: period {period!r} must be a whole number from 1 to {MAX_PERIOD}, like 202611"]


@pytest.mark.parametrize("period", ["202611", "1", str(MAX_PERIOD), "0202611"])
def test_a_period_from_1_to_2_32_minus_1_is_accepted(tmp_path, period):
    events, problems = events_of(one_row(tmp_path, period=period))
    assert problems == []
    assert [e.period for e in events] == [int(period)]


# ---------------------------------------------------------------------------------------------------
# References and alliance names
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reference", ["", "   "])
def test_an_empty_reference_is_a_problem(tmp_path, reference):
    rows, problems = read_rows(one_row(tmp_path, reference=reference))
    assert rows == []
    assert problems == ["row 2: reference is empty"]


def test_an_empty_alliance_is_a_problem(tmp_path):
    rows, problems = read_rows(one_row(tmp_path, alliance=""))
    assert rows == [] and problems == ["row 2: alliance is empty"]


@pytest.mark.parametrize("reference", ["é" * 16 + "a", "€" * 11, "x" * 33], ids=["2-byte", "3-byte", "ascii"])
def test_a_reference_of_33_utf8_bytes_is_a_problem_even_when_it_has_fewer_characters(tmp_path, reference):
    assert len(reference.encode()) == 33
    rows, problems = read_rows(one_row(tmp_path, reference=reference))
    assert rows == []
    assert problems == [f"row 2: reference {reference!r} is 33 bytes; the limit is 32"]


@pytest.mark.parametrize(
    "reference", ["é" * 16, "€" * 10 + "ab", "x" * 32, "🍕" * 8], ids=["2-byte", "3-byte", "ascii", "4-byte"]
)
def test_a_reference_of_exactly_32_utf8_bytes_is_accepted(tmp_path, reference):
    assert len(reference.encode()) == 32
    events, problems = events_of(one_row(tmp_path, reference=reference))
    assert problems == []
    assert [e.reference for e in events] == [reference]


def test_an_alliance_name_of_33_utf8_bytes_is_a_problem(tmp_path):
    name = "ü" * 16 + "x"
    rows, problems = read_rows(one_row(tmp_path, alliance=name))
    assert rows == [] and problems == [f"row 2: alliance {name!r} is 33 bytes; the limit is 32"]


def test_a_reference_with_a_nul_character_is_a_problem(tmp_path):
    rows, problems = read_rows(one_row(tmp_path, reference="inv\x001"))
    assert rows == [] and problems == ["row 2: reference 'inv\\x001' contains a NUL character"]


def test_a_row_with_several_bad_fields_reports_each_of_them(tmp_path):
    rows, problems = read_rows(csv_file(tmp_path, HEADER, ",,1,0"))
    assert rows == []
    assert problems == [
        "row 2: reference is empty",
        "row 2: alliance is empty",
        f"row 2: period '0' must be a whole number from 1 to {MAX_PERIOD}, like 202611",
    ]


# ---------------------------------------------------------------------------------------------------
# JSON lines
# ---------------------------------------------------------------------------------------------------

GOOD = {"reference": "inv-1", "alliance": "kitchen", "amount": "12.50", "period": 202611}


def test_a_valid_jsonl_file_gives_one_event_per_line(tmp_path):
    second = {"period": 7, "amount": "0.01", "alliance": "kitchen", "reference": "inv-2"}
    path = jsonl_file(tmp_path, GOOD, "", second)
    events, problems = events_of(path)
    assert problems == []
    assert [(e.reference, e.alliance, e.amount, e.period, e.row) for e in events] == [
        ("inv-1", "kitchen", 1250, 202611, 1),
        ("inv-2", "kitchen", 1, 7, 3),
    ]


@pytest.mark.parametrize("name", ["events.ndjson", "events.json", "EVENTS.JSONL"])
def test_other_json_lines_suffixes_are_read_as_json_lines(tmp_path, name):
    rows, problems = read_rows(jsonl_file(tmp_path, GOOD, name=name))
    assert problems == [] and rows == [RawRow(1, "inv-1", "kitchen", "12.50", 202611)]


@pytest.mark.parametrize("name", ["events", "events.dat"])
def test_json_lines_are_recognised_by_content_when_the_suffix_says_nothing(tmp_path, name):
    path = write(tmp_path, name, BOM + b"\n  " + json.dumps(GOOD).encode() + b"\r\n")
    rows, problems = read_rows(path)
    assert problems == [] and rows == [RawRow(2, "inv-1", "kitchen", "12.50", 202611)]


def test_a_file_with_no_suffix_and_a_csv_header_is_read_as_csv(tmp_path):
    path = write(tmp_path, "events", csv_bytes(HEADER, "inv-1,kitchen,1,202611"))
    rows, problems = read_rows(path)
    assert problems == [] and rows == [RawRow(2, "inv-1", "kitchen", "1", 202611)]


@pytest.mark.parametrize(
    ("name", "first_line", "kind"),
    [
        ("a.jsonl", HEADER, "jsonl"),
        ("a.NDJSON", HEADER, "jsonl"),
        ("a.json", "", "jsonl"),
        ("a.csv", "{", "csv"),
        ("a.TXT", "{", "csv"),
        ("a", '  {"reference": 1}', "jsonl"),
        ("a.tsv", "{", "jsonl"),
        ("a", HEADER, "csv"),
        ("a", "", "csv"),
    ],
)
def test_the_format_comes_from_the_suffix_and_else_from_the_first_line(name, first_line, kind):
    assert detect_format(Path(name), first_line) == kind


def test_a_json_amount_with_a_fraction_is_refused_with_advice_to_write_it_as_a_string(tmp_path):
    events, problems = events_of(
        write(tmp_path, "e.jsonl", b'{"reference":"r","alliance":"kitchen","amount":12.5,"period":202611}\n')
    )
    assert events == []
    assert problems == ['row 1: amount 12.5 is a JSON number; write it as a string, "12.5"']


@pytest.mark.parametrize("number", ["1e5", "12.50", "1E-2", "NaN", "Infinity"])
def test_a_json_amount_that_is_not_an_integer_number_is_never_made_a_float(tmp_path, number):
    line = f'{{"reference":"r","alliance":"kitchen","amount":{number},"period":202611}}'
    rows, problems = read_rows(write(tmp_path, "e.jsonl", line.encode() + b"\n"))
    assert rows == []
    assert problems == [f'row 1: amount {number} is a JSON number; write it as a string, "{number}"']


def test_a_json_amount_that_is_an_integer_is_accepted_as_whole_tokens(tmp_path):
    events, problems = events_of(jsonl_file(tmp_path, {**GOOD, "amount": 12}))
    assert problems == []
    assert [e.amount for e in events] == [1200]


def test_a_large_json_integer_amount_is_kept_exactly(tmp_path):
    events, problems = events_of(jsonl_file(tmp_path, {**GOOD, "amount": MAX_EVENT_AMOUNT}), {"kitchen": 0})
    assert problems == [] and [e.amount for e in events] == [MAX_EVENT_AMOUNT]


def test_a_negative_json_integer_amount_is_a_problem(tmp_path):
    events, problems = events_of(jsonl_file(tmp_path, {**GOOD, "amount": -5}))
    assert events == [] and problems == ["row 1: amount '-5' has a sign; amounts are positive numbers like 12.50"]


def test_a_json_period_given_as_a_string_of_digits_is_accepted(tmp_path):
    events, problems = events_of(jsonl_file(tmp_path, {**GOOD, "period": "202611"}))
    assert problems == [] and [e.period for e in events] == [202611]


@pytest.mark.parametrize("period", ["202611.0", "2.02611e5"])
def test_a_json_period_with_a_fraction_or_exponent_is_a_problem(tmp_path, period):
    line = f'{{"reference":"r","alliance":"kitchen","amount":"1","period":{period}}}'
    rows, problems = read_rows(write(tmp_path, "e.jsonl", line.encode() + b"\n"))
    assert rows == []
    assert problems == [f"row 1: period {period!r} must be a whole number from 1 to {MAX_PERIOD}, like 202611"]


@pytest.mark.parametrize("period", [0, -202611, MAX_PERIOD + 1])
def test_a_json_integer_period_out_of_range_is_a_problem(tmp_path, period):
    rows, problems = read_rows(jsonl_file(tmp_path, {**GOOD, "period": period}))
    assert rows == []
    assert problems == [f"row 1: period {str(period)!r} must be a whole number from 1 to {MAX_PERIOD}, like 202611"]


WRONG_TYPE_WORDS = {
    "reference": "reference must be text",
    "alliance": "alliance must be text",
    "amount": 'amount must be a decimal string like "12.50"',
    "period": "period must be a whole number like 202611",
}


@pytest.mark.parametrize("field", COLUMNS)
@pytest.mark.parametrize(
    ("value", "type_name"), [(["1"], "list"), (None, "NoneType"), (True, "bool"), (False, "bool"), ({"a": 1}, "dict")]
)
def test_a_json_field_of_the_wrong_type_is_a_problem_naming_the_field_and_the_type(tmp_path, field, value, type_name):
    rows, problems = read_rows(jsonl_file(tmp_path, {**GOOD, field: value}))
    assert rows == []
    assert problems == [f"row 1: {WRONG_TYPE_WORDS[field]}, got {type_name}"]


@pytest.mark.parametrize("field", ["reference", "alliance"])
def test_a_json_integer_is_refused_as_a_name(tmp_path, field):
    rows, problems = read_rows(jsonl_file(tmp_path, {**GOOD, field: 15}))
    assert rows == [] and problems == [f"row 1: {field} must be text, got int"]


def test_a_json_line_missing_a_key_is_a_problem_naming_it(tmp_path):
    line = {k: v for k, v in GOOD.items() if k != "period"}
    rows, problems = read_rows(jsonl_file(tmp_path, line, GOOD))
    assert problems == ["row 1: missing period"]
    assert [r.row for r in rows] == [2]


def test_a_json_line_with_an_unknown_key_is_a_problem_naming_it(tmp_path):
    rows, problems = read_rows(jsonl_file(tmp_path, GOOD, {**GOOD, "note": "hi"}))
    assert problems == ["row 2: unknown key(s) 'note'"]
    assert [r.row for r in rows] == [1]


def test_a_json_line_missing_one_key_and_with_another_names_both(tmp_path):
    line = {"reference": "r", "alliance": "kitchen", "amount": "1", "Period": 202611}
    _rows, problems = read_rows(jsonl_file(tmp_path, line))
    assert problems == ["row 1: missing period; unknown key(s) 'Period'"]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("reference,alliance", "not a JSON object (Expecting value at column 1)"),
        ('{"reference": "r",', "not a JSON object (Expecting property name enclosed in double quotes at column 19)"),
        ("{'reference': 'r'}", "not a JSON object (Expecting property name enclosed in double quotes at column 2)"),
        (json.dumps(GOOD) + " x", f"not a JSON object (Extra data at column {len(json.dumps(GOOD)) + 2})"),
    ],
    ids=["csv-text", "cut-off", "single-quotes", "trailing-text"],
)
def test_a_line_that_is_not_json_is_a_problem_and_the_others_are_read(tmp_path, line, words):
    rows, problems = read_rows(jsonl_file(tmp_path, GOOD, line, GOOD))
    assert problems == [f"row 2: {words}"]
    assert [r.row for r in rows] == [1, 3]


@pytest.mark.parametrize(
    ("line", "type_name"),
    [(json.dumps(list(GOOD.values())), "list"), ('"text"', "str"), ("12", "int"), ("null", "NoneType")],
)
def test_a_json_line_that_is_not_an_object_is_a_problem(tmp_path, line, type_name):
    rows, problems = read_rows(jsonl_file(tmp_path, GOOD, line))
    assert problems == [f"row 2: expected a JSON object, got {type_name}"]
    assert [r.row for r in rows] == [1]


def test_a_jsonl_file_with_only_bad_lines_returns_the_problems_instead_of_raising(tmp_path):
    rows, problems = read_rows(jsonl_file(tmp_path, "[]", "nope"))
    assert rows == []
    assert [problem_row(p) for p in problems] == [1, 2]


def test_non_utf8_bytes_in_a_json_line_are_a_problem_naming_that_row(tmp_path):
    data = json.dumps(GOOD).encode() + b'\n{"reference":"caf\xe9"}\n' + json.dumps(GOOD).encode() + b"\n"
    rows, problems = read_rows(write(tmp_path, "e.jsonl", data))
    assert problems == ["row 2: not UTF-8 text (byte 0xe9 at column 18)"]
    assert [r.row for r in rows] == [1, 3]


# ---------------------------------------------------------------------------------------------------
# Alliances, collecting problems, problem_row
# ---------------------------------------------------------------------------------------------------


def test_an_unknown_alliance_is_reported_once_naming_all_its_rows(tmp_path):
    path = csv_file(
        tmp_path, HEADER, "inv-1,ghost,1,202611", "inv-2,kitchen,1,202611", "inv-3,ghost,2,202611", "inv-4,ghost,x,1"
    )
    asked = []

    def decimals_of(name):
        asked.append(name)
        return decimals_from({"kitchen": 2})(name)

    rows, problems = read_rows(path)
    events = to_events(rows, decimals_of, problems)
    assert [e.reference for e in events] == ["inv-2"]
    assert problems == ["rows 2, 4, 5: no alliance named 'ghost'"]
    assert sorted(asked) == ["ghost", "kitchen"]  # each alliance is looked up once


def test_an_unknown_alliance_on_one_row_says_row(tmp_path):
    events, problems = events_of(one_row(tmp_path, alliance="ghost"))
    assert events == [] and problems == ["row 2: no alliance named 'ghost'"]


def test_an_unknown_alliance_on_many_rows_shows_the_first_five(tmp_path):
    path = csv_file(tmp_path, HEADER, *[f"inv-{i},ghost,1,202611" for i in range(7)])
    _events, problems = events_of(path)
    assert problems == ["rows 2, 3, 4, 5, 6 ...: no alliance named 'ghost'"]


def test_each_unknown_alliance_is_reported_separately(tmp_path):
    path = csv_file(tmp_path, HEADER, "a,ghost,1,1", "b,phantom,1,1", "c,ghost,1,1")
    _events, problems = events_of(path)
    assert sorted(problems) == ["row 3: no alliance named 'phantom'", "rows 2, 4: no alliance named 'ghost'"]


def test_an_error_other_than_a_ledger_error_from_decimals_of_is_not_swallowed():
    def broken(_name):
        raise RuntimeError("node down")

    with pytest.raises(RuntimeError, match="node down"):
        to_events([raw()], broken, [])


def test_each_alliance_uses_its_own_decimals(tmp_path):
    path = csv_file(tmp_path, HEADER, "a,usd6,1.5,1", "b,usd2,1.5,1", "c,whole,15,1")
    events, problems = events_of(path, {"usd6": 6, "usd2": 2, "whole": 0})
    assert problems == []
    assert [e.amount for e in events] == [1_500_000, 150, 15]


def test_every_problem_in_a_file_is_collected_and_sorts_by_row(tmp_path):
    data = (
        csv_bytes(
            HEADER,  # 1
            "inv-2,ghost,1,202611",  # 2: unknown alliance (reported last by to_events)
            "inv-3,kitchen,1,0",  # 3: bad period
            "inv-4,kitchen,-4,202611",  # 4: signed amount (to_events)
            "inv-5,kitchen,1",  # 5: too few fields
            "inv-ok,kitchen,1,202611",  # 6: fine
        )
        + b"inv-7,kitch\xe9n,1,202611\n"
    )  # 7: not UTF-8
    events, problems = events_of(write(tmp_path, "events.csv", data))
    assert [e.row for e in events] == [6]
    assert len(problems) == 5
    assert sorted(problems, key=problem_row) == [
        "row 2: no alliance named 'ghost'",
        f"row 3: period '0' must be a whole number from 1 to {MAX_PERIOD}, like 202611",
        "row 4: amount '-4' has a sign; amounts are positive numbers like 12.50",
        "row 5: 3 fields, the header has 4",
        "row 7: not UTF-8 text (byte 0xe9 at column 12)",
    ]


def test_problems_read_from_the_file_stop_at_max_problems(tmp_path):
    path = csv_file(tmp_path, HEADER, *["x,kitchen,1,0"] * (MAX_PROBLEMS + 5))
    rows, problems = read_rows(path)
    assert rows == []
    assert len(problems) == MAX_PROBLEMS
    assert problem_row(problems[-1]) == MAX_PROBLEMS + 1


@pytest.mark.parametrize(
    ("problem", "row"),
    [
        ("row 7: amount is empty", 7),
        ("rows 12, 3 ...: no alliance named 'a: b'", 12),
        ("row 48211: period '1: 2' must be", 48211),
        ("the file is empty; expected a header row", 0),
        ("amount 12: odd", 12),
        ("", 0),
    ],
)
def test_problem_row_is_the_first_number_before_the_first_colon(problem, row):
    assert problem_row(problem) == row


# ---------------------------------------------------------------------------------------------------
# Property: what is written is what is read
# ---------------------------------------------------------------------------------------------------

names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\n"), min_size=1, max_size=32
).filter(lambda s: s == s.strip() and 0 < len(s.encode("utf-8")) <= 32)
events_rows = st.lists(
    st.tuples(
        names.filter(lambda s: unicodedata.normalize("NFC", s) == s),  # references are read in NFC (tests below)
        st.sampled_from(["kitchen", "bar", "Früh-stück", "a,b"]) | names,
        st.integers(min_value=1, max_value=MAX_EVENT_AMOUNT),
        st.integers(min_value=1, max_value=MAX_PERIOD),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=events_rows,
    data=st.data(),
    order=st.permutations(COLUMNS),
    eol=st.sampled_from(["\n", "\r\n"]),
    bom=st.booleans(),
)
def test_valid_rows_written_as_csv_read_back_as_exactly_the_same_integers(tmp_path, rows, data, order, eol, bom):
    alliances = sorted({alliance for _, alliance, _, _ in rows})
    decimals = {name: data.draw(st.integers(0, 18), label=f"decimals of {name!r}") for name in alliances}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=eol)
    writer.writerow([c.upper() if i % 2 else c for i, c in enumerate(order)])
    for reference, alliance, amount, period in rows:
        values = {
            "reference": reference,
            "alliance": alliance,
            "amount": format_amount(amount, decimals[alliance]),
            "period": str(period),
        }
        writer.writerow([values[c] for c in order])
    path = write(tmp_path, "events.csv", (BOM if bom else b"") + buffer.getvalue().encode("utf-8"))

    raw_rows, problems = read_rows(path)
    events = to_events(raw_rows, decimals_from(decimals), problems)

    assert problems == []
    assert [(e.reference, e.alliance, e.amount, e.period) for e in events] == rows
    assert [e.row for e in events] == list(range(2, len(rows) + 2))


# ---------------------------------------------------------------------------------------------------
# Inputs that once crashed the reader or were misreported
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["reference", "alliance"])
def test_a_json_number_with_a_fraction_is_refused_as_a_name(tmp_path, field):
    line = json.dumps({**GOOD, field: "PLACEHOLDER"}).replace('"PLACEHOLDER"', "1.5")
    rows, problems = read_rows(write(tmp_path, "e.jsonl", line.encode() + b"\n"))
    assert rows == []
    assert len(problems) == 1 and problems[0].startswith(f"row 1: {field} must be text")


def test_a_csv_period_of_thousands_of_digits_is_a_problem_not_a_crash(tmp_path):
    rows, problems = read_rows(one_row(tmp_path, period="1" * 5000))
    assert rows == []
    assert [problem_row(p) for p in problems] == [2]


@pytest.mark.parametrize("field", ["amount", "period"])
def test_a_json_integer_of_thousands_of_digits_is_a_problem_not_a_crash(tmp_path, field):
    line = json.dumps({**GOOD, field: "PLACEHOLDER"}).replace('"PLACEHOLDER"', "7" * 5000)
    rows, problems = read_rows(write(tmp_path, "e.jsonl", line.encode() + b"\n" + json.dumps(GOOD).encode() + b"\n"))
    assert [r.row for r in rows] == [2]
    assert [problem_row(p) for p in problems] == [1]


def test_an_amount_of_thousands_of_digits_is_a_problem_not_a_crash(tmp_path):
    events, problems = events_of(csv_file(tmp_path, HEADER, f"inv-1,kitchen,{'9' * 5000},1", "inv-2,kitchen,1,1"))
    assert [e.row for e in events] == [3]
    assert [problem_row(p) for p in problems] == [2]


def test_a_csv_field_longer_than_the_csv_field_limit_is_a_problem_not_a_crash(tmp_path):
    rows, problems = read_rows(csv_file(tmp_path, HEADER, f"{'r' * 200_000},kitchen,1,1", "inv-2,kitchen,1,1"))
    assert [r.row for r in rows] == [3]
    assert [problem_row(p) for p in problems] == [2]


def test_a_header_that_is_not_utf8_is_reported_as_row_1(tmp_path):
    err = input_error_of(write(tmp_path, "events.csv", b"r\xe9ference,alliance,amount,period\nr,kitchen,1,202611\n"))
    assert any(p.startswith("row 1: not UTF-8 text") for p in err.problems)


def test_the_spool_gives_each_alliances_events_back_in_file_order_across_flushes(tmp_path, monkeypatch):
    """Settlement reads a checked file back one alliance at a time from this spool; rows are buffered
    and appended in chunks, so order must survive any number of flushes and any interleaving."""
    from ledger.revenue_file import SpooledEvents

    monkeypatch.setattr(SpooledEvents, "BUFFERED", 7)  # many flushes for 100 rows
    odd = ["tab\tinside", "line\nbreak", "cr\rtoo", "\u00e9t\u00e9-2026"]
    with SpooledEvents(tmp_path) as spool:
        expected: dict[str, list[tuple]] = {"a": [], "b": [], "c": []}
        for row in range(2, 102):
            alliance = "abc"[row % 3]
            reference = odd[row % 4] + f"-{row}" if row % 5 == 0 else f"ref-{row}"
            spool.add(alliance, row, reference, 10**30 + row, 202611 + row % 2)
            expected[alliance].append((row, 10**30 + row, 202611 + row % 2, reference))
        assert spool.alliances() == ["a", "b", "c"]
        assert len(spool) == 100 and spool.count("a") == len(expected["a"])
        for alliance, rows in expected.items():
            assert list(spool.rows(alliance)) == rows
            events = spool.events(alliance)
            assert [(e.row, e.amount, e.period, e.reference) for e in events] == rows
            assert {e.alliance for e in events} == {alliance}
        assert list(spool.rows("nowhere")) == [] and spool.events("nowhere") == []
        folder = next(tmp_path.iterdir())
    assert not folder.exists()  # deleted on exit


# ---------------------------------------------------------------------------------------------------
# Spreadsheet exports: empty rows, UTF-16; references in Unicode NFC
# ---------------------------------------------------------------------------------------------------


def test_fully_empty_rows_from_a_spreadsheet_are_skipped_and_counted_not_refused(tmp_path):
    from ledger.revenue_file import SpooledEvents, check_file

    path = csv_file(tmp_path, HEADER, "inv-1,kitchen,1,202611", ",,,", "inv-2,kitchen,2,202611", " , ,\t, ", ",,,")
    with SpooledEvents() as spool:
        problems, total = check_file(path, decimals_from({"kitchen": 2}), spool=spool)
        assert (problems, total) == ([], 0)
        assert [r[3] for r in spool.rows("kitchen")] == ["inv-1", "inv-2"]
        assert spool.blank_rows == (3, [3, 5, 6])


def test_a_row_with_only_some_fields_empty_is_still_a_problem(tmp_path):
    _, problems = events_of(csv_file(tmp_path, HEADER, ",kitchen,,", "inv-2,,,202611"))
    assert rows_of(problems) == {2, 3}


def rows_of(problems: list[str]) -> set[int]:
    return {problem_row(p) for p in problems}


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_file_is_refused_with_how_to_save_it_as_utf8(tmp_path, encoding):
    path = write(tmp_path, "excel.csv", f"{HEADER}\ninv-1,kitchen,1,202611\n".encode(encoding))
    message = str(input_error_of(path))
    assert "row 1" in message and "UTF-16" in message and "save it as UTF-8" in message


def test_a_reference_typed_as_nfd_is_the_same_reference_as_its_nfc_form(tmp_path):
    from ledger.models import RevenueEvent

    nfc, nfd = "café-1", unicodedata.normalize("NFD", "café-1")
    assert nfc != nfd
    rows, problems = read_rows(csv_file(tmp_path, HEADER, f"{nfd},kitchen,1,202611"))
    assert problems == [] and rows[0].reference == nfc
    rows, problems = read_rows(jsonl_file(tmp_path, {"reference": nfd, "alliance": "k", "amount": "1", "period": 1}))
    assert problems == [] and rows[0].reference == nfc
    assert RevenueEvent(reference=nfd, alliance="k", amount=1, period=1).reference == nfc
    from ledger.revenue_file import check_file

    both = csv_file(tmp_path, HEADER, f"{nfc},kitchen,1,202611", f"{nfd},kitchen,1,202611")
    problems, _ = check_file(both, decimals_from({"kitchen": 2}))
    assert len(problems) == 1 and "row 3" in problems[0] and "repeats row 2" in problems[0]


def test_a_reference_settled_in_nfd_before_the_rule_is_found_by_its_nfc_form_so_it_is_never_settled_again():
    """The trap of normalising: a reference settled as NFD bytes (before references were normalised) must
    be recognised when the same file is run again, now read as NFC, or it would be settled twice."""
    from types import SimpleNamespace

    from ledger.models import text_to_bytes32
    from ledger.services.settlement import Settler

    nfd = unicodedata.normalize("NFD", "café-1")
    log = SimpleNamespace(args={"agreementId": b"\x01" * 32, "firstSeq": 7,
                                "refs": [text_to_bytes32(nfd), text_to_bytes32("plain")],
                                "entries": [(5 << 32) | 202611, (6 << 32) | 202611]})  # fmt: skip
    chain = SimpleNamespace(logs=lambda names, **kwargs: [log])
    settled = Settler(chain, finance=None).settled_references()
    assert set(settled) == {"café-1", "plain"}
    assert (settled["café-1"].amount, settled["café-1"].seq) == (5, 7)
