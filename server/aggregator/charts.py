"""Inline SVG charts for the dashboard: axes, ticks, labels, tooltips, accessible names.

No script and no external asset: each chart is one ``<svg role="img">`` whose ``<title>`` and
``<desc>`` say what it shows (screen readers read them; the page puts the same numbers in a
table beside it), and whose marks carry ``<title>`` tooltips. Only numbers we computed and
text we escape reach the markup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup, escape

# A small canvas, scaled by CSS: at a phone's 360 px its 11 px labels stay about 9 px.
WIDTH, HEIGHT = 420, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 14, 12, 46
CHAR_PX = 6.4  # average advance of an 11 px label character, to thin labels that would touch


@dataclass(frozen=True)
class Point:
    """One window of a time series: its start, the value shown and its interval."""

    x: float
    y: float
    low: float
    high: float
    tooltip: str


@dataclass(frozen=True)
class Bar:
    """One bucket or coordinate: label, value shown, per-slot interval, simultaneous band."""

    label: str
    y: float
    low: float
    high: float
    band_low: float | None
    band_high: float | None
    tooltip: str


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2 or 5 times a power of ten) covering the range."""
    if not high > low:
        high = low + 1
    raw = (high - low) / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    tick = first
    while tick <= high + step * 1e-9:
        ticks.append(round(tick, 12))
        tick += step
    if ticks[-1] < high:
        ticks.append(round(tick, 12))
    return ticks


def tick_text(value: float) -> str:
    """A short tick label: 1.2k, 3M, 0.05."""
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if magnitude >= limit:
            return f"{value / limit:g}{suffix}"
    return f"{value:.6g}"


class _Frame:
    """Maps data to pixels inside the plot area and draws the axes."""

    def __init__(self, x_range: tuple[float, float], y_ticks: Sequence[float]) -> None:
        self.x0, self.x1 = x_range
        self.y_ticks = list(y_ticks)
        self.y0, self.y1 = self.y_ticks[0], self.y_ticks[-1]

    def px(self, x: float) -> float:
        span = self.x1 - self.x0
        frac = 0.5 if span <= 0 else (x - self.x0) / span
        return round(LEFT + frac * (WIDTH - LEFT - RIGHT), 1)

    def py(self, y: float) -> float:
        span = self.y1 - self.y0
        frac = (min(max(y, self.y0), self.y1) - self.y0) / span if span > 0 else 0.5
        return round(HEIGHT - BOTTOM - frac * (HEIGHT - TOP - BOTTOM), 1)

    def y_axis(self, title: str) -> list[str]:
        parts = [f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" '
                 f'y2="{HEIGHT - BOTTOM}"/>']
        for tick in self.y_ticks:
            y = self.py(tick)
            parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" '
                         f'y2="{y}"/>')
            parts.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4}" '
                         f'text-anchor="end">{escape(tick_text(tick))}</text>')
        parts.append(f'<text class="axis-title" transform="translate(14 {(HEIGHT - BOTTOM) / 2})'
                     f' rotate(-90)" text-anchor="middle">{escape(title)}</text>')
        return parts

    def x_axis(self, labels: Sequence[tuple[float, str]], title: str) -> list[str]:
        base = HEIGHT - BOTTOM
        parts = [f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base}" '
                 f'y2="{base}"/>']
        for x, text in labels:
            px = self.px(x)
            parts.append(f'<line class="axis" x1="{px}" x2="{px}" y1="{base}" y2="{base + 4}"/>')
            parts.append(f'<text class="tick" x="{px}" y="{base + 16}" '
                         f'text-anchor="middle">{escape(text)}</text>')
        parts.append(f'<text class="axis-title" x="{(LEFT + WIDTH - RIGHT) / 2}" '
                     f'y="{HEIGHT - 6}" text-anchor="middle">{escape(title)}</text>')
        return parts


def _svg(chart_id: str, title: str, desc: str, body: list[str]) -> Markup:
    head = (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-labelledby="{chart_id}-t {chart_id}-d" preserveAspectRatio="xMidYMid meet">'
            f'<title id="{chart_id}-t">{escape(title)}</title>'
            f'<desc id="{chart_id}-d">{escape(desc)}</desc>')
    return Markup(head + "".join(body) + "</svg>")


