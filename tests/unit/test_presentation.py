"""Post-processing of published results: consistent histograms, domains, bands, rounding."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from blindsum.server.aggregator.presentation import (
    View,
    apportion,
    build_view,
    consistent_histogram,
    per_slot_half_width,
    project_to_simplex,
    simultaneous_half_width,
)
from blindsum.server.aggregator.rounding import display_step, format_number, round_to
from blindsum.server.noise import plan_noise
from blindsum.shared.codec import ReleaseResult
from blindsum.shared.errors import InvalidInput
from blindsum.shared.policy import MetricPolicy

_PRIVACY = {"mechanism": "laplace", "epsilon": 1.0, "budget_epsilon": 10.0}
HIST = MetricPolicy.from_mapping("pages", {
    "kind": "histogram", "scheme": "paillier", "buckets": [0, 1, 2, 3, 4], "privacy": _PRIVACY})
SUM = MetricPolicy.from_mapping("latency", {
    "kind": "sum", "scheme": "paillier", "lower": 0, "upper": 1000, "privacy": _PRIVACY})
MEAN = MetricPolicy.from_mapping("temp", {
    "kind": "mean", "scheme": "paillier", "lower": -20, "upper": 60, "precision": 0.1,
    "privacy": {"mechanism": "gaussian", "epsilon": 1.0, "delta": 1e-7, "budget_epsilon": 9}})

noisy_vectors = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=40)


def _payload(policy: MetricPolicy, value: Any, n: int, **extra: Any) -> dict[str, Any]:
    plan = plan_noise(policy.privacy.mechanism, policy.privacy.epsilon, policy.privacy.delta,
                      policy.l1_sensitivity, policy.l2_sensitivity, policy.slot_count)
    half = plan.half_width(0.05)
    unit = policy.precision / (n if policy.kind == "mean" else 1)
    values = value if isinstance(value, list) else [value]
    ci = [[v - half * unit, v + half * unit] for v in values]
    return {"type": "blindsum.release", "v": 1, "metric": policy.name,
            "version": policy.version, "kind": policy.kind, "scheme": policy.scheme,
            "window": 3600, "window_seconds": 3600, "kid": "pai-1", "report_count": n,
            "report_ids_digest": "ab" * 32, "request_digest": "cd" * 32, "value": value,
            "ci": ci if isinstance(value, list) else ci[0], "confidence": 0.95,
            "mechanism": plan.mechanism, "epsilon": policy.privacy.epsilon,
            "delta": policy.privacy.delta, "scale": plan.scale, "released_at": 7200.0,
            "audit_seq": 3, "audit_head": "ef" * 32, **extra}


def _view(payload: dict[str, Any], policy: MetricPolicy | None) -> View:
    return build_view(ReleaseResult.from_json(payload), policy)


# -- the simplex projection ------------------------------------------------------------------


@given(noisy_vectors, st.integers(0, 10**6))
def test_projection_is_non_negative_and_sums_to_the_total(values: list[float], total: int) -> None:
    projected = project_to_simplex(values, total)
    assert all(x >= 0 for x in projected)
    assert math.isclose(sum(projected), total, rel_tol=1e-9, abs_tol=1e-6)


@settings(max_examples=200)
@given(noisy_vectors, st.integers(1, 1000), st.data())
def test_projection_is_the_nearest_consistent_point(values: list[float], total: int,
                                                    data: st.DataObject) -> None:
    projected = project_to_simplex(values, total)
    weights = data.draw(st.lists(st.floats(0, 1), min_size=len(values), max_size=len(values)))
    assume(sum(weights) > 0)
    other = [w * total / sum(weights) for w in weights]  # any other consistent point

    def distance(x: list[float]) -> float:
        return math.dist(x, values)

    assert distance(projected) <= distance(other) * (1 + 1e-9) + 1e-6


@given(st.lists(st.integers(0, 1000), min_size=1, max_size=20))
def test_projection_leaves_consistent_counts_alone(counts: list[int]) -> None:
    assert project_to_simplex([float(c) for c in counts], sum(counts)) == pytest.approx(counts)


@given(noisy_vectors, st.integers(0, 10**6))
def test_consistent_histogram_is_whole_non_negative_and_sums_to_the_report_count(
    values: list[float], total: int
) -> None:
    before = list(values)
    counts = consistent_histogram(values, total)
    assert all(isinstance(c, int) and c >= 0 for c in counts)
    assert sum(counts) == total
    assert values == before  # the raw values are not touched


@given(st.lists(st.floats(0, 1e4), min_size=1, max_size=30))
def test_apportion_keeps_each_count_within_one_of_its_share(weights: list[float]) -> None:
    assume(sum(weights) > 0)
    total = 997
    shares = [w * total / sum(weights) for w in weights]
    counts = apportion(shares, total)
    assert sum(counts) == total
    assert all(abs(c - s) < 1 + 1e-6 for c, s in zip(counts, shares, strict=True))


def test_negative_buckets_are_projected_away() -> None:
    assert consistent_histogram([-14.0, 30.0, 5.0, 2.0], 20) == [0, 20, 0, 0]
    assert consistent_histogram([3.0, 3.0, 3.0], 9) == [3, 3, 3]
    with pytest.raises(InvalidInput, match="total"):
        project_to_simplex([1.0], -1)


# -- rounding --------------------------------------------------------------------------------


@given(st.integers(-10**9, 10**9), st.integers(-10**9, 10**9),
       st.floats(0, 1e7, allow_nan=False),
       st.sampled_from([1.0, 0.1, 0.25, 0.01, 1e-4, 5.0]))
def test_rounding_never_hides_a_difference_larger_than_the_interval(
    a: int, b: int, half_width: float, resolution: float
) -> None:
    # published values lie on the metric's grid (integer slot sums times its resolution)
    x, y = a * resolution, b * resolution
    step = display_step(half_width, resolution)
    assert abs(round_to(x, step) - x) <= step / 2 * (1 + 1e-9) + 1e-9 * abs(x)
    if abs(x - y) > half_width and x != y:
        assert round_to(x, step) != round_to(y, step)


@given(st.integers(-10**9, 10**9), st.floats(1e-6, 1e7),
       st.floats(1.0, 2.0, exclude_min=True),
       st.sampled_from([1.0, 0.1, 0.25, 0.01, 1e-4, 5.0]))
def test_values_just_beyond_the_interval_apart_never_round_alike(
    a: int, half_width: float, factor: float, resolution: float
) -> None:
    # the hard case for the property above: two grid values barely more than a half-width
    # apart (random pairs are almost always far apart)
    x = a * resolution
    gap = max(math.floor(half_width * factor / resolution), 1) * resolution
    assume(gap > half_width)
    step = display_step(half_width, resolution)
    assert round_to(x, step) != round_to(x + gap, step)
    assert format_number(x, step) != format_number(x + gap, step)


@given(st.floats(1e-3, 1e9))
def test_rounding_keeps_two_significant_digits_of_the_half_width(half_width: float) -> None:
    step = display_step(half_width, 1e-9)
    assert half_width / 100 < step <= half_width / 10 * (1 + 1e-12)


def test_rounded_numbers_read_as_a_person_writes_them() -> None:
    assert format_number(23104.7, display_step(17569, 1)) == "23,000"
    assert format_number(31.23456, display_step(0.42, 1e-4)) == "31.23"
    assert format_number(-0.0001, 0.01) == "0.00"
    assert display_step(0, 1) == 1 and display_step(0, 1e-4) == 1e-4


# -- bands -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism,scale", [("laplace", 2.0), ("gaussian", 7.3),
                                             ("gaussian", 2e5)])
def test_simultaneous_band_is_wider_than_the_per_slot_interval(mechanism: str,
                                                               scale: float) -> None:
    per_slot = per_slot_half_width(mechanism, scale)
    assert simultaneous_half_width(mechanism, scale, 1) == per_slot
    assert simultaneous_half_width(mechanism, scale, 40) > per_slot


def test_per_slot_half_width_is_the_one_the_keyholder_signs() -> None:
    plan = plan_noise("gaussian", 1.0, 1e-7, 2, math.sqrt(2), 4)
    assert per_slot_half_width(plan.mechanism, plan.scale) == plan.half_width(0.05)


# -- a whole view ----------------------------------------------------------------------------


def test_histogram_view_is_consistent_and_keeps_the_raw_values() -> None:
    raw = [-3.0, 4.0, 1.0, 9.0]
    payload = _payload(HIST, raw, 10)
    view = _view(payload, HIST)
    assert [s.shown for s in view.slots] == [0.0, 3.0, 0.0, 7.0]  # 2.5 and 7.5, tie to the lower
    assert sum(s.shown for s in view.slots) == 10
    assert [s.raw for s in view.slots] == raw and payload["value"] == raw
    assert all(s.low >= 0 and s.high <= 10 for s in view.slots)
    assert view.projected and view.to_json()["labels"] == ["< 1", "[1, 2)", "[2, 3)", "≥ 3"]
    sim = view.to_json()["simultaneous_ci"]
    assert all(lo <= s.low and hi >= s.high for (lo, hi), s in zip(sim, view.slots, strict=True))


def test_noisy_value_is_preferred_over_the_clamped_value() -> None:
    payload = _payload(HIST, [0.0, 4.0, 1.0, 5.0], 10, noisy_value=[-3.0, 4.0, 1.0, 8.0])
    assert [s.raw for s in _view(payload, HIST).slots] == [-3.0, 4.0, 1.0, 8.0]


def test_sum_interval_is_clipped_to_what_its_reports_can_reach() -> None:
    payload = _payload(SUM, 120.0, 3)  # laplace on 1000 per report: the interval is huge
    view = _view(payload, SUM)
    (slot,) = view.slots
    assert payload["ci"][0] < 0 and slot.low == 0.0 and slot.high == 3000.0
    assert slot.low_signal  # the interval swamps the value
    assert view.to_json()["value"] == slot.shown


def test_mean_is_rounded_to_what_its_noise_allows() -> None:
    payload = _payload(MEAN, 31.234567, 1000)
    view = _view(payload, MEAN)
    assert view.step >= view.half_width / 100
    assert view.format(view.slots[0].shown) == f"{round(31.234567, 2):.2f}"
    assert not view.slots[0].low_signal


def test_another_version_is_shown_without_the_policy_bounds() -> None:
    payload = {**_payload(SUM, 120.0, 3), "version": 2}
    view = _view(payload, SUM)
    assert not view.policy_known and view.simultaneous_half_width is None
    assert view.slots[0].low == payload["ci"][0]
    assert view.to_json()["simultaneous_ci"] == [None, None]


@pytest.mark.parametrize("bad,match", [
    ({"report_count": 0}, "report_count"),
    ({"value": [1.0]}, "value must be a finite number"),
    ({"value": float("nan")}, "finite"),
    ({"ci": [5.0, 1.0]}, "pair"),
    ({"ci": [[0.0, 1.0]]}, "pair"),
    ({"scale": -1.0}, "scale"),
    ({"kind": "median"}, "kind"),
])
def test_malformed_results_are_refused(bad: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        _view({**_payload(SUM, 120.0, 3), **bad}, SUM)
