"""The HTML dashboard of published results: one self-contained page, no external assets.

Every value comes from a key-holder-signed payload but is still escaped (Jinja autoescape):
metric names are constrained, yet the page must not trust anything it did not write.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from flask import render_template_string
from markupsafe import Markup

from blindsum.server.aggregator.store import StoredResult

MAX_LISTED = 16  # histogram buckets / vector coordinates shown before "…"

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>blindsum: published results</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #1d2330; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; }
p.lead { color: #566; margin-top: 0; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .45rem .6rem; border-bottom: 1px solid #dde2ea;
         vertical-align: top; }
th { background: #f3f5f9; font-weight: 600; }
td.num { font-variant-numeric: tabular-nums; }
.empty { color: #778; font-style: italic; }
code { font-size: .9em; }
svg.bars { display: block; margin-top: .4rem; }
svg.bars rect { fill: #5b7fbf; }
svg.bars line { stroke: #1d2330; stroke-width: 1; }
</style>
</head>
<body>
<h1>Published results</h1>
<p class="lead">Each value is a window aggregate decrypted by the key-holder with
differential-privacy noise added; the interval is its 95% confidence interval. No
individual report is ever decrypted.</p>
{% if rows %}
<table>
<thead><tr><th>metric</th><th>window (UTC)</th><th>value</th><th>95% CI</th>
<th>&epsilon;</th><th>reports</th></tr></thead>
<tbody>
{% for row in rows %}
<tr><td><code>{{ row.metric }}</code> v{{ row.version }}<br><small>{{ row.kind }}</small></td>
<td>{{ row.window }}</td>
<td class="num">{{ row.value }}{% if row.chart %}<br>{{ row.chart }}{% endif %}</td>
<td class="num">{{ row.ci }}</td>
<td class="num">{{ row.epsilon }}</td><td class="num">{{ row.report_count }}</td></tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="empty">No results have been published yet.</p>
{% endif %}
</body>
</html>
"""


def render_dashboard(results: list[StoredResult]) -> str:
    """The dashboard page listing ``results``, newest window first."""
    ordered = sorted(results, key=lambda r: (-r.window, r.metric))
    return render_template_string(_PAGE, rows=[_row(r) for r in ordered])


def _row(result: StoredResult) -> dict[str, Any]:
    payload = result.payload
    return {
        "metric": result.metric,
        "version": result.version,
        "kind": payload.get("kind", ""),
        "window": _window_label(result.window, payload.get("window_seconds")),
        "value": _format(payload.get("value")),
        "chart": _bar_chart(payload.get("value"), payload.get("ci")),
        "ci": _format_ci(payload.get("ci")),
        "epsilon": _format(payload.get("epsilon")),
        "report_count": payload.get("report_count", ""),
    }


def _window_label(start: int, seconds: object) -> str:
    begin = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(seconds, int) and not isinstance(seconds, bool):
        return f"{begin} + {seconds}s"
    return begin


def _format(value: object) -> str:
    if isinstance(value, list):
        shown = ", ".join(_format(v) for v in value[:MAX_LISTED])
        more = f", … ({len(value)} in all)" if len(value) > MAX_LISTED else ""
        return f"[{shown}{more}]"
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return str(value)


def _format_ci(ci: object) -> str:
    if isinstance(ci, list) and len(ci) == 2 and not any(isinstance(c, list) for c in ci):
        return f"[{_format(ci[0])}, {_format(ci[1])}]"
    halves = {round((pair[1] - pair[0]) / 2, 9) for pair in ci
              if isinstance(pair, list) and len(pair) == 2
              and all(isinstance(v, int | float) for v in pair)} if isinstance(ci, list) else set()
    if len(halves) == 1 and len(ci) > 1:  # type: ignore[arg-type]
        return f"each value ± {_format(halves.pop())}"
    if isinstance(ci, list):
        pairs = [_format_ci(pair) for pair in ci[:MAX_LISTED]]
        more = f", … ({len(ci)} in all)" if len(ci) > MAX_LISTED else ""
        return "; ".join(pairs) + more
    return _format(ci)


def _numbers(values: object) -> list[float] | None:
    if not isinstance(values, list) or not values:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
               for v in values):
        return None
    return [float(v) for v in values]


def _bar_chart(value: object, ci: object, width: int = 420, height: int = 110) -> Markup | None:
    """An inline SVG of a histogram or vector: bars for values, whiskers for the 95% CI.

    Only numbers reach the SVG text, so it is safe to mark as markup.
    """
    values = _numbers(value)
    if values is None or not isinstance(ci, list) or len(ci) != len(values):
        return None
    lows = _numbers([pair[0] if isinstance(pair, list) and pair else None for pair in ci])
    highs = _numbers([pair[-1] if isinstance(pair, list) and pair else None for pair in ci])
    if lows is None or highs is None:
        return None
    top = max([*highs, *values, 1e-9])
    bottom = min([*lows, *values, 0.0])
    span = top - bottom
    step = width / len(values)

    def y(v: float) -> float:
        return round(height - (v - bottom) / span * height, 1)

    parts = [f'<svg class="bars" width="{width}" height="{height}" role="img" '
             f'viewBox="0 0 {width} {height}">']
    for index, (v, low, high) in enumerate(zip(values, lows, highs, strict=True)):
        x = round(index * step + step * 0.15, 1)
        w = round(step * 0.7, 1)
        y0, yv = y(0.0), y(v)
        parts.append(f'<rect x="{x}" y="{min(y0, yv)}" width="{w}" '
                     f'height="{round(abs(y0 - yv), 1)}"/>')
        mid = round(x + w / 2, 1)
        parts.append(f'<line x1="{mid}" x2="{mid}" y1="{y(low)}" y2="{y(high)}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
