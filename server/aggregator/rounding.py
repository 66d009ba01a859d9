"""Rounding a published number to the precision its noise allows (no OpenDP: the CLI uses it).

Two significant digits of the 95% interval's half-width, never finer than the metric's own
grid: the rounding error is at most 1/20 of the half-width, so two values that differ by
more than the half-width never round alike.
"""

from __future__ import annotations

import math


def display_step(half_width: float, resolution: float) -> float:
    """The rounding step for a value with this 95% half-width: a power of ten.

    Two significant digits of the half-width, never finer than the power of ten at or below
    the metric's ``resolution`` (its own grid), and the resolution itself when there is no
    noise to speak of.
    """
    floor_step = 10.0 ** math.floor(math.log10(resolution)) if resolution > 0 else 0.0
    if not half_width > 0 or not math.isfinite(half_width):
        return floor_step if floor_step > 0 else 1.0
    step = 10.0 ** (math.floor(math.log10(half_width)) - 1)
    return max(step, floor_step)


def decimals_for(step: float) -> int:
    """Digits after the decimal point that a multiple of ``step`` needs."""
    return max(0, -math.floor(math.log10(step) + 1e-9))


def round_to(value: float, step: float) -> float:
    """``value`` rounded to a multiple of ``step`` (exact for the decimals it will show)."""
    return round(round(value / step) * step, decimals_for(step))


def format_number(value: float, step: float) -> str:
    """``value`` rounded to ``step`` with thousands separators, e.g. ``12,300`` or ``0.42``."""
    shown = round_to(value, step) or 0.0  # never "-0"
    return f"{shown:,.{decimals_for(step)}f}"
