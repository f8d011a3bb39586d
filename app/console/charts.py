"""Small SVG charts drawn on the server: no script, no style attribute (the console's CSP allows
neither), every label escaped. Pure functions of their numbers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup, escape

_ROW = 22
_LABEL_WIDTH = 190
_BAR_WIDTH = 260
_AGE_WIDTH = 520


def _opened(kind: str, width: int, height: int, title: str) -> list[str]:
    """A chart's opening tag and its title (the accessible name), escaped."""
    return [
        f'<svg class="chart {kind}" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]


def bars(rows: Sequence[tuple[str, int]], *, title: str) -> Markup:
    """Horizontal bars, one per (label, count), scaled to the largest count; the count is written
    beside each bar (the number, not the bar, is what a person reads)."""
    largest = max((count for _, count in rows), default=0)
    height = max(1, len(rows)) * _ROW + 4
    width = _LABEL_WIDTH + _BAR_WIDTH + 80
    parts = _opened("bars", width, height, title)
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
    return _closed(parts, empty="nothing yet" if not rows else None)


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
        *_opened("columns", width, height, title),
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
    return _closed(parts)


@dataclass(frozen=True, slots=True)
class Age:
    """One open registration on the Aging chart: its wait on Sinch against its market's figures."""

    label: str
    seconds: float
    p50: float | None
    p85: float | None
    overdue: bool


def ages(rows: Sequence[Age], *, title: str) -> Markup:
    """One bar per registration, its wait on Sinch, on one time scale for all; a thin mark at its
    market's p50 and a thick one at its p85 (none where the data cannot tell); overdue bars in
    the alarm colour. The wait is written beside each bar in days."""
    largest = max(
        (value for row in rows for value in (row.seconds, row.p50, row.p85) if value), default=0.0
    )
    height = max(1, len(rows)) * _ROW + 24
    width = _LABEL_WIDTH + _AGE_WIDTH + 90
    parts = _opened("ages", width, height, title)

    def x(seconds: float) -> float:
        return _LABEL_WIDTH + (_AGE_WIDTH * seconds / largest if largest else 0.0)

    for index, row in enumerate(rows):
        y = index * _ROW + 2
        length = x(row.seconds) - _LABEL_WIDTH
        kind = "bar overdue" if row.overdue else "bar"
        parts.append(
            f'<text class="label" x="0" y="{y + 15}">{escape(row.label)}</text>'
            f'<rect class="{kind}" x="{_LABEL_WIDTH}" y="{y + 3}" width="{max(length, 1):.1f}"'
            f' height="{_ROW - 6}"><title>{escape(row.label)}: {_days(row.seconds)} waiting on '
            f"Sinch</title></rect>"
        )
        for name, mark in (("p50", row.p50), ("p85", row.p85)):
            if mark:
                parts.append(
                    f'<line class="mark {name}" x1="{x(mark):.1f}" y1="{y + 1}" '
                    f'x2="{x(mark):.1f}" y2="{y + _ROW - 1}"/>'
                )
        parts.append(
            f'<text class="value" x="{x(row.seconds) + 6:.1f}" y="{y + 15}">'
            f"{_days(row.seconds)}</text>"
        )
    legend_y = height - 6
    parts.append(
        f'<text class="label" x="0" y="{legend_y}">scale 0 to {_days(largest)}</text>'
        f'<line class="mark p50" x1="{_LABEL_WIDTH}" y1="{legend_y - 10}" x2="{_LABEL_WIDTH}" '
        f'y2="{legend_y}"/><text class="label" x="{_LABEL_WIDTH + 6}" y="{legend_y}">'
        "market p50</text>"
        f'<line class="mark p85" x1="{_LABEL_WIDTH + 110}" y1="{legend_y - 10}" '
        f'x2="{_LABEL_WIDTH + 110}" y2="{legend_y}"/><text class="label" '
        f'x="{_LABEL_WIDTH + 116}" y="{legend_y}">market p85</text>'
    )
    return _closed(parts, empty="no registration waits" if not rows else None)


def _closed(parts: list[str], *, empty: str | None = None) -> Markup:
    """The drawing whose SVG elements are `parts` (each text in them escaped), closed; `empty`
    written where there was nothing to draw."""
    if empty is not None:
        parts.append(f'<text class="label" x="0" y="16">{escape(empty)}</text>')
    parts.append("</svg>")
    # Safe: every text interpolated into `parts` went through escape(); the rest are numbers.
    return Markup("".join(parts))  # noqa: S704


def _days(seconds: float) -> str:
    return f"{seconds / 86_400:.1f} d"


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"
