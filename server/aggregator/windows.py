"""Window arithmetic: which window a moment falls in, which windows take reports, when to release.

Windows are aligned to the Unix epoch: the window of time ``t`` starts at
``t - t % window_seconds`` and ends ``window_seconds`` later (exclusive). A window accepts
reports while it is current, and for ``late_seconds`` after its end (reports from devices
that were offline at the boundary). It is *due* for release once those late seconds are
over: from then on no report can enter it, so its aggregate is final.

A report may also name the *next* window when its start is at most ``CLOCK_SKEW_SECONDS``
away: a device whose clock runs slightly fast at a boundary would otherwise lose its report.
Accepting it early costs nothing, since that window is not due before its own end.
"""

from __future__ import annotations

import math

from blindsum.shared.errors import InvalidInput
from blindsum.shared.policy import MetricPolicy

CLOCK_SKEW_SECONDS = 30


def window_start(t: float, window_seconds: int) -> int:
    """Start (unix seconds) of the window containing time ``t``."""
    second = math.floor(t)
    return second - second % window_seconds


def window_end(start: int, window_seconds: int) -> int:
    """First second after the window that starts at ``start``."""
    return start + window_seconds


def due_at(policy: MetricPolicy, start: int) -> int:
    """When the window starting at ``start`` stops taking reports and may be released."""
    return window_end(start, policy.window_seconds) + policy.late_seconds


def is_due(policy: MetricPolicy, start: int, now: float) -> bool:
    """True once no report can enter the window any more (``now >= end + late_seconds``)."""
    return now >= due_at(policy, start)


def accepting_windows(policy: MetricPolicy, now: float) -> tuple[int, ...]:
    """Starts of the windows that accept reports at ``now``, newest first."""
    current = window_start(now, policy.window_seconds)
    starts = []
    upcoming = current + policy.window_seconds
    if upcoming - now <= CLOCK_SKEW_SECONDS:
        starts.append(upcoming)
    starts.append(current)
    previous = current - policy.window_seconds
    if previous >= 0 and not is_due(policy, previous, now):
        starts.append(previous)
    return tuple(starts)


def check_report_window(policy: MetricPolicy, start: int, now: float) -> None:
    """Refuse a report window that is misaligned, closed or not yet open.

    Raises:
        InvalidInput: saying which windows the metric accepts now.
    """
    if start % policy.window_seconds:
        raise InvalidInput(
            f"window {start} is not a window start of metric {policy.name!r} "
            f"(a multiple of window_seconds = {policy.window_seconds})"
        )
    accepting = accepting_windows(policy, now)
    if start in accepting:
        return
    current = window_start(now, policy.window_seconds)
    when = "has closed" if start < current else "has not started yet"
    raise InvalidInput(
        f"window {start} of metric {policy.name!r} {when}: it accepts reports for windows "
        f"{list(accepting)} now (check the device clock)"
    )
