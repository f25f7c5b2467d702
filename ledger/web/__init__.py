"""Web views of the ledger: the read-only transparency dashboard (:mod:`ledger.web.app`), payout
statements as self-contained HTML (:mod:`ledger.web.statements`) and the inline SVG charts both draw
(:mod:`ledger.web.charts`). No Ape here: the data comes from :mod:`ledger.services`."""
