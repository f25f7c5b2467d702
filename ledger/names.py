"""Names of MEs and alliances: the one owner of what a new name may be, when two names are too alike,
and how any name is shown (also one put on chain before these rules, or by a client that skips them).

A new name must be text a person can read and tell apart from the names already there:

- no control characters (ESC, CR, tab, NUL, ...: Unicode category Cc), no format characters (Cf: the
  bidirectional overrides and isolates such as U+202E, zero-width spaces and joiners, the BOM, soft
  hyphens), no line or paragraph separators, surrogates, private-use or unassigned code points;
- no space other than the plain space U+0020, and no space at the start or the end (a trailing space
  makes a second name that looks the same, and CSV readers strip it);
- it is normalised to Unicode NFC (``é`` typed as ``e`` + U+0301 becomes the single ``é``);
- it must not collide with an existing name after case folding and the confusable mapping of Unicode
  TR39 (its *skeleton*): ``Fridge``, ``FRIDGE`` and ``frіdge`` (Cyrillic ``і``) all collide with
  ``fridge``.

The confusable data is Unicode's ``confusables.txt`` as the PyPI package ``confusable-homoglyphs``
(pinned in pyproject.toml) ships it: a JSON table that lists, for each character, the characters it is
confusable with in both directions. :func:`_skeleton_map` turns it back into a one-way mapping: a
character listed with a multi-character sequence maps to that sequence (``m`` -> ``rn``), and every
other group of characters linked one to one maps to one member, chosen as TR39 chooses its prototypes
(an ASCII letter when there is one, else the member linked to all the others). Two names collide when
their skeletons are equal before case folding (``fI`` looks like ``fl``), after it (``FRIDGE`` is
``fridge``), or when case folding follows the mapping too (``0VEN`` -> ``OVEN`` -> ``oven``). Checked
against Unicode 13's confusables.txt: 8,378 of its 8,499 characters get the very same skeleton, and 28
fall in another group (the package's table is a later Unicode version).

Showing: :func:`shown` writes every character a new name may not contain as a visible escape
(``\\x1b``, ``\\u202e``) and a space at either end as ``\\x20``, so a terminal is never recoloured and a
name never reads backwards; HTML output additionally isolates each name (``<bdi>``).
"""

from __future__ import annotations

import functools
import json
import unicodedata
from collections.abc import Iterable

from ledger.errors import InputError

# Categories refused anywhere in a new name, and escaped when any name is shown.
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_LRM = "\u200e"  # the JSON table wraps right-to-left characters in LEFT-TO-RIGHT MARKs (from the comments)


def _hidden(char: str) -> bool:
    category = unicodedata.category(char)
    return category in HIDDEN_CATEGORIES or (category == "Zs" and char != " ")


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" {name}" if name else "")


def problem(name: str) -> str | None:
    """Why ``name`` cannot be a new name (before normalisation and comparison), or None."""
    if not name:
        return "is empty"
    if name != name.strip() or name[0].isspace() or name[-1].isspace():
        return "starts or ends with a space; remove it"
    for char in name:
        if 0xD800 <= ord(char) <= 0xDFFF:
            return "is not valid Unicode text (a lone surrogate)"
        if unicodedata.category(char) == "Zs" and char != " ":
            return f"contains {_describe(char)}; the only space a name may contain is the plain space"
        if _hidden(char):
            return f"contains {_describe(char)}, a control or invisible character; names are printable text"
    if unicodedata.category(unicodedata.normalize("NFC", name)[0]).startswith("M"):
        return f"starts with a combining mark ({_describe(name[0])})"
    return None


