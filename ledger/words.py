"""Words for counts: ``count(1, "batch")`` is "1 batch", ``count(3, "batch")`` "3 batches"."""

from __future__ import annotations

_IRREGULAR = {"ME": "MEs", "was": "were"}


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``noun`` for one, its plural for any other number (``nouns``, or the English rule)."""
    if n == 1:
        return noun
    if nouns is not None:
        return nouns
    if noun in _IRREGULAR:
        return _IRREGULAR[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u"):
        return noun[:-1] + "ies"
    return noun + "s"


def count(n: int, noun: str, nouns: str | None = None, *, sep: bool = False) -> str:
    """``"1 batch"``, ``"2 batches"``; ``sep``: thousands separators (``"1,200 events"``)."""
    return f"{n:,} {plural(n, noun, nouns)}" if sep else f"{n} {plural(n, noun, nouns)}"
