"""Names and CSV cells without a chain: the rules a new ME or alliance name must follow
(:mod:`ledger.names`), how any name is shown on a terminal and in HTML, and the spreadsheet-safe CSV
cells every written CSV uses and the audit reads back (:mod:`ledger.csvcells`).

The same rules end to end (``ledger me register`` / ``alliance propose`` refusing, nothing sent) are in
``test_bad_input.py``; a statement with hostile names reconciling exactly is in ``test_audit_unit.py``.
"""

from __future__ import annotations

import csv
import io
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import csvcells, names
from ledger.errors import InputError

EXISTING = ["fridge", "oven", "smart-laundry", "recipe-app"]

# -- the rules for a new name --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("fri\x1b[31mdge", ("U+001B", "control")),  # ESC: recolours a terminal
        ("gpj.\u202eexe", ("U+202E", "RIGHT-TO-LEFT OVERRIDE")),  # shows as "exe.jpg"
        ("fridge\u2066x", ("U+2066",)),  # a bidi isolate
        ("fri\u200bdge", ("U+200B", "ZERO WIDTH SPACE")),
        ("smart\u00a0kitchen", ("U+00A0", "plain space")),
        ("line\nbreak", ("U+000A",)),
        ("tab\there", ("U+0009",)),
        ("smart-laundry ", ("space", "starts or ends")),
        (" smart-laundry", ("space", "starts or ends")),
        ("\u0301accent", ("combining mark",)),
        ("", ("empty",)),
    ],
)
def test_a_new_name_with_control_bidi_or_surrounding_space_is_refused_naming_the_character(name, words):
    with pytest.raises(InputError) as info:
        names.check_new(name, EXISTING)
    message = str(info.value)
    assert all(w in message for w in words), message
    assert "\x1b" not in message and "\u202e" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("name", "existing"),
    [
        ("Fridge", "fridge"),
        ("FRIDGE", "fridge"),
        ("fr\u0456dge", "fridge"),  # Cyrillic і
        ("fridg\u0435", "fridge"),  # Cyrillic е
        ("\u0440ayout", "payout"),  # Cyrillic р
        ("smart\u2010laundry", "smart-laundry"),  # a hyphen that is not the ASCII one
        ("rnodem", "modem"),  # rn looks like m
        ("0ven", "oven"),  # zero and O are confusable, and O is o case-folded
        ("\u041eVEN", "oven"),  # Cyrillic О
        ("fIow", "flow"),  # capital I and small L
    ],
)
def test_a_lookalike_of_an_existing_name_is_refused_naming_the_existing_one(name, existing):
    with pytest.raises(InputError) as info:
        names.check_new(name, [*EXISTING, existing])
    assert "looks like" in str(info.value) and repr(existing) in str(info.value)


def test_a_name_taken_byte_for_byte_is_refused_as_existing():
    with pytest.raises(InputError, match="an ME named oven already exists"):
        names.check_new("oven", EXISTING)


@pytest.mark.parametrize("name", ["fridge-2", "freezer", "kühlschrank", "冰箱", "холодильник", "a b", "x"])
def test_a_distinct_printable_name_is_accepted_as_it_is(name):
    assert names.check_new(name, EXISTING) == name


def test_a_new_name_is_normalised_to_nfc_and_its_nfd_twin_then_collides():
    nfd = unicodedata.normalize("NFD", "café")
    assert nfd != "café"
    assert names.check_new(nfd, EXISTING) == "café"
    with pytest.raises(InputError):
        names.check_new(nfd, [*EXISTING, "café"])


def test_the_skeleton_maps_lookalikes_to_one_form_and_keeps_distinct_letters_apart():
    assert names.skeleton("fr\u0456dge") == names.skeleton("fridge")
    assert names.skeleton("paypal") == names.skeleton("p\u0430yp\u0430l")  # Cyrillic а
    assert names.skeleton("fridge") != names.skeleton("bridge")
    assert names.skeleton("oven") != names.skeleton("even")


# -- showing any name ----------------------------------------------------------------------------------


