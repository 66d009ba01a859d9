"""The HTML dashboard: an index of metrics and one page per metric, server-rendered.

No script and no external asset, so it works without JavaScript and behind strict CSPs.
Every value comes from a key-holder-signed payload but is still escaped (Jinja autoescape):
metric names are constrained, yet the page must not trust anything it did not write.

What a metric's state says depends only on its policy, the clock and the key-holder's
ledger, never on reports waiting in an open window: how many reports arrived, or whether
any did, is not published before the window is released.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from flask import render_template
from markupsafe import Markup

from blindsum.server.aggregator import charts
from blindsum.server.aggregator.budget import Budget
from blindsum.server.aggregator.methodology import Section, methodology
from blindsum.server.aggregator.presentation import View
from blindsum.server.aggregator.published import view_of
from blindsum.server.aggregator.store import StoredResult
from blindsum.shared.manifest import Pause
from blindsum.shared.policy import MetricPolicy

SPARK_WINDOWS = 24
SMALL_MULTIPLES = 6  # histogram/vector windows drawn side by side on one scale
PAGE_RESULTS = 1000
DASH = "\u2013"  # an en dash between times, spelled out for the linter


def _utc(seconds: float, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime(fmt) + " UTC"


@dataclass(frozen=True)
class Window:
    """One published window as the pages show it."""

    result: StoredResult
    view: View

    @property
    def start(self) -> str:
        return _utc(self.result.window)

    @property
    def span(self) -> str:
        seconds = self.result.result.window_seconds
        end = datetime.fromtimestamp(self.result.window + seconds, UTC).strftime("%H:%M")
        return f"{self.start[:-4]}{DASH}{end} UTC"

    @property
    def report_count(self) -> int:
        return self.view.report_count

    @property
    def epsilon(self) -> str:
        typed = self.result.result
        return f"ε {typed.epsilon:g}" + (f", δ {typed.delta:g}" if typed.delta else "")

    @property
    def released(self) -> str:
        return _utc(self.result.released_at)

    @property
    def verify_url(self) -> str:
        """The window's result as ``blindsum verify`` reads it."""
        return f"/v1/published/{quote(self.result.metric)}/windows/{self.result.window}"

    @property
    def proof(self) -> str:
        """What ``blindsum verify`` checks for this result."""
        return "signature + proofs" if self.result.result.threshold else "signature"

    @property
    def scalar(self) -> bool:
        return self.view.scalar

    @property
    def value(self) -> str:
        return self.view.format(self.view.slots[0].shown)

    @property
    def ci(self) -> str:
        slot = self.view.slots[0]
        return f"{self.view.format(slot.low)} to {self.view.format(slot.high)}"

    @property
    def low_signal_count(self) -> int:
        return sum(s.low_signal for s in self.view.slots)

    def slot_rows(self) -> list[dict[str, str]]:
        fmt = self.view.format
        return [{
            "label": s.label, "value": fmt(s.shown), "ci": f"{fmt(s.low)} to {fmt(s.high)}",
            "band": "" if s.simultaneous_low is None or s.simultaneous_high is None
            else f"{fmt(s.simultaneous_low)} to {fmt(s.simultaneous_high)}",
            "raw": f"{s.raw:g}", "low_signal": "yes" if s.low_signal else "",
        } for s in self.view.slots]


def windows_of(results: Sequence[StoredResult], policy_for: Callable[[StoredResult],
               MetricPolicy | None]) -> list[Window]:
    out = []
    for result in results:
        view = view_of(result, policy_for(result))
        if view is not None:
            out.append(Window(result, view))
    return out


