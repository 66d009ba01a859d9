"""What a published result means to a reader: domains, consistent histograms, bands, rounding.

Everything here is post-processing of a signed, already differentially private result, so
none of it costs privacy (DP is closed under post-processing) and none of it touches a
plaintext. The raw noisy values stay in the JSON; this module only decides what is *shown*:

- **Domain.** A window of ``n`` reports has a known range per slot: a count or histogram
  bucket lies in ``[0, n * upper]`` (``[0, n]``), a sum or vector coordinate in
  ``[n * lower, n * upper]``, a mean in ``[lower, upper]``. Values and interval ends outside
  it are impossible for honest reports, so they are clipped for display.
- **Consistent histogram.** The noisy buckets are projected (Euclidean) onto the scaled
  simplex ``{x >= 0, sum x = n}``, the closest non-negative counts that add up to the public
  report count, then apportioned to whole counts by largest remainder.
- **Bands.** The signed 95% interval is per slot. A band that holds for every slot at once
  uses Bonferroni: each slot at level ``1 - alpha / d``, from the same OpenDP accuracy helper
  the key-holder used (``server/accuracy.py``) for the per-slot interval.
- **Rounding.** Values are shown to two significant digits of the interval's half-width (and
  never finer than the metric's own grid): the rounding error is at most 1/20 of the
  half-width, so two values that differ by more than the half-width never round alike.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from blindsum.server.accuracy import half_width
from blindsum.server.aggregator.rounding import display_step, format_number, round_to
from blindsum.shared.codec import ReleaseResult
from blindsum.shared.errors import InvalidInput
from blindsum.shared.policy import MetricPolicy

CONFIDENCE = 0.95
SCALAR_KINDS = ("count", "sum", "mean")


def project_to_simplex(values: Sequence[float], total: float) -> list[float]:
    """The point of ``{x : x_i >= 0, sum x_i = total}`` nearest to ``values`` (Euclidean).

    Sort-and-threshold algorithm (Held et al. 1974; Duchi et al. 2008): the projection is
    ``max(v_i - theta, 0)`` for the unique ``theta`` making the result sum to ``total``.

    Raises:
        InvalidInput: no values, a non-finite value, or a negative or non-finite total.
    """
    if not values:
        raise InvalidInput("cannot project an empty vector")
    if not all(math.isfinite(v) for v in values):
        raise InvalidInput("values must be finite")
    if not math.isfinite(total) or total < 0:
        raise InvalidInput(f"total must be a finite number >= 0, got {total!r}")
    if total == 0:
        return [0.0] * len(values)
    ordered = sorted((float(v) for v in values), reverse=True)
    running, theta = 0.0, 0.0
    for index, v in enumerate(ordered, start=1):
        running += v
        candidate = (running - total) / index
        if v - candidate > 0:
            theta = candidate
    return [max(float(v) - theta, 0.0) for v in values]


def apportion(shares: Sequence[float], total: int) -> list[int]:
    """Whole, non-negative counts summing to ``total``, each within 1 of its share.

    Largest remainder (Hamilton): floors first, then the leftover units go to the largest
    fractional parts (ties to the lower index). ``shares`` must be >= 0 and sum to ``total``
    up to rounding, as ``project_to_simplex`` gives.
    """
    if total < 0 or any(s < 0 for s in shares):
        raise InvalidInput("shares and total must be non-negative")
    floors = [math.floor(s) for s in shares]
    left = total - sum(floors)
    order = sorted(range(len(shares)), key=lambda i: (-(shares[i] - floors[i]), i))
    for i in order[:max(left, 0)]:
        floors[i] += 1
    # float error could leave the floors above total by a unit: take it from the largest
    while sum(floors) > total:
        floors[max(range(len(floors)), key=lambda i: (floors[i], -i))] -= 1
    return floors


def consistent_histogram(noisy: Sequence[float], report_count: int) -> list[int]:
    """Non-negative whole bucket counts summing to ``report_count``, nearest to ``noisy``."""
    return apportion(project_to_simplex(noisy, report_count), report_count)


def slot_domain(kind: str, report_count: int,
                policy: MetricPolicy | None) -> tuple[float, float]:
    """Range of one slot of a window of ``report_count`` honest reports, in metric units.

    Without the policy (another version than the manifest's) only what the kind implies is
    known: counts and buckets are non-negative.
    """
    n = report_count
    if kind == "histogram":
        return 0.0, float(n)
    if policy is None:
        return (0.0, math.inf) if kind == "count" else (-math.inf, math.inf)
    if kind == "mean":
        return policy.lower, policy.upper
    return n * policy.lower, n * policy.upper


def unit(kind: str, report_count: int, policy: MetricPolicy | None) -> float | None:
    """Metric units per slot unit (the noise's scale factor), if the policy is known."""
    if kind == "histogram" or kind == "count":
        return 1.0
    if policy is None:
        return None
    return policy.precision / (report_count if kind == "mean" else 1)


@functools.lru_cache(maxsize=256)
def _slot_half_width(mechanism: str, scale: float, alpha: float, parties: int = 1) -> float:
    return half_width(mechanism, scale, alpha, parties)


def simultaneous_half_width(mechanism: str, scale: float, dimension: int,
                            confidence: float = CONFIDENCE, parties: int = 1) -> float:
    """Slot-unit half-width of a band covering all ``dimension`` slots at once (Bonferroni).

    Raises:
        InvalidPolicy / InvalidInput: an unknown mechanism or an impossible scale.
    """
    if not isinstance(dimension, int) or dimension < 1:
        raise InvalidInput(f"dimension must be a positive integer, got {dimension!r}")
    return _slot_half_width(mechanism, float(scale), (1 - confidence) / dimension, parties)


def per_slot_half_width(mechanism: str, scale: float, confidence: float = CONFIDENCE,
                        parties: int = 1) -> float:
    """Slot-unit half-width of one slot's interval (what the key-holder signed)."""
    return _slot_half_width(mechanism, float(scale), 1 - confidence, parties)


@dataclass(frozen=True)
class Slot:
    """One published number as a reader sees it, beside the raw value that was signed."""

    label: str
    raw: float
    shown: float
    low: float
    high: float
    simultaneous_low: float | None
    simultaneous_high: float | None
    low_signal: bool


@dataclass(frozen=True)
class View:
    """A published result prepared for reading: clipped, consistent, rounded, with bands.

    ``step`` is the rounding step of every slot; ``half_width`` and
    ``simultaneous_half_width`` are in metric units (None when the policy's units are
    unknown). ``projected`` says the histogram shown is the consistent projection;
    ``consistent`` is False when the key-holder said the aggregate cannot come from honest
    reports.
    """

    kind: str
    report_count: int
    slots: tuple[Slot, ...]
    step: float
    half_width: float
    simultaneous_half_width: float | None
    projected: bool
    policy_known: bool
    consistent: bool = True

    @property
    def scalar(self) -> bool:
        return self.kind in SCALAR_KINDS

    def format(self, value: float) -> str:
        return format_number(value, self.step)

    def to_json(self) -> dict[str, Any]:
        """The derived (unsigned) view as plain JSON, lists for every kind."""
        return {
            "value": [s.shown for s in self.slots] if not self.scalar else self.slots[0].shown,
            "ci": _pairs(self, "low", "high"),
            "simultaneous_ci": _pairs(self, "simultaneous_low", "simultaneous_high"),
            "labels": [s.label for s in self.slots],
            "low_signal": [s.low_signal for s in self.slots],
            "rounding_step": self.step,
            "half_width_95": self.half_width,
            "simultaneous_half_width_95": self.simultaneous_half_width,
            "projected": self.projected,
            "consistent": self.consistent,
        }


def _pairs(view: View, low: str, high: str) -> Any:
    pairs = [[getattr(s, low), getattr(s, high)] for s in view.slots]
    return pairs[0] if view.scalar else pairs


def slot_labels(kind: str, count: int, policy: MetricPolicy | None) -> list[str]:
    """Bucket ranges for a histogram (end buckets hold the clipped values), indices else."""
    if kind == "histogram" and policy is not None and len(policy.buckets) == count + 1:
        edges = [f"{e:g}" for e in policy.buckets]
        labels = [f"[{a}, {b})" for a, b in itertools.pairwise(edges)]
        labels[0] = f"< {edges[1]}"
        labels[-1] = f"≥ {edges[-2]}"
        return labels
    if kind in SCALAR_KINDS:
        return [kind]
    return [str(i) for i in range(count)]


def _clip(x: float, low: float, high: float) -> float:
    return min(max(x, low), high)


def build_view(result: ReleaseResult, policy: MetricPolicy | None) -> View:
    """The reader's view of one signed result (``policy`` of its version, if known).

    The band is centred on ``noisy_value`` (unbiased, before the key-holder's clamping).
    """
    kind, n = result.kind, result.report_count
    if policy is not None and (policy.kind != kind or policy.version != result.version):
        policy = None
    noisy = result.noisy_value
    raw = [float(v) for v in noisy] if isinstance(noisy, tuple) else [float(noisy)]
    signed_ci: list[tuple[float, float]] = (
        [result.ci] if result.scalar else list(result.ci))  # type: ignore[list-item]
    low_end, high_end = slot_domain(kind, n, policy)
    per_units = unit(kind, n, policy)
    # The signed interval may already be clipped to the domain (newer key-holders), so the
    # half-width comes from the noise itself; the widest signed half is the fallback.
    half = max((high - low) / 2 for low, high in signed_ci)
    sim_half: float | None = None
    if per_units is not None:
        parties = len(result.noise_parties) or 1  # results before the field: one draw
        half = per_slot_half_width(result.mechanism, result.scale, parties=parties) * per_units
        sim_half = simultaneous_half_width(result.mechanism, result.scale, len(raw),
                                           parties=parties) * per_units
    projected = kind == "histogram"
    shown = ([float(c) for c in consistent_histogram(raw, n)] if projected
             else [min(max(v, low_end), high_end) for v in raw])
    # Histogram counts stay whole so that they add up to the report count.
    step = 1.0 if projected else display_step(half, per_units if per_units is not None else 0)
    labels = slot_labels(kind, len(raw), policy)
    slots = []
    for label, value, display, (low, high) in zip(labels, raw, shown, signed_ci, strict=True):
        # The band is centred on the unbiased noisy value: that is what its coverage is for.
        slots.append(Slot(
            label=label, raw=value, shown=round_to(display, step),
            low=_clip(low, low_end, high_end), high=_clip(high, low_end, high_end),
            simultaneous_low=None if sim_half is None else _clip(value - sim_half, low_end,
                                                                 high_end),
            simultaneous_high=None if sim_half is None else _clip(value + sim_half, low_end,
                                                                  high_end),
            low_signal=half >= abs(display),
        ))
    # The key-holder flags a noisy aggregate that honest reports could not have produced.
    return View(kind, n, tuple(slots), step, half, sim_half, projected, policy is not None,
                result.consistent)
