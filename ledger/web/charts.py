"""Bar charts as inline SVG, drawn on the server with integer arithmetic (amounts are base units; pixel
positions are whole numbers: no floats anywhere). Every bar carries a ``<title>`` with its exact amount,
so a reader hovering it (or a test) sees the figure; text is escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup
from markupsafe import escape as _escape

from ledger.names import shown


def escape(text) -> Markup:
    """Text for SVG: HTML-escaped, and control or bidi characters (from names on the chain) as visible
    escapes (:func:`ledger.names.shown`)."""
    return _escape(shown(str(text)))


# Colour-blind-safe palette (Okabe-Ito), then greys.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000", "#999999"]

WIDTH, HEIGHT = 600, 250
LEFT, RIGHT, TOP, BOTTOM = 86, 12, 14, 46
MAX_BAR = 56  # pixels: a chart of one or two periods keeps slim bars


def nice_step(maximum: int, ticks: int = 4) -> int:
    """The smallest 1/2/5 x 10^k step with at most ``ticks`` steps up to ``maximum`` (integers only)."""
    maximum = max(1, maximum)
    scale = 1
    while True:
        for factor in (1, 2, 5):
            step = factor * scale
            if -(-maximum // step) <= ticks:
                return step
        scale *= 10


def bar_chart(
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[int]]],
    *,
    label: Callable[[int], str],
    stacked: bool = False,
    title: str = "",
    highlight: int | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Markup:
    """Bars per category: one per series side by side, or stacked. ``label`` turns base units into text
    (exact decimal strings). ``highlight``: index of a category drawn bolder (a statement's period)."""
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    n = max(1, len(categories))
    totals = [sum(values[i] for _, values in series) for i in range(len(categories))]
    peak = max(totals if stacked else [v for _, values in series for v in values] or [0], default=0)
    step = nice_step(peak)
    top_value = step * max(1, -(-peak // step))

    def y(value: int) -> int:
        return TOP + plot_h - value * plot_h // top_value

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'style="max-width:100%;height:auto" role="img" '
        f'class="chart" font-family="system-ui, sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>" if title else "",
    ]
    for k in range(0, top_value // step + 1):
        value = k * step
        parts.append(f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y(value)}" y2="{y(value)}" stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y(value) + 4}" text-anchor="end" fill="#555">{escape(label(value))}'
                     "</text>")  # fmt: skip
    slot = plot_w // n
    bars = max(1, 1 if stacked else len(series))
    bar_w = max(2, min(MAX_BAR, (slot * 7 // 10) // bars))
    for i, category in enumerate(categories):
        x0 = LEFT + i * slot + (slot - bar_w * bars) // 2
        if highlight == i:
            parts.append(f'<rect x="{LEFT + i * slot}" y="{TOP}" width="{slot}" height="{plot_h}" fill="#fff7d6"/>')
        base = 0
        for s, (name, values) in enumerate(series):
            value = values[i]
            if not value:
                continue
            colour = PALETTE[s % len(PALETTE)]
            x = x0 if stacked else x0 + s * bar_w
            top = y(base + value) if stacked else y(value)
            bottom = y(base) if stacked else y(0)
            parts.append(
                f'<rect x="{x}" y="{top}" width="{bar_w}" height="{max(1, bottom - top)}" fill="{colour}">'
                f"<title>{escape(category)} {escape(name)}: {escape(label(value))}</title></rect>"
            )
            if stacked:
                base += value
        weight = ' font-weight="bold"' if highlight == i else ""
        parts.append(f'<text x="{LEFT + i * slot + slot // 2}" y="{TOP + plot_h + 16}" text-anchor="middle"{weight}>'
                     f"{escape(category)}</text>")  # fmt: skip
    parts.append(f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y(0)}" y2="{y(0)}" stroke="#333"/>')
    if len(series) > 1 or (series and series[0][0]):
        x = LEFT
        for s, (name, _) in enumerate(series):
            parts.append(f'<rect x="{x}" y="{height - 16}" width="10" height="10" fill="{PALETTE[s % len(PALETTE)]}"/>')
            parts.append(f'<text x="{x + 14}" y="{height - 7}" unicode-bidi="isolate">{escape(name)}</text>')
            x += 24 + 7 * len(name)
    parts.append("</svg>")
    return Markup("".join(parts))


def axis_label(decimals: int) -> Callable[[int], str]:
    """Base units -> a short exact axis label: 40000000000 at 6 decimals -> '40,000'."""
    from ledger.money import format_amount, grouped

    def show(units: int) -> str:
        text = format_amount(units, decimals)
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return grouped(text)

    return show