@dataclass
class MetricState:
    """What the index says about one metric: state, budget and policy in words."""

    name: str
    policy: MetricPolicy | None
    budget: Budget | None
    budget_known: bool
    now: float
    windows: list[Window] = field(default_factory=list)
    pause: Pause | None = None  # the signed manifest's pause, with its reason

    @property
    def _paused(self) -> Pause | None:
        return self.pause if self.pause is not None and self.pause.active(self.now) else None

    @property
    def state(self) -> str:
        if self.policy is None:
            return "retired"
        if self._paused is not None or (self.budget is not None and self.budget.releases_left(
                self.policy.privacy.epsilon) == 0):
            return "paused: budget spent"
        return "collecting"

    @property
    def state_detail(self) -> str:
        if self.policy is None:
            return "no longer in the manifest: nothing more is collected or released"
        pause = self._paused
        if pause is not None:  # SDKs read the same words when they refuse to record
            until = "for good" if pause.until is None else f"until {_utc(pause.until)}"
            return f"paused {until}: {pause.reason}"
        if self.state != "collecting":
            return "the key-holder releases nothing more for this metric"
        start = self.policy.window_start(self.now)
        closes = start + self.policy.window_seconds
        return f"current window {_utc(start, '%H:%M')[:-4]}{DASH}{_utc(closes, '%H:%M')}"

    @property
    def budget_text(self) -> str:
        if self.budget is None or self.policy is None:
            return ("budget unknown (the key-holder did not answer)" if not self.budget_known
                    else "no budget entry")
        left = self.budget.releases_left(self.policy.privacy.epsilon)
        how = " (zCDP, converted once)" if self.budget.accounting == "zcdp" else ""
        return (f"ε {self.budget.spent_epsilon:.4g} of {self.budget.budget_epsilon:g} spent"
                f"{how}; {left} release{'s' if left != 1 else ''} left")

    @property
    def policy_text(self) -> str:
        policy = self.policy
        if policy is None:
            return ""
        privacy = policy.privacy
        if policy.kind == "histogram":
            shape = f"{policy.slot_count} buckets"
        elif policy.kind == "vector":
            shape = f"{policy.dimension} coordinates in [{policy.lower:g}, {policy.upper:g}]"
        else:
            shape = f"values in [{policy.lower:g}, {policy.upper:g}]"
        cost = f"ε {privacy.epsilon:g}" + (f", δ {privacy.delta:g}" if privacy.delta else "")
        return (f"{policy.kind}, {shape}; {privacy.mechanism} noise, {cost} per "
                f"{_window_words(policy.window_seconds)} window; k ≥ {policy.min_contributors}; "
                f"{policy.scheme}; " + ("every report proven valid" if policy.proven else
                                         "trusts its clients (validity = none)"))

    @property
    def latest(self) -> Window | None:
        return self.windows[-1] if self.windows else None

    @property
    def latest_text(self) -> str:
        latest = self.latest
        if latest is None:
            return "nothing published yet"
        if latest.scalar:
            return f"{latest.value} (95%: {latest.ci})"
        top = max(latest.view.slots, key=lambda s: s.shown)
        if latest.view.kind == "histogram":
            return f"largest bucket {top.label}: {latest.view.format(top.shown)}"
        return f"largest coordinate #{top.label}: {latest.view.format(top.shown)}"

    @property
    def trend(self) -> str:
        if len(self.windows) < 2 or not self.windows[-1].scalar:
            return "—"
        last, before = self.windows[-1].view, self.windows[-2].view
        change = last.slots[0].shown - before.slots[0].shown
        noise = math.hypot(last.half_width, before.half_width)
        if abs(change) <= noise:
            return "steady (within noise)"
        return ("up " if change > 0 else "down ") + last.format(abs(change))

    @property
    def spark(self) -> Markup | None:
        points = [w.view.slots[0].shown for w in self.windows if w.scalar]
        return charts.sparkline(points[-SPARK_WINDOWS:], f"trend of {self.name}")


def _window_words(seconds: int) -> str:
    return {3600: "hourly", 86400: "daily", 60: "minute", 604800: "weekly"}.get(
        seconds, f"{seconds} s")


def time_series_chart(name: str, windows: Sequence[Window], floor: float | None) -> Markup:
    points = [charts.Point(w.result.window, w.view.slots[0].shown, w.view.slots[0].low,
                           w.view.slots[0].high,
                           f"{w.start}: {w.value} (95% {w.ci}), {w.report_count} reports")
              for w in windows]
    kind = windows[-1].view.kind
    return charts.time_series(
        "series", points, kind, f"{name}: {kind} per window with its 95% interval",
        f"{len(points)} windows from {windows[0].start} to {windows[-1].start}; latest "
        f"{windows[-1].value} (95% interval {windows[-1].ci}). The table below lists them all.",
        floor)


def slot_charts(name: str, windows: Sequence[Window]) -> list[tuple[Window, Markup]]:
    """The newest windows' bars, all on one y scale so heights compare across windows."""
    shown = list(windows[-SMALL_MULTIPLES:])[::-1]
    lows = [min(s.low for s in w.view.slots) for w in shown]
    highs = [max(max(s.high, s.shown) for s in w.view.slots) for w in shown]
    y_range = (min(0.0, *lows), max(highs))
    kind = shown[0].view.kind
    noun = "bucket" if kind == "histogram" else "coordinate"
    out = []
    for index, window in enumerate(shown):
        fmt = window.view.format
        bars = [charts.Bar(s.label, s.shown, s.low, s.high, s.simultaneous_low,
                           s.simultaneous_high,
                           f"{noun} {s.label}: {fmt(s.shown)} (95% {fmt(s.low)} to "
                           f"{fmt(s.high)}; raw noisy {s.raw:g})")
                for s in window.view.slots]
        top = max(window.view.slots, key=lambda s: s.shown)
        out.append((window, charts.bar_chart(
            f"slots-{index}", bars, y_range, noun, "count" if kind == "histogram" else "sum",
            f"{name}, window {window.start}",
            f"{len(bars)} {noun}s, {window.report_count} reports; largest {noun} {top.label} "
            f"at {fmt(top.shown)}. The table below lists every {noun}.")))
    return out


def render_index(states: Sequence[MetricState], identity: str) -> str:
    return render_template("index.html", states=states, identity=identity)


def render_metric(state: MetricState, sections: Sequence[Section], query: dict[str, Any],
                  truncated: bool) -> str:
    windows = state.windows
    series = slot_multiples = None
    if windows and windows[-1].scalar:
        floor = 0.0 if windows[-1].view.kind == "count" else None
        series = time_series_chart(state.name, windows, floor)
    elif windows:
        slot_multiples = slot_charts(state.name, windows)
    return render_template("metric.html", state=state, sections=sections, series=series,
                           slot_multiples=slot_multiples, query=query, truncated=truncated,
                           windows=list(reversed(windows)))


def sections_for(state: MetricState, identity: str,
                 retention_seconds: float | None = None) -> tuple[Section, ...]:
    """The methodology note of the metric's current policy (empty once it is retired)."""
    if state.policy is None:
        return ()
    released = [w.result.result for w in state.windows
                if w.result.version == state.policy.version]
    return methodology(state.policy, identity, released[-1] if released else None,
                       retention_seconds)
