"""Small SVG charts drawn on the server: no script, no style attribute (the console's CSP allows
neither), every label escaped. Pure functions of their numbers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from markupsafe import Markup, escape

_ROW = 22
_LABEL_WIDTH = 190
_BAR_WIDTH = 260


def bars(rows: Sequence[tuple[str, int]], *, title: str) -> Markup:
    """Horizontal bars, one per (label, count), scaled to the largest count; the count is written
    beside each bar (the number, not the bar, is what a person reads)."""
    largest = max((count for _, count in rows), default=0)
    height = max(1, len(rows)) * _ROW + 4
    width = _LABEL_WIDTH + _BAR_WIDTH + 80
    parts = [
        f'<svg class="chart bars" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for index, (label, count) in enumerate(rows):
        y = index * _ROW + 2
        length = round(_BAR_WIDTH * count / largest) if largest else 0
        drawn = max(length, 1 if count else 0)  # a count of 1 among millions still shows
        parts.append(
            f'<text class="label" x="0" y="{y + 15}">{escape(label)}</text>'
            f'<rect class="bar" x="{_LABEL_WIDTH}" y="{y + 3}" width="{drawn}"'
            f' height="{_ROW - 6}"/>'
            f'<text class="value" x="{_LABEL_WIDTH + length + 6}" y="{y + 15}">{count}</text>'
        )
    if not rows:
        parts.append('<text class="label" x="0" y="16">nothing yet</text>')
    parts.append("</svg>")
    # Safe: every text interpolated above went through escape(); the rest are numbers.
    return Markup("".join(parts))  # noqa: S704


def columns(
    points: Sequence[tuple[datetime, float | None]], *, title: str, unit: str = ""
) -> Markup:
    """One column per hour, oldest left; hours label every 6 columns; the largest value is
    written at the top left. A None (no data that hour) draws no column."""
    width, height, top, bottom = 520, 130, 18, 20
    plot = height - top - bottom
    values = [value for _, value in points if value is not None]
    largest = max(values, default=0) or 1
    step = width / max(1, len(points))
    parts = [
        f'<svg class="chart columns" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text class="value" x="0" y="12">max {_number(max(values, default=0))}{escape(unit)}'
        "</text>",
        f'<line class="axis" x1="0" y1="{top + plot}" x2="{width}" y2="{top + plot}"/>',
    ]
    for index, (start, value) in enumerate(points):
        x = index * step
        if value is not None and value > 0:
            size = max(1.0, plot * value / largest)
            parts.append(
                f'<rect class="bar" x="{x + 1:.1f}" y="{top + plot - size:.1f}" '
                f'width="{step - 2:.1f}" height="{size:.1f}">'
                f"<title>{start:%H}:00 UTC: {_number(value)}{escape(unit)}</title></rect>"
            )
        if index % 6 == 0:
            parts.append(
                f'<text class="label" x="{x + 1:.1f}" y="{height - 4}">{start:%H}:00</text>'
            )
    parts.append("</svg>")
    # Safe: every text interpolated above went through escape(); the rest are numbers.
    return Markup("".join(parts))  # noqa: S704


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"
