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