def _fitting(count: int, longest: int) -> int:
    """How many labels of ``longest`` characters fit side by side under the plot."""
    return max(1, int((WIDTH - LEFT - RIGHT) // (longest * CHAR_PX + 8)))


def _time_labels(xs: Sequence[float]) -> list[tuple[float, str]]:
    if not xs:
        return []
    span = max(xs) - min(xs)
    fmt = "%Y-%m-%d" if span >= 4 * 86400 else "%m-%d %H:%M"
    stride = max(1, math.ceil(len(xs) / _fitting(len(xs), 11)))
    return [(x, datetime.fromtimestamp(x, UTC).strftime(fmt)) for x in xs[::stride]]


def time_series(chart_id: str, points: Sequence[Point], y_title: str, title: str,
                desc: str, floor: float | None = None) -> Markup:
    """Values over windows with their 95% band (a shaded area; whiskers for one window)."""
    lows = [p.low for p in points] + [p.y for p in points]
    highs = [p.high for p in points] + [p.y for p in points]
    low = min(lows) if floor is None else max(min(lows), floor)
    ticks = nice_ticks(low, max(highs))
    xs = [p.x for p in points]
    # half a step of room at each end, so the first and last labels are not cut off
    pad = (max(xs) - min(xs)) / max(len(xs) - 1, 1) / 2 or 1.0
    frame = _Frame((min(xs) - pad, max(xs) + pad), ticks)
    body = frame.y_axis(y_title) + frame.x_axis(_time_labels(xs), "window start (UTC)")
    if len(points) > 1:
        upper = [f"{frame.px(p.x)},{frame.py(p.high)}" for p in points]
        lower = [f"{frame.px(p.x)},{frame.py(p.low)}" for p in reversed(points)]
        body.append(f'<polygon class="band" points="{" ".join(upper + lower)}">'
                    "<title>95% interval of each window</title></polygon>")
        line = " ".join(f"{frame.px(p.x)},{frame.py(p.y)}" for p in points)
        body.append(f'<polyline class="line" points="{line}"/>')
    for p in points:
        x = frame.px(p.x)
        body.append(f'<g class="point"><line class="whisker" x1="{x}" x2="{x}" '
                    f'y1="{frame.py(p.low)}" y2="{frame.py(p.high)}"/>'
                    f'<circle cx="{x}" cy="{frame.py(p.y)}" r="4"/>'
                    f"<title>{escape(p.tooltip)}</title></g>")
    return _svg(chart_id, title, desc, body)


def bar_chart(chart_id: str, bars: Sequence[Bar], y_range: tuple[float, float], x_title: str,
              y_title: str, title: str, desc: str) -> Markup:
    """Bars on a given y range (shared across windows), per-slot whiskers, simultaneous band.

    Labels are thinned to fit; every bar's tooltip and the page's table name it in full.
    """
    ticks = nice_ticks(*y_range)
    count = len(bars)
    frame = _Frame((-0.5, count - 0.5), ticks)
    longest = max((len(bar.label) for bar in bars), default=1)
    stride = max(1, math.ceil(count / _fitting(count, longest)))
    labels = [(float(i), bars[i].label) for i in range(0, count, stride)]
    body = frame.y_axis(y_title) + frame.x_axis(labels, x_title)
    width = (WIDTH - LEFT - RIGHT) / max(count, 1)
    zero = frame.py(max(min(0.0, ticks[-1]), ticks[0]))
    for index, bar in enumerate(bars):
        centre = frame.px(index)
        left = round(centre - width * 0.35, 1)
        top = frame.py(bar.y)
        parts = [f'<rect class="bar" x="{left}" y="{min(top, zero)}" '
                 f'width="{round(width * 0.7, 1)}" height="{round(abs(zero - top), 1)}"/>']
        if bar.band_low is not None and bar.band_high is not None:
            parts.append(f'<line class="band-whisker" x1="{centre}" x2="{centre}" '
                         f'y1="{frame.py(bar.band_low)}" y2="{frame.py(bar.band_high)}"/>')
        parts.append(f'<line class="whisker" x1="{centre}" x2="{centre}" '
                     f'y1="{frame.py(bar.low)}" y2="{frame.py(bar.high)}"/>')
        body.append(f'<g class="slot">{"".join(parts)}<title>{escape(bar.tooltip)}</title></g>')
    return _svg(chart_id, title, desc, body)


def sparkline(values: Sequence[float], label: str) -> Markup | None:
    """A tiny trend line for the index (decorative: the row states the trend in words)."""
    if len(values) < 2:
        return None
    low, high = min(values), max(values)
    span = high - low or 1.0
    step = 96 / (len(values) - 1)
    points = " ".join(f"{round(i * step + 2, 1)},{round(22 - (v - low) / span * 20, 1)}"
                      for i, v in enumerate(values))
    return Markup(f'<svg class="spark" viewBox="0 0 100 24" role="img" aria-label="'
                  f'{escape(label)}"><polyline points="{points}"/></svg>')
