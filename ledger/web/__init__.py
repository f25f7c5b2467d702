"""Web views of the ledger: the read-only transparency dashboard (:mod:`ledger.web.app`), payout
statements as self-contained HTML (:mod:`ledger.web.statements`) and the inline SVG charts both draw
(:mod:`ledger.web.charts`). No Ape here: the data comes from :mod:`ledger.services`."""

from markupsafe import Markup

from ledger.names import shown


def html_name(name) -> Markup:
    """An ME, alliance or token name in HTML: control and bidi characters as visible escapes
    (:func:`ledger.names.shown`), and the name isolated (``<bdi>``) so that a right-to-left name never
    reorders the text around it. Registered as the ``name`` filter of every template."""
    return Markup("<bdi>{}</bdi>").format(shown(str(name)))
