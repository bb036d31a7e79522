"""Small server-side SVG charts (pure): horizontal bars and a sparkline, as
markup a template includes. No JavaScript, so they print and screenshot as seen;
every value is in the text too (a ``<title>`` and a label), not only in a length."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    text: str
    """What the bar says in words (e.g. ``1,350.00 USD``)."""


def bar_chart(
    bars: Sequence[Bar], *, width: int = 820, row: int = 26, label_w: int = 200
) -> Markup:
    """Horizontal bars scaled to the largest value; an empty list says so."""
    if not bars:
        return Markup('<p class="empty">nothing to chart yet</p>')
    top = max((b.value for b in bars), default=0.0) or 1.0
    plot = width - label_w - 280  # room for the value's text
    height = row * len(bars) + 4
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}"'
        f' height="{height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, b in enumerate(bars):
        y = i * row + 2
        w = max(b.value, 0.0) / top * plot
        parts.append(
            f"<g><title>{escape(b.label)}: {escape(b.text)}</title>"
            f'<text x="{label_w - 8}" y="{y + row * 0.65:.1f}" text-anchor="end"'
            f' class="label">{escape(_clip(b.label))}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" class="bar"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + row * 0.65:.1f}" class="value">'
            f"{escape(b.text)}</text></g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def sparkline(values: Sequence[float], *, width: int = 160, height: int = 28) -> Markup:
    """A line through ``values`` (oldest first), its last point marked."""
    if len(values) < 2:
        return Markup('<span class="empty">-</span>')
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = width / (len(values) - 1)
    points = [
        (i * step, height - 3 - (v - low) / span * (height - 6)) for i, v in enumerate(values)
    ]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    x, y = points[-1]
    return Markup(
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
        f' xmlns="http://www.w3.org/2000/svg" role="img"><title>from {low:g} to {high:g};'
        f" now {values[-1]:g}</title>"
        f'<polyline points="{path}" class="line"/><circle cx="{x:.1f}" cy="{y:.1f}" r="2.5"'
        ' class="dot"/></svg>'
    )


def interval(low: float, estimate: float, high: float, *, scale: float, width: int = 200) -> Markup:
    """An estimate and its interval on an axis from ``-scale`` to ``+scale``, zero marked."""
    scale = scale or 1.0

    def at(v: float) -> float:
        return (max(-scale, min(scale, v)) + scale) / (2 * scale) * (width - 10) + 5

    return Markup(
        f'<svg class="interval" viewBox="0 0 {width} 16" width="{width}" height="16"'
        f' xmlns="http://www.w3.org/2000/svg" role="img"><title>{estimate:+.3g}'
        f" [{low:+.3g}, {high:+.3g}]</title>"
        f'<line x1="{at(0):.1f}" y1="0" x2="{at(0):.1f}" y2="16" class="zero"/>'
        f'<line x1="{at(low):.1f}" y1="8" x2="{at(high):.1f}" y2="8" class="ci"/>'
        f'<circle cx="{at(estimate):.1f}" cy="8" r="3.5" class="dot"/></svg>'
    )


def _clip(text: str, n: int = 26) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
