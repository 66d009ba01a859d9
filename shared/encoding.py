"""From an app's value to integer slots, and from noisy slot sums back to a published value.

Every kind becomes a vector of non-negative integer slots in ``0..policy.slot_max``:

- count: the clipped integer itself (one slot);
- sum, mean: ``round((clip(v) - lower) / precision)``: fixed point with an offset, so negative
  bounds work and a slot is never negative (one slot);
- histogram: a one-hot vector over the buckets; values below the first edge go to the first
  bucket and values at or above the last edge to the last (clipping);
- vector: each coordinate encoded like a sum.

Decoding undoes the offset with the window's public report count ``n``:
``sum = S * precision + n * lower``; a mean divides that by ``n``. Precision questions live
here and nowhere else.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real

from blindsum.shared.errors import InvalidInput
from blindsum.shared.policy import MetricPolicy

Value = float | int | Sequence[float | int]


def _number(policy: MetricPolicy, value: object, what: str = "value") -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidInput(
            f"metric {policy.name!r} ({policy.kind}) needs a number for {what}, "
            f"got {type(value).__name__}"
        )
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInput(f"metric {policy.name!r}: {what} must be finite, got {value!r}")
    return number


def _fixed_point(policy: MetricPolicy, number: float) -> int:
    clipped = min(max(number, policy.lower), policy.upper)
    return min(max(round((clipped - policy.lower) / policy.precision), 0), policy.slot_max)


def encode(policy: MetricPolicy, value: object) -> list[int]:
    """Clip and encode one app value into the policy's slots.

    Raises:
        InvalidInput: the value has the wrong type or shape (a vector of the wrong length,
            NaN, a string...). Out-of-bounds numbers are clipped, not refused.
    """
    if policy.kind == "vector":
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            raise InvalidInput(
                f"metric {policy.name!r} is a vector of {policy.dimension} numbers, "
                f"got {type(value).__name__}"
            )
        if len(value) != policy.dimension:
            raise InvalidInput(
                f"metric {policy.name!r} needs {policy.dimension} numbers, got {len(value)}"
            )
        return [
            _fixed_point(policy, _number(policy, item, f"coordinate {index}"))
            for index, item in enumerate(value)
        ]
    number = _number(policy, value)
    if policy.kind == "histogram":
        edges = policy.buckets
        index = bisect.bisect_right(edges, number) - 1
        index = min(max(index, 0), len(edges) - 2)
        slots = [0] * policy.slot_count
        slots[index] = 1
        return slots
    if policy.kind == "count" and number != int(number):
        raise InvalidInput(f"metric {policy.name!r} counts whole numbers, got {value!r}")
    return [_fixed_point(policy, number)]


def clipped_value(policy: MetricPolicy, value: object) -> float | list[float]:
    """The value the encoding actually represents (clipped, rounded): the truth a window sums."""
    slots = encode(policy, value)
    if policy.kind == "histogram":
        return [float(s) for s in slots]
    decoded = [s * policy.precision + policy.lower for s in slots]
    return decoded if policy.kind == "vector" else decoded[0]


@dataclass(frozen=True)
class Decoded:
    """A published quantity and its confidence interval, in the metric's own units.

    ``value`` and ``ci`` are scalars for count/sum/mean and lists for histogram/vector.
    """

    value: float | list[float]
    ci: tuple[float, float] | list[tuple[float, float]]


def decode(
    policy: MetricPolicy, slot_sums: Sequence[int], report_count: int, half_width: float
) -> Decoded:
    """Turn (noisy) slot sums of ``report_count`` reports into the published quantity.

    ``half_width`` is the per-slot confidence half-width in slot units; it is scaled the same
    way as the value so the interval stays in the metric's units.

    Raises:
        InvalidInput: wrong number of slot sums or a non-positive report count.
    """
    if len(slot_sums) != policy.slot_count:
        raise InvalidInput(
            f"metric {policy.name!r} has {policy.slot_count} slots, got {len(slot_sums)}"
        )
    if report_count <= 0:
        raise InvalidInput("a window with no reports cannot be decoded")
    if policy.kind == "histogram":
        values = [float(s) for s in slot_sums]
        return Decoded(values, [(v - half_width, v + half_width) for v in values])
    scale = policy.precision / (report_count if policy.kind == "mean" else 1)
    offset = policy.lower * (1 if policy.kind == "mean" else report_count)
    values = [s * scale + offset for s in slot_sums]
    cis = [(v - half_width * scale, v + half_width * scale) for v in values]
    if policy.kind == "vector":
        return Decoded(values, cis)
    return Decoded(values[0], cis[0])


@dataclass(frozen=True)
class Published:
    """What a release publishes, all computed from noisy slot sums only (post-processing).

    Attributes:
        value: the noisy value clamped to the metric's domain (a count in ``0..n``, a mean
            in ``[lower, upper]``, each histogram bucket in ``0..n``).
        noisy_value: the raw noisy value, unbiased (what to average across windows).
        ci: the per-slot 95% interval around ``noisy_value``, clipped to the domain (the true
            clipped value lies in the domain, so clipping keeps the coverage).
        consistent: False when the noisy slots lie where honest reports plus noise
            essentially never land (beyond ``tail_width`` outside the domain, or a histogram
            whose buckets do not add up to the report count): a malformed or forged report
            is in the aggregate. Decided on the noisy values alone, so it costs no privacy.
    """

    value: float | list[float]
    noisy_value: float | list[float]
    ci: tuple[float, float] | list[tuple[float, float]]
    consistent: bool


def published_values(result: Published) -> tuple[
        float | tuple[float, ...], float | tuple[float, ...],
        tuple[float, float] | tuple[tuple[float, float], ...]]:
    """``(value, noisy_value, ci)`` of ``result`` as the immutable shapes of a
    ``codec.ReleaseResult`` (tuples where the result has lists)."""
    def frozen(numbers: float | list[float]) -> float | tuple[float, ...]:
        return tuple(numbers) if isinstance(numbers, list) else numbers

    ci = tuple(result.ci) if isinstance(result.ci, list) else result.ci
    return frozen(result.value), frozen(result.noisy_value), ci


def publish(
    policy: MetricPolicy,
    noisy_slots: Sequence[int],
    report_count: int,
    half_width: float,
    tail_width: float,
) -> Published:
    """Post-process noisy slot sums of ``report_count`` reports into a published value.

    ``half_width`` is the per-slot 95% half-width and ``tail_width`` a per-slot bound the
    noise exceeds with negligible probability (both in slot units, from the noise plan).

    Raises:
        InvalidInput: wrong number of slot sums or a non-positive report count.
    """
    ceiling = report_count * policy.slot_max
    # A forged aggregate can decrypt to a 3000-bit slot: saturate far outside the domain so
    # every later step is finite floats (post-processing of the noisy value, like clamping).
    limit = max(2**62, 4 * ceiling)
    noisy_slots = [min(max(int(s), -limit), limit) for s in noisy_slots]
    clamped = [min(max(s, 0), ceiling) for s in noisy_slots]
    raw = decode(policy, noisy_slots, report_count, half_width)
    low = decode(policy, [s - half_width for s in noisy_slots], report_count, 0)
    high = decode(policy, [s + half_width for s in noisy_slots], report_count, 0)
    value = decode(policy, clamped, report_count, 0).value
    domain_low = decode(policy, [0] * len(clamped), report_count, 0).value
    domain_high = decode(policy, [ceiling] * len(clamped), report_count, 0).value
    ci = _clipped_intervals(low.value, high.value, domain_low, domain_high)
    outside = any(s < -tail_width or s > ceiling + tail_width for s in noisy_slots)
    if policy.kind == "histogram":
        # sum of the slots' noises: within len * tail_width by the union bound
        outside = outside or abs(sum(noisy_slots) - report_count) > len(noisy_slots) * tail_width
    return Published(value, raw.value, ci, not outside)


def _clipped_intervals(
    low: float | list[float], high: float | list[float],
    floor: float | list[float], top: float | list[float],
) -> tuple[float, float] | list[tuple[float, float]]:
    def clip(x: float, a: float, b: float) -> float:
        return min(max(x, a), b)

    if isinstance(low, list):
        assert isinstance(high, list) and isinstance(floor, list) and isinstance(top, list)
        return [(clip(lo, f, t), clip(hi, f, t))
                for lo, hi, f, t in zip(low, high, floor, top, strict=True)]
    assert not isinstance(high, list | tuple) and not isinstance(floor, list)
    assert not isinstance(top, list)
    return (clip(low, floor, top), clip(high, floor, top))
