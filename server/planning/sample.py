"""Simulated releases on a sample of raw values: the bias clipping at the bounds causes.

A sample file is CSV in long form, one value per row::

    metric,value
    session_seconds,1800
    session_seconds,5400
    feature_minutes,3,0,12,...   (a vector metric: its ``dimension`` values on one row)

The header row is required. Each metric's rows stand for one window of that many reports.
The simulation encodes each value exactly as the SDK does (``encoding.encode``: clip, round),
adds the key-holder's noise (``release.noise_plan``) and decodes like a release
(``encoding.decode``), many times, and compares the published values with the *raw* truth:
the mean error is the clipping bias (the noise is unbiased), the spread is the noise.

This runs on the operator's own machine on data they already hold, to choose bounds; it is
not part of any service and sends nothing anywhere.
"""

from __future__ import annotations

import bisect
import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from blindsum.server.keyholder.release import noise_plan
from blindsum.server.planning.accuracy import unit_half_width, with_epsilon
from blindsum.shared.encoding import decode, encode
from blindsum.shared.errors import InvalidInput
from blindsum.shared.policy import MetricPolicy

Sample = dict[str, list[list[float]]]


def read_sample(text: str, policies: Mapping[str, MetricPolicy]) -> Sample:
    """Parse a sample CSV; every row is checked against its metric's policy.

    Raises:
        InvalidInput: naming the line at fault (unknown metric, not a number, wrong count).
    """
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [cell.strip().lower() for cell in rows[0][:2]] != ["metric", "value"]:
        raise InvalidInput("sample file must start with the header row 'metric,value'")
    sample: Sample = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        name = row[0].strip()
        policy = policies.get(name)
        if policy is None:
            raise InvalidInput(f"sample line {line}: metric {name!r} is not in the policy file")
        width = policy.dimension if policy.kind == "vector" else 1
        if len(row) - 1 != width:
            raise InvalidInput(
                f"sample line {line}: metric {name!r} needs {width} value(s), got {len(row) - 1}"
            )
        try:
            values = [float(cell) for cell in row[1:]]
        except ValueError:
            raise InvalidInput(f"sample line {line}: values must be numbers") from None
        if not all(math.isfinite(v) for v in values):
            raise InvalidInput(f"sample line {line}: values must be finite")
        sample.setdefault(name, []).append(values)
    if not sample:
        raise InvalidInput("sample file holds no values")
    return sample


def raw_truth(policy: MetricPolicy, values: Sequence[Sequence[float]]) -> list[float]:
    """What the window would publish without clipping, rounding or noise."""
    n = len(values)
    if policy.kind == "histogram":
        counts = [0.0] * policy.slot_count
        for (value,) in values:
            index = bisect.bisect_right(policy.buckets, value) - 1
            if 0 <= index < policy.slot_count:  # outside the edges: in no bucket
                counts[index] += 1
        return counts
    totals = [math.fsum(column) for column in zip(*values, strict=True)]
    return [t / n for t in totals] if policy.kind == "mean" else totals


def _slot_sums(policy: MetricPolicy, values: Sequence[Sequence[float]]) -> list[int]:
    sums = [0] * policy.slot_count
    for value in values:
        item = list(value) if policy.kind == "vector" else value[0]
        for index, slot in enumerate(encode(policy, item)):
            sums[index] += slot
    return sums


def _listed(value: float | list[float]) -> list[float]:
    return list(value) if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Simulation:
    """Published values of ``releases`` simulated windows against the raw truth.

    Per coordinate: ``clipping_bias`` is the encoded truth (clipped at the bounds, rounded to
    the precision) minus the raw truth: the part of the error no epsilon removes;
    ``mean_error`` the average published value minus the raw truth (that bias plus the
    noise's sampling error); ``rmse`` the root mean square error; ``coverage`` the share of
    published 95% intervals that contain the raw truth. ``clipped_share`` is the share of
    values outside the declared bounds (or bucket edges).
    """

    metric: str
    epsilon: float
    contributors: int
    releases: int
    raw: tuple[float, ...]
    clipping_bias: tuple[float, ...]
    mean_error: tuple[float, ...]
    rmse: tuple[float, ...]
    coverage: float
    clipped_share: float
    half_width: float

    @property
    def worst_bias(self) -> float:
        return max(abs(b) for b in self.clipping_bias)

    @property
    def worst_rmse(self) -> float:
        return max(self.rmse)


def _clipped_share(policy: MetricPolicy, values: Sequence[Sequence[float]]) -> float:
    if policy.kind == "histogram":
        low, high = policy.buckets[0], policy.buckets[-1]
        outside = sum(1 for (v,) in values if not low <= v < high)
        return outside / len(values)
    flat = [v for value in values for v in value]
    return sum(1 for v in flat if not policy.lower <= v <= policy.upper) / len(flat)


def simulate(policy: MetricPolicy, values: Sequence[Sequence[float]], releases: int = 200,
             epsilon: float | None = None,
             progress: Callable[[int], None] | None = None) -> Simulation:
    """Simulate ``releases`` releases of one window holding ``values``."""
    if isinstance(releases, bool) or not isinstance(releases, int) or releases < 1:
        raise InvalidInput(f"releases must be a positive integer, got {releases!r}")
    if not values:
        raise InvalidInput(f"metric {policy.name!r}: the sample holds no values")
    if epsilon is not None:
        policy = with_epsilon(policy, epsilon)
    n = len(values)
    plan = noise_plan(policy)
    parties = len(policy.noise_parties)  # noise = "both": each party adds one draw
    slot_half_width = plan.half_width(0.05, parties)
    raw = raw_truth(policy, values)
    sums = _slot_sums(policy, values)
    encoded = _listed(decode(policy, sums, n, 0.0).value)
    errors = [[0.0] * len(raw) for _ in range(releases)]
    covered = 0
    for r in range(releases):
        noisy = sums
        for _ in range(parties):
            noisy = plan.apply(noisy)
        published = decode(policy, noisy, n, slot_half_width)
        intervals = published.ci if isinstance(published.ci, list) else [published.ci]
        for i, (value, (low, high)) in enumerate(
                zip(_listed(published.value), intervals, strict=True)):
            errors[r][i] = value - raw[i]
            covered += low <= raw[i] <= high
        if progress is not None:
            progress(1)
    columns = list(zip(*errors, strict=True))
    return Simulation(
        metric=policy.name, epsilon=plan.epsilon, contributors=n, releases=releases,
        raw=tuple(raw),
        clipping_bias=tuple(e - t for e, t in zip(encoded, raw, strict=True)),
        mean_error=tuple(math.fsum(c) / releases for c in columns),
        rmse=tuple(math.sqrt(math.fsum(x * x for x in c) / releases) for c in columns),
        coverage=covered / (releases * len(raw)),
        clipped_share=_clipped_share(policy, values),
        half_width=unit_half_width(policy, plan, n),
    )