def test_shown_escapes_control_and_bidi_characters_and_spaces_at_the_ends_and_leaves_plain_names():
    assert names.shown("fridge") == "fridge" and names.shown("冰箱 2") == "冰箱 2"
    assert names.shown("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert names.shown("gpj.\u202eexe") == "gpj.\\u202eexe"
    assert names.shown("smart-laundry ") == "smart-laundry\\x20"
    assert names.shown(" x", quote=True) == "'\\x20x'"
    assert names.shown("a\U000e0001b") == "a\\U000e0001b"


def test_terminal_tables_and_error_lines_escape_names_from_the_chain():
    from ledger.cli import _one_line
    from ledger.cli.output import table

    text = table(["id", "name"], [[1, "evil\x1b[31m"], [2, "gpj.\u202eexe"], [3, "smart-laundry "]])
    assert "\x1b" not in text and "\u202e" not in text
    assert "evil\\x1b[31m" in text and "gpj.\\u202eexe" in text and "smart-laundry\\x20" in text
    line = _one_line("no ME named 'a\u202eb' (x\x1by)")
    assert "\u202e" not in line and "\x1b" not in line and "\\u202e" in line


def test_html_isolates_each_name_and_escapes_markup_and_bidi():
    from ledger.web import html_name

    html = str(html_name("<b>gpj.\u202eexe</b>"))
    assert html == "<bdi>&lt;b&gt;gpj.\\u202eexe&lt;/b&gt;</bdi>"


def test_the_dashboard_and_statements_show_hostile_names_isolated_and_escaped():
    from ledger.services.overview import Alliance, AuditStatus, MEPayouts, Overview, Party, Period, SettlementTx, Token
    from ledger.services.reports import PayoutLine
    from ledger.web import statements
    from ledger.web.app import create_app

    token, evil, rlo = "0x" + "ab" * 20, "evil\x1b[31m", "gpj.\u202eexe"
    alliance = Alliance(rlo, "in force", 1, 1, 1, token, 0, [Party(2, evil, 5000, None), Party(3, rlo, 5000, None)],
                        1, [Period(202611, 10, False, 0)])  # fmt: skip
    mes = [MEPayouts(i, n, "active", token, {202611: 5}, 5, 5) for i, n in ((2, evil), (3, rlo))]
    runs = [SettlementTx("0x" + "12" * 32, 9, 0, [rlo], 1, {token: 10}, 1_795_000_000)]
    overview = Overview(31337, "0x" + "cd" * 20, 1, 10, 1_795_000_000, {token: Token(token, "ATD", 6)}, [alliance],
                        mes, [202611], runs, AuditStatus(True, 0, {}, 1, 10))  # fmt: skip
    html = create_app(lambda: overview, refresh=0).test_client().get("/").get_data(as_text=True)
    assert "\x1b" not in html and "\u202e" not in html
    assert "<bdi>gpj.\\u202eexe</bdi>" in html and "<bdi>evil\\x1b[31m</bdi>" in html
    lines = [PayoutLine(alliance=rlo, period=202611, me_id=2, me=evil, tier="base", token=token, amount=5)]
    context = statements.Context(31337, "0x" + "cd" * 20, 10, {token: ("ATD", 6)})
    page = statements.render(statements.build(lines), context)
    assert "\x1b" not in page and "\u202e" not in page and "<bdi>evil\\x1b[31m</bdi>" in page


# -- CSV cells ---------------------------------------------------------------------------------------------

FORMULAS = ['=HYPERLINK("http://x","y")', "+SUM(1)", "@cmd", "-2+3", "=1+1", "\t=1", "\r=1"]


@pytest.mark.parametrize("text", FORMULAS)
def test_a_cell_a_spreadsheet_would_run_as_a_formula_starts_with_an_apostrophe(text):
    cell = csvcells.encode(text)
    assert cell.startswith("'") and csvcells.decode(cell) == text
    assert "\t" not in cell and "\r" not in cell


@pytest.mark.parametrize("value", [0, 202611, "12.50", "0.000007", "-5", "-0.5", "1500000", "0x" + "ab" * 20, "fridge"])
def test_numbers_addresses_and_plain_names_are_written_as_they_are(value):
    assert csvcells.encode(value) == str(value)


def test_a_name_starting_with_an_apostrophe_or_holding_backslashes_round_trips():
    for text in ["'quoted", "''", "a\\x1b", "\\", "'=x", "back\\\\slash"]:
        assert csvcells.decode(csvcells.encode(text)) == text


def test_control_characters_and_surrounding_spaces_are_escaped_so_a_stripping_reader_gets_them_back():
    for text in ["esc\x1b[31m", "tab\t", " lead", "trail ", "new\nline", "gpj.\u202eexe"]:
        cell = csvcells.encode(text)
        assert cell == cell.strip() and cell.isprintable() and csvcells.decode(cell.strip()) == text


@given(st.lists(st.lists(st.text(max_size=12) | st.integers(min_value=0), min_size=3, max_size=3), max_size=6))
def test_any_csv_written_reads_back_cell_for_cell_and_no_cell_can_be_a_formula(rows):
    text = csvcells.to_csv(["a", "b", "c"], rows)
    read = list(csv.reader(io.StringIO(text, newline="")))
    assert read[0] == ["a", "b", "c"]
    assert [[csvcells.decode(cell.strip()) for cell in row] for row in read[1:]] == [[str(c) for c in r] for r in rows]
    for row in read[1:]:
        for cell in row:
            assert cell.isprintable()
            assert not cell.startswith(("=", "+", "@")) and (not cell.startswith("-") or cell.lstrip("-")[:1].isdigit())


@given(st.text(max_size=16))
def test_any_text_is_either_a_clean_nfc_name_or_refused_in_one_line_and_always_shown_safely(text):
    for out in (names.shown(text), names.escape_hidden(text)):
        assert all(not names._hidden(c) for c in out)
    try:
        name = names.check_new(text, EXISTING)
    except InputError as err:
        assert "\n" not in str(err) and all(not names._hidden(c) for c in str(err))
        return
    assert name == unicodedata.normalize("NFC", name) and name == name.strip() and names.shown(name) == name


def test_an_me_import_refuses_lookalikes_of_registered_names_and_of_its_earlier_rows():
    """`ledger me import` applies the same lookalike rule as `me register`, in one pass over the chain's
    names and the file's rows (keys looked up, not compared pairwise)."""
    from ledger.services.imports import lookalike_problems, name_problem

    rows = [(2, "Fridge"), (3, "oven"), (4, "0ven"), (5, "fr\u0456dge"), (6, "dishwasher")]
    problems = lookalike_problems(rows, ["fridge"], "ME")
    flagged = sorted(int(p.split(":")[0].removeprefix("row ")) for p in problems)
    assert flagged == [2, 4, 5], problems
    assert "looks like 'fridge'" in problems[0] and "looks like 'oven'" in problems[1]
    assert name_problem("evil\x1b[2J", "ME") is not None and name_problem("kit\u202echen", "alliance") is not None
    assert name_problem("smart-laundry ", "alliance") is not None and name_problem("fridge", "ME") is None