@functools.cache
def _skeleton_map() -> dict[str, str]:
    """Character -> the sequence TR39's skeleton replaces it with (see the module docstring)."""
    from importlib.resources import files

    table = json.loads(files("confusable_homoglyphs").joinpath("confusables.json").read_text(encoding="utf-8"))
    links = {key.replace(_LRM, ""): [e["c"].replace(_LRM, "") for e in value] for key, value in table.items()}
    mapping: dict[str, str] = {}
    for char, others in links.items():
        if len(char) == 1:
            sequences = [other for other in others if len(other) > 1]
            if sequences:
                mapping[char] = sequences[0]
    parent: dict[str, str] = {}

    def root(char: str) -> str:
        while parent.get(char, char) != char:
            parent[char] = parent.get(parent[char], parent[char])
            char = parent[char]
        return char

    for char, others in links.items():
        if len(char) != 1 or char in mapping:
            continue
        for other in others:
            if len(other) == 1 and other not in mapping:
                a, b = root(char), root(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    # Each group maps to one member, chosen as TR39 chooses its prototypes: an ASCII letter when the group
    # has one (lower case first: I and 1 map to l, 0 to O), else the hub, the member linked to the most
    # others (a source is linked only to its prototype), else the lower code point.
    groups: dict[str, list[str]] = {}
    for char in {*parent, *parent.values()}:
        groups.setdefault(root(char), []).append(char)
    for members in groups.values():
        hub = max(members, key=lambda c: (c.isascii(), c.isalpha(), c.islower(), len(links.get(c, ())), -ord(c)))
        for char in members:
            if char != hub:
                mapping[char] = hub
    return mapping


def skeleton(text: str) -> str:
    """TR39's skeleton: NFD, each character replaced by its confusable prototype, NFD again."""
    mapping = _skeleton_map()
    return unicodedata.normalize("NFD", "".join(mapping.get(c, c) for c in unicodedata.normalize("NFD", text)))


def collision_keys(name: str) -> tuple[str, str, str]:
    """Two names collide when any key is equal: the skeleton, the skeleton of the case-folded name, and
    the skeleton of the case-folded skeleton."""
    text = unicodedata.normalize("NFC", name)
    plain = skeleton(text)
    return plain, skeleton(text.casefold()), skeleton(plain.casefold())


def check_new(name: str, existing: Iterable[str], kind: str = "ME") -> str:
    """``name`` in NFC form when it may be the name of a new ``kind`` ("ME", "alliance") beside
    ``existing``; raises :class:`InputError` naming the rule it breaks (or the name it collides with)."""
    what = f"{kind} name"
    reason = problem(name)
    if reason:
        raise InputError(f"{what} {shown(name, quote=True)} {reason}")
    normal = unicodedata.normalize("NFC", name)
    mine = collision_keys(normal)
    for other in existing:
        if other == normal:
            raise InputError(f"an {kind} named {shown(normal)} already exists")
        theirs = collision_keys(other)
        if any(a == b for a, b in zip(mine, theirs, strict=True)):
            raise InputError(
                f"{what} {shown(normal, quote=True)} looks like the existing {shown(other, quote=True)} "
                f"(same letters after case folding and lookalike characters); choose a distinct name"
            )
    return normal


def escape_hidden(text: str) -> str:
    """``text`` with every character a new name may not contain (control, format, separator, unassigned,
    spaces other than U+0020) as a visible escape: ``\\x1b``, ``\\u202e``, ``\\U000e0001``."""
    if text.isprintable() and text.isascii():
        return text
    out = []
    for char in text:
        if _hidden(char):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(char)
    return "".join(out)


def shown(name: str, *, quote: bool = False) -> str:
    """``name`` safe to print on a terminal or in a log: characters a new name may not contain as
    escapes (:func:`escape_hidden`), spaces at either end as ``\\x20``. ``quote``: in single quotes, as
    in messages."""
    text = escape_hidden(name)
    stripped = text.lstrip(" ")
    text = "\\x20" * (len(text) - len(stripped)) + stripped
    stripped = text.rstrip(" ")
    text = stripped + "\\x20" * (len(text) - len(stripped))
    return f"'{text}'" if quote else text


def is_plain(name: str) -> bool:
    """True when :func:`shown` leaves ``name`` as it is."""
    return shown(name) == name
