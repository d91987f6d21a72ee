"""Small server-rendered SVG charts for the dashboard: no JavaScript, no CDN, printable.

Every piece of text that goes into the markup passes through ``escape``; the result is marked safe only
as a whole, here. Each chart has a ``<title>``/``<desc>`` pair referenced by ``aria-labelledby`` and a
role of ``img``; the page shows the same numbers in a table for screen readers and copy-paste.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 480, 240
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 40, 14, 26, 46
# Colour-blind-safe pair (Okabe-Ito blue and vermilion); series are also told apart by dash and legend.
PALETTE = (("#0072b2", ""), ("#d55e00", "6 3"), ("#009e73", "2 2"))


@dataclass(frozen=True)
class Series:
    """One line of a chart: a name for the legend and one value per x position (None: no data)."""

    name: str
    values: Sequence[float | None]


def nice_max(value: float) -> float:
    """The top of the y axis: four gridline steps of 1/2/5 × 10^n (at least 1 each) covering ``value``.

    Four steps of a round number keep every tick a round number (0, 5, 10, 15, 20), and counts never
    get fractional ticks.
    """
    needed = max(value, 0) / 4
    step = 1.0
    while step < needed:
        for factor in (2, 2.5, 2):  # 1 → 2 → 5 → 10 → 20 → 50 ...
            step *= factor
            if step >= needed:
                break
    return step * 4


def _number(value: float) -> str:
    return f"{value:g}" if value != int(value) else f"{int(value)}"


def _frame(chart_id: str, title: str, description: str, body: list[str]) -> SafeString:
    title_id, desc_id = f"{chart_id}-title", f"{chart_id}-desc"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-labelledby="{escape(title_id)} {escape(desc_id)}" id="{escape(chart_id)}">',
        f'<title id="{escape(title_id)}">{escape(title)}</title>',
        f'<desc id="{escape(desc_id)}">{escape(description)}</desc>',
        *body,
        "</svg>",
    ]
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text above and in body is escaped


def _axes(labels: Sequence[str], xs: Sequence[float], top: float, unit: str) -> list[str]:
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    out = ['<g class="grid">']
    for i in range(5):
        value = top * i / 4
        y = PAD_TOP + plot_h - plot_h * i / 4
        out.append(f'<line x1="{PAD_LEFT}" x2="{WIDTH - PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(
            f'<text class="tick" x="{PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(_number(round(value, 1)))}</text>"
        )
    out.append("</g>")
    if unit:
        out.append(f'<text class="unit" x="4" y="{PAD_TOP - 12}">{escape(unit)}</text>')
    # At most ~7 x labels so they never overlap.
    step = max(1, -(-len(labels) // 7))
    for i, (label, x) in enumerate(zip(labels, xs, strict=True)):
        if i % step:
            continue
        out.append(
            f'<text class="tick" x="{x:.1f}" y="{HEIGHT - PAD_BOTTOM + 17}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    return out


def _x(i: int, n: int) -> float:
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    return PAD_LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)


def _y(value: float, top: float) -> float:
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    return PAD_TOP + plot_h - plot_h * value / top


def _legend(series: Sequence[Series]) -> list[str]:
    out = []
    x = PAD_LEFT
    for i, s in enumerate(series):
        colour, dash = PALETTE[i % len(PALETTE)]
        y = HEIGHT - 6
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<line class="legend-line" x1="{x}" x2="{x + 18}" y1="{y - 4}" y2="{y - 4}" '
            f'stroke="{colour}"{dash_attr}/>'
        )
        out.append(f'<text class="legend" x="{x + 24}" y="{y}">{escape(s.name)}</text>')
        x += 40 + 9 * len(s.name)
    return out


def line_chart(
    *, chart_id: str, title: str, labels: Sequence[str], series: Sequence[Series], unit: str = ""
) -> SafeString:
    """A line per series over the same x labels (days); gaps where a value is None."""
    values = [v for s in series for v in s.values if v is not None]
    top = nice_max(max(values, default=0))
    body = _axes(labels, [_x(i, len(labels)) for i in range(len(labels))], top, unit)
    for i, s in enumerate(series):
        colour, dash = PALETTE[i % len(PALETTE)]
        segments: list[list[str]] = [[]]
        for j, value in enumerate(s.values):
            if value is None:
                segments.append([])
                continue
            segments[-1].append(f"{_x(j, len(labels)):.1f},{_y(value, top):.1f}")
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        for points in segments:
            if len(points) > 1:
                body.append(
                    f'<polyline class="series" fill="none" stroke="{colour}"{dash_attr} '
                    f'points="{" ".join(points)}"/>'
                )
            elif points:
                x, y = points[0].split(",")
                body.append(f'<circle class="series" cx="{x}" cy="{y}" r="2.5" fill="{colour}"/>')
    if len(series) > 1:
        body += _legend(series)
    total = ", ".join(f"{s.name}: {_number(sum(v or 0 for v in s.values))} in total" for s in series)
    period = f"{labels[0]} to {labels[-1]}" if labels else "no period"
    return _frame(chart_id, title, f"{period}. {total}.", body)


def bar_chart(
    *, chart_id: str, title: str, labels: Sequence[str], values: Sequence[float | None], unit: str = ""
) -> SafeString:
    """One bar per label (weeks); no bar where a value is None."""
    top = nice_max(max((v for v in values if v is not None), default=0))
    slot = (WIDTH - PAD_LEFT - PAD_RIGHT) / max(len(labels), 1)
    body = _axes(labels, [PAD_LEFT + slot * (i + 0.5) for i in range(len(labels))], top, unit)
    for i, value in enumerate(values):
        if value is None:
            continue
        x = PAD_LEFT + slot * i + slot * 0.15
        y = _y(value, top)
        body.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" '
            f'height="{HEIGHT - PAD_BOTTOM - y:.1f}" fill="{PALETTE[0][0]}">'
            f"<title>{escape(labels[i])}: {escape(_number(round(value, 1)))} {escape(unit)}</title></rect>"
        )
    known = [v for v in values if v is not None]
    if not known:
        body.append(
            f'<text class="empty" x="{(WIDTH + PAD_LEFT) / 2:.1f}" y="{HEIGHT / 2:.1f}" '
            f'text-anchor="middle">No data in this period</text>'
        )
    description = (
        f"{len(known)} of {len(values)} periods with data; highest {_number(round(max(known), 1))} {unit}."
        if known
        else "No data in this period."
    )
    return _frame(chart_id, title, description, body)


def day_labels(days: Sequence[dt.date]) -> list[str]:
    return [f"{d:%b} {d.day}" for d in days]
